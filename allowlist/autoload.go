package allowlist

import (
	"errors"
	"fmt"
	"strings"
)

// Autoload governs the kernel's own module requests (request_module): the
// alias the kernel asks modprobe for when a process opens a socket of an
// unloaded family (net-pf-38), mounts an unknown file system (fs-cramfs),
// and the like.
type Autoload struct {
	// Deny lists patterns (see MatchAlias) of aliases whose request the
	// guard refuses, so that the kernel never runs modprobe for them:
	// attack surface reduction. A module loaded by name from user space
	// (modprobe cramfs) is a load like any other, decided by the modules
	// list, not by this.
	Deny []string `yaml:"deny,omitempty" json:"deny,omitempty"`
}

const (
	// MaxAutoloadPatterns is the most patterns spec.autoload.deny may
	// hold: the guard tries each on every request, in a bounded loop.
	MaxAutoloadPatterns = 32
	// MaxPatternLen is the longest pattern, in bytes: the guard keeps one
	// in a policy record's name (KG_NAME_LEN with its NUL), and the
	// kernel's own requests are at most that long (MODULE_NAME_LEN).
	MaxPatternLen = 55
)

// ValidatePattern checks one autoload pattern: 1 to MaxPatternLen bytes of
// printable ASCII without spaces, '/', '[', ']' or '\' (reserved: no
// character classes, no escapes).
func ValidatePattern(p string) error {
	switch {
	case p == "":
		return errors.New("pattern is empty")
	case len(p) > MaxPatternLen:
		return fmt.Errorf("pattern %q is %d bytes, over the %d the guard holds", p, len(p), MaxPatternLen)
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c <= ' ' || c > '~' {
			return fmt.Errorf("pattern %q contains the byte 0x%02x (not printable ASCII)", p, c)
		}
		if strings.IndexByte(`/[]\`, c) >= 0 {
			return fmt.Errorf("pattern %q contains %q: only * and ? are special, and / [ ] \\ are not allowed", p, c)
		}
	}
	return nil
}

// FoldAlias is the form of an alias that MatchAlias compares: '-' read as
// '_', as modprobe reads aliases (kmod's alias_normalize), so that a
// request spelled with the other one cannot slip past a pattern.
func FoldAlias(s string) string { return strings.ReplaceAll(s, "-", "_") }

// FoldPattern is the form of a pattern that MatchAlias compares, and that
// the guard holds: folded as FoldAlias, and consecutive stars as one star.
func FoldPattern(p string) string {
	b := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '-' {
			c = '_'
		}
		if c == '*' && len(b) > 0 && b[len(b)-1] == '*' {
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

// MatchAlias reports whether the requested alias matches pattern, a shell
// glob over the whole alias: '*' matches any run of bytes (none too), '?'
// any one byte, and every other byte itself, case and all, except that '-'
// and '_' match each other (FoldAlias, FoldPattern). The guard's matcher (glob.h) gives
// the same answers (lsm/bpftest).
func MatchAlias(pattern, alias string) bool {
	p, s := FoldPattern(pattern), FoldAlias(alias)
	// Two pointers, backtracking to the last star only: linear in
	// practice, at worst len(p)*len(s).
	pi, si, star, mark := 0, 0, -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, si
			pi++
		case pi < len(p) && (p[pi] == '?' || p[pi] == s[si]):
			pi++
			si++
		case star >= 0:
			mark++
			pi, si = star+1, mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// DeniedAutoload returns the first pattern of spec.autoload.deny that the
// requested alias matches.
func (a *Allowlist) DeniedAutoload(alias string) (pattern string, denied bool) {
	if a == nil {
		return "", false
	}
	for _, p := range a.Spec.Autoload.Deny {
		if MatchAlias(p, alias) {
			return p, true
		}
	}
	return "", false
}

// validateAutoload checks spec.autoload.deny.
func (a *Allowlist) validateAutoload(errs *errList, at func(string) int) {
	deny := a.Spec.Autoload.Deny
	if len(deny) > MaxAutoloadPatterns {
		errs.add(at("spec.autoload.deny"), "spec.autoload.deny", fmt.Errorf("%d patterns, over the %d the guard holds", len(deny), MaxAutoloadPatterns))
	}
	seen := make(map[string]int, len(deny))
	for i, p := range deny {
		field := fmt.Sprintf("spec.autoload.deny[%d]", i)
		if err := ValidatePattern(p); err != nil {
			errs.add(at(field), field, err)
			continue
		}
		if j, dup := seen[FoldPattern(p)]; dup {
			errs.add(at(field), field, fmt.Errorf("pattern %q is listed twice (first at spec.autoload.deny[%d]; '-' and '_' are the same)", p, j))
			continue
		}
		seen[FoldPattern(p)] = i
	}
}
