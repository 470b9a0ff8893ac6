// Package doclinks checks the links between the project's Markdown pages.
package doclinks

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	linkRe    = regexp.MustCompile(`\[[^\]]*\]\(([^)\s]+)\)`)
	headingRe = regexp.MustCompile("(?m)^#{1,6} +(.+?) *$")
	fenceRe   = regexp.MustCompile("(?ms)^```.*?^```")
)

// slug is the anchor GitHub gives a heading: lower case, punctuation other
// than '-' and '_' dropped, spaces turned into '-'.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func anchors(doc string) map[string]bool {
	out := map[string]bool{}
	for _, m := range headingRe.FindAllStringSubmatch(fenceRe.ReplaceAllString(doc, ""), -1) {
		s := slug(m[1])
		for n := 1; out[s]; n++ { // repeated headings get -1, -2, ...
			s = slug(m[1]) + "-" + string(rune('0'+n))
		}
		out[s] = true
	}
	return out
}

// TestLinks follows every relative link of every Markdown file in the
// repository: the file must exist, and an anchor must name a heading of it.
func TestLinks(t *testing.T) {
	root := "../.."
	checked := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata" || d.Name() == "dist") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".md") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		doc := fenceRe.ReplaceAllString(string(b), "")
		for _, m := range linkRe.FindAllStringSubmatch(doc, -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			checked++
			file, anchor, _ := strings.Cut(target, "#")
			dest := path
			if file != "" {
				dest = filepath.Join(filepath.Dir(path), file)
			}
			info, err := os.Stat(dest)
			if err != nil {
				t.Errorf("%s: link %q: %v", path, target, err)
				continue
			}
			if anchor == "" || info.IsDir() {
				continue
			}
			tb, err := os.ReadFile(dest)
			if err != nil {
				t.Errorf("%s: link %q: %v", path, target, err)
				continue
			}
			if !anchors(string(tb))[anchor] {
				t.Errorf("%s: link %q: no heading %q in %s", path, target, anchor, dest)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked == 0 {
		t.Fatal("no links checked")
	}
	t.Logf("%d relative links checked", checked)
}

func TestSlug(t *testing.T) {
	for h, want := range map[string]string{
		"The guard (`kmodguard enforcer`)": "the-guard-kmodguard-enforcer",
		"5. Switch to enforce":             "5-switch-to-enforce",
		"Exit codes of `kmodguard`":        "exit-codes-of-kmodguard",
	} {
		if got := slug(h); got != want {
			t.Errorf("slug(%q) = %q, want %q", h, got, want)
		}
	}
}
