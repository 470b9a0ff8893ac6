//go:build linux

package enforcer_test

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/enforcer"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/vmtest"
	"github.com/kmodguard/kmodguard/lsm"
)

// preemptModelPath is where a PREEMPT_DYNAMIC kernel shows, and lets root
// change, its preemption model at run time ("none voluntary (full)").
const preemptModelPath = "/sys/kernel/debug/sched/preempt"

// setPreemptModel switches the running kernel to model (none, voluntary,
// full) and returns the model it was in.
func setPreemptModel(t *testing.T, model string) string {
	t.Helper()
	b, err := os.ReadFile(preemptModelPath)
	if err != nil {
		t.Fatalf("read the preemption model: %v (a PREEMPT_DYNAMIC kernel with debugfs is needed)", err)
	}
	was := ""
	for _, f := range strings.Fields(string(b)) {
		if strings.HasPrefix(f, "(") {
			was = strings.Trim(f, "()")
		}
	}
	if err := os.WriteFile(preemptModelPath, []byte(model), 0); err != nil {
		t.Fatalf("switch the preemption model to %s: %v", model, err)
	}
	return was
}

// guardMisses reads the kernel's recursion_misses of each guard program:
// the times the trampoline skipped it because it was already running on
// that CPU.
func guardMisses(t *testing.T, st lsm.Status) map[string]uint64 {
	t.Helper()
	out := map[string]uint64{}
	for _, l := range st.Links {
		p, err := ebpf.NewProgramFromID(ebpf.ProgramID(l.ProgID))
		if err != nil {
			t.Fatalf("open guard program %d (%s): %v", l.ProgID, l.Hook, err)
		}
		st, err := p.Stats()
		p.Close()
		if err != nil {
			t.Fatalf("guard program %d (%s) stats: %v", l.ProgID, l.Hook, err)
		}
		out[l.Hook] = st.RecursionMisses
	}
	return out
}

// onCPU pins the calling goroutine's thread to cpu; fifo > 0 also makes
// it SCHED_FIFO at that priority. The goroutine stays on that thread.
func onCPU(cpu, fifo int) error {
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pin to CPU %d: %w", cpu, err)
	}
	if fifo > 0 {
		attr := unix.SchedAttr{Size: uint32(unsafe.Sizeof(unix.SchedAttr{})), Policy: unix.SCHED_FIFO, Priority: uint32(fifo)}
		if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
			return fmt.Errorf("SCHED_FIFO: %w", err)
		}
	}
	return nil
}

// preemptRace is one round of the attack: a normal thread loads big (the
// guard hashes it for a while), and a SCHED_FIFO thread on the same CPU
// wakes delay later and loads small.
type preemptRace struct {
	bigStart, bigEnd     time.Time
	smallStart, smallEnd time.Time
	bigErr, smallErr     error
}

// inside reports whether the small load ran while the big one was in the
// kernel: it started after the big one and ended before it.
func (r preemptRace) inside() bool {
	return r.smallStart.After(r.bigStart) && r.smallEnd.Before(r.bigEnd)
}

