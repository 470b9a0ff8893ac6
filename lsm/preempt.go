//go:build linux

package lsm

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Before Linux 6.2, the BPF trampoline runs a non-sleepable LSM program
// only when it is not already running on that CPU (__bpf_prog_enter and
// its per-program counter prog->active): a second call on that CPU is
// skipped, counted in the program's recursion_misses, and the hook goes on
// as if the program had returned 0, allowed. The program runs with
// migration disabled, which still lets it be preempted on a preemptible
// kernel (preempt=full, PREEMPT_RT): a module load that preempts the guard
// while it hashes another image on the same CPU is then never decided.
// 6.2 (commit "bpf: Remove prog->active check for bpf_lsm and bpf_iter")
// picks the enter function per program type (bpf_trampoline_enter), and
// LSM programs run without that check; 6.1.54 carries the same change
// (Debian's 6.1.0-13 and later). The check came in 5.13.

// Preemption is what the running kernel does to a guard program that a
// module load preempts.
type Preemption struct {
	// SkipsBusy: the trampoline skips an LSM program already running on
	// the CPU (before 6.2), and the hook allows what it would decide.
	SkipsBusy bool `json:"skips_busy"`
	// SkipsBusyFrom says how SkipsBusy was found: "kallsyms" (the
	// trampoline's enter functions) or "release".
	SkipsBusyFrom string `json:"skips_busy_from"`
	// Model is the preemption model in force: none, voluntary, full, rt,
	// lazy, or "" when unknown.
	Model string `json:"model,omitempty"`
	// ModelFrom says how Model was found: the debugfs file, or the kernel
	// version string, configuration and command line.
	ModelFrom string `json:"model_from,omitempty"`
	// Dynamic: root can change the model at run time (PREEMPT_DYNAMIC,
	// /sys/kernel/debug/sched/preempt).
	Dynamic bool `json:"dynamic,omitempty"`
}

// Preemptible reports whether a guard program can be preempted by another
// task now: the model is full, lazy or rt (or unknown on a kernel built
// preemptible).
func (p Preemption) Preemptible() bool {
	switch p.Model {
	case "full", "lazy", "rt":
		return true
	case "none", "voluntary":
		return false
	}
	return true
}

// Exposed reports whether a load can skip the guard now: the kernel skips
// a busy LSM program and the guard can be preempted.
func (p Preemption) Exposed() bool { return p.SkipsBusy && p.Preemptible() }

// Switchable reports whether root can make the kernel exposed at run time
// (a PREEMPT_DYNAMIC kernel that skips busy LSM programs).
func (p Preemption) Switchable() bool { return p.SkipsBusy && p.Dynamic }

func (p Preemption) String() string {
	model := p.Model
	if model == "" {
		model = "unknown"
	}
	s := fmt.Sprintf("model %s (%s)", model, p.ModelFrom)
	if p.SkipsBusy {
		return s + ", trampoline skips a running LSM program (before 6.2)"
	}
	return s + ", trampoline always runs LSM programs"
}

// Paths read by DetectPreemption; variables for the unit tests.
var (
	kallsymsPath     = "/proc/kallsyms"
	preemptDebugPath = "/sys/kernel/debug/sched/preempt"
	cmdlinePath      = "/proc/cmdline"
	bootConfigDir    = "/boot"
)

// DetectPreemption reads how the running kernel treats a preempted guard
// program.
func DetectPreemption() Preemption {
	var u unix.Utsname
	_ = unix.Uname(&u)
	release, version := unix.ByteSliceToString(u.Release[:]), unix.ByteSliceToString(u.Version[:])
	var p Preemption
	p.SkipsBusy, p.SkipsBusyFrom = skipsBusyOnce(release)
	p.Model, p.ModelFrom, p.Dynamic = preemptModel(release, version)
	return p
}

// TrampolineSkipsBusyLSM reports whether the running kernel skips an LSM
// program that is already running on the CPU (see Preemption.SkipsBusy).
func TrampolineSkipsBusyLSM() bool {
	var u unix.Utsname
	_ = unix.Uname(&u)
	skips, _ := skipsBusyOnce(unix.ByteSliceToString(u.Release[:]))
	return skips
}

