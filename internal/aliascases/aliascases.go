// Package aliascases holds the cases of the autoload alias matcher: what
// allowlist.MatchAlias answers for a pattern and an alias. The allowlist
// tests hold the Go matcher to them, and lsm/bpftest the guard's (glob.h),
// so that both answer alike.
package aliascases

// Case is one pattern, one alias and whether the pattern matches it.
type Case struct {
	Pattern, Alias string
	Want           bool
}

// Cases are the matcher's cases.
var Cases = []Case{
	{"net-pf-*", "net-pf-38", true},
	{"net-pf-*", "net-pf-", true},
	{"net-pf-*", "net-pf", false},
	{"net-pf-*", "xnet-pf-38", false},
	{"fs-cramfs", "fs-cramfs", true},
	{"fs-cramfs", "fs-cramfsx", false},
	{"fs-cramfs", "fs-cramf", false},
	{"fs-*", "fs-cramfs", true},
	{"tcp-ulp-*", "tcp-ulp-tls", true},
	{"tcp-ulp-*", "tcp-ulp", false},
	{"net-pf-?", "net-pf-2", true},
	{"net-pf-?", "net-pf-38", false},
	{"net-pf-??", "net-pf-38", true},
	{"*", "anything", true},
	{"*", "", true},
	{"*", "a", true},
	{"**", "a", true},
	{"a**b", "ab", true},
	{"a**b", "axxb", true},
	{"*-*", "net-pf-38", true},
	{"*pf*", "net-pf-38", true},
	{"*38", "net-pf-38", true},
	{"*39", "net-pf-38", false},
	{"net*38", "net-pf-38", true},
	{"a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaab", true},
	{"a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
	{"?", "", false},
	{"?*", "", false},
	{"*?", "x", true},
	// '-' and '_' are one character, both ways, as modprobe reads aliases.
	{"net-pf-*", "net_pf_38", true},
	{"fs_foo_bar", "fs-foo-bar", true},
	{"fs-foo-bar", "fs-foo_bar", true},
	// Case counts.
	{"fs-cramfs", "fs-CRAMFS", false},
	{"FS-*", "fs-cramfs", false},
	// A star in the alias is a byte like any other.
	{"fs-?", "fs-*", true},
	{"fs-a", "fs-*", false},
	{"char-major-10-*", "char-major-10-229", true},
	{"symbol:*", "symbol:nft_fib", true},
	{"crypto-*", "crypto-sha256-generic", true},
	{"net-pf-16-proto-*", "net-pf-16-proto-9", true},
	{"net-pf-16-proto-*", "net-pf-16", false},
}
