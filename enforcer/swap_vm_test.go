//go:build linux

package enforcer_test

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/enforcer"
	"github.com/kmodguard/kmodguard/internal/vmtest"
	"github.com/kmodguard/kmodguard/lsm"
)

// TestVMDescriptorSwap boots each kernel once more for the descriptor-swap
// attack on a sealed guard: the guard stays sealed until reboot, so the
// attack gets a guest of its own.
func TestVMDescriptorSwap(t *testing.T) {
	spec := vmSpec()
	spec.Run = "^TestSwapGuest"
	vmtest.Run(t, spec)
}

// swapFor is how long each race runs on each kernel.
const swapFor = 5 * time.Second

// TestSwapGuestSealedMaps races the guard's bpf hook. The hook finds the
// map or link a bpf(2) command is about by looking the descriptor number
// up in the caller's fd table; the syscall looks it up again after the
// hook. One thread flips that number between a harmless object and a
// descriptor to the guard's (held from before the seal, as the daemon
// holds them) while another issues the command: when the flip falls
// between the two lookups, the hook judges the harmless object and the
// syscall acts on the guard's.
//
// Against a map write, the seal's freeze is what holds: the kernel refuses
// a write to a frozen map whatever descriptor it comes through. The race
// counts the calls that got past the hook (EPERM without a refusal of the
// hook's) beside the writes that landed (which must be none; on a guard
// that does not freeze its maps, each call past the hook is one). Against
// a link detach, the kernel has no detach for the guard's (LSM tracing)
// links: a call past the hook gets EOPNOTSUPP, never a detach.
func TestSwapGuestSealedMaps(t *testing.T) {
	vmtest.RequireGuest(t)
	dummy, veth := readFixture(t, "dummy"), readFixture(t, "veth")
	pins := lsm.DefaultPinDir
	enf := start(t, list(t, allowlist.ModeEnforce, entry{"dummy", []string{sum(dummy)}}), enforcer.Config{PinDir: pins})

	// Writable descriptors from before the seal, as the daemon keeps them.
	cfgRW, err := openPinnedMap(filepath.Join(pins, "config"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer cfgRW.Close()
	var innerID uint32
	policyRW, err := openPinnedMap(filepath.Join(pins, "policy"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer policyRW.Close()
	if err := policyRW.Lookup(uint32(0), &innerID); err != nil {
		t.Fatal(err)
	}
	innerRW, err := ebpf.NewMapFromID(ebpf.MapID(innerID))
	if err != nil {
		t.Fatal(err)
	}
	defer innerRW.Close()
	// The policy in force is frozen as it is built, sealed or not: a write
	// through a descriptor to it fails in the kernel, with no hook of the
	// guard's active yet.
	var k, v [256]byte
	if err := writeRaw(innerRW.FD(), k[:innerRW.KeySize()], v[:innerRW.ValueSize()], 0); !errors.Is(err, unix.EPERM) {
		t.Fatalf("write to the policy in force before the seal = %v, want EPERM (frozen)", err)
	}
	maps := guardMaps(t, pins)
	l, err := link.LoadPinnedLink(filepath.Join(pins, "link_kg_post_load_data"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	lfd, ok := l.(interface{ FD() int })
	if !ok {
		t.Fatalf("link %T has no descriptor to race with", l)
	}

	if err := enf.Seal(); err != nil {
		t.Fatal(err)
	}
	// Every map the guard's programs use is frozen, the ring buffer aside
	// (the daemon maps it writable to consume it).
	for _, m := range append(maps, mapRef{id: ebpf.MapID(innerID), name: "policy in force"}) {
		ro, err := mapFromIDReadOnly(m.id)
		if err != nil {
			t.Fatal(err)
		}
		info, err := ro.Info()
		ro.Close()
		if err != nil {
			t.Fatal(err)
		}
		if want := m.name != "kg_events"; info.Frozen() != want {
			t.Errorf("map %s (%d) under seal: frozen %v, want %v", m.name, m.id, info.Frozen(), want)
		}
	}

	// The decisions the refusals make are drained while the races run.
	done := make(chan struct{})
	var drained sync.WaitGroup
	drained.Go(func() {
		for {
			select {
			case <-enf.Decisions():
			case <-done:
				return
			}
		}
	})
	defer func() { close(done); drained.Wait() }()

	// A harmless map of its own: a hash map the update cannot find its
	// key in (BPF_EXIST), so that a call that reached it says ENOENT.
	benign, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: cfgRW.ValueSize(), MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer benign.Close()
	// What the attack writes is the config as it is, sealed: a write that
	// landed would show, and would change nothing for the tests after.
	cfg := make([]byte, cfgRW.ValueSize())
	if err := cfgRW.Lookup(uint32(0), cfg); err != nil {
		t.Fatal(err)
	}
	var key [4]byte
	blocked := func() uint64 {
		st, err := enf.Status()
		if err != nil {
			t.Fatal(err)
		}
		return st.Blocked
	}

	before := blocked()
	got := swapRace(t, benign.FD(), cfgRW.FD(), func(fd int) unix.Errno {
		return errnoOf(writeRaw(fd, key[:], cfg, 2 /* BPF_EXIST */))
	})
	hook := blocked() - before
	t.Logf("map update, %v: %s; refused by the hook %d; past the hook %d", swapFor, got, hook, int64(got[unix.EPERM])-int64(hook))
	if got[0] != 0 {
		t.Errorf("%d writes to the sealed config landed through a swapped descriptor", got[0])
	}
	if got[unix.EPERM] == 0 || got[unix.ENOENT] == 0 {
		t.Errorf("the race did not reach both maps (%s): it tested nothing", got)
	}
	for errno := range got {
		if errno != 0 && errno != unix.EPERM && errno != unix.ENOENT {
			t.Errorf("map update through a swapped descriptor: unexpected %v", errno)
		}
	}

	before = blocked()
	got = swapRace(t, benign.FD(), lfd.FD(), func(fd int) unix.Errno {
		attr := struct{ linkFD uint32 }{uint32(fd)}
		_, _, e := unix.Syscall(unix.SYS_BPF, 34 /* BPF_LINK_DETACH */, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		return e
	})
	hook = blocked() - before
	t.Logf("link detach, %v: %s; refused by the hook %d", swapFor, got, hook)
	if got[0] != 0 {
		t.Errorf("%d detaches of the guard's link through a swapped descriptor succeeded", got[0])
	}
	if got[unix.EPERM] == 0 || got[unix.EINVAL] == 0 {
		t.Errorf("the race did not reach both objects (%s): it tested nothing", got)
	}
	if n := got[unix.EOPNOTSUPP]; n > 0 {
		t.Logf("link detach: %d calls got past the hook; the kernel has no detach for LSM links (EOPNOTSUPP)", n)
	}

	// The guard is whole: sealed, and enforcing.
	if st, err := enf.Status(); err != nil || !st.Sealed {
		t.Fatalf("status after the races: %+v, %v", st, err)
	}
	if err := initModule(veth); !errors.Is(err, unix.EPERM) {
		t.Fatalf("init_module(veth) after the races = %v, want EPERM", err)
	}
}

// swapRace runs call on one descriptor number for swapFor while another
// thread points that number at benign and at stolen in turn, and counts
// the results by errno (0 for success).
func swapRace(t *testing.T, benign, stolen int, call func(fd int) unix.Errno) errnoCounts {
	t.Helper()
	slot, err := unix.Dup(benign)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(slot)
	var stop atomic.Bool
	var flipper sync.WaitGroup
	flipper.Go(func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for !stop.Load() {
			unix.Dup3(stolen, slot, unix.O_CLOEXEC)
			unix.Dup3(benign, slot, unix.O_CLOEXEC)
		}
	})
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	got := errnoCounts{}
	for deadline, i := time.Now().Add(swapFor), 0; i%256 != 0 || time.Now().Before(deadline); i++ {
		got[call(slot)]++
	}
	stop.Store(true)
	flipper.Wait()
	return got
}

type errnoCounts map[unix.Errno]int

func (c errnoCounts) String() string {
	var parts []string
	for e, n := range c {
		name := "ok"
		if e != 0 {
			name = unix.ErrnoName(e)
		}
		parts = append(parts, fmt.Sprintf("%s %d", name, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// writeRaw is BPF_MAP_UPDATE_ELEM on fd with the flags, straight through
// the syscall (no library retry or fd bookkeeping in between).
func writeRaw(fd int, key, value []byte, flags uint64) error {
	attr := struct {
		fd         uint32
		_          uint32
		key, value uint64
		flags      uint64
	}{fd: uint32(fd), key: uint64(uintptr(unsafe.Pointer(&key[0]))), value: uint64(uintptr(unsafe.Pointer(&value[0]))), flags: flags}
	_, _, e := unix.Syscall(unix.SYS_BPF, 2 /* BPF_MAP_UPDATE_ELEM */, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(key)
	runtime.KeepAlive(value)
	if e != 0 {
		return e
	}
	return nil
}

func errnoOf(err error) unix.Errno {
	var e unix.Errno
	if err == nil || !errors.As(err, &e) {
		return 0
	}
	return e
}
