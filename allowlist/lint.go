package allowlist

import (
	"fmt"
	"regexp"
	"strings"
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
// name alone, kernel fields that do not look like a release, an empty list
// in enforce mode, and a missing metadata.name.
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
	for i := range a.Spec.Modules {
		e := &a.Spec.Modules[i]
		field := fmt.Sprintf("spec.modules[%d]", i)
		if e.NameOnly() {
			warn(e.line, field, WarnNameOnly, "%q lists no sha256: any module that calls itself %q matches", e.Name, e.Name)
		}
		if e.Kernel != "" && !reRelease.MatchString(e.Kernel) {
			warn(e.line, field+".kernel", WarnKernelRelease, "%q does not look like a kernel release (uname -r)", e.Kernel)
		}
	}
	return ws
}
