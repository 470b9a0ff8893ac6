package allowlist_test

import (
	"fmt"
	"strings"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/kmod"
)

func ExampleAllowlist_Match() {
	elf := strings.Repeat("ab", 32)
	a, err := allowlist.Parse([]byte(`
apiVersion: kmodguard.io/v1
kind: ModuleAllowlist
metadata: {name: example}
spec:
  mode: enforce
  modules:
    - name: dummy
      sha256: [`+elf+`]
    - name: veth
`), "allow.yaml")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, m := range []*kmod.Module{
		{Name: "dummy", ThisModuleName: "dummy", FileSHA256: strings.Repeat("cd", 32), ELFSHA256: elf},
		{Name: "dummy", ThisModuleName: "dummy", FileSHA256: strings.Repeat("ef", 32), ELFSHA256: strings.Repeat("ef", 32)},
		{Name: "veth", ThisModuleName: "veth"},
		{Name: "dumbo", ThisModuleName: "dummy", NameMismatch: true},
	} {
		d := a.Match(m)
		fmt.Printf("%-5s %v: %s\n", m.Name, d.Allowed, strings.ReplaceAll(d.Reason, strings.Repeat("ef", 32), "efef…"))
	}
	// Output:
	// dummy true: ELF sha256 abababababababababababababababababababababababababababababababab of dummy is listed for "dummy"
	// dummy false: sha256 efef… of dummy is not listed for "dummy"
	// veth  true: entry "veth" lists no digest: allowed by name alone
	// dumbo false: name mismatch: .modinfo name="dumbo" but struct module.name="dummy" (a forgery signal)
}

func ExampleParse_error() {
	_, err := allowlist.Parse([]byte(`apiVersion: kmodguard.io/v1
kind: ModuleAllowlist
spec:
  mode: enforce
  modules:
    - name: dummy
      sha256: [abc]
      vendor: acme
`), "allow.yaml")
	fmt.Println(err)
	// Output:
	// allow.yaml:8: spec.modules[0].vendor: unknown field (want one of name, sha256, kernel, comment)
}
