package allowlist

import (
	"fmt"
	"strings"
	"testing"

	"github.com/kmodguard/kmodguard/kmod"
)

const (
	digFile = "1111111111111111111111111111111111111111111111111111111111111111"
	digELF  = "2222222222222222222222222222222222222222222222222222222222222222"
	digX    = "9999999999999999999999999999999999999999999999999999999999999999"
)

func testList(t *testing.T) *Allowlist {
	t.Helper()
	a := New("test", ModeEnforce)
	for _, e := range []Entry{
		{Name: "dummy", SHA256: []string{digA}},
		{Name: "nf_tables", SHA256: []string{digFile, digELF}},
		{Name: "veth"},
		{Name: "other", SHA256: []string{digB}},
	} {
		if _, err := a.Add(e); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

func mod(name, this, file, elf string) *kmod.Module {
	return &kmod.Module{Name: name, ThisModuleName: this, FileSHA256: file, ELFSHA256: elf,
		NameMismatch: kmod.NormalizeName(name) != kmod.NormalizeName(this) && name != "" && this != ""}
}

func TestMatch(t *testing.T) {
	a := testList(t)
	for _, tc := range []struct {
		name    string
		m       *kmod.Module
		allowed bool
		via     MatchKind
		entry   string
		reason  string
	}{
		{"digest listed", mod("dummy", "dummy", digA, digA), true, MatchFileDigest, "dummy", "sha256 " + digA + " of dummy is listed"},
		{"uppercase module digest", mod("dummy", "dummy", strings.ToUpper(digA), ""), true, MatchFileDigest, "dummy", ""},
		{"digest not listed", mod("dummy", "dummy", digX, digX), false, MatchNone, "dummy", `sha256 ` + digX + ` of dummy is not listed for "dummy"`},
		{"compressed: file digest", mod("nf_tables", "nf_tables", digFile, digX), true, MatchFileDigest, "nf_tables", "file sha256"},
		// A module whose names say "nf-tables" is not nf_tables to the
		// kernel (it loads beside the real one), whatever its digest.
		{"dashed module name, listed digest", mod("nf-tables", "nf-tables", digFile, digX), false, MatchNone, "", "has a '-'"},
		{"dashed modinfo name only", mod("nf-tables", "nf_tables", digFile, digX), false, MatchNone, "", "name mismatch"},
		{"compressed: ELF digest", mod("nf_tables", "nf_tables", digX, digELF), true, MatchELFDigest, "nf_tables", "ELF sha256 " + digELF},
		{"compressed: neither", mod("nf_tables", "nf_tables", digX, digB), false, MatchNone, "nf_tables", "neither file sha256 " + digX + " nor ELF sha256 " + digB},
		{"digest of another entry", mod("dummy", "dummy", digB, digB), false, MatchNone, "dummy", "not listed for \"dummy\""},
		{"name only", mod("veth", "veth", digX, digX), true, MatchName, "veth", "by name alone"},
		{"unknown name", mod("evil", "evil", digA, digA), false, MatchNone, "", `no entry for "evil"`},
		{"forged modinfo name", mod("dumbo", "dummy", digA, digA), false, MatchNone, "", "name mismatch"},
		{"forged this_module name", mod("dummy", "evil", digA, digA), false, MatchNone, "", "name mismatch"},
		{"flagged mismatch", &kmod.Module{Name: "veth", ThisModuleName: "veth", NameMismatch: true}, false, MatchNone, "", "name mismatch"},
		{"no this_module name", mod("veth", "", "", ""), false, MatchNone, "", "no struct module.name"},
		{"no modinfo name", mod("", "veth", "", ""), false, MatchNone, "", "no .modinfo name="},
		{"no names", mod("", "", digA, digA), false, MatchNone, "", "no name"},
		{"no digest", mod("dummy", "dummy", "", ""), false, MatchNone, "dummy", "has no digest"},
		{"nil", nil, false, MatchNone, "", "no module"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := a.Match(tc.m)
			if d.Allowed != tc.allowed || d.Via != tc.via {
				t.Errorf("Match = %+v, want allowed=%v via=%q", d, tc.allowed, tc.via)
			}
			if got := ""; d.Entry != nil {
				got = d.Entry.Name
				if got != tc.entry {
					t.Errorf("entry %q, want %q", got, tc.entry)
				}
			} else if tc.entry != "" {
				t.Errorf("no entry, want %q", tc.entry)
			}
			if !strings.Contains(d.Reason, tc.reason) {
				t.Errorf("reason %q does not contain %q", d.Reason, tc.reason)
			}
		})
	}
}

func TestMatchSeesEdits(t *testing.T) {
	a := testList(t)
	m := mod("veth", "veth", digX, digX)
	if !a.Match(m).Allowed {
		t.Fatal("veth should be allowed before removal")
	}
	if n := a.Remove("veth", ""); n != 1 {
		t.Fatalf("Remove = %d", n)
	}
	if d := a.Match(m); d.Allowed {
		t.Fatalf("veth allowed after removal: %+v", d)
	}
	a.Spec.Modules = append(a.Spec.Modules, Entry{Name: "veth"})
	a.Reindex()
	if !a.Match(m).Allowed {
		t.Fatal("veth not allowed after Reindex")
	}
}

func TestAddMerges(t *testing.T) {
	a := testList(t)
	changed, err := a.Add(Entry{Name: "dummy", SHA256: []string{strings.ToUpper(digX)}})
	if err != nil || !changed {
		t.Fatalf("Add = %v, %v", changed, err)
	}
	if got := a.Lookup("dummy"); len(got) != 1 || len(got[0].SHA256) != 2 || got[0].SHA256[1] != digX {
		t.Fatalf("dummy after merge: %+v", got)
	}
	if changed, _ := a.Add(Entry{Name: "dummy", SHA256: []string{digX}}); changed {
		t.Error("adding a listed digest reported a change")
	}
	if changed, _ := a.Add(Entry{Name: "veth", SHA256: []string{digX}}); changed {
		t.Error("a digest added to a name-only entry changed it")
	}
	if _, err := a.Add(Entry{Name: "x/y"}); err == nil {
		t.Error("Add accepted a bad name")
	}
	if _, err := a.Add(Entry{Name: "x", SHA256: []string{"nope"}}); err == nil {
		t.Error("Add accepted a bad digest")
	}
	if _, err := a.Add(Entry{Name: "dummy", Kernel: "6.12.1", SHA256: []string{strings.Repeat("3", 64)}}); err != nil {
		t.Fatal(err)
	}
	if got := a.Lookup("dummy"); len(got) != 2 {
		t.Errorf("entry for another kernel not added: %+v", got)
	}
	if err := a.Validate(); err != nil {
		t.Errorf("Validate after Add: %v", err)
	}
}

func TestIterators(t *testing.T) {
	a := testList(t)
	n := 0
	for sum, e := range a.Digests() {
		if fmt.Sprintf("%x", sum) != e.SHA256[0] && fmt.Sprintf("%x", sum) != e.SHA256[len(e.SHA256)-1] {
			t.Errorf("digest %x not in entry %+v", sum, e)
		}
		n++
	}
	if n != 4 {
		t.Errorf("Digests yielded %d pairs, want 4", n)
	}
	var only []string
	for e := range a.NameOnlyEntries() {
		only = append(only, e.Name)
	}
	if fmt.Sprint(only) != "[veth]" {
		t.Errorf("NameOnlyEntries = %v", only)
	}
	if got := fmt.Sprint(a.Names()); got != "[dummy nf_tables other veth]" {
		t.Errorf("Names = %s", got)
	}
}

// BenchmarkMatch shows that matching costs the same for 4 and 4000 entries.
func BenchmarkMatch(b *testing.B) {
	for _, size := range []int{4, 4000} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			a := New("bench", ModeEnforce)
			for i := range size {
				a.Spec.Modules = append(a.Spec.Modules, Entry{Name: fmt.Sprintf("mod_%d", i), SHA256: []string{fmt.Sprintf("%064x", i)}})
			}
			m := mod("mod_3", "mod_3", fmt.Sprintf("%064x", 3), fmt.Sprintf("%064x", 3))
			b.ReportAllocs()
			if d := a.Match(m); !d.Allowed {
				b.Fatalf("mod_3 not allowed: %s", d.Reason)
			}
			for b.Loop() {
				a.Match(m)
			}
		})
	}
}