// skipsBusyOnce is skipsBusy, read once: the kernel does not change, and
// kallsyms is long.
var skipsBusyOnce = func() func(string) (bool, string) {
	var (
		once  sync.Once
		skips bool
		from  string
	)
	return func(release string) (bool, string) {
		once.Do(func() { skips, from = skipsBusy(release) })
		return skips, from
	}
}()

// skipsBusy looks for the trampoline's enter functions in kallsyms: from
// 6.2 (and 6.1.54), bpf_trampoline_enter picks one per program; before,
// there is none and every non-sleepable program but struct_ops and
// lsm_cgroup went through the counting __bpf_prog_enter. Without
// kallsyms, the release decides, on the safe side: a 6.1 release string
// (Debian's 6.1.0-57) does not say its patch level, so every 6.1 counts as
// skipping.
func skipsBusy(release string) (bool, string) {
	if f, err := os.Open(kallsymsPath); err == nil {
		defer f.Close()
		var picker, counting bool
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Bytes()
			i := bytes.LastIndexByte(line, ' ')
			if i < 0 {
				continue
			}
			switch string(line[i+1:]) {
			case "bpf_trampoline_enter":
				picker = true
			case "__bpf_prog_enter":
				counting = true
			}
		}
		if sc.Err() == nil && (picker || counting) {
			return !picker, "kallsyms"
		}
	}
	return releaseBefore(release, 6, 2), "release"
}

// releaseBefore reports whether a kernel release (6.1.0-57-amd64) is
// older than major.minor; an unreadable one counts as older.
func releaseBefore(release string, major, minor int) bool {
	var ma, mi int
	if _, err := fmt.Sscanf(release, "%d.%d", &ma, &mi); err != nil {
		return true
	}
	return ma < major || ma == major && mi < minor
}

// preemptModel reads the preemption model: from debugfs when it is there
// ("none voluntary (full)"), else from the kernel's version string
// (PREEMPT_RT, PREEMPT_DYNAMIC, PREEMPT), its preempt= parameter and its
// configuration's default model.
func preemptModel(release, version string) (model, from string, dynamic bool) {
	if b, err := os.ReadFile(preemptDebugPath); err == nil {
		for _, f := range strings.Fields(string(b)) {
			if strings.HasPrefix(f, "(") && strings.HasSuffix(f, ")") {
				return strings.Trim(f, "()"), preemptDebugPath, true
			}
		}
	}
	fields := strings.Fields(version)
	has := func(s string) bool {
		for _, f := range fields {
			if f == s {
				return true
			}
		}
		return false
	}
	switch {
	case has("PREEMPT_RT"):
		return "rt", "uname -v", false
	case has("PREEMPT_DYNAMIC"):
		if b, err := os.ReadFile(cmdlinePath); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if v, ok := strings.CutPrefix(f, "preempt="); ok {
					return v, "uname -v, " + cmdlinePath, true
				}
			}
		}
		cfg := bootConfigDir + "/config-" + release
		if b, err := os.ReadFile(cfg); err == nil {
			for _, m := range []struct{ opt, model string }{
				{"CONFIG_PREEMPT_NONE=y", "none"}, {"CONFIG_PREEMPT_VOLUNTARY=y", "voluntary"},
				{"CONFIG_PREEMPT=y", "full"}, {"CONFIG_PREEMPT_LAZY=y", "lazy"},
			} {
				if bytes.Contains(b, []byte("\n"+m.opt+"\n")) {
					return m.model, "uname -v, " + cfg, true
				}
			}
		}
		return "", "uname -v (PREEMPT_DYNAMIC, boot default unknown)", true
	case has("PREEMPT_LAZY"):
		return "lazy", "uname -v", false
	case has("PREEMPT"):
		return "full", "uname -v", false
	}
	return "voluntary", "uname -v (no PREEMPT)", false
}

