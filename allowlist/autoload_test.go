package allowlist

import (
	"path"
	"strings"
	"testing"

	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/aliascases"
)

// aliasCases are the matcher's cases, shared with lsm/bpftest, which holds
// the guard's matcher (glob.h) to the same answers.
var aliasCases = aliascases.Cases

func TestMatchAlias(t *testing.T) {
	for _, tc := range aliasCases {
		if got := MatchAlias(tc.Pattern, tc.Alias); got != tc.Want {
			t.Errorf("MatchAlias(%q, %q) = %v, want %v", tc.Pattern, tc.Alias, got, tc.Want)
		}
	}
}

func TestValidatePattern(t *testing.T) {
	for _, p := range []string{"net-pf-*", "fs-cramfs", "tcp-ulp-*", "*", "?", "symbol:*", "char-major-10-229", strings.Repeat("a", MaxPatternLen)} {
		if err := ValidatePattern(p); err != nil {
			t.Errorf("ValidatePattern(%q) = %v, want nil", p, err)
		}
	}
	for _, tc := range []struct{ p, want string }{
		{"", "empty"},
		{strings.Repeat("a", MaxPatternLen+1), "over the 55"},
		{"net pf", "0x20"},
		{"net\x00", "0x00"},
		{"fs-é", "0xc3"},
		{"fs/cramfs", `contains '/'`},
		{"net-pf-[0-9]", `contains '['`},
		{`fs-\*`, `contains '\\'`},
	} {
		err := ValidatePattern(tc.p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ValidatePattern(%q) = %v, want an error containing %s", tc.p, err, tc.want)
		}
	}
}

const autoloadHead = "apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nspec:\n  mode: enforce\n"

func TestParseAutoload(t *testing.T) {
	a, err := Parse([]byte(autoloadHead+"  requireHostNamespaces: true\n  requireModuleSignature: false\n  autoload:\n    deny: [net-pf-*, fs-cramfs, \"tcp-ulp-*\"]\n  modules: []\n"), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(a.Spec.Autoload.Deny, " "); got != "net-pf-* fs-cramfs tcp-ulp-*" || !a.Spec.RequireHostNamespaces || a.Spec.RequireModuleSignature {
		t.Fatalf("spec %+v", a.Spec)
	}
	// It survives Marshal.
	data, err := Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse(data, "again")
	if err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if strings.Join(b.Spec.Autoload.Deny, " ") != "net-pf-* fs-cramfs tcp-ulp-*" || !b.Spec.RequireHostNamespaces {
		t.Fatalf("after Marshal: %+v\n%s", b.Spec, data)
	}
	for _, tc := range []struct{ doc, want string }{
		{"  autoload:\n    deny: [\"\"]\n", "t.yaml:6: spec.autoload.deny[0]: pattern is empty"},
		{"  autoload:\n    deny: [\"fs/x\"]\n", `spec.autoload.deny[0]: pattern "fs/x" contains '/'`},
		{"  autoload:\n    deny:\n      - net-pf-*\n      - net_pf_*\n", "t.yaml:8: spec.autoload.deny[1]: pattern \"net_pf_*\" is listed twice (first at spec.autoload.deny[0]"},
		{"  autoload:\n    deny: net-pf-*\n", "spec.autoload.deny: must be a list of patterns, not a scalar"},
		{"  autoload:\n    allow: [x]\n", "spec.autoload.allow: unknown field (want one of deny)"},
		{"  autoload:\n    deny: [[x]]\n", "spec.autoload.deny[0]: must be a string, not a list"},
		{"  autoload:\n    deny: [" + strings.Repeat("x,", MaxAutoloadPatterns) + "y]\n", "33 patterns, over the 32 the guard holds"},
		{"  requireHostNamespaces: yes\n", "spec.requireHostNamespaces: must be true or false"},
	} {
		_, err := Parse([]byte(autoloadHead+tc.doc), "t.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want %q", tc.doc, err, tc.want)
		}
	}
}

