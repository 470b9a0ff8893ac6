//go:build linux

package enforcer

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestConfigMapSwapChangesStamp updates a file the way the kubelet updates a
// ConfigMap volume (new directory, ..data symlink swapped by rename) and
// checks that the enforcer's change detection sees it even when the size and
// modification time do not change.
func TestConfigMapSwapChangesStamp(t *testing.T) {
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
	before := stamp(path)
	if before == (fileStamp{}) {
		t.Fatal("stamp of the mounted file is empty")
	}
	if again := stamp(path); again != before {
		t.Fatal("stamp changed without an update")
	}
	write("..2026_11_26_02", "version-2") // same size, same mtime
	if after := stamp(path); after == before {
		t.Error("a ConfigMap update (..data swapped) left the stamp unchanged: the enforcer would not reload")
	}
}
