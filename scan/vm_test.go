package scan

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/hideme"
	"github.com/kmodguard/kmodguard/internal/vmtest"
)

// TestVM runs the scan in Debian 6.1 and 6.12 under QEMU with a real
// self-hiding module: internal/hideme, built on the host against each
// kernel's headers package (linux-headers-<release>, its -common part and
// linux-kbuild, unpacked in the cache; the .ko is cached by release and
// source digest).
func TestVM(t *testing.T) {
	vmtest.Run(t, vmtest.Spec{
		Kernels:    hideme.Series,
		Modules:    []string{"dummy"},
		Binaries:   []string{"github.com/kmodguard/kmodguard/cmd/kmodguard"},
		Prepare:    hideme.Build,
		FailOnSkip: true,
	})
}

// runScan runs the kmodguard binary's scan and decodes its JSON report.
func runScan(t *testing.T, args ...string) (*Report, int) {
	t.Helper()
	cmd := exec.Command(vmtest.Binary(t, "kmodguard"), append([]string{"scan", "-o", "json"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("kmodguard scan -o json (exit %d): %v\n%s\n%s", code, err, out, stderr.String())
	}
	return &r, code
}

func source(r *Report, name string) Source {
	for _, s := range r.Sources {
		if s.Name == name {
			return s
		}
	}
	return Source{Name: name, Modules: -1, Error: "absent from the report"}
}

// TestGuestScanClean: with dummy loaded, every view agrees (mod_tree
// shows as many live modules as /proc/modules) and nothing is hidden; then
// scans made while another thread loads and unloads dummy in a loop
// (modules mid-load and mid-unload are in some views and not others)
// report nothing either.
func TestGuestScanClean(t *testing.T) {
	vmtest.RequireGuest(t)
	img, err := os.ReadFile(vmtest.Fixture(t, "dummy"))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.InitModule(img, ""); err != nil {
		t.Fatalf("init_module dummy: %v", err)
	}
	ks, _ := exec.Command("sh", "-c", "grep -w mod_tree /proc/kallsyms").CombinedOutput()
	t.Logf("kallsyms: %s", ks)
	start := time.Now()
	r, code := runScan(t)
	t.Logf("kernel %s: clean scan in %v: exit %d, sources %+v", vmtest.Release(), time.Since(start).Round(time.Millisecond), code, r.Sources)
	if code != 0 || len(r.Hidden) != 0 {
		t.Errorf("clean scan: exit %d, hidden %+v; want 0, none", code, r.Hidden)
	}
	tree, proc := source(r, ViewModTree), source(r, ViewProc)
	if tree.Error != "" || tree.Modules < 1 || tree.Modules != proc.Modules || source(r, ViewSysfs).Modules != proc.Modules {
		t.Errorf("views disagree on a clean system: %+v", r.Sources)
	}
	if err := unix.DeleteModule("dummy", unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}

	var stop atomic.Bool
	var loads atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			if unix.InitModule(img, "") == nil {
				loads.Add(1)
				unix.DeleteModule("dummy", unix.O_NONBLOCK)
			}
		}
	}()
	for i := 0; i < 3; i++ {
		r, code := runScan(t)
		if code != 0 || len(r.Hidden) != 0 {
			t.Errorf("scan %d during loads and unloads: exit %d, hidden %+v", i, code, r.Hidden)
		}
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("3 scans during %d loads and unloads of dummy: no false positive", loads.Load())
	if loads.Load() == 0 {
		t.Error("no load of dummy succeeded while the scans ran")
	}
}

// TestGuestScanHidden loads hideme, which unlinks itself from the module
// list and deletes its kobject, and must come last: it cannot be
// unloaded. lsmod and /sys/module no longer show it; the scan finds it in
// mod_tree, names it and its struct module address, and exits 1. Without
// the BPF walk (--no-bpf), the two lists agree and nothing is found: the
// hiding works against them.
func TestGuestScanHidden(t *testing.T) {
	vmtest.RequireGuest(t)
	img, err := os.ReadFile(filepath.Join(vmtest.FixtureDir(), "hideme.ko"))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.InitModule(img, ""); err != nil {
		t.Fatalf("init_module hideme: %v", err)
	}
	mods, _ := os.ReadFile("/proc/modules")
	if strings.Contains(string(mods), "hideme") {
		t.Fatalf("hideme did not hide from /proc/modules:\n%s", mods)
	}
	if _, err := os.Stat("/sys/module/hideme"); err == nil {
		t.Fatal("hideme did not hide from /sys/module")
	}
	start := time.Now()
	r, code := runScan(t)
	t.Logf("kernel %s: scan in %v: exit %d, hidden %+v, sources %+v", vmtest.Release(), time.Since(start).Round(time.Millisecond), code, r.Hidden, r.Sources)
	if code != 1 || len(r.Hidden) != 1 {
		t.Fatalf("scan with hideme loaded: exit %d, hidden %+v; want 1, hideme", code, r.Hidden)
	}
	h := r.Hidden[0]
	if h.Name != "hideme" || h.ModuleAddr == 0 || !slices.Equal(h.SeenIn, []string{ViewModTree}) ||
		!slices.Equal(h.MissingFrom, []string{ViewProc, ViewSysfs}) {
		t.Errorf("hidden %+v; want hideme seen in mod_tree only, with its address", h)
	}
	out, _ := exec.Command(vmtest.Binary(t, "kmodguard"), "scan").CombinedOutput()
	t.Logf("kmodguard scan:\n%s", out)
	if !strings.Contains(string(out), "HIDDEN hideme") {
		t.Errorf("text report does not name hideme:\n%s", out)
	}
	// watch reports it too, as a hidden event, from its periodic scan.
	cmd := exec.Command(vmtest.Binary(t, "kmodguard"), "watch", "-o", "json", "--inventory=false", "--scan-every", "1s", "--duration", "4s")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	lines, err := cmd.Output()
	if err != nil {
		t.Fatalf("kmodguard watch: %v\n%s", err, stderr.String())
	}
	var found *event.Event
	for _, line := range strings.Split(strings.TrimSpace(string(lines)), "\n") {
		var ev event.Event
		if json.Unmarshal([]byte(line), &ev) == nil && ev.Syscall == event.Hidden {
			if found != nil {
				t.Errorf("watch reported the hidden module twice: %s", lines)
			}
			found = &ev
		}
	}
	if found == nil || found.Name != "hideme" || found.ModuleAddr != h.ModuleAddr || found.Hidden != h.Describe() {
		t.Errorf("watch: hidden event %+v; want hideme at %#x (%s)\n%s", found, h.ModuleAddr, h.Describe(), lines)
	} else {
		t.Logf("watch: %s", strings.TrimSpace(string(lines)))
	}

	r, code = runScan(t, "--no-bpf")
	t.Logf("--no-bpf: exit %d, hidden %+v", code, r.Hidden)
	if code != 0 || len(r.Hidden) != 0 {
		t.Errorf("--no-bpf: exit %d, hidden %+v; want 0 (the lists agree: hideme left both)", code, r.Hidden)
	}
}
