package allowlist

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/kmodguard/kmodguard/kmod"
)

// Warning is something in a valid allowlist that is probably not what its
// author wants.
type Warning struct {
	Source string `json:"source,omitempty"`
	Line   int    `json:"line,omitempty"`
	Field  string `json:"field,omitempty"`
	// Code is a stable identifier, e.g. "name-only".
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Warning codes.
const (
	WarnNameOnly      = "name-only"      // entry matches on the name alone
	WarnKernelRelease = "kernel-release" // kernel does not look like a release
	WarnSharedDigest  = "shared-digest"  // one digest listed under several names
	WarnEmptyEnforce  = "empty-enforce"  // enforce mode with no modules
	WarnNoName        = "no-name"        // metadata.name is empty
)

func (w Warning) String() string {
	var b strings.Builder
	if w.Source != "" {
		b.WriteString(w.Source)
		if w.Line > 0 {
			fmt.Fprintf(&b, ":%d", w.Line)
		}
		b.WriteString(": ")
	}
	if w.Field != "" {
		b.WriteString(w.Field + ": ")
	}
	fmt.Fprintf(&b, "%s [%s]", w.Message, w.Code)
	return b.String()
}

// reRelease is what `uname -r` looks like: 6.1.0-56-amd64,
// 6.12.48+deb12-cloud-amd64, 5.15.0-1051-azure, 6.6.0-rc1.
var reRelease = regexp.MustCompile(`^[0-9]+\.[0-9]+(\.[0-9]+)?([-+.~_][0-9A-Za-z._+~-]*)?$`)

// Lint returns warnings for a valid allowlist: entries that match on the
// name alone, kernel fields that do not look like a release, digests listed
// under more than one name, an empty list in enforce mode, and a missing
// metadata.name.
func (a *Allowlist) Lint() []Warning {
	var ws []Warning
	warn := func(line int, field, code, format string, args ...any) {
		ws = append(ws, Warning{Source: a.source, Line: line, Field: field, Code: code, Message: fmt.Sprintf(format, args...)})
	}
	if a.Metadata.Name == "" {
		warn(0, "metadata.name", WarnNoName, "the allowlist has no name; set one to tell lists apart in events and logs")
	}
	if a.Spec.Mode == ModeEnforce && len(a.Spec.Modules) == 0 {
		warn(0, "spec.modules", WarnEmptyEnforce, "enforce mode with no modules refuses every module load")
	}
	owner := map[string]string{} // digest -> normalized name of the first entry
	for i := range a.Spec.Modules {
		e := &a.Spec.Modules[i]
		field := fmt.Sprintf("spec.modules[%d]", i)
		if e.NameOnly() {
			warn(e.line, field, WarnNameOnly, "%q lists no sha256: any module that calls itself %q matches", e.Name, e.Name)
		}
		if e.Kernel != "" && !reRelease.MatchString(e.Kernel) {
			warn(e.line, field+".kernel", WarnKernelRelease, "%q does not look like a kernel release (uname -r)", e.Kernel)
		}
		n := kmod.NormalizeName(e.Name)
		for _, d := range e.SHA256 {
			if prev, ok := owner[d]; ok && prev != n {
				warn(e.line, field+".sha256", WarnSharedDigest, "digest %s is also listed for %q; one file has one name, so one of the entries is wrong", d, prev)
				continue
			}
			owner[d] = n
		}
	}
	return ws
}
