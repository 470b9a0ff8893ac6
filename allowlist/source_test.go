//go:build linux

package allowlist

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestConfigMapSwapChangesFileID updates a file the way the kubelet updates
// a ConfigMap volume (new directory, ..data symlink swapped by rename) and
// checks that Source's change detection sees it even when the size and
// modification time do not change.
func TestConfigMapSwapChangesFileID(t *testing.T) {
	dir := t.TempDir()
	mtime := time.Unix(1_700_000_000, 0)
	write := func(ts string, content string) {
		d := filepath.Join(dir, ts)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"allowlist.yaml", "allowlist.yaml.sig"} {
			p := filepath.Join(d, f)
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, mtime, mtime); err != nil {
				t.Fatal(err)
			}
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(ts, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	write("..2026_11_26_01", "version-1")
	for _, f := range []string{"allowlist.yaml", "allowlist.yaml.sig"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "allowlist.yaml")
	before := StatID(path)
	if before == (FileID{}) {
		t.Fatal("file id of the mounted file is empty")
	}
	if again := StatID(path); again != before {
		t.Fatal("file id changed without an update")
	}
	write("..2026_11_26_02", "version-2") // same size, same mtime
	if after := StatID(path); after == before {
		t.Error("a ConfigMap update (..data swapped) left the file id unchanged: no reload would follow")
	}
}

// TestSourceSignatureRule: one rule for every Source: a public key means a
// valid signature is required, also when the file has no signature at all.
func TestSourceSignatureRule(t *testing.T) {
	path, pubPath, _ := writeSigned(t)
	pub, err := LoadPublicKey(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	unsigned := filepath.Join(t.TempDir(), "unsigned.yaml")
	if err := os.WriteFile(unsigned, []byte(validDoc), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
		opts LoadOptions
		ok   bool
	}{
		{"signed, key", path, LoadOptions{PublicKey: pub}, true},
		{"signed, no key", path, LoadOptions{}, true},
		{"unsigned, key", unsigned, LoadOptions{PublicKey: pub}, false},
		{"unsigned, key, required", unsigned, LoadOptions{PublicKey: pub, RequireSignature: true}, false},
		{"unsigned, no key", unsigned, LoadOptions{}, true},
		{"required without a key", path, LoadOptions{RequireSignature: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewSource(tc.path, tc.opts)
			if (err == nil) != tc.ok {
				t.Fatalf("NewSource: %v, want ok %v", err, tc.ok)
			}
			if err == nil && (s.Current() == nil || s.Path() != tc.path) {
				t.Errorf("source %+v", s)
			}
		})
	}
}

func TestSourceReload(t *testing.T) {
	path, pubPath, dir := writeSigned(t)
	pub, err := LoadPublicKey(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSource(path, LoadOptions{PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	first := s.Current()
	if a, changed, err := s.ReloadIfChanged(); changed || err != nil || a != first {
		t.Fatalf("unchanged file: reloaded %v, %v", changed, err)
	}
	// An edit without a new signature: refused, counted, the old list stays.
	if err := os.WriteFile(path, []byte(validDoc+"    - name: kmodguard_test_extra\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !s.Changed() {
		t.Fatal("an edited file is not seen as changed")
	}
	if _, changed, err := s.ReloadIfChanged(); !changed || !errors.Is(err, ErrBadSignature) {
		t.Fatalf("stale signature: changed %v, %v", changed, err)
	}
	if s.Current() != first || s.Failures() != 1 || s.Changed() {
		t.Fatalf("after a refused reload: current changed %v, failures %d, changed %v", s.Current() != first, s.Failures(), s.Changed())
	}
	// Signed again: the new version is in force.
	k, err := LoadPrivateKey(filepath.Join(dir, "k.key"))
	if err != nil {
		t.Fatal(err)
	}
	if err := SignFile(path, k); err != nil {
		t.Fatal(err)
	}
	a, changed, err := s.ReloadIfChanged()
	if !changed || err != nil || a == first || s.Current() != a || s.Failures() != 1 {
		t.Fatalf("re-signed: changed %v, %v, failures %d", changed, err, s.Failures())
	}
	// Reload reads the file whether or not it changed.
	if b, err := s.Reload(); err != nil || b == a {
		t.Fatalf("forced reload: %v", err)
	}
}
