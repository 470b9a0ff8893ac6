//go:build linux

package plugin

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	ebpflink "github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/internal/vmtest"
)

// The guest half of plugin/falcovm's TestVM: Falco's view of the real guard.
// In the QEMU guest (a Debian kernel with BPF LSM and module loading) the
// plugin runs its live sensor and launches the real kmodguard binary as its
// enforcer companion, and the tests drive it as Falco does: Open, NextBatch,
// Extract. This binary is built with cgo (the plugin SDK needs it) by
// falcovm, which ships it to the guest.

// openGuestPlugin starts the plugin with the guard enforcing a, and waits
// until the companion streams decisions.
func openGuestPlugin(t *testing.T, a *allowlist.Allowlist) (*Plugin, *liveInstance) {
	t.Helper()
	vmtest.RequireGuest(t)
	kg := vmtest.Binary(t, "kmodguard")
	p := newPlugin(t, fmt.Sprintf(`{"allowlist": %q, "log_level": "debug", "enforcer": {"enabled": true, "path": %q}}`, saveAllowlist(t, a), kg))
	in, err := p.Open("")
	if err != nil {
		t.Fatalf("open the live source: %v", err)
	}
	inst := in.(*liveInstance)
	t.Cleanup(inst.Close)
	src, ok := inst.src.(*companionSource)
	if !ok {
		t.Fatalf("the live source is %T, not joined with the companion", inst.src)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		c, err := src.status()
		if c {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the companion did not connect: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return p, inst
}

func guestFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(vmtest.Fixture(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func guestAllowlist(t *testing.T, name string, img []byte) *allowlist.Allowlist {
	t.Helper()
	a := allowlist.New("guest", allowlist.ModeEnforce)
	if _, err := a.Add(allowlist.Entry{Name: name, SHA256: []string{hexDigest(img)}}); err != nil {
		t.Fatal(err)
	}
	return a
}

func initModule(img []byte) error { return unix.InitModule(img, "") }

func deleteModule(t *testing.T, name string) {
	t.Helper()
	if err := unix.DeleteModule(name, unix.O_NONBLOCK); err != nil {
		t.Fatalf("delete_module %s: %v", name, err)
	}
}

// TestGuestFalcoBlocked: Falco receives the event of a blocked init_module
// with kmod.verdict = blocked, joined with the sensor's view; an allowed
// load says allowed.
func TestGuestFalcoBlocked(t *testing.T) {
	dummy, veth := guestFixture(t, "dummy"), guestFixture(t, "veth")
	p, inst := openGuestPlugin(t, guestAllowlist(t, "dummy", dummy))

	if err := initModule(veth); !errors.Is(err, unix.EPERM) {
		t.Fatalf("init_module(veth) = %v, want EPERM from the guard", err)
	}
	if err := initModule(dummy); err != nil {
		t.Fatalf("init_module(dummy) = %v, want success", err)
	}
	deleteModule(t, "dummy")

	want := func(e map[string]any, name, verdict string) bool {
		return e["kmod.syscall"] == "init_module" && e["kmod.name"] == name && e["kmod.verdict"] == verdict
	}
	evts := falcoLoop(t, p, inst, time.Minute, func(evts []map[string]any) bool {
		var blocked, allowed bool
		for _, e := range evts {
			blocked = blocked || want(e, "veth", "blocked")
			allowed = allowed || want(e, "dummy", "allowed")
		}
		return blocked && allowed
	})
	for _, e := range evts {
		t.Logf("event: syscall=%v name=%v res=%v verdict=%v allowed=%v toctou=%v", e["kmod.syscall"], e["kmod.name"],
			e["kmod.res"], e["kmod.verdict"], e["kmod.allowed"], e["kmod.toctou"])
		switch {
		case want(e, "veth", "blocked"):
			if e["kmod.res"] != "EPERM" || e["kmod.toctou"] != false || e["kmod.guard_sha256"] != hexDigest(veth) || e["kmod.allowed"] != false ||
				e["kmod.guard_reason"] != "not on the allowlist" {
				t.Errorf("blocked load: %v", e)
			}
		case want(e, "dummy", "allowed"):
			if e["kmod.res"] != "SUCCESS" || e["kmod.guard_sha256"] != hexDigest(dummy) || e["kmod.allowed"] != true {
				t.Errorf("allowed load: %v", e)
			}
		}
	}

	// Falco's metrics (plugin_get_metrics reads the same values): the
	// sensor saw the three syscalls, the companion sent both decisions,
	// and every event Falco got is counted.
	m := metricValues(p)
	t.Logf("metrics: %v", m)
	if m["sensor_events"] < 3 || m["guard_decisions"] < 2 || m["companion_connected"] != 1 ||
		m["allowlist_entries"] != 1 || m["events_delivered"] != uint64(len(evts)) {
		t.Errorf("metrics %v: want sensor_events >= 3, guard_decisions >= 2, companion_connected 1, allowlist_entries 1, events_delivered %d",
			m, len(evts))
	}
}

// TestGuestFalcoOverride: a program attached before the guard that can
// decide loads before it (fmod_ret on security_kernel_post_read_file) is
// reported to Falco as a guard event the rule "Kernel Module Guard
// Overridden" matches, naming the program's link.
func TestGuestFalcoOverride(t *testing.T) {
	vmtest.RequireGuest(t)
	dummy := guestFixture(t, "dummy")
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "kgtest_override", Type: ebpf.Tracing, AttachType: ebpf.AttachModifyReturn,
		AttachTo: "security_kernel_post_read_file", License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	l, err := ebpflink.AttachTracing(ebpflink.TracingOptions{Program: prog, AttachType: ebpf.AttachModifyReturn})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	linkRef := fmt.Sprintf("link %d) on security_kernel_post_read_file", info.ID)

	p, inst := openGuestPlugin(t, guestAllowlist(t, "dummy", dummy))
	isOverride := func(e map[string]any) bool {
		r, _ := e["kmod.guard_reason"].(string)
		return e["kmod.syscall"] == "guard" && e["kmod.verdict"] == "none" && strings.HasPrefix(r, "override: ") && strings.Contains(r, linkRef)
	}
	evts := falcoLoop(t, p, inst, time.Minute, func(evts []map[string]any) bool {
		return slices.ContainsFunc(evts, isOverride)
	})
	for _, e := range evts {
		if isOverride(e) {
			t.Logf("Falco event: syscall=%v verdict=%v reason=%v", e["kmod.syscall"], e["kmod.verdict"], e["kmod.guard_reason"])
		}
	}
}

// modinfoByte finds a byte of .modinfo's author= value: changing it makes
// another image that still loads (the fixture has no signature).
func modinfoByte(t *testing.T, img []byte) int {
	t.Helper()
	i := bytes.Index(img, []byte("\x00author="))
	if i < 0 {
		i = bytes.Index(img, []byte("\x00license="))
	}
	if i < 0 {
		t.Fatal("no author= or license= in .modinfo")
	}
	return i + bytes.IndexByte(img[i:], '=') + 1
}

// TestGuestFalcoTOCTOU: a thread rewrites the init_module buffer while the
// syscall runs; when the kernel's copy (which the guard hashes) differs from
// the copy the sensor took of the user's buffer, Falco sees kmod.toctou.
func TestGuestFalcoTOCTOU(t *testing.T) {
	img := guestFixture(t, "dummy_nosig")
	off := modinfoByte(t, img)
	mod := bytes.Clone(img)
	mod[off] ^= 0x20 // change the case of one letter of the author's name
	p, inst := openGuestPlugin(t, guestAllowlist(t, "dummy", img))

	// The rewriting thread swaps the aligned word that holds the byte
	// between its two values, with atomic stores (plain stores in a row
	// would be merged by the compiler).
	buf := bytes.Clone(img)
	word := off &^ 3
	p32 := (*uint32)(unsafe.Pointer(&buf[word]))
	wImg := binary.NativeEndian.Uint32(img[word:])
	wMod := binary.NativeEndian.Uint32(mod[word:])
	var stop atomic.Bool
	started, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		close(started)
		for !stop.Load() {
			atomic.StoreUint32(p32, wMod)
			atomic.StoreUint32(p32, wImg)
		}
	}()
	defer func() { stop.Store(true); <-done }()
	<-started
	// The rewrite must run alongside a syscall to matter: count how often
	// the word changes within 50µs, the order of a module load's window
	// here between the sensor's copy and the kernel's.
	changed := 0
	for i := 0; i < 1000; i++ {
		a := atomic.LoadUint32(p32)
		for t0 := time.Now(); time.Since(t0) < 50*time.Microsecond; {
		}
		if atomic.LoadUint32(p32) != a {
			changed++
		}
	}
	t.Logf("the word changed within 50µs in %d of 1000 samples (GOMAXPROCS %d)", changed, runtime.GOMAXPROCS(0))

	var seen []map[string]any
	defer func() {
		for i, e := range seen[:min(len(seen), 6)] {
			t.Logf("event %d: syscall=%v res=%v sha256=%v guard_sha256=%v verdict=%v truncated=%v toctou=%v", i, e["kmod.syscall"],
				e["kmod.res"], e["kmod.sha256"], e["kmod.guard_sha256"], e["kmod.verdict"], e["kmod.truncated"], e["kmod.toctou"])
		}
	}()
	deadline := time.Now().Add(time.Minute)
	for i := 0; time.Now().Before(deadline); i++ {
		if err := initModule(buf); err == nil {
			deleteModule(t, "dummy")
		} else if !errors.Is(err, unix.EPERM) {
			t.Fatalf("init_module: %v", err)
		}
		seen = append(seen, falcoLoop(t, p, inst, time.Minute, func(evts []map[string]any) bool {
			for _, e := range evts {
				if e["kmod.syscall"] == "init_module" && e["kmod.verdict"] != nil {
					return true
				}
			}
			return false
		})...)
		for _, e := range seen {
			if e["kmod.toctou"] != true {
				continue
			}
			t.Logf("call %d: sensor's digest %v, guard's digest %v, verdict %v", i, e["kmod.sha256"], e["kmod.guard_sha256"], e["kmod.verdict"])
			if e["kmod.sha256"] == e["kmod.guard_sha256"] {
				t.Errorf("toctou with equal digests: %v", e)
			}
			want := "blocked"
			if e["kmod.guard_sha256"] == hexDigest(img) {
				want = "allowed"
			}
			if e["kmod.verdict"] != want {
				t.Errorf("kernel copy %v decided %v, want %s", e["kmod.guard_sha256"], e["kmod.verdict"], want)
			}
			return
		}
	}
	// Under QEMU's TCG the vCPUs seldom run at the same time (the count
	// above), so a minute of loads may see no swap win the race. Every
	// joined load above was still checked for agreement.
	for _, e := range seen {
		if e["kmod.syscall"] == "init_module" && e["kmod.sha256"] != e["kmod.guard_sha256"] && e["kmod.verdict"] != "none" {
			t.Fatalf("digests differ but kmod.toctou is not set: %v", e)
		}
	}
	t.Skipf("no TOCTOU won in a minute of loads (%d events) with the word changing within 50µs in %d of 1000 samples: "+
		"needs CPUs that run the rewriting thread during the syscall (the join's TOCTOU logic is tested on the host)", len(seen), changed)
}
