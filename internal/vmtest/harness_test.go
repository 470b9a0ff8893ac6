package vmtest_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/internal/debkernel"
	"github.com/kmodguard/kmodguard/internal/vmtest"
	"github.com/kmodguard/kmodguard/internal/vmtest/proto"
)

// The deliberate failures below do not match Run's default "^TestGuest",
// so only the harness tests boot them.

const envDeliberate = "KMODGUARD_VMTEST_DELIBERATE"

// TestDeliberateGuestFailure fails on purpose in the guest.
func TestDeliberateGuestFailure(t *testing.T) {
	vmtest.RequireGuest(t)
	if os.Getenv(envDeliberate) != "fail" {
		t.Skip("deliberate failure: only when the harness test asks for it")
	}
	t.Error("deliberate failure on " + vmtest.Release())
}

// TestDeliberateKernelPanic crashes the guest kernel through sysrq.
func TestDeliberateKernelPanic(t *testing.T) {
	vmtest.RequireGuest(t)
	if os.Getenv(envDeliberate) != "panic" {
		t.Skip("deliberate panic: only when the harness test asks for it")
	}
	if err := os.WriteFile("/proc/sysrq-trigger", []byte("c"), 0); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Minute)
}

// TestDeliberateHalt halts the guest kernel: QEMU keeps running with its
// CPU stopped, which the host sees as a hang.
func TestDeliberateHalt(t *testing.T) {
	vmtest.RequireGuest(t)
	if os.Getenv(envDeliberate) != "halt" {
		t.Skip("deliberate halt: only when the harness test asks for it")
	}
	// The host checks that the output so far reaches it: give /init time
	// to copy this test's "=== RUN" line to the result port and the UART
	// time to send it, since a halted kernel sends nothing more (a CI run
	// on a busy host halted before the line left).
	time.Sleep(3 * time.Second)
	unix.Sync()
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_HALT); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Hour)
}

