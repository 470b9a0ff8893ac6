package allowlist

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSaveRoundTrip(t *testing.T) {
	a, err := Parse([]byte(validDoc), "in.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "out.yaml")
	if err := Save(p, a); err != nil {
		t.Fatal(err)
	}
	b, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(a, b); !d.Empty() {
		t.Errorf("round trip changed the list: %+v", d)
	}
	first, _ := os.ReadFile(p)
	// Sorted by name: dummy, nf-tables, veth, digests sorted.
	if i, j := bytes.Index(first, []byte("name: nf-tables")), bytes.Index(first, []byte("name: veth")); i < 0 || j < i {
		t.Errorf("not sorted by name:\n%s", first)
	}
	if i, j := bytes.Index(first, []byte(digB)), bytes.Index(first, []byte(digA)); i < 0 || j < i {
		t.Errorf("digests not sorted:\n%s", first)
	}

	// Deterministic: the same list in another order writes the same bytes.
	b.Spec.Modules[0], b.Spec.Modules[2] = b.Spec.Modules[2], b.Spec.Modules[0]
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Save(p, b); err != nil {
		t.Fatal(err)
	}
	second, _ := os.ReadFile(p)
	if !bytes.Equal(first, second) {
		t.Errorf("output depends on entry order:\n%s\n---\n%s", first, second)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want the old file's 0600", fi.Mode().Perm())
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(p), ".*tmp*"))
	if len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

func TestSaveRefusesInvalid(t *testing.T) {
	p := filepath.Join(t.TempDir(), "out.yaml")
	a := New("x", ModeAudit)
	a.Spec.Modules = append(a.Spec.Modules, Entry{Name: "a", SHA256: []string{"zz"}})
	if err := Save(p, a); err == nil || !strings.Contains(err.Error(), "spec.modules[0].sha256[0]") {
		t.Fatalf("Save = %v, want a validation error", err)
	}
	if _, err := os.Stat(p); !os.IsNotExist(err) {
		t.Errorf("an invalid list was written: %v", err)
	}
	if err := Save(filepath.Join(t.TempDir(), "no", "such", "dir.yaml"), New("x", ModeAudit)); err == nil {
		t.Error("Save into a missing directory succeeded")
	}
}

func TestMarshalDoesNotModify(t *testing.T) {
	a := testList(t)
	a.Spec.Modules[0].SHA256 = []string{strings.ToUpper(digA)}
	before := a.Spec.Modules[0].Name
	if _, err := Marshal(a); err != nil {
		t.Fatal(err)
	}
	if a.Spec.Modules[0].Name != before || a.Spec.Modules[0].SHA256[0] != strings.ToUpper(digA) {
		t.Errorf("Marshal modified its argument: %+v", a.Spec.Modules[0])
	}
}
