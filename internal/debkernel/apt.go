package debkernel

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// aptConfig is what apt-get and apt-cache are given besides their
// arguments: nothing for the host's own configuration, or the -o options of
// a private one (suiteApt).
type aptConfig []string

// command is exec.CommandContext for an apt tool under the configuration.
func (a aptConfig) command(ctx context.Context, tool string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, tool, append(append([]string(nil), a...), args...)...)
}

// update refreshes the configuration's package lists.
func (a aptConfig) update(ctx context.Context) error {
	if out, err := a.command(ctx, "apt-get", "update", "-qq").CombinedOutput(); err != nil {
		return fmt.Errorf("debkernel: apt-get update: %w\n%s", err, out)
	}
	return nil
}

// aptFor returns the apt configuration that serves a series: the host's
// for bookworm's kernels, a private one for sid's and bullseye's.
func aptFor(ctx context.Context, s Series) (aptConfig, error) {
	switch s {
	case SeriesSid:
		return suiteApt(ctx, "sid", sidRefresh)
	case Series510:
		return suiteApt(ctx, "bullseye", stableRefresh)
	}
	return nil, nil
}

// Where sidApt takes the archive from when the host's sources name no
// Debian mirror, and the keys it checks it with.
const (
	defaultMirror  = "http://deb.debian.org/debian"
	defaultKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
)

// How old a private configuration's package lists may be before suiteApt
// fetches them again: unstable moves every day, and the archive keeps only
// the current build of each kernel; a released suite moves with its point
// releases and security updates.
const (
	sidRefresh    = 6 * time.Hour
	stableRefresh = 24 * time.Hour
)

// suiteApt returns a private apt configuration for one Debian suite (sid,
// bullseye), used only to fetch packages: a sources.list with one line for
// that suite on the host's Debian mirror, checked with the host's keyring,
// and its own package lists and cache under CacheDir()/apt/<suite>. The
// host's sources.list.d and preferences are left out
// (Dir::Etc::sourceparts=-), and nothing of the host's apt is changed. The
// lists are fetched when missing or older than refresh; a failed refresh
// keeps the lists there are, if any.
func suiteApt(ctx context.Context, suite string, refresh time.Duration) (aptConfig, error) {
	dir := filepath.Join(CacheDir(), "apt", suite)
	for _, d := range []string{"etc", "lists/partial", "cache/archives/partial"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, fmt.Errorf("debkernel: %w", err)
		}
	}
	mirror, keyring := hostMirror()
	sources := filepath.Join(dir, "etc", "sources.list")
	line := fmt.Sprintf("deb [signed-by=%s] %s %s main\n", keyring, mirror, suite)
	if b, err := os.ReadFile(sources); err != nil || string(b) != line {
		if err := os.WriteFile(sources, []byte(line), 0o644); err != nil {
			return nil, fmt.Errorf("debkernel: %w", err)
		}
	}
	a := aptConfig{
		"-o", "Dir::Etc::sourcelist=" + sources,
		"-o", "Dir::Etc::sourceparts=-",
		"-o", "Dir::Etc::preferences=" + filepath.Join(dir, "etc", "preferences"),
		"-o", "Dir::Etc::preferencesparts=-",
		"-o", "Dir::State::Lists=" + filepath.Join(dir, "lists"),
		"-o", "Dir::Cache=" + filepath.Join(dir, "cache"),
		// Only the Packages indices: no translations, no AppStream data.
		"-o", "Acquire::Languages=none",
		"-o", "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
		"-o", "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false",
		"-o", "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false",
	}
	if os.Geteuid() == 0 {
		// apt drops to _apt for downloads, which may not enter a cache in
		// root's home: it then warns and goes on as root anyway.
		a = append(a, "-o", "APT::Sandbox::User=root")
	}
	if fresh(filepath.Join(dir, "lists"), refresh) {
		return a, nil
	}
	unlock, err := lockCache()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if fresh(filepath.Join(dir, "lists"), refresh) {
		return a, nil
	}
	if err := a.update(ctx); err != nil && !fresh(filepath.Join(dir, "lists"), 0) {
		return nil, fmt.Errorf("%w (%s's lists, fetched through %s)", err, suite, sources)
	}
	return a, nil
}