// ProgramMisses is one guard program's count of calls the kernel skipped.
type ProgramMisses struct {
	Hook   string `json:"hook"`
	ProgID uint32 `json:"prog_id"`
	Misses uint64 `json:"misses"`
}

// errNoPrograms: this process holds no descriptor to the guard's programs
// and may not open them (sealed).
var errNoPrograms = errors.New("the guard's programs cannot be read: the seal refuses descriptors to them, and this process did not open them before the seal")

// RecursionMisses reads each guard program's recursion_misses: the calls
// the kernel skipped because the program was already running on that CPU
// (before 6.2: any such call of a module hook admitted the load
// undecided). It uses the program descriptors the guard holds; on an
// unsealed guard it opens those it lacks.
func (g *Guard) RecursionMisses() ([]ProgramMisses, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.recursionMissesLocked()
}

func (g *Guard) recursionMissesLocked() ([]ProgramMisses, error) {
	if err := g.openProgramsLocked(); err != nil {
		return nil, err
	}
	var out []ProgramMisses
	for _, name := range hooks {
		p := g.progs[name]
		if p == nil {
			continue
		}
		st, err := p.Stats()
		if err != nil {
			return nil, fmt.Errorf("guard program %s: %w", name, err)
		}
		var id ebpf.ProgramID
		if info, err := p.Info(); err == nil {
			id, _ = info.ID()
		}
		out = append(out, ProgramMisses{Hook: name, ProgID: uint32(id), Misses: st.RecursionMisses})
	}
	return out, nil
}

// openProgramsLocked opens the programs of the guard's links that it holds
// no descriptor to, when it may: not once sealed, where each try would be
// refused and reported as tampering.
func (g *Guard) openProgramsLocked() error {
	if g.progs == nil {
		g.progs = map[string]*ebpf.Program{}
	}
	var want []string
	for _, name := range hooks {
		if _, ok := g.links[name]; ok && g.progs[name] == nil {
			want = append(want, name)
		}
	}
	if len(want) == 0 {
		return nil
	}
	sealed, err := g.sealedLocked()
	if err != nil {
		return err
	}
	if sealed {
		if len(g.progs) == 0 {
			return errNoPrograms
		}
		return nil // read those held
	}
	for _, name := range want {
		info, err := g.links[name].Info()
		if err != nil {
			return fmt.Errorf("guard link %s: %w", name, err)
		}
		p, err := ebpf.NewProgramFromID(info.Program)
		if err != nil {
			return fmt.Errorf("open guard program %s (%d): %w", name, info.Program, err)
		}
		g.progs[name] = p
	}
	return nil
}

// SumMisses adds up the misses.
func SumMisses(ms []ProgramMisses) uint64 {
	var n uint64
	for _, m := range ms {
		n += m.Misses
	}
	return n
}

// missesFromFdinfo reads the recursion misses of the guard's programs
// (links) from the fdinfo of the descriptors process pid holds to them.
func missesFromFdinfo(pid uint32, links []LinkStatus) ([]ProgramMisses, error) {
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%w; reading the daemon's (pid %d): %w", errNoPrograms, pid, err)
	}
	found := map[uint32]uint64{}
	for _, e := range ents {
		b, err := os.ReadFile(dir + "/" + e.Name())
		if err != nil {
			continue
		}
		var id uint32
		var misses uint64
		var haveID, haveMisses bool
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			v = strings.TrimSpace(v)
			switch k {
			case "prog_id":
				_, err := fmt.Sscan(v, &id)
				haveID = err == nil
			case "recursion_misses":
				_, err := fmt.Sscan(v, &misses)
				haveMisses = err == nil
			}
		}
		if haveID && haveMisses {
			found[id] = misses
		}
	}
	var out []ProgramMisses
	for _, l := range links {
		n, ok := found[l.ProgID]
		if !ok {
			return nil, fmt.Errorf("%w; the daemon (pid %d) holds no descriptor to program %d (%s)", errNoPrograms, pid, l.ProgID, l.Hook)
		}
		out = append(out, ProgramMisses{Hook: l.Hook, ProgID: l.ProgID, Misses: n})
	}
	return out, nil
}
