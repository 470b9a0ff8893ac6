package scan

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeRoots writes a /proc/modules and a /sys/module tree: proc lines
// as /proc/modules has them, sysfs module name -> initstate ("" for a
// built-in module, which has no initstate file).
func fakeRoots(t *testing.T, proc []string, sysfs map[string]string) Options {
	t.Helper()
	dir := t.TempDir()
	p, s := filepath.Join(dir, "proc"), filepath.Join(dir, "sys")
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "modules"), []byte(strings.Join(proc, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, state := range sysfs {
		d := filepath.Join(s, "module", name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if state != "" {
			if err := os.WriteFile(filepath.Join(d, "initstate"), []byte(state+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return Options{ProcRoot: p, SysRoot: s, NoBPF: true, Recheck: -1}
}

func TestScanCompare(t *testing.T) {
	const (
		dummy   = "dummy 16384 0 - Live 0xffffffffc0a3e000"
		veth    = "veth 40960 0 - Live 0xffffffffc0a50000 (E)"
		loading = "veth 40960 1 - Loading 0xffffffffc0a50000"
	)
	for _, tc := range []struct {
		name  string
		proc  []string
		sysfs map[string]string
		want  []Hidden
	}{
		{"clean", []string{dummy, veth}, map[string]string{"dummy": "live", "veth": "live", "kernel": "", "printk": ""}, nil},
		{"gone from /proc/modules only", []string{dummy}, map[string]string{"dummy": "live", "veth": "live"},
			[]Hidden{{Name: "veth", SeenIn: []string{ViewSysfs}, MissingFrom: []string{ViewProc}}}},
		{"gone from /sys/module only", []string{dummy, veth}, map[string]string{"dummy": "live"},
			[]Hidden{{Name: "veth", SeenIn: []string{ViewProc}, MissingFrom: []string{ViewSysfs}}}},
		// A module mid-load is in /proc/modules and /sys/module (coming)
		// before it is live: not hidden.
		{"loading", []string{dummy, loading}, map[string]string{"dummy": "live", "veth": "coming"}, nil},
		// Its sysfs entry may not be there yet either: still not hidden.
		{"loading, no sysfs entry yet", []string{dummy, loading}, map[string]string{"dummy": "live"}, nil},
		// Unloading: sysfs says going, /proc/modules already dropped it.
		{"unloading", []string{dummy}, map[string]string{"dummy": "live", "veth": "going"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Scan(fakeRoots(t, tc.proc, tc.sysfs))
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Hidden) != len(tc.want) {
				t.Fatalf("hidden %+v, want %+v", r.Hidden, tc.want)
			}
			for i, h := range r.Hidden {
				w := tc.want[i]
				if h.Name != w.Name || !slices.Equal(h.SeenIn, w.SeenIn) || !slices.Equal(h.MissingFrom, w.MissingFrom) {
					t.Errorf("hidden %+v, want %+v", h, w)
				}
			}
			if r.Sources[2].Name != ViewModTree || r.Sources[2].Error == "" || r.Sources[2].Modules != -1 {
				t.Errorf("mod_tree left out, but its source says %+v", r.Sources[2])
			}
		})
	}
}

// TestScanRecheck: a difference that the second look does not find
// again (the module finished loading, or was unloaded) is not reported;
// one that it finds again is.
func TestScanRecheck(t *testing.T) {
	for _, tc := range []struct {
		name  string
		later string
		want  int
	}{
		{"listed by the second look", "dummy 16384 0 - Live 0xffffffffc0a3e000\nveth 40960 0 - Live 0xffffffffc0a50000\n", 0},
		{"still hidden", "dummy 16384 0 - Live 0xffffffffc0a3e000\n", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := fakeRoots(t, []string{"dummy 16384 0 - Live 0xffffffffc0a3e000"}, map[string]string{"dummy": "live", "veth": "live"})
			o.Recheck = time.Millisecond
			o.between = func() {
				if err := os.WriteFile(filepath.Join(o.ProcRoot, "modules"), []byte(tc.later), 0o644); err != nil {
					t.Error(err)
				}
			}
			r, err := Scan(o)
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Hidden) != tc.want {
				t.Errorf("hidden %+v, want %d", r.Hidden, tc.want)
			}
		})
	}
}

func TestKallsym(t *testing.T) {
	p := filepath.Join(t.TempDir(), "kallsyms")
	os.WriteFile(p, []byte("ffffffff81000000 T _stext\nffffffffc0a3e010 t mod_tree\t[dummy]\nffffffff83207980 D mod_tree\n0000000000000000 D hidden_sym\n"), 0o644)
	for sym, want := range map[string]uint64{"mod_tree": 0xffffffff83207980, "hidden_sym": 0, "absent": 0} {
		got, err := kallsym(p, sym)
		if err != nil || got != want {
			t.Errorf("kallsym(%s) = %#x, %v; want %#x", sym, got, err, want)
		}
	}
}