// TestVMReportsFailure checks that a failing guest test fails the run, and
// that the error names the kernel and the test.
func TestVMReportsFailure(t *testing.T) {
	r := vmtest.Boot(t, vmtest.Spec{
		Run: "^TestDeliberateGuestFailure$",
		Env: []string{envDeliberate + "=fail"},
	}, debkernel.Series61)
	err := r.Err()
	if err == nil {
		t.Fatalf("a failing guest test passed the run; output:\n%s", r.Output)
	}
	for _, want := range []string{r.Kernel.Release, "TestDeliberateGuestFailure"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	if !r.Done || r.ExitCode != 1 {
		t.Errorf("done=%v exit=%d, want a clean run that exits 1", r.Done, r.ExitCode)
	}
	if !strings.Contains(r.Output, "deliberate failure on "+r.Kernel.Release) {
		t.Errorf("the guest's own output is missing:\n%s", r.Output)
	}
	t.Logf("reported as: %v", err)
}

// TestVMReportsPanic checks that a guest kernel crash fails the run loudly
// with the console tail, quickly rather than at the timeout.
func TestVMReportsPanic(t *testing.T) {
	r := vmtest.Boot(t, vmtest.Spec{
		Run:     "^TestDeliberateKernelPanic$",
		Env:     []string{envDeliberate + "=panic"},
		Timeout: 2 * time.Minute,
	}, debkernel.Series61)
	err := r.Err()
	if err == nil {
		t.Fatal("a guest kernel panic passed the run")
	}
	if r.TimedOut || r.Done {
		t.Errorf("timedOut=%v done=%v, want neither: QEMU should exit on the panic", r.TimedOut, r.Done)
	}
	for _, want := range []string{r.Kernel.Release, "kernel panic", "sysrq"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
	t.Logf("reported after %s as: %.300s...", r.Wall.Round(time.Second), err)
}

// TestVMReportsHang checks that a guest that stops responding is killed at
// Spec.Timeout and reported as a hang, with what it printed so far.
func TestVMReportsHang(t *testing.T) {
	r := vmtest.Boot(t, vmtest.Spec{
		Run:     "^TestDeliberateHalt$",
		Env:     []string{envDeliberate + "=halt"},
		Timeout: time.Minute,
	}, debkernel.Series612)
	err := r.Err()
	if err == nil {
		t.Fatal("a halted guest passed the run")
	}
	if !r.TimedOut || r.Done {
		t.Errorf("timedOut=%v done=%v, want a timeout", r.TimedOut, r.Done)
	}
	if !r.Started {
		t.Skipf("the guest did not even start its tests within %s (a very busy host?): %v", r.Timeout, err)
	}
	for _, want := range []string{r.Kernel.Release, "did not finish within 1m0s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
	if !strings.Contains(r.Output, "=== RUN   TestDeliberateHalt") {
		t.Errorf("the output so far is missing:\n%s", r.Output)
	}
	if r.Wall < r.Timeout || r.Wall > r.Timeout+30*time.Second {
		t.Errorf("QEMU ran %s, want it killed at %s", r.Wall, r.Timeout)
	}
}

// TestVMScript runs a shell script in the guest through Exec, the way
// `make demo` does, and checks the live output and the exit status.
func TestVMScript(t *testing.T) {
	if !vmtest.Enabled() || vmtest.InGuest() {
		t.Skip("boots Debian kernels in QEMU: set KMODGUARD_VMTEST=1 (make vmtest)")
	}
	var live bytes.Buffer
	r, err := vmtest.Exec(context.Background(), vmtest.Spec{
		Modules: []string{"veth"},
		Script:  "echo first line\nmodprobe veth && grep -c '^veth ' /proc/modules\necho \"release $(uname -r)\" >&2\nexit 3\n",
		Output:  &live,
		Timeout: 3 * time.Minute,
	}, debkernel.Series612, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	want := "first line\n1\nrelease " + r.Kernel.Release + "\n"
	// Exec names the kernel it boots on the live output first, so that
	// `make demo` says what it runs on.
	header := fmt.Sprintf("vmtest: kernel %s: package %s\n", r.Kernel.Release, r.Kernel)
	if live.String() != header+want {
		t.Errorf("live output %q, want %q", live.String(), header+want)
	}
	if r.Output != strings.TrimSpace(want) {
		t.Errorf("Result.Output %q, want %q", r.Output, strings.TrimSpace(want))
	}
	if r.ExitCode != 3 || !r.Done {
		t.Errorf("exit %d, done %v; want 3, true", r.ExitCode, r.Done)
	}
	if err := r.Err(); err == nil || !strings.Contains(err.Error(), "script exited 3") {
		t.Errorf("Err() = %v, want the script's exit status", err)
	}
	t.Logf("boot %s, script %s, wall %s", r.Boot.Round(10*time.Millisecond), r.Tests.Round(10*time.Millisecond), r.Wall.Round(10*time.Millisecond))
}

// TestVMScriptLeftovers checks that a step which exits while a background
// process still holds its output neither hangs the guest nor loses the
// step's exit status.
func TestVMScriptLeftovers(t *testing.T) {
	if !vmtest.Enabled() || vmtest.InGuest() {
		t.Skip("boots Debian kernels in QEMU: set KMODGUARD_VMTEST=1 (make vmtest)")
	}
	r, err := vmtest.Exec(context.Background(), vmtest.Spec{
		Script:  "sleep 1000 &\necho started\nexit 0\n",
		Timeout: 3 * time.Minute,
	}, debkernel.Series612, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Err(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Output, "left a process holding its output") || r.ExitCode != 0 {
		t.Errorf("exit %d, output:\n%s", r.ExitCode, r.Output)
	}
	if r.Tests > time.Minute {
		t.Errorf("the step took %s: the leftover held it", r.Tests)
	}
}

// TestVMBootHangRetried checks the boot deadline: a guest whose /init hangs
// before it begins is killed at Spec.BootTimeout rather than at Timeout,
// booted once more, and reported as hung in boot.
func TestVMBootHangRetried(t *testing.T) {
	r := vmtest.Boot(t, vmtest.Spec{
		Cmdline:     proto.HangBeforeStart,
		BootTimeout: 15 * time.Second,
		Timeout:     3 * time.Minute,
	}, debkernel.Series612)
	if !r.BootHung || !r.TimedOut || r.Started {
		t.Fatalf("boot hung %v, timed out %v, started %v: want a hang before the start", r.BootHung, r.TimedOut, r.Started)
	}
	if r.Attempts != 2 {
		t.Errorf("%d boot attempts, want 2", r.Attempts)
	}
	if r.Wall > time.Minute {
		t.Errorf("the hung boot lasted %s: the deadline of 15s did not end it", r.Wall)
	}
	if err := r.Err(); err == nil || !strings.Contains(err.Error(), "did not begin its tests within 15s") {
		t.Errorf("Err() = %v, want the boot deadline named", err)
	}
}
