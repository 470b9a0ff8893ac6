package allowlist

import (
	"strings"
	"testing"
)

func TestLint(t *testing.T) {
	doc := `apiVersion: kmodguard.io/v1
kind: ModuleAllowlist
spec:
  mode: enforce
  modules:
    - name: veth
    - name: dummy
      sha256: [` + digA + `]
      kernel: latest
    - name: dumbo
      sha256: [` + digB + `]
      kernel: 6.12.48+deb12-cloud-amd64
`
	a, err := Parse([]byte(doc), "l.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range a.Lint() {
		got = append(got, w.String())
	}
	want := []string{
		"l.yaml: metadata.name: ",
		`l.yaml:6: spec.modules[0]: "veth" lists no sha256`,
		`l.yaml:7: spec.modules[1].kernel: "latest" does not look like a kernel release`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d warnings, want %d:\n%s", len(got), len(want), strings.Join(got, "\n"))
	}
	for i := range want {
		if !strings.HasPrefix(got[i], want[i]) {
			t.Errorf("warning %d = %q, want prefix %q", i, got[i], want[i])
		}
	}

	clean, err := Parse([]byte(validDoc), "v.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ws := clean.Lint()
	if len(ws) != 1 || ws[0].Code != WarnNameOnly {
		t.Errorf("valid doc: %v, want only the veth name-only warning", ws)
	}
	if ws := New("x", ModeEnforce).Lint(); len(ws) != 1 || ws[0].Code != WarnEmptyEnforce {
		t.Errorf("empty enforce list: %v", ws)
	}
}

func TestDiff(t *testing.T) {
	a := testList(t)
	b := testList(t)
	b.Spec.Mode = ModeAudit
	b.Remove("other", "")
	b.Add(Entry{Name: "new"})
	b.Add(Entry{Name: "dummy", SHA256: []string{digX}})
	b.Spec.Modules[1].SHA256 = nil // nf_tables widened to name-only
	d := Diff(a, b)
	if d.ModeFrom != ModeEnforce || d.ModeTo != ModeAudit {
		t.Errorf("mode change %q -> %q", d.ModeFrom, d.ModeTo)
	}
	if len(d.Added) != 1 || d.Added[0].Name != "new" || len(d.Removed) != 1 || d.Removed[0].Name != "other" {
		t.Errorf("added %+v removed %+v", d.Added, d.Removed)
	}
	if len(d.Changed) != 2 || d.Changed[0].Name != "dummy" || d.Changed[0].AddedSHA256[0] != digX ||
		!d.Changed[1].NowNameOnly || len(d.Changed[1].RemovedSHA256) != 2 {
		t.Errorf("changed %+v", d.Changed)
	}
	if !Diff(a, a).Empty() {
		t.Error("a list differs from itself")
	}
}
