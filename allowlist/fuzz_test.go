package allowlist

import (
	"strings"
	"testing"

	"github.com/kmodguard/kmodguard/kmod"
)

// FuzzParse feeds Parse valid and broken allowlists. Parse must never panic
// or hang, and whatever it accepts must survive Marshal and parse again to
// the same list.
func FuzzParse(f *testing.F) {
	head := "apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nspec:\n  mode: audit\n  modules:\n"
	for _, seed := range []string{
		validDoc,
		head,
		head + "    - name: veth\n",
		"apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nspec:\n  mode: enforce\n  requireHostNamespaces: true\n  autoload:\n    deny: [net-pf-*, fs-cramfs, \"a**?\"]\n  modules: []\n",
		head + "    - name: dummy\n      sha256: [" + digA + "]\n",
		head + "    - name: dummy\n      sha256: [abc]\n",
		head + "    - {name: a, sha256: [" + digB + "], kernel: 6.1.0-1-amd64, comment: c}\n",
		"apiVersion: &a kmodguard.io/v1\nkind: *a\n",
		"a: &a [*a, *a]\n",
		"- [[[[[[[[[[]]]]]]]]]]\n",
		validDoc + "---\n",
		"%YAML 1.2\n---\n" + validDoc,
		"",
		"\x00\xff",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := Parse(data, "fuzz.yaml")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the source: %q", err)
			}
			return
		}
		a.Match(&kmod.Module{Name: "dummy", ThisModuleName: "dummy", FileSHA256: digA})
		a.Lint()
		out, err := Marshal(a)
		if err != nil {
			t.Fatalf("accepted list does not marshal: %v", err)
		}
		b, err := Parse(out, "again.yaml")
		if err != nil {
			t.Fatalf("marshalled list does not parse: %v\n%s", err, out)
		}
		if d := Diff(a, b); !d.Empty() {
			t.Fatalf("round trip changed the list: %+v", d)
		}
	})
}
