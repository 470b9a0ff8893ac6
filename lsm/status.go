//go:build linux

package lsm

import (
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Status is the state of a pinned guard.
type Status struct {
	PinDir     string `json:"pin_dir"`
	Sealed     bool   `json:"sealed"`
	Mode       string `json:"mode"`
	Generation uint64 `json:"generation"`
	// Entries counts the digests and names in the policy in force.
	Entries uint64 `json:"entries"`
	// Require lists the policy's requirements (Require.Names): checks
	// made on every load before the list.
	Require []string `json:"require,omitempty"`
	// AutoloadDeny lists the policy's autoload deny patterns, folded
	// (allowlist.FoldPattern), in order. They are enforced only while the
	// kg_module_request hook is attached (a guard pinned by an older build
	// has none: Missing names it).
	AutoloadDeny []string `json:"autoload_deny,omitempty"`
	// Serial is the highest allowlist serial (metadata.serial) applied:
	// older releases are refused.
	Serial uint64 `json:"serial,omitempty"`
	// Links lists the attached hooks and their link and program ids.
	Links []LinkStatus `json:"links"`
	// Missing lists hooks whose link is not pinned.
	Missing []string `json:"missing,omitempty"`
	// Counts of decisions since the guard was loaded.
	Allowed    uint64 `json:"allowed"`
	Blocked    uint64 `json:"blocked"`
	Audited    uint64 `json:"audited"`
	LostEvents uint64 `json:"lost_events"`
	// MissingDecisions counts the decision records that another process
	// consumed from the ring buffer, as the decision reader (the daemon)
	// last found them since it started reading; ReaderPid is that reader.
	// Both are zero when no reader has run since the guard was loaded.
	MissingDecisions uint64 `json:"missing_decisions"`
	ReaderPid        uint32 `json:"reader_pid,omitempty"`
	// ReaderChecked is when the reader last saved that state: about every
	// second while it reads (zero when no reader has run).
	ReaderChecked time.Time `json:"reader_checked,omitzero"`
	// Overrides lists programs that can decide the guard's hooks before
	// it does ([Overrides]); OverridesError says why they could not be
	// listed.
	Overrides      []Override `json:"overrides,omitempty"`
	OverridesError string     `json:"overrides_error,omitempty"`
	// RecursionMisses is the kernel's count of calls to the guard's
	// programs that it skipped because the program was already running on
	// that CPU (recursion_misses, summed over the programs; the non-zero
	// ones in RecursionMissesByHook). Before 6.2 a skipped module hook
	// admits the load undecided: any miss is a bypass (see Preemption).
	// RecursionMissesError says why they could not be read (a sealed
	// guard refuses descriptors to its programs: only a process that
	// holds them, the daemon, can read them).
	RecursionMisses       uint64          `json:"recursion_misses"`
	RecursionMissesByHook []ProgramMisses `json:"recursion_misses_by_hook,omitempty"`
	RecursionMissesError  string          `json:"recursion_misses_error,omitempty"`
	// Preemption is whether this kernel can skip a preempted guard.
	Preemption Preemption `json:"preemption"`
}

// LinkStatus is one attached hook.
type LinkStatus struct {
	Hook   string `json:"hook"`
	LinkID uint32 `json:"link_id"`
	ProgID uint32 `json:"prog_id"`
}

// Status reads the guard's state.
func (g *Guard) Status() (Status, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	st := Status{PinDir: g.pinDir}
	var c guardKgConfig
	if err := g.config.Lookup(uint32(0), &c); err != nil {
		return st, fmt.Errorf("read config: %w", err)
	}
	st.Sealed = c.Sealed != 0
	st.Mode = Mode(c.Mode).String()
	st.Generation = c.Generation
	st.Entries = c.Entries
	if r, deny, err := g.terms(); err != nil {
		return st, err
	} else {
		st.Require, st.AutoloadDeny = r.Names(), deny
	}
	if m, err := g.openSerial(false); err != nil {
		return st, err
	} else if m != nil {
		err := m.Lookup(uint32(0), &st.Serial)
		m.Close()
		if err != nil {
			return st, fmt.Errorf("read the serial record: %w", err)
		}
	}
	for _, name := range hooks {
		l, ok := g.links[name]
		if !ok {
			st.Missing = append(st.Missing, name)
			continue
		}
		ls := LinkStatus{Hook: name}
		if info, err := l.Info(); err == nil {
			ls.LinkID = uint32(info.ID)
			ls.ProgID = uint32(info.Program)
		}
		st.Links = append(st.Links, ls)
	}
	for slot, dst := range []*uint64{&st.Allowed, &st.Blocked, &st.Audited, &st.LostEvents} {
		var per []uint64
		if err := g.counters.Lookup(uint32(slot), &per); err != nil {
			return st, fmt.Errorf("read counters: %w", err)
		}
		for _, n := range per {
			*dst += n
		}
	}
	if rs, ok := readReaderState(g.pinDir); ok {
		st.MissingDecisions, st.ReaderPid = rs.Missing, rs.Pid
		if rs.Checked != 0 {
			st.ReaderChecked = time.Unix(0, rs.Checked)
		}
	}
	own := ownObjects{links: map[uint32]bool{}, progs: map[uint32]string{}}
	for _, l := range st.Links {
		own.links[l.LinkID] = true
		own.progs[l.ProgID] = l.Hook
	}
	if o, err := findOverrides(own, !st.Sealed); err != nil {
		st.OverridesError = err.Error()
	} else {
		st.Overrides = o
	}
	ms, err := g.recursionMissesLocked()
	if errors.Is(err, errNoPrograms) && st.ReaderPid != 0 {
		// Sealed: the daemon, the decision reader, holds descriptors to
		// the programs, and the kernel shows their counts in its fdinfo.
		ms, err = missesFromFdinfo(st.ReaderPid, st.Links)
	}
	if err != nil {
		st.RecursionMissesError = err.Error()
	}
	for _, m := range ms {
		st.RecursionMisses += m.Misses
		if m.Misses != 0 {
			st.RecursionMissesByHook = append(st.RecursionMissesByHook, m)
		}
	}
	st.Preemption = DetectPreemption()
	return st, nil
}

// terms reads the requirements of the policy in force from its meta
// record, and its autoload deny patterns; none when no policy is
// installed.
func (g *Guard) terms() (Require, []string, error) {
	inner := g.inner
	// The map in the slot can be swapped (and freed) between reading its
	// id and opening it: then the slot holds a newer one.
	for try := 0; inner == nil; try++ {
		var id uint32
		if err := g.policy.Lookup(uint32(0), &id); errors.Is(err, ebpf.ErrKeyNotExist) {
			return 0, nil, nil
		} else if err != nil {
			return 0, nil, fmt.Errorf("read the policy slot: %w", err)
		}
		m, err := mapFromIDReadOnly(id)
		if errors.Is(err, os.ErrNotExist) && try < 3 {
			continue
		}
		if err != nil {
			return 0, nil, fmt.Errorf("open the policy in force (map %d): %w", id, err)
		}
		defer m.Close()
		inner = m
	}
	var meta guardKgPolicyVal
	if err := inner.Lookup(guardKgPolicyKey{Kind: keyMeta}, &meta); err != nil {
		return 0, nil, fmt.Errorf("read the policy's meta record: %w", err)
	}
	var deny []string
	for i := range MaxAutoloadPatterns {
		var v guardKgPolicyVal
		k := guardKgPolicyKey{Kind: keyAutoload}
		k.Data[0] = uint8(i)
		err := inner.Lookup(k, &v)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return 0, nil, fmt.Errorf("read the policy's autoload pattern %d: %w", i, err)
		}
		deny = append(deny, cstr(v.Name[:]))
	}
	return Require(meta.Index), deny, nil
}

// Hooks lists the LSM hooks the guard attaches, in attach order.
func Hooks() []string { return append([]string(nil), hooks...) }

// mapFromIDReadOnly opens map id read-only (BPF_MAP_GET_FD_BY_ID with
// BPF_F_RDONLY): a sealed guard refuses writable descriptors to its maps.
func mapFromIDReadOnly(id uint32) (*ebpf.Map, error) {
	attr := struct{ ID, NextID, OpenFlags uint32 }{ID: id, OpenFlags: unix.BPF_F_RDONLY}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_MAP_GET_FD_BY_ID, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		if errno == unix.ENOENT {
			return nil, fmt.Errorf("map %d: %w", id, os.ErrNotExist)
		}
		return nil, fmt.Errorf("map %d: %w", id, errno)
	}
	// NewMapFromFD owns fd from here, and closes it on error.
	return ebpf.NewMapFromFD(int(fd))
}
