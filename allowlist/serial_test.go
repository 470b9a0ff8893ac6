package allowlist

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func release(serial, notAfter string) string {
	md := "metadata:\n  name: fleet\n"
	if serial != "" {
		md += "  serial: " + serial + "\n"
	}
	if notAfter != "" {
		md += "  notAfter: " + notAfter + "\n"
	}
	return "apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\n" + md +
		"spec:\n  mode: enforce\n  modules:\n    - name: dummy\n"
}

func TestParseSerialAndNotAfter(t *testing.T) {
	a, err := Parse([]byte(release("42", "2027-01-31T00:00:00Z")), "a.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC)
	if a.Metadata.Serial != 42 || a.Metadata.NotAfter == nil || !a.Metadata.NotAfter.Equal(want) {
		t.Errorf("metadata %+v, want serial 42 and notAfter %v", a.Metadata, want)
	}
	// Saved and read back, both survive.
	out, err := Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse(out, "saved.yaml")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if b.Metadata.Serial != 42 || b.Metadata.NotAfter == nil || !b.Metadata.NotAfter.Equal(want) {
		t.Errorf("after a save: metadata %+v\n%s", b.Metadata, out)
	}
	for _, bad := range []struct{ serial, notAfter, field string }{
		{"-1", "", "metadata.serial"},
		{`"7"`, "", "metadata.serial"},
		{"1.5", "", "metadata.serial"},
		{"18446744073709551616", "", "metadata.serial"},
		{"[1]", "", "metadata.serial"},
		{"", "2027-01-31", "metadata.notAfter"},
		{"", "tomorrow", "metadata.notAfter"},
	} {
		_, err := Parse([]byte(release(bad.serial, bad.notAfter)), "bad.yaml")
		if err == nil || !strings.Contains(err.Error(), bad.field) {
			t.Errorf("serial %q notAfter %q: %v, want an error on %s", bad.serial, bad.notAfter, err, bad.field)
		}
	}
}

func TestCheckFresh(t *testing.T) {
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	a, _ := Parse([]byte(release("5", "2026-12-31T00:00:00Z")), "a.yaml")
	for _, c := range []struct {
		min  uint64
		now  time.Time
		want error
	}{
		{0, now, nil},
		{5, now, nil}, // the same release, read again
		{6, now, ErrRollback},
		{0, now.AddDate(0, 1, 0), ErrExpired},
	} {
		if err := a.CheckFresh(c.min, c.now); !errors.Is(err, c.want) {
			t.Errorf("CheckFresh(%d, %v) = %v, want %v", c.min, c.now, err, c.want)
		}
	}
	err := a.CheckFresh(6, now)
	if err == nil || !strings.Contains(err.Error(), "serial 5") || !strings.Contains(err.Error(), "at least 6") {
		t.Errorf("the rollback error does not say which serials: %v", err)
	}
	// A list without a serial is older than any release with one.
	unnumbered, _ := Parse([]byte(release("", "")), "b.yaml")
	if err := unnumbered.CheckFresh(1, now); !errors.Is(err, ErrRollback) {
		t.Errorf("a list without serial after serial 1: %v, want ErrRollback", err)
	}
}

// signedRelease writes serial's release, signed with priv, to path.
func signedRelease(t *testing.T, path string, priv ed25519.PrivateKey, serial uint64, notAfter string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(release(fmt.Sprint(serial), notAfter)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := SignFile(path, priv); err != nil {
		t.Fatal(err)
	}
}

func TestSourceRefusesRollback(t *testing.T) {
	pub, priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "allow.yaml")
	old := filepath.Join(dir, "old.yaml")
	signedRelease(t, old, priv, 3, "")
	signedRelease(t, path, priv, 5, "")

	src, err := NewSource(path, LoadOptions{PublicKey: pub})
	if err != nil {
		t.Fatal(err)
	}
	if src.Serial() != 5 {
		t.Fatalf("Serial() = %d, want 5", src.Serial())
	}
	// The attack: the older signed release, with its valid signature,
	// put back in place.
	replay := func() {
		for _, suffix := range []string{"", SigSuffix} {
			b, err := os.ReadFile(old + suffix)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path+suffix, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	replay()
	if _, _, err := src.ReloadIfChanged(); !errors.Is(err, ErrRollback) {
		t.Fatalf("reload of serial 3 after 5: %v, want ErrRollback", err)
	}
	if cur := src.Current(); cur.Metadata.Serial != 5 || src.Failures() != 1 {
		t.Fatalf("after the refused rollback: serial %d in force, %d failures; want 5 and 1", cur.Metadata.Serial, src.Failures())
	}
	// The same release again, and a newer one, are taken.
	signedRelease(t, path, priv, 5, "")
	if _, err := src.Reload(); err != nil {
		t.Fatalf("serial 5 again: %v", err)
	}
	signedRelease(t, path, priv, 9, "")
	if a, err := src.Reload(); err != nil || a.Metadata.Serial != 9 || src.Serial() != 9 {
		t.Fatalf("serial 9: %v, serial %d", err, src.Serial())
	}
	// A Source started with the floor another process kept (the
	// enforcer's, beside the guard's pins) refuses the old release at once.
	replay()
	if _, err := NewSource(path, LoadOptions{PublicKey: pub, MinSerial: 9}); !errors.Is(err, ErrRollback) {
		t.Fatalf("NewSource of serial 3 with floor 9: %v, want ErrRollback", err)
	}
}

func TestLoadWithExpired(t *testing.T) {
	pub, priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "allow.yaml")
	signedRelease(t, path, priv, 1, "2026-12-31T00:00:00Z")
	before := func() time.Time { return time.Date(2026, 12, 30, 0, 0, 0, 0, time.UTC) }
	after := func() time.Time { return time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC) }
	if _, err := LoadWith(path, LoadOptions{PublicKey: pub, Now: before}); err != nil {
		t.Errorf("before notAfter: %v", err)
	}
	if _, err := LoadWith(path, LoadOptions{PublicKey: pub, Now: after}); !errors.Is(err, ErrExpired) {
		t.Errorf("after notAfter: %v, want ErrExpired", err)
	}
}
