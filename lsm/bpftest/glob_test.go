//go:build linux

package bpftest

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/enforcer"
	"github.com/kmodguard/kmodguard/internal/aliascases"
)

// globCases are allowlist's TestMatchAlias cases (internal/aliascases),
// and the longest pattern and alias: the guard's matcher (glob.h) must give
// allowlist.MatchAlias's answers.
var globCases = append(append([]aliascases.Case(nil), aliascases.Cases...), []aliascases.Case{
	// The longest of each.
	{Pattern: strings.Repeat("?", 55), Alias: strings.Repeat("x", 55), Want: true},
	{Pattern: strings.Repeat("x", 54) + "*", Alias: strings.Repeat("x", 55), Want: true},
	{Pattern: "*" + strings.Repeat("x", 54), Alias: strings.Repeat("x", 55), Want: true},
	{Pattern: strings.Repeat("?", 55), Alias: strings.Repeat("x", 54), Want: false},
}...)

// glob runs glob.h's kg_glob_match on the pattern as the guard holds it
// (folded) and the alias.
func (h *harness) glob(tb testing.TB, pattern, alias string) bool {
	tb.Helper()
	for i, s := range []string{allowlist.FoldPattern(pattern), alias} {
		var v bpftestKgGlobStr
		if len(s) >= len(v.S) {
			tb.Fatalf("%q does not fit", s)
		}
		for j := range len(s) {
			v.S[j] = int8(s[j])
		}
		if err := h.objs.KgTestGlob.Put(uint32(i), &v); err != nil {
			tb.Fatal(err)
		}
	}
	res, err := h.run(h.objs.TestGlob)
	if err != nil {
		tb.Fatal(err)
	}
	return res.Ret == 1
}

func TestGlob(t *testing.T) {
	h := newHarness(t, 1)
	for _, tc := range globCases {
		if go_ := allowlist.MatchAlias(tc.Pattern, tc.Alias); go_ != tc.Want {
			t.Errorf("allowlist.MatchAlias(%q, %q) = %v, want %v", tc.Pattern, tc.Alias, go_, tc.Want)
		}
		if got := h.glob(t, tc.Pattern, tc.Alias); got != tc.Want {
			t.Errorf("kg_glob_match(%q, %q) = %v, want %v", tc.Pattern, tc.Alias, got, tc.Want)
		}
	}
	// Random patterns over a small alphabet, where stars and '?' meet the
	// bytes often, against allowlist.MatchAlias.
	r := rand.New(rand.NewPCG(12, 1))
	gen := func(alphabet string, n int) string {
		b := make([]byte, r.IntN(n+1))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(b)
	}
	matched := 0
	for range 3000 {
		p, a := gen("ab-_*?", 12), gen("ab-_*?", 16)
		if p == "" {
			continue
		}
		want := allowlist.MatchAlias(p, a)
		if want {
			matched++
		}
		if got := h.glob(t, p, a); got != want {
			t.Errorf("kg_glob_match(%q, %q) = %v, allowlist.MatchAlias says %v", p, a, got, want)
		}
	}
	t.Logf("3000 random cases, %d matching", matched)
}

// TestAutoloadPolicy: the deny list travels through enforcer.PolicyFor and
// the policy map as the guard reads it (kg_autoload_denied): the first
// matching pattern by its index, none for an alias no pattern matches.
func TestAutoloadPolicy(t *testing.T) {
	h := newHarness(t, 1)
	denied := func(a *allowlist.Allowlist, alias string) int {
		t.Helper()
		if a == nil {
			if err := h.objs.KgPolicy.Delete(uint32(0)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				t.Fatal(err)
			}
		} else {
			p, err := enforcer.PolicyFor(a, allowlist.ModeEnforce, 3)
			if err != nil {
				t.Fatal(err)
			}
			m, err := p.NewMap()
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			if err := h.objs.KgPolicy.Put(uint32(0), m); err != nil {
				t.Fatal(err)
			}
		}
		var v bpftestKgGlobStr
		for j := range len(alias) {
			v.S[j] = int8(alias[j])
		}
		if err := h.objs.KgTestGlob.Put(uint32(1), &v); err != nil {
			t.Fatal(err)
		}
		res, err := h.run(h.objs.TestAutoload)
		if err != nil {
			t.Fatal(err)
		}
		return int(res.Ret) - 1
	}
	a := allowlist.New("t", allowlist.ModeEnforce)
	a.Spec.Autoload.Deny = []string{"fs-cramfs", "net-pf-*", "tcp-ulp-*", "*-x"}
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		alias string
		want  int
	}{
		{"fs-cramfs", 0}, {"net-pf-38", 1}, {"net_pf_38", 1}, {"tcp-ulp-tls", 2},
		{"net-pf-x", 1}, {"fs-x", 3}, {"fs-ext4", -1}, {"", -1},
	} {
		if got := denied(a, tc.alias); got != tc.want {
			t.Errorf("%q: pattern %d, want %d", tc.alias, got, tc.want)
		}
	}
	// All 32 patterns are tried.
	full := allowlist.New("t", allowlist.ModeEnforce)
	for i := range allowlist.MaxAutoloadPatterns {
		full.Spec.Autoload.Deny = append(full.Spec.Autoload.Deny, "p"+strings.Repeat("x", i))
	}
	if err := full.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := denied(full, "p"+strings.Repeat("x", 31)); got != 31 {
		t.Errorf("the 32nd pattern: %d, want 31", got)
	}
	if got := denied(allowlist.New("t", allowlist.ModeEnforce), "net-pf-38"); got != -1 {
		t.Errorf("no deny list: pattern %d", got)
	}
	if got := denied(nil, "net-pf-38"); got != -1 {
		t.Errorf("no policy: pattern %d", got)
	}
}
