//go:build linux

package enforcer_test

import (
	"errors"
	"os"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/enforcer"
	"github.com/kmodguard/kmodguard/internal/vmtest"
	"github.com/kmodguard/kmodguard/lsm"
)

// TestVMBench boots each kernel and runs BenchmarkGuestModuleLoad there:
// module load latency with the guard against without it, side by side in
// one run. It is not part of `make vmtest`; `make bench` runs it
// (KMODGUARD_VMBENCH=1).
func TestVMBench(t *testing.T) {
	if os.Getenv("KMODGUARD_VMBENCH") != "1" {
		t.Skip("guest benchmark: set KMODGUARD_VMBENCH=1 (make bench)")
	}
	results := vmtest.Run(t, vmtest.Spec{
		Modules: []string{"dummy", "veth"},
		Run:     "^TestGuestBenchReady$",
		Args:    []string{"-test.bench=^BenchmarkGuestModuleLoad$", "-test.benchtime=100x"},
		Timeout: 15 * time.Minute,
	})
	vmtest.LogLines(t, results, `BenchmarkGuestModuleLoad/\S+.*`)
}

// TestGuestBenchReady checks what the benchmark needs, so that a guest run
// of the benchmark alone has a test verdict.
func TestGuestBenchReady(t *testing.T) {
	vmtest.RequireGuest(t)
	if err := lsm.Supported(); err != nil {
		t.Fatal(err)
	}
	readFixture(t, "dummy")
	readFixture(t, "veth")
}

// BenchmarkGuestModuleLoad measures init_module + delete_module cycles of
// a real module without the guard and with it (the module listed by
// digest), alternating blocks of 10 cycles so that drift hits both sides.
// Each block starts once the machine has settled (settle) and with one
// untimed cycle: attaching or detaching the guard rewrites kernel text (its
// trampolines), and an emulated guest (QEMU's TCG) translates the load path
// afresh after such a write, a cost a real CPU does not pay and that would
// land on whichever side ran first.
//
// It reports, for each side, the median cycle in wall time and in the
// loading thread's CPU time, and their ratios (ratio, cpu-ratio); and, from
// the kernel's BPF run-time statistics, the time the guard's init_module
// hook itself took per load and what that adds to the median load without
// it (hook-ratio). In an emulated guest a cycle's wall time moves in steps
// of the timer tick (4 ms at Debian's HZ=250): the cycle waits for ticks,
// so veth's takes 28 or 32 or 36 ms, and a hook of 2.5 ms adds either
// nothing or a whole tick. The CPU time is free of those steps and of the
// guest's other threads (the host stalling the emulated CPU still counts),
// and it counts everything the guard makes the loading thread do.
func BenchmarkGuestModuleLoad(b *testing.B) {
	vmtest.RequireGuest(b)
	for _, name := range []string{"dummy", "veth"} {
		b.Run(name, func(b *testing.B) {
			img, err := os.ReadFile(vmtest.Fixture(b, name))
			if err != nil {
				b.Fatal(err)
			}
			al := allowlist.New("bench", allowlist.ModeEnforce)
			if _, err := al.Add(allowlist.Entry{Name: name, SHA256: []string{sum(img)}}); err != nil {
				b.Fatal(err)
			}
			const block = 10
			const pins = "/sys/fs/bpf/kg-bench"
			var without, with, cpuWithout, cpuWith []time.Duration
			var hookNs, hookRuns uint64
			stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
			if err != nil {
				b.Fatalf("enable BPF run-time statistics: %v", err)
			}
			defer stats.Close()
			// The thread's CPU clock reads this thread only.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cycle := func() (wall, cpu time.Duration) {
				cpu0 := threadCPU(b)
				start := time.Now()
				if err := unix.InitModule(img, ""); err != nil {
					b.Fatalf("init_module(%s): %v", name, err)
				}
				if err := unix.DeleteModule(name, 0); err != nil {
					b.Fatalf("delete_module(%s): %v", name, err)
				}
				return time.Since(start), threadCPU(b) - cpu0
			}
			b.StopTimer()
			for done := 0; done < b.N; {
				n := min(block, b.N-done)
				settle()
				cycle()
				for i := 0; i < n; i++ {
					w, c := cycle()
					without, cpuWithout = append(without, w), append(cpuWithout, c)
				}
				enf, err := enforcer.Load(enforcer.Config{PinDir: pins}, al)
				if err != nil {
					b.Fatal(err)
				}
				go func() {
					for range enf.Decisions() {
					}
				}()
				settle()
				cycle()
				ns0, runs0 := hookRunTime(b, enf)
				for i := 0; i < n; i++ {
					w, c := cycle()
					with, cpuWith = append(with, w), append(cpuWith, c)
				}
				ns, runs := hookRunTime(b, enf)
				hookNs, hookRuns = hookNs+ns-ns0, hookRuns+runs-runs0
				enf.Close()
				if err := enforcer.Stop(pins); err != nil && !errors.Is(err, lsm.ErrNotLoaded) {
					b.Fatal(err)
				}
				done += n
			}
			wo, w := median(without), median(with)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(wo, "ns/load-without")
			b.ReportMetric(w, "ns/load-with")
			b.ReportMetric(w/wo, "ratio")
			cwo, cw := median(cpuWithout), median(cpuWith)
			b.ReportMetric(cwo, "cpu-ns/load-without")
			b.ReportMetric(cw, "cpu-ns/load-with")
			b.ReportMetric(cw/cwo, "cpu-ratio")
			if hookRuns > 0 {
				// The hook's own time over the load without it: the guard's
				// share of a load, free of the scheduling noise of a shared,
				// emulated host that the wall-clock ratio above carries.
				hook := float64(hookNs) / float64(hookRuns)
				b.ReportMetric(hook, "ns/guard-hook")
				b.ReportMetric((wo+hook)/wo, "hook-ratio")
			}
			b.ReportMetric(float64(len(img)), "bytes")
		})
	}
}

// settle lets what an enforcer does once, at its start, finish before a
// block is timed: its first scan for programs that override the guard runs
// in a goroutine, and the garbage left by loading the BPF objects is
// collected in the background. The guest has one CPU, so either would
// otherwise run inside the first timed loads. Both sides wait the same.
func settle() {
	time.Sleep(500 * time.Millisecond)
	runtime.GC()
}

// threadCPU returns the calling thread's CPU time, user and system.
func threadCPU(b *testing.B) time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		b.Fatalf("clock_gettime(CLOCK_THREAD_CPUTIME_ID): %v", err)
	}
	return time.Duration(ts.Nano())
}

func median(d []time.Duration) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return float64(s[len(s)/2].Nanoseconds())
}

// hookRunTime returns the run time and run count the kernel accounted to
// the guard's init_module hook (kernel_post_load_data).
func hookRunTime(b *testing.B, enf *enforcer.Enforcer) (ns, runs uint64) {
	b.Helper()
	st, err := enf.Status()
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range st.Links {
		if l.Hook != "kg_post_load_data" {
			continue
		}
		p, err := ebpf.NewProgramFromID(ebpf.ProgramID(l.ProgID))
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close()
		st, err := p.Stats()
		if err != nil {
			b.Fatal(err)
		}
		return uint64(st.Runtime.Nanoseconds()), st.RunCount
	}
	b.Fatal("no kg_post_load_data link")
	return 0, 0
}