func TestJudgeAutoload(t *testing.T) {
	a := New("test", ModeEnforce)
	a.Spec.Autoload.Deny = []string{"net-pf-*", "fs-cramfs"}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	yes, no := true, false
	for _, tc := range []struct {
		name    string
		a       *Allowlist
		e       event.Event
		allowed *bool
	}{
		{"denied family", a, event.Event{Syscall: event.ModuleRequest, Name: "net-pf-38"}, &no},
		{"denied, spelled with _", a, event.Event{Syscall: event.ModuleRequest, Name: "net_pf_38"}, &no},
		{"denied file system", a, event.Event{Syscall: event.ModuleRequest, Name: "fs-cramfs"}, &no},
		{"not denied", a, event.Event{Syscall: event.ModuleRequest, Name: "fs-ext4"}, &yes},
		{"guard decision on a request", a, *((event.Decision{Op: event.OpModuleRequest, Verdict: event.VerdictBlocked, Name: "net-pf-38", Entry: "net_pf_*"}).Event()), &no},
		{"no deny list", New("test", ModeEnforce), event.Event{Syscall: event.ModuleRequest, Name: "net-pf-38"}, nil},
		// A load of a module by name is the modules list's to decide,
		// whatever its alias: fs-cramfs is not the module cramfs.
		{"load by name", a, event.Event{Syscall: event.FinitModule, Name: "fs-cramfs", ThisModuleName: "fs-cramfs"}, &no},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := tc.e
			tc.a.Judge(&e)
			if (e.Allowed == nil) != (tc.allowed == nil) || (e.Allowed != nil && *e.Allowed != *tc.allowed) || e.AllowlistEntry != "" {
				t.Errorf("allowed %v entry %q, want %v", e.Allowed, e.AllowlistEntry, tc.allowed)
			}
		})
	}
}

// FuzzMatchAlias holds MatchAlias to path.Match on folded input, where the
// two agree: ASCII (path.Match's '?' is a rune, the guard's a byte) without
// '/', '[', ']' or '\'.
func FuzzMatchAlias(f *testing.F) {
	for _, tc := range aliasCases {
		f.Add(tc.Pattern, tc.Alias)
	}
	f.Fuzz(func(t *testing.T, pattern, alias string) {
		if len(pattern) > 64 || len(alias) > 64 || strings.ContainsAny(pattern+alias, `/[]\`) {
			return
		}
		for _, c := range []byte(pattern + alias) {
			if c >= 0x80 {
				return
			}
		}
		got := MatchAlias(pattern, alias)
		want, err := path.Match(FoldPattern(pattern), FoldAlias(alias))
		if err != nil {
			return
		}
		if got != want {
			t.Fatalf("MatchAlias(%q, %q) = %v, path.Match says %v", pattern, alias, got, want)
		}
	})
}

// TestDiffSpec: the spec's switches and deny patterns are differences too,
// so that `allowlist diff --exit-code` does not call two lists the same
// when one stops denying an autoload.
func TestDiffSpec(t *testing.T) {
	a, b := New("a", ModeEnforce), New("b", ModeEnforce)
	a.Spec.Autoload.Deny = []string{"net-pf-*", "fs-cramfs"}
	b.Spec.Autoload.Deny = []string{"net_pf_*", "tcp-ulp-*"}
	b.Spec.RequireHostNamespaces = true
	d := Diff(a, b)
	if d.Empty() || strings.Join(d.Require, " ") != "+requireHostNamespaces" ||
		strings.Join(d.AutoloadDenyAdded, " ") != "tcp-ulp-*" || strings.Join(d.AutoloadDenyRemoved, " ") != "fs-cramfs" {
		t.Errorf("diff %+v", d)
	}
	if d := Diff(b, b); !d.Empty() {
		t.Errorf("a list differs from itself: %+v", d)
	}
}