// fresh reports whether dir holds a Packages index younger than maxAge
// (any age when maxAge is 0).
func fresh(dir string, maxAge time.Duration) bool {
	m, _ := filepath.Glob(filepath.Join(dir, "*_Packages*"))
	for _, p := range m {
		st, err := os.Stat(p)
		if err == nil && (maxAge == 0 || time.Since(st.ModTime()) < maxAge) {
			return true
		}
	}
	return false
}

// hostMirror returns the Debian mirror the host's apt sources use, and the
// keyring they check it with: the first deb entry that is neither a
// security nor an updates suite, in sources.list or in sources.list.d
// (one-line .list or deb822 .sources). Without one, deb.debian.org and
// debian-archive-keyring.
func hostMirror() (mirror, keyring string) {
	files := []string{"/etc/apt/sources.list"}
	for _, ext := range []string{"*.list", "*.sources"} {
		m, _ := filepath.Glob(filepath.Join("/etc/apt/sources.list.d", ext))
		files = append(files, m...)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var es []sourceEntry
		if strings.HasSuffix(f, ".sources") {
			es = parseDeb822(string(b))
		} else {
			es = parseOneLine(string(b))
		}
		for _, e := range es {
			if e.debianArchive() {
				keyring = defaultKeyring
				if strings.HasPrefix(e.signedBy, "/") && fileExists(e.signedBy) {
					keyring = e.signedBy
				}
				return strings.TrimRight(e.uri, "/"), keyring
			}
		}
	}
	return defaultMirror, defaultKeyring
}

// sourceEntry is one apt source: a URI, its suites, and its Signed-By.
type sourceEntry struct {
	types, suites []string
	uri, signedBy string
	enabled       bool
}

// debianArchive reports whether the entry is Debian's main archive (not
// security, not updates or backports), which also serves sid.
func (e sourceEntry) debianArchive() bool {
	if !e.enabled || !strings.HasSuffix(strings.TrimRight(e.uri, "/"), "/debian") {
		return false
	}
	deb := false
	for _, t := range e.types {
		deb = deb || t == "deb"
	}
	if !deb {
		return false
	}
	for _, s := range e.suites {
		if !strings.Contains(s, "-") && !strings.Contains(s, "/") {
			return true
		}
	}
	return false
}

// parseOneLine reads the one-line format: "deb [opts] URI SUITE COMP...".
func parseOneLine(text string) []sourceEntry {
	var es []sourceEntry
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		e := sourceEntry{types: []string{f[0]}, enabled: true}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			for len(f) > 0 {
				opt := strings.Trim(f[0], "[]")
				if v, ok := strings.CutPrefix(opt, "signed-by="); ok {
					e.signedBy = v
				}
				done := strings.HasSuffix(f[0], "]")
				f = f[1:]
				if done {
					break
				}
			}
		}
		if len(f) < 2 {
			continue
		}
		e.uri, e.suites = f[0], []string{f[1]}
		es = append(es, e)
	}
	return es
}

// parseDeb822 reads the deb822 format of .sources files: stanzas of
// "Key: value" fields separated by blank lines.
func parseDeb822(text string) []sourceEntry {
	var es []sourceEntry
	e := sourceEntry{enabled: true}
	flush := func() {
		if e.uri != "" {
			es = append(es, e)
		}
		e = sourceEntry{enabled: true}
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			flush()
			continue
		}
		if strings.HasPrefix(line, "#") || strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t") {
			continue // comments, and continuation lines (an inline key)
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch strings.ToLower(k) {
		case "types":
			e.types = strings.Fields(v)
		case "uris":
			if f := strings.Fields(v); len(f) > 0 {
				e.uri = f[0]
			}
		case "suites":
			e.suites = strings.Fields(v)
		case "signed-by":
			e.signedBy = v
		case "enabled":
			e.enabled = v != "no"
		}
	}
	flush()
	return es
}
