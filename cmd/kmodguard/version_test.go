package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmodguard/kmodguard/internal/version"
)

// TestVersionCommand: this test binary is not stamped, so it reports the
// source tree's version, in both forms.
func TestVersionCommand(t *testing.T) {
	want := version.Get()
	out, _, code := kg(t, "version")
	if code != exitOK || out != "kmodguard "+want.String()+"\n" || !strings.HasPrefix(out, "kmodguard "+version.Release) {
		t.Errorf("version: exit %d, %q", code, out)
	}
	out, _, code = kg(t, "version", "--output", "json")
	var got version.Info
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != exitOK {
		t.Fatalf("version --output json: exit %d, %q: %v", code, out, err)
	}
	if got != want || !version.IsSemver(got.Version) || got.GoVersion == "" {
		t.Errorf("version --output json = %+v, want %+v", got, want)
	}
	if _, stderr, code := kg(t, "version", "-o", "xml"); code != exitError || !strings.Contains(stderr, "want text, json or yaml") {
		t.Errorf("version -o xml: exit %d, %q", code, stderr)
	}
}

// TestVersionStamped builds the CLI as a release would be, with the
// linker's stamp, and as `make build` does, and runs `kmodguard version`.
func TestVersionStamped(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the CLI: not in -short")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skipf("needs the go tool: %v", err)
	}
	dir := t.TempDir()
	const commit = "0123456789abcdef0123456789abcdef01234567"
	bin := filepath.Join(dir, "kmodguard")
	pkg := "github.com/kmodguard/kmodguard/internal/version"
	build := exec.Command("go", "build", "-o", bin, "-ldflags",
		"-X "+pkg+".version=v9.8.7 -X "+pkg+".commit="+commit+" -X "+pkg+".modified=false", ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	got := runVersion(t, bin)
	if got.Version != "9.8.7" || got.Commit != commit || got.Modified || got.Source != "ldflags" {
		t.Errorf("release build: %+v", got)
	}
	// What another kmodguard reads of it (enforcer status, of the daemon).
	if of, err := version.OfExecutable(bin); err != nil || of != got {
		t.Errorf("OfExecutable = %+v, %v; the binary says %+v", of, err, got)
	}

	// make build: the commit of this tree.
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("needs git and a work tree: %v", err)
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skipf("needs make: %v", err)
	}
	mk := exec.Command("make", "-s", "-C", "../..", "build", "BIN="+dir)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	got = runVersion(t, bin)
	c := strings.TrimSpace(string(head))
	// At a release tag, the tag; else the tree's version and the commit.
	want := version.Release + "+g" + c[:12]
	if tag, err := exec.Command("git", "describe", "--tags", "--exact-match", "--match", "v[0-9]*").Output(); err == nil {
		want = strings.TrimPrefix(strings.TrimSpace(string(tag)), "v")
	}
	if got.Commit != c || got.Source != "ldflags" || !strings.HasPrefix(got.Version, want) || !version.IsSemver(got.Version) {
		t.Errorf("make build: %+v, want version %s… and commit %s", got, want, c)
	}
	if of, err := version.OfExecutable(bin); err != nil || of != got {
		t.Errorf("OfExecutable = %+v, %v; the binary says %+v", of, err, got)
	}
	t.Logf("make build: kmodguard %s", got)
}

func runVersion(t *testing.T, bin string) version.Info {
	t.Helper()
	out, err := exec.Command(bin, "version", "--output", "json").Output()
	if err != nil {
		t.Fatalf("%s version: %v", bin, err)
	}
	var i version.Info
	if err := json.Unmarshal(out, &i); err != nil {
		t.Fatalf("%s version: %q: %v", bin, out, err)
	}
	return i
}