// TestGuestPreemptSkipsGuard is issue 11 part 3. From 5.13 to 6.1.53, the
// BPF trampoline runs a non-sleepable LSM program only if it is not
// already running on that CPU (prog->active, __bpf_prog_enter): a second
// call is skipped, counted in the program's recursion_misses, and the hook
// returns 0, allowed. migrate_disable() keeps the guard on its CPU but
// lets it be preempted on a preempt=full kernel, so a load that preempts
// the guard while it hashes a large image on the same CPU would never be
// decided. 6.2 (commit "bpf: Remove prog->active check for bpf_lsm and
// bpf_iter") runs LSM programs without that check, and the preempting load
// is decided in a scratch slot of its own. 6.1.54 has that change too, and
// so Debian's 6.1.0-57 (6.1.192; bpf_trampoline_enter in kallsyms): on both
// Debian kernels the preempting loads are refused, which this test shows;
// on a kernel that skips (lsm.TrampolineSkipsBusyLSM) it wants the bypass
// shown and every miss reported.
//
// The guest switches to preempt=full at run time (what root can do on any
// PREEMPT_DYNAMIC kernel, Debian's 6.1 and 6.12 among them), pins both
// threads to one CPU and races for a bounded time (20 s, 40 attempts).
// The enforcer must report every skip the kernel counted (status at once,
// reports at its next check).
func TestGuestPreemptSkipsGuard(t *testing.T) {
	vmtest.RequireGuest(t)
	dummy, veth := readFixture(t, "dummy"), readFixture(t, "veth")
	exposed := lsm.TrampolineSkipsBusyLSM()
	t.Logf("kernel %s: trampoline skips a running LSM program: %v", vmtest.Release(), exposed)

	if _, err := os.Stat(preemptModelPath); err != nil {
		// No run-time switch (not PREEMPT_DYNAMIC, or no debugfs): race
		// with the kernel's own model, when it preempts at all.
		if p := lsm.DetectPreemption(); !p.Preemptible() {
			t.Logf("NOT RUN on %s: no %s to switch to preempt=full, and the kernel's own %v does not preempt a guard program: the race cannot happen here",
				vmtest.Release(), preemptModelPath, p)
			return
		}
	} else {
		was := setPreemptModel(t, "full")
		t.Cleanup(func() { setPreemptModel(t, was) })
		t.Logf("preemption model: was %s, now full", was)
	}

	pins := pinDir(t)
	enf := start(t, list(t, allowlist.ModeEnforce, entry{"veth", []string{sum(veth)}}), enforcer.Config{PinDir: pins})
	st, err := enf.Status()
	if err != nil {
		t.Fatal(err)
	}
	before := guardMisses(t, st)
	// Decisions are not looked at here: drain them so that the reader
	// never waits on this test, and count the skips the enforcer reports.
	stop := make(chan struct{})
	defer close(stop)
	reported := make(chan uint64, 64)
	go func() {
		for {
			select {
			case m := <-enf.Decisions():
				if r, ok := m.(enforcer.Report); ok && r.Kind == event.ReportSkipped {
					reported <- r.Count
				}
			case <-stop:
				return
			}
		}
	}()

	if err := initModule(dummy); !errors.Is(err, unix.EPERM) {
		t.Fatalf("init_module(unlisted dummy), no race: %v, want EPERM", err)
	}

	cpu := runtime.NumCPU() - 1
	bigGo, bigDone := make(chan []byte), make(chan preemptRace)
	go func() {
		if err := onCPU(cpu, 0); err != nil {
			bigDone <- preemptRace{bigErr: err}
			return
		}
		for img := range bigGo {
			var r preemptRace
			r.bigStart = time.Now()
			r.bigErr = initModule(img)
			r.bigEnd = time.Now()
			bigDone <- r
		}
	}()
	defer close(bigGo)

	// A large unlisted image: dummy with zeros after it. The guard hashes
	// all of it before it refuses it; the image grows until that takes
	// long enough for a timer to land inside.
	var big []byte
	var alone time.Duration
	for size := 8 << 20; size <= 64<<20; size *= 2 {
		big = append(bytes.Clone(dummy), make([]byte, size-len(dummy))...)
		bigGo <- big
		r := <-bigDone
		if !errors.Is(r.bigErr, unix.EPERM) {
			t.Fatalf("init_module(%d MiB unlisted image): %v, want EPERM", size>>20, r.bigErr)
		}
		alone = r.bigEnd.Sub(r.bigStart)
		t.Logf("a %d MiB image takes %v to refuse", size>>20, alone)
		if alone >= 150*time.Millisecond {
			break
		}
	}

	smallGo, smallDone := make(chan time.Duration), make(chan preemptRace)
	go func() {
		if err := onCPU(cpu, 50); err != nil {
			smallDone <- preemptRace{smallErr: err}
			return
		}
		for delay := range smallGo {
			var r preemptRace
			bigGo <- big
			ts := unix.NsecToTimespec(delay.Nanoseconds())
			for unix.Nanosleep(&ts, &ts) == unix.EINTR {
			}
			r.smallStart = time.Now()
			r.smallErr = initModule(dummy)
			r.smallEnd = time.Now()
			smallDone <- r
		}
	}()
	defer close(smallGo)

	var attempts, inside, bypassed, refused int
	deadline := time.Now().Add(20 * time.Second)
	for attempts < 40 && time.Now().Before(deadline) && bypassed < 5 {
		// From a tenth to nine tenths into the big load, in turn.
		delay := alone * time.Duration(1+attempts%9) / 10
		smallGo <- delay
		r := <-smallDone
		b := <-bigDone
		r.bigStart, r.bigEnd, r.bigErr = b.bigStart, b.bigEnd, b.bigErr
		attempts++
		if r.inside() {
			inside++
		}
		switch {
		case r.smallErr == nil:
			bypassed++
			t.Logf("attempt %d (timer %v): the unlisted dummy LOADED (inside the big load: %v)", attempts, delay, r.inside())
			unload(t, "dummy")
		case errors.Is(r.smallErr, unix.EPERM):
			refused++
		default:
			t.Fatalf("attempt %d: init_module(dummy): %v", attempts, r.smallErr)
		}
		if !errors.Is(r.bigErr, unix.EPERM) {
			t.Fatalf("attempt %d: init_module(big image): %v, want EPERM", attempts, r.bigErr)
		}
	}
	st, err = enf.Status()
	if err != nil {
		t.Fatal(err)
	}
	after := guardMisses(t, st)
	var misses uint64
	for hook, n := range after {
		if d := n - before[hook]; d != 0 {
			t.Logf("guard program %s: %d recursion misses", hook, d)
			misses += d
		}
	}
	t.Logf("%s, preempt=full, one CPU: %d attempts in the time box, %d with the unlisted load inside the big one, %d refused, %d LOADED (bypass), %d recursion misses",
		vmtest.Release(), attempts, inside, refused, bypassed, misses)
	if inside == 0 {
		t.Fatalf("no preempting load landed inside the big load in %d attempts: the race did not happen, nothing was shown", attempts)
	}
	if exposed {
		if bypassed == 0 || misses == 0 {
			t.Errorf("%s skips a running LSM program, yet %d of %d preempting loads got past the guard with %d misses", vmtest.Release(), bypassed, inside, misses)
		}
	} else if bypassed != 0 || misses != 0 {
		t.Errorf("%s: %d unlisted loads got past the guard, %d recursion misses; want none", vmtest.Release(), bypassed, misses)
	}
	if uint64(bypassed) != misses {
		t.Errorf("%d bypasses but %d recursion misses: each skipped decision should be one miss", bypassed, misses)
	}

	// The enforcer reports every miss: its status at once, its reports
	// at its next check (every 10 s).
	var total uint64
	for _, n := range after {
		total += n
	}
	if st.RecursionMissesError != "" || st.RecursionMisses != total {
		t.Errorf("status: %d recursion misses (%q), the kernel counts %d", st.RecursionMisses, st.RecursionMissesError, total)
	}
	if st.Preemption.Exposed() != exposed {
		t.Errorf("status: preemption %v, exposed %v; want exposed %v (preempt=full)", st.Preemption, st.Preemption.Exposed(), exposed)
	}
	var got uint64
	timeout := time.After(15 * time.Second)
	for got < total {
		select {
		case n := <-reported:
			got += n
		case <-timeout:
			t.Fatalf("the enforcer reported %d skipped calls within 15 s; the kernel counts %d", got, total)
		}
	}
	select {
	case n := <-reported:
		got += n
	default:
	}
	if got != total {
		t.Errorf("the enforcer reported %d skipped calls; the kernel counts %d", got, total)
	}
	t.Logf("the enforcer reported %d skipped calls, its status %d (%s)", got, st.RecursionMisses, st.Preemption)
}
