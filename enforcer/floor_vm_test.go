//go:build linux

package enforcer_test

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kmodguard/kmodguard/internal/debkernel"
	"github.com/kmodguard/kmodguard/internal/vmtest"
)

// TestVMBelowFloor boots Debian 11's 5.10 (bullseye), below the kernel
// floor, with bpf added to its lsm= (bullseye does not list it by default),
// so that the guard gets as far as it can on such a host: kernels before
// 5.11 charge BPF maps to RLIMIT_MEMLOCK, and the sensor needs bpf_loop
// (5.17). Both must refuse plainly (TestBelowFloorRefused).
func TestVMBelowFloor(t *testing.T) {
	cmdline := ""
	if vmtest.Enabled() && !vmtest.InGuest() {
		k, err := debkernel.Get(context.Background(), debkernel.Series510)
		if err != nil {
			t.Fatalf("kernel 5.10: %v", err)
		}
		lsm, err := k.Config("CONFIG_LSM")
		if err != nil {
			t.Fatal(err)
		}
		cmdline = "lsm=" + lsm + ",bpf"
	}
	vmtest.Run(t, vmtest.Spec{
		Kernels:    []debkernel.Series{debkernel.Series510},
		Modules:    []string{"dummy"},
		Binaries:   []string{"github.com/kmodguard/kmodguard/cmd/kmodguard"},
		Cmdline:    cmdline,
		Run:        "^TestBelowFloorRefused$",
		FailOnSkip: true,
	})
}

// floorRE is what a refusal below the floor must say: the kernel version
// it needs, in words a user can act on.
var floorRE = regexp.MustCompile(`(?i)(linux|kernel)[^\n]*\b\d+\.\d+\b[^\n]*(or later|or newer|at least|floor)|(floor|at least|or later)[^\n]*(linux|kernel) \d+\.\d+`)

// TestBelowFloorRefused runs on a kernel below the floor, with BPF LSM
// enabled: `kmodguard enforcer run` and `kmodguard watch` must each exit
// with an error that names the kernel version they need, leave nothing
// pinned, and leave module loading as it was. Not a TestGuest: only the
// 5.10 boot of TestVMBelowFloor runs it.
func TestBelowFloorRefused(t *testing.T) {
	vmtest.RequireGuest(t)
	lsms, err := os.ReadFile("/sys/kernel/security/lsm")
	if err != nil || !strings.Contains(","+string(lsms)+",", ",bpf,") {
		t.Fatalf("bpf is not in /sys/kernel/security/lsm (%q, %v): the boot's lsm= did not take", lsms, err)
	}
	kg := vmtest.Binary(t, "kmodguard")

	t.Run("guard", func(t *testing.T) {
		_, pins, _, file := daemonSetup(t)
		out, code := runFor(t, 60*time.Second, kg, "enforcer", "run", "--allowlist", file, "--pin-dir", pins)
		t.Logf("kmodguard enforcer run on %s: exit %d:\n%s", vmtest.Release(), code, out)
		if code == 0 {
			t.Fatalf("kmodguard enforcer run succeeded on %s, below the floor", vmtest.Release())
		}
		if ents, _ := os.ReadDir(pins); len(ents) != 0 {
			t.Errorf("the refused guard left pins behind: %v", ents)
		}
		// Nothing half-attached: modules still load.
		if err := initModule(readFixture(t, "dummy")); err != nil {
			t.Fatalf("init_module(dummy) after the refusal: %v", err)
		}
		unload(t, "dummy")
		line := lastLine(out)
		if !floorRE.MatchString(out) {
			t.Fatalf("the guard's refusal does not name the kernel it needs: %q", line)
		}
		vmtest.SupportNote(t, "guard refused: %s", line)
	})

	t.Run("sensor", func(t *testing.T) {
		out, code := runFor(t, 60*time.Second, kg, "watch")
		t.Logf("kmodguard watch on %s: exit %d:\n%s", vmtest.Release(), code, out)
		if code == 0 || code == -1 {
			t.Fatalf("kmodguard watch on %s: exit %d, want a refusal", vmtest.Release(), code)
		}
		line := lastLine(out)
		if !floorRE.MatchString(out) {
			t.Fatalf("the sensor's refusal does not name the kernel it needs: %q", line)
		}
		vmtest.SupportNote(t, "sensor refused: %s", line)
	})
}

// runFor runs a command for at most d and returns its output and exit
// status (-1 when it was killed at d).
func runFor(t *testing.T, d time.Duration, name string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if ctx.Err() != nil {
		return string(out), -1
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return string(out), 0
}

// lastLine is the last non-empty line of out: where a CLI says why it
// stopped.
func lastLine(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}
