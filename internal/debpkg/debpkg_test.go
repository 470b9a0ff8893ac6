package debpkg

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ulikunitz/xz"

	"github.com/kmodguard/kmodguard/internal/debkernel"
)

// TestDebianKernelPackage reads Debian 6.1's real kernel package and checks
// every module against what dpkg -x unpacked from the same package: the
// same files, byte for byte.
func TestDebianKernelPackage(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Debian kernel package: skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := debkernel.Get(ctx, debkernel.Series61)
	if err != nil {
		t.Skipf("needs the Debian 6.1 kernel package: %v", err)
	}
	deb, err := k.Deb()
	if err != nil {
		t.Skipf("the cache has the unpacked kernel but not its .deb: %v", err)
	}
	dir := t.TempDir()
	mods, err := ExtractModules(deb, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := Release(mods); got != k.Release {
		t.Errorf("Release = %q, want %s", got, k.Release)
	}
	want := map[string]string{}
	err = filepath.WalkDir(k.ModulesDir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !IsModuleFile(d.Name()) {
			return err
		}
		rel, _ := filepath.Rel(k.Root, p)
		want[filepath.ToSlash(rel)] = digest(t, p)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(mods) != len(want) || len(mods) < 1000 {
		t.Fatalf("%d modules from the package, dpkg -x unpacked %d", len(mods), len(want))
	}
	for _, m := range mods {
		if d, ok := want[m.Name]; !ok || d != digest(t, m.Path) {
			t.Errorf("%s: not as dpkg -x unpacked it", m.Name)
		}
	}
	t.Logf("%s: %d modules of %s", filepath.Base(deb), len(mods), k.Release)
}

func digest(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

type member struct {
	name string
	data []byte
}

// ar builds an ar archive of members.
func ar(members ...member) []byte {
	var b bytes.Buffer
	b.WriteString("!<arch>\n")
	for _, m := range members {
		fmt.Fprintf(&b, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", m.name, 0, 0, 0, "100644", len(m.data))
		b.Write(m.data)
		if len(m.data)%2 == 1 {
			b.WriteByte('\n')
		}
	}
	return b.Bytes()
}

type file struct {
	name string
	body string
	typ  byte
}

func tarOf(t testing.TB, files ...file) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, f := range files {
		typ := f.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.body)), Typeflag: typ}
		if typ == tar.TypeSymlink {
			h.Size, h.Linkname = 0, f.body
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			tw.Write([]byte(f.body))
		}
	}
	tw.Close()
	return b.Bytes()
}

func xzOf(t testing.TB, b []byte) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := xz.NewWriter(&out)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(b)
	w.Close()
	return out.Bytes()
}

func writeDeb(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "p.deb")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExtractModules(t *testing.T) {
	data := tarOf(t,
		file{name: "./lib/modules/6.1.0-57-amd64/kernel/drivers/net/dummy.ko", body: "ELF dummy"},
		file{name: "./usr/lib/modules/6.1.0-57-amd64/kernel/veth.ko.xz", body: "xz veth"},
		file{name: "./boot/vmlinuz-6.1.0-57-amd64", body: "kernel"},
		file{name: "./lib/modules/6.1.0-57-amd64/modules.dep", body: "deps"},
		file{name: "../../etc/evil.ko", body: "outside"},
		file{name: "/etc/abs.ko", body: "absolute"},
		file{name: "./lib/modules/6.1.0-57-amd64/../../../etc/up.ko", body: "up"},
		file{name: "./lib/modules/6.1.0-57-amd64/link.ko", body: "/etc/shadow", typ: tar.TypeSymlink},
	)
	deb := writeDeb(t, ar(member{"debian-binary", []byte("2.0\n")}, member{"control.tar.xz", []byte("c")}, member{"data.tar.xz", xzOf(t, data)}))
	dir := t.TempDir()
	mods, err := ExtractModules(deb, dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range mods {
		names = append(names, m.Name)
		if !strings.HasPrefix(m.Path, dir+string(filepath.Separator)) {
			t.Errorf("%s written to %s, outside %s", m.Name, m.Path, dir)
		}
	}
	want := "lib/modules/6.1.0-57-amd64/kernel/drivers/net/dummy.ko usr/lib/modules/6.1.0-57-amd64/kernel/veth.ko.xz"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("modules %q, want %q", got, want)
	}
	if b, _ := os.ReadFile(mods[0].Path); string(b) != "ELF dummy" {
		t.Errorf("dummy.ko holds %q", b)
	}
	if Release(mods) != "6.1.0-57-amd64" {
		t.Errorf("Release = %q", Release(mods))
	}
	if _, err := os.Stat(filepath.Join(dir, "..", "etc")); err == nil {
		t.Error("a member left the destination")
	}
}

func TestExtractModulesMalformed(t *testing.T) {
	good := tarOf(t, file{name: "lib/modules/r/a.ko", body: "a"})
	for _, tc := range []struct {
		name string
		deb  []byte
		want string
	}{
		{"empty", nil, "no ar archive header"},
		{"not ar", []byte("PK\x03\x04 a zip file"), "no ar archive header"},
		{"no data member", ar(member{"debian-binary", []byte("2.0\n")}), "no data.tar member"},
		{"bad size", []byte("!<arch>\ndata.tar        0           0     0     100644  -5        `\n"), "bad size"},
		{"bad header magic", []byte("!<arch>\ndata.tar        0           0     0     100644  5         XX"), "bad magic"},
		{"unknown compression", ar(member{"data.tar.lz4", good}), "not supported"},
		{"truncated xz", ar(member{"data.tar.xz", xzOf(t, good)[:20]}), "data.tar.xz"},
		{"garbage tar", ar(member{"data.tar", []byte(strings.Repeat("x", 1024))}), "data.tar"},
		{"duplicate module", ar(member{"data.tar", tarOf(t, file{name: "lib/modules/r/a.ko", body: "a"}, file{name: "lib/modules/r/a.ko", body: "b"})}), "exists"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ExtractModules(writeDeb(t, tc.deb), t.TempDir())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
		})
	}
}

func FuzzExtractModules(f *testing.F) {
	mod := tarOf(f, file{name: "./lib/modules/r/kernel/a.ko", body: "ELF"}, file{name: "../x.ko", body: "x"})
	f.Add(ar(member{"debian-binary", []byte("2.0\n")}, member{"data.tar", mod}))
	f.Add(ar(member{"data.tar.xz", xzOf(f, mod)}))
	f.Fuzz(func(t *testing.T, deb []byte) {
		dir := t.TempDir()
		mods, err := ExtractModules(writeDeb(t, deb), dir)
		if err != nil {
			return
		}
		for _, m := range mods {
			if !strings.HasPrefix(m.Path, dir+string(filepath.Separator)) {
				t.Fatalf("%s written outside the destination: %s", m.Name, m.Path)
			}
		}
	})
}
