package enforcer

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kmodguard/kmodguard/allowlist"
)

// Unlisted reads a /proc/modules table from r and returns the loaded modules
// that the allowlist a does not name, in table order. Loaded modules are
// known by name only, so an entry of the same name counts as listed even
// when it pins digests.
func Unlisted(a *allowlist.Allowlist, r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		name, _, _ := strings.Cut(sc.Text(), " ")
		if name == "" {
			continue
		}
		if len(a.Lookup(name)) == 0 {
			out = append(out, name)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read module table: %w", err)
	}
	return out, nil
}

// reconcile warns about each loaded module the allowlist does not name.
// On a guard it has just loaded (not adopted), it also lists every module
// loaded before it: those it never decided (an initramfs's drivers, those
// PID 1 loads itself), so that its decisions plus this list account for
// every module in /proc/modules.
func (e *Enforcer) reconcile(a *allowlist.Allowlist, adopted bool) {
	b, err := os.ReadFile("/proc/modules")
	if err != nil {
		e.log.WithError(err).Warn("cannot compare loaded modules with the allowlist")
		return
	}
	if !adopted {
		var before []string
		for _, line := range strings.Split(string(b), "\n") {
			if name, _, _ := strings.Cut(line, " "); name != "" {
				before = append(before, name)
			}
		}
		e.log.WithField("modules", before).Infof("%d modules were loaded before the guard: it did not decide them", len(before))
	}
	names, err := Unlisted(a, bytes.NewReader(b))
	if err != nil {
		e.log.WithError(err).Warn("cannot compare loaded modules with the allowlist")
		return
	}
	for _, n := range names {
		e.log.WithField("module", n).Warn("loaded module is not on the allowlist (loaded before the guard)")
	}
}
