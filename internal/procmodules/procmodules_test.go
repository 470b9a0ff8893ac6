package procmodules

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func write(t testing.TB, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "modules")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRead(t *testing.T) {
	p := write(t, "dummy 16384 0 - Live 0xffffffffc0a2b000 (OE)\n\n"+
		"veth 40960 0 - Loading 0x0000000000000000\n"+
		"nf_tables 319488 1 nft_chain, Unloading 0xffffffffc0b00000 (E)\n"+
		"short 1\n")
	got, err := Read(p)
	if err != nil {
		t.Fatal(err)
	}
	want := []Module{
		{Name: "dummy", State: "Live", Addr: 0xffffffffc0a2b000, Taint: "OE"},
		{Name: "veth", State: "Loading"},
		{Name: "nf_tables", State: "Unloading", Addr: 0xffffffffc0b00000, Taint: "E"},
		{Name: "short"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if !got[0].Live() || got[1].Live() || got[2].Live() {
		t.Error("only a Live module is live")
	}
}

func TestReadLimits(t *testing.T) {
	if _, err := Read(filepath.Join(t.TempDir(), "none")); !os.IsNotExist(err) {
		t.Errorf("a missing file: %v, want not-exist", err)
	}
	if _, err := Read(write(t, "x "+strings.Repeat("y", 70<<10)+"\n")); err == nil {
		t.Error("a line over 64 KiB was read")
	}
	if _, err := Read(write(t, strings.Repeat("m 1 0 - Live 0x0\n", Max+1))); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("%d modules: %v, want the limit", Max+1, err)
	}
	if mods, err := Read(write(t, strings.Repeat("m 1 0 - Live 0x0\n", Max))); err != nil || len(mods) != Max {
		t.Errorf("%d modules: %d, %v", Max, len(mods), err)
	}
}

// FuzzRead: whatever the file holds, parsing ends without a panic, and
// every module has a name without spaces.
func FuzzRead(f *testing.F) {
	f.Add("dummy 16384 0 - Live 0xffffffffc0a2b000 (OE)\nveth 1 2 dummy, Live 0x0\n")
	f.Add("\n\n  \n(")
	f.Add("a 1 2 3 Live 0xzz ()")
	f.Fuzz(func(t *testing.T, s string) {
		mods, err := Read(write(t, s))
		if err != nil {
			return
		}
		for _, m := range mods {
			if m.Name == "" || strings.ContainsAny(m.Name, " \t\n") {
				t.Fatalf("module name %q", m.Name)
			}
		}
	})
}
