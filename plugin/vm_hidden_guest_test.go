package plugin

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kmodguard/kmodguard/enforcer"
	"github.com/kmodguard/kmodguard/internal/debkernel"
	"github.com/kmodguard/kmodguard/internal/hideme"
	"github.com/kmodguard/kmodguard/internal/vmtest"
	"github.com/kmodguard/kmodguard/lsm"
)

// TestGuestFalcoHidden: a real module that hides itself (internal/hideme:
// off the kernel's module list, out of /sys/module) reaches Falco as a
// hidden event from the live source's periodic scan, with where it was
// seen and its struct module address. It runs last of the plugin's guest
// tests (its file sorts last): hideme cannot be unloaded.
func TestGuestFalcoHidden(t *testing.T) {
	vmtest.RequireGuest(t)
	fixture := filepath.Join(vmtest.FixtureDir(), hideme.Fixture+".ko")
	img, err := os.ReadFile(fixture)
	if err != nil {
		if runtime.GOARCH == "amd64" && slices.Contains(hideme.Series, debkernel.Series(vmtest.Series())) {
			t.Fatalf("hideme was to be built for %s: %v", vmtest.Release(), err)
		}
		t.Skipf("no hideme for %s: the host builds it only for amd64 %v", vmtest.Release(), hideme.Series)
	}
	// The guard that the earlier guest tests left pinned would refuse
	// hideme, which no allowlist of theirs lists.
	if err := enforcer.Stop(""); err != nil && !errors.Is(err, lsm.ErrNotLoaded) {
		t.Fatalf("stop the guard the earlier tests pinned: %v", err)
	}
	p := newPlugin(t, `{"hidden_scan_interval": "1s"}`)
	in, err := p.Open("")
	if err != nil {
		t.Fatalf("open the live source: %v", err)
	}
	inst := in.(*liveInstance)
	t.Cleanup(inst.Close)
	if err := initModule(img); err != nil {
		t.Fatalf("init_module(hideme): %v", err)
	}
	if mods, _ := os.ReadFile("/proc/modules"); strings.Contains(string(mods), "hideme") {
		t.Fatalf("hideme did not hide from /proc/modules:\n%s", mods)
	}
	hiddenOf := func(evts []map[string]any) []map[string]any {
		var out []map[string]any
		for _, e := range evts {
			if e["kmod.syscall"] == "hidden" {
				out = append(out, e)
			}
		}
		return out
	}
	hidden := hiddenOf(falcoLoop(t, p, inst, 2*time.Minute, func(evts []map[string]any) bool {
		return len(hiddenOf(evts)) > 0
	}))
	// The scan sends a module once: five more seconds of scans add none.
	until := time.Now().Add(5 * time.Second)
	hidden = append(hidden, hiddenOf(falcoLoop(t, p, inst, time.Minute, func([]map[string]any) bool {
		return time.Now().After(until)
	}))...)
	e := hidden[0]
	t.Logf("hidden: name=%v hidden=%q module_addr=%v", e["kmod.name"], e["kmod.hidden"], e["kmod.module_addr"])
	where, _ := e["kmod.hidden"].(string)
	if len(hidden) != 1 || e["kmod.name"] != "hideme" || !strings.Contains(where, "mod_tree") ||
		!strings.Contains(where, "/proc/modules") || fmt.Sprint(e["kmod.module_addr"]) == "0" || e["kmod.module_addr"] == nil {
		t.Errorf("hidden events %v; want one, for hideme, seen in mod_tree and not in /proc/modules, with its address", hidden)
	}
}
