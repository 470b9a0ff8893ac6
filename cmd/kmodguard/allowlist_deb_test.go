package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmodguard/kmodguard/allowlist"
)

// TestAllowlistFromDeb builds the allowlist of Debian 6.1 from its kernel
// package file and from the tree dpkg -x unpacked from the same package:
// the two lists are the same.
func TestAllowlistFromDeb(t *testing.T) {
	k := kernel61(t)
	deb, err := k.Deb()
	if err != nil {
		t.Skipf("the cache has the unpacked kernel but not its .deb: %v", err)
	}
	dir := t.TempDir()
	fromDeb, fromTree := filepath.Join(dir, "deb.yaml"), filepath.Join(dir, "tree.yaml")
	if _, stderr, code := kg(t, "allowlist", "init", "--deb", deb, "--name", "x", "--out-file", fromDeb); code != exitOK {
		t.Fatalf("init --deb: exit %d\n%s", code, stderr)
	}
	if _, stderr, code := kg(t, "allowlist", "init", "--modules-dir", k.ModulesDir(), "--name", "x", "--out-file", fromTree); code != exitOK {
		t.Fatalf("init --modules-dir: exit %d\n%s", code, stderr)
	}
	a, err := allowlist.Load(fromDeb)
	if err != nil {
		t.Fatal(err)
	}
	b, err := allowlist.Load(fromTree)
	if err != nil {
		t.Fatal(err)
	}
	da, _ := allowlist.Marshal(a)
	db, _ := allowlist.Marshal(b)
	if !bytes.Equal(da, db) {
		t.Fatalf("the list from %s differs from the list from the unpacked tree", filepath.Base(deb))
	}
	t.Logf("%s: %d entries, as from the unpacked tree", filepath.Base(deb), len(a.Spec.Modules))

	// add --deb on a list that has them all: nothing new.
	stdout, stderr, code := kg(t, "allowlist", "add", "-a", fromDeb, "--deb", deb)
	if code != exitOK || !strings.Contains(stdout, "0 modules added") {
		t.Errorf("add --deb of the same package: exit %d\n%s%s", code, stdout, stderr)
	}
}

// TestAllowlistFromDebRefusesForgery: a package holding a module whose two
// names differ saves nothing, and the error names the package and the file
// in it.
func TestAllowlistFromDebRefusesForgery(t *testing.T) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("needs dpkg-deb to build the test's package")
	}
	k := kernel61(t)
	tree, _ := smallTree(t, k, true, "dummy")
	root := filepath.Dir(filepath.Dir(filepath.Dir(tree))) // above lib/modules/RELEASE
	writeFile(t, filepath.Join(root, "DEBIAN", "control"), []byte("Package: forged\nVersion: 1\nArchitecture: all\nMaintainer: test <t@example.org>\nDescription: a forged module\n"))
	deb := filepath.Join(t.TempDir(), "forged.deb")
	if out, err := exec.Command("dpkg-deb", "--root-owner-group", "--build", root, deb).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --build: %v\n%s", err, out)
	}
	out := filepath.Join(t.TempDir(), "allow.yaml")
	_, stderr, code := kg(t, "allowlist", "init", "--deb", deb, "--out-file", out)
	if code != exitError || !strings.Contains(stderr, deb+":lib/modules/"+k.Release+"/extra/dumbo.ko: name mismatch") {
		t.Fatalf("init --deb of a forged package: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a list was written")
	}
}
