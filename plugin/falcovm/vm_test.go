package falcovm

import (
	"bufio"
	"context"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"

	"github.com/kmodguard/kmodguard/internal/debkernel"
	"github.com/kmodguard/kmodguard/internal/hideme"
	"github.com/kmodguard/kmodguard/internal/vmtest"
)

// guestTests are the plugin's guest tests, and the results each may have.
// The TOCTOU test may skip: under TCG the rewriting thread seldom runs
// during the syscall, and it says so with its measurements.
var guestTests = map[string][]string{
	"TestGuestFalcoInventory": {"PASS"}, // runs first: no guard is pinned yet
	"TestGuestFalcoBlocked":   {"PASS"},
	"TestGuestFalcoOverride":  {"PASS"},
	"TestGuestFalcoTOCTOU":    {"PASS"}, // deterministic: userfaultfd holds the kernel's copy
	// Runs last (hideme cannot be unloaded). It skips only where the host
	// builds no hideme (sid); where it builds one, a missing one fails it.
	"TestGuestFalcoHidden": {"PASS", "SKIP"},
}

// TestVM boots each Debian kernel with the plugin's guest tests.
func TestVM(t *testing.T) {
	if os.Getenv("KMODGUARD_VMTEST") != "1" {
		t.Skip("needs KMODGUARD_VMTEST=1 (make vmtest): boots Debian kernels under QEMU")
	}
	bin := filepath.Join(t.TempDir(), "plugin.test")
	build := exec.Command(goTool(), "test", "-c", "-o", bin,
		"-tags", "netgo,osusergo", "-ldflags", "-linkmode external -extldflags -static",
		"github.com/kmodguard/kmodguard/plugin")
	build.Env = append(os.Environ(), "CGO_ENABLED=1", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the plugin's test binary (cgo, static: needs gcc and libc6-dev): %v\n%s", err, out)
	}
	// Two vCPUs on their own host threads, so that the TOCTOU test's
	// rewriting thread can run while the kernel copies the image.
	vmtest.Run(t, vmtest.Spec{
		Modules: []string{"dummy", "veth"},
		Crafted: []vmtest.Crafted{
			{Name: "dummy_nosig", From: "dummy", StripSignature: true},
			// A module no module tree holds (the inventory test).
			{Name: "dumbo", From: "dummy", ModinfoName: "dumbo", ThisModuleName: "dumbo", StripSignature: true},
		},
		Binaries: []string{"github.com/kmodguard/kmodguard/cmd/kmodguard"},
		Files:    map[string]string{"plugin.test": bin},
		// The self-hiding module, where the host can build it.
		Prepare: func(k *debkernel.Kernel, fixtures string) error {
			if !hideme.Buildable(k) {
				return nil
			}
			return hideme.Build(k, fixtures)
		},
		CPUs:       2,
		Timeout:    10 * time.Minute,
		FailOnSkip: true,
	})
}

func goTool() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); fileExists(p) {
		return p
	}
	return "go"
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// TestGuestFalco runs the plugin's guest tests in the guest and reports
// each one's result.
func TestGuestFalco(t *testing.T) {
	vmtest.RequireGuest(t)
	// The harness holds the syscall tracepoints on this two-CPU guest
	// (vmtest.Spec.LiveSyscallTracepoints): the sensor's attach and
	// detach must not make the kernel rewrite the syscall path under TCG.
	// /init takes the other CPU offline while it attaches them, and
	// brings it back.
	if b, err := os.ReadFile("/sys/devices/system/cpu/online"); err != nil || strings.TrimSpace(string(b)) != "0-1" {
		t.Fatalf("online CPUs %q (%v), want 0-1", b, err)
	}
	held := vmtest.HeldTracepoints(t)
	for _, tp := range []string{"sys_enter", "sys_exit"} {
		if len(held[tp]) < 2 {
			t.Fatalf("the harness holds %d links on %s, want 2: %v", len(held[tp]), tp, held)
		}
		for _, id := range held[tp] {
			l, err := link.NewFromID(link.ID(id))
			if err != nil {
				t.Fatalf("held link %d on %s: %v", id, tp, err)
			}
			info, err := l.Info()
			l.Close()
			if err != nil || info.Type != link.RawTracepointType {
				t.Fatalf("held link %d on %s: %+v, %v, want a raw tracepoint link", id, tp, info, err)
			}
		}
	}
	bin := vmtest.File(t, "plugin.test")
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	names := slices.Sorted(maps.Keys(guestTests))
	cmd := exec.CommandContext(ctx, bin, "-test.run", "^("+strings.Join(names, "|")+")$", "-test.v", "-test.count=1")
	cmd.Dir = t.TempDir()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout // the same pipe: the plugin's log interleaved with the test's
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	result := map[string]string{}
	re := regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+)`)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		t.Log(line)
		if m := re.FindStringSubmatch(line); m != nil {
			result[m[2]] = m[1]
		}
	}
	err = cmd.Wait()
	for _, name := range names {
		if !slices.Contains(guestTests[name], result[name]) {
			t.Errorf("%s: %q, want one of %v", name, result[name], guestTests[name])
		}
	}
	if err != nil {
		t.Errorf("plugin guest tests: %v", err)
	}
}
