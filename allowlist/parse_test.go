package allowlist

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	digA = "3f2a9c0d6b1e4f5a7c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d"
	digB = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
)

const validDoc = `apiVersion: kmodguard.io/v1
kind: ModuleAllowlist
metadata:
  name: prod-hosts
spec:
  mode: enforce
  modules:
    - name: dummy
      sha256:
        - ` + digA + `
        - 00112233445566778899AABBCCDDEEFF00112233445566778899AABBCCDDEEFF
      kernel: 6.1.0-56-amd64
      comment: test NIC
    - name: veth
    - name: nf-tables
      sha256: [` + digFile + `]
`

func TestParseValid(t *testing.T) {
	a, err := Parse([]byte(validDoc), "allow.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if a.Metadata.Name != "prod-hosts" || a.Spec.Mode != ModeEnforce || len(a.Spec.Modules) != 3 {
		t.Fatalf("decoded %+v", a)
	}
	d := a.Spec.Modules[0]
	if d.Name != "dummy" || d.Kernel != "6.1.0-56-amd64" || d.Comment != "test NIC" || d.Line() != 8 {
		t.Errorf("entry 0 = %+v line %d", d, d.Line())
	}
	if len(d.SHA256) != 2 || d.SHA256[1] != digB {
		t.Errorf("digests not normalized to lowercase: %q", d.SHA256)
	}
	if !a.Spec.Modules[1].NameOnly() || a.Spec.Modules[2].NameOnly() {
		t.Errorf("name-only flags wrong: %+v", a.Spec.Modules)
	}
	if a.Source() != "allow.yaml" {
		t.Errorf("source %q", a.Source())
	}
}

func TestParseErrors(t *testing.T) {
	head := "apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nspec:\n  mode: enforce\n  modules:\n"
	long := strings.Repeat("a", MaxNameLen+1)
	for _, tc := range []struct {
		name, doc string
		want      []string // every one must appear in the error
	}{
		{"empty", "", []string{"allow.yaml: empty"}},
		{"comment only", "# nothing\n", []string{"allow.yaml: empty"}},
		{"syntax", "apiVersion: [\n", []string{"allow.yaml:", "invalid YAML"}},
		{"two documents", validDoc + "---\n" + validDoc, []string{"allow.yaml:17: only one YAML document"}},
		{"not a mapping", "- a\n- b\n", []string{"allow.yaml:1: must be a mapping, not a list"}},
		{"unknown top key", validDoc + "extra: 1\n", []string{"allow.yaml:17: extra: unknown field"}},
		{"missing spec", "apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\n", []string{"allow.yaml:1: spec: missing"}},
		{"wrong version", strings.Replace(validDoc, "kmodguard.io/v1", "kmodguard.io/v9", 1), []string{`allow.yaml:1: apiVersion: "kmodguard.io/v9" is not supported`}},
		{"wrong kind", strings.Replace(validDoc, "ModuleAllowlist", "Pod", 1), []string{`allow.yaml:2: kind: "Pod" is not supported`}},
		{"bad mode", strings.Replace(validDoc, "mode: enforce", "mode: block", 1), []string{`allow.yaml:6: spec.mode: "block" is not a mode`}},
		{"missing mode", "apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nspec:\n  modules: []\n", []string{"allow.yaml:4: spec.mode: missing"}},
		{"unknown entry key", head + "    - name: dummy\n      hash: x\n", []string{"allow.yaml:7: spec.modules[0].hash: unknown field"}},
		{"bad digest", head + "    - name: a\n    - name: b\n    - name: c\n    - name: dummy\n      sha256:\n        - abc\n",
			[]string{`allow.yaml:11: spec.modules[3].sha256[0]: "abc" is not a hex SHA-256 digest`}},
		{"non-hex digest", head + "    - name: dummy\n      sha256: [" + strings.Repeat("g", 64) + "]\n", []string{"allow.yaml:7: spec.modules[0].sha256[0]:", "not a hex SHA-256"}},
		{"digest scalar", head + "    - name: dummy\n      sha256: " + digA + "\n", []string{"allow.yaml:7: spec.modules[0].sha256: must be a list"}},
		{"duplicate digest", head + "    - name: dummy\n      sha256: [" + digA + ", " + strings.ToUpper(digA) + "]\n", []string{"spec.modules[0].sha256[1]: digest", "listed twice"}},
		{"missing name", head + "    - comment: x\n", []string{"allow.yaml:6: spec.modules[0].name: missing"}},
		{"null name", head + "    - name:\n", []string{"allow.yaml:6: spec.modules[0].name: must be a string, not null"}},
		{"long name", head + "    - name: " + long + "\n", []string{"allow.yaml:6: spec.modules[0].name:", "over the kernel's 55"}},
		{"slash", head + "    - name: a/b\n", []string{`contains '/'`}},
		{"control char", head + "    - name: \"a\\tb\"\n", []string{"not printable"}},
		{"duplicate name", head + "    - name: nf-tables\n    - name: nf_tables\n", []string{`allow.yaml:7: spec.modules[1].name: "nf_tables" is listed twice: first at spec.modules[0] (line 6)`}},
		{"digest under two names", head + "    - name: dummy\n      sha256: [" + digA + "]\n    - name: dumbo\n      sha256: [" + strings.ToUpper(digA) + "]\n",
			[]string{`allow.yaml:9: spec.modules[1].sha256[0]: digest ` + digA + ` is also listed for "dummy" (spec.modules[0])`}},
		{"duplicate key", head + "    - name: a\n      name: b\n", []string{"allow.yaml:7: spec.modules[0].name: set twice (first on line 6)"}},
		{"alias", "apiVersion: &v kmodguard.io/v1\nkind: *v\nspec:\n  mode: audit\n", []string{"allow.yaml:2: kind: aliases are not allowed"}},
		{"merge key", head + "    - <<: {name: a}\n", []string{"merge keys"}},
		{"modules not list", "apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nspec:\n  mode: audit\n  modules: dummy\n", []string{"allow.yaml:5: spec.modules: must be a list"}},
		{"kernel with space", head + "    - name: a\n      kernel: 6.1 x\n", []string{"allow.yaml:7: spec.modules[0].kernel:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := Parse([]byte(tc.doc), "allow.yaml")
			if err == nil {
				t.Fatalf("parsed %+v, want an error", a)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("error %T is not a *FieldError", err)
			}
		})
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	doc := "apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nspec:\n  mode: audit\n  modules:\n" +
		"    - name: a\n      sha256: [x]\n    - name: b\n      sha256: [y]\n"
	_, err := Parse([]byte(doc), "f")
	if err == nil || !strings.Contains(err.Error(), "f:7:") || !strings.Contains(err.Error(), "f:9:") {
		t.Fatalf("want both bad digests reported, got %v", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "allow.yaml")
	if err := os.WriteFile(p, []byte(validDoc), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if a.Source() != p || len(a.Spec.Modules) != 3 {
		t.Errorf("loaded %+v", a)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