// TestMatchConcurrent matches from several goroutines while the list is
// validated and reindexed, as the plugin and the enforcer do with one list
// (run with -race).
func TestMatchConcurrent(t *testing.T) {
	a := testList(t)
	m := mod("dummy", "dummy", digA, digA)
	done := make(chan struct{})
	errs := make(chan string, 4)
	for range 4 {
		go func() {
			for {
				select {
				case <-done:
					errs <- ""
					return
				default:
				}
				if d := a.Match(m); !d.Allowed {
					errs <- d.Reason
					return
				}
			}
		}()
	}
	for range 200 {
		if err := a.Validate(); err != nil {
			t.Error(err)
		}
		a.Reindex()
	}
	close(done)
	for range 4 {
		if e := <-errs; e != "" {
			t.Errorf("concurrent Match refused dummy: %s", e)
		}
	}
}

// TestMatchDashes: an entry may be written as modprobe takes the name, but a
// module's own names are the kernel's, which never folds them.
func TestMatchDashes(t *testing.T) {
	a := New("dashes", ModeEnforce)
	if _, err := a.Add(Entry{Name: "snd-hda-intel"}); err != nil {
		t.Fatal(err)
	}
	if d := a.Match(mod("snd_hda_intel", "snd_hda_intel", digX, digX)); !d.Allowed || d.Via != MatchName || d.Entry.Name != "snd-hda-intel" {
		t.Errorf("snd_hda_intel against entry snd-hda-intel: %+v, want allowed by name", d)
	}
	for _, m := range []*kmod.Module{
		mod("snd-hda-intel", "snd-hda-intel", digX, digX), // registers beside the real one
		mod("snd_hda-intel", "snd_hda-intel", digX, digX),
	} {
		if d := a.Match(m); d.Allowed || !strings.Contains(d.Reason, "has a '-'") {
			t.Errorf("module named %q: %+v, want refused for its '-'", m.Name, d)
		}
	}
}
