package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/internal/debkernel"
	"github.com/kmodguard/kmodguard/kmod"
)

// kg runs the CLI in-process and returns its output and exit code.
func kg(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	root := newRootCmd()
	var out, errOut bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	err := root.Execute()
	code = exitOK
	if err != nil {
		code = exitError
		var ce *codeError
		if errors.As(err, &ce) {
			code = ce.code
		}
		errOut.WriteString("kmodguard: " + err.Error() + "\n")
	}
	return out.String(), errOut.String(), code
}

// kernel61 is the Debian 6.1 package, or a skip.
func kernel61(t *testing.T) *debkernel.Kernel {
	t.Helper()
	if testing.Short() {
		t.Skip("needs a Debian kernel package: skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := debkernel.Get(ctx, debkernel.Series61)
	if err != nil {
		t.Skipf("needs the Debian 6.1 kernel package: %v", err)
	}
	return k
}

func fileDigest(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestAllowlistWholeTree builds an allowlist from every module of the
// Debian 6.1 package and checks it against the files themselves.
func TestAllowlistWholeTree(t *testing.T) {
	k := kernel61(t)
	out := filepath.Join(t.TempDir(), "allow.yaml")
	_, stderr, code := kg(t, "allowlist", "init", "--modules-dir", k.ModulesDir(), "--mode", "enforce", "--name", "debian-6.1", "--out-file", out)
	if code != exitOK {
		t.Fatalf("init: exit %d\n%s", code, stderr)
	}
	a, err := allowlist.Load(out)
	if err != nil {
		t.Fatal(err)
	}

	// One entry per module name, and every file's digest in its entry.
	// Names here come from the file names; Debian names files after modules.
	files := map[string][]string{}
	err = filepath.WalkDir(k.ModulesDir(), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && strings.Contains(d.Name(), ".ko") {
			n := kmod.NormalizeName(d.Name()[:strings.Index(d.Name(), ".ko")])
			files[n] = append(files[n], p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 1000 {
		t.Fatalf("only %d modules in %s", len(files), k.ModulesDir())
	}
	if len(a.Spec.Modules) != len(files) {
		t.Errorf("%d entries for %d module names", len(a.Spec.Modules), len(files))
	}
	for name, paths := range files {
		es := a.Lookup(name)
		if len(es) != 1 {
			t.Errorf("%s: %d entries, want 1", name, len(es))
			continue
		}
		if es[0].Kernel != k.Release {
			t.Errorf("%s: kernel %q, want %q", name, es[0].Kernel, k.Release)
		}
		for _, p := range paths[:1] { // one digest per name is enough to prove the wiring
			if d := fileDigest(t, p); !strings.Contains(strings.Join(es[0].SHA256, " "), d) {
				t.Errorf("%s: digest %s of %s not in %v", name, d, p, es[0].SHA256)
			}
		}
	}

	// Lints clean: no warning at all, in particular no name-only entry.
	lintOut, stderr, code := kg(t, "allowlist", "lint", "--strict", out)
	if code != exitOK || !strings.Contains(lintOut, "0 warnings") {
		t.Errorf("lint: exit %d\n%s%s", code, lintOut, stderr)
	}

	dummy, err := k.Module("dummy")
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := kg(t, "allowlist", "check", "-a", out, dummy)
	if code != exitOK || !strings.Contains(stdout, "allowed: sha256 "+fileDigest(t, dummy)) {
		t.Errorf("check dummy: exit %d\n%s%s", code, stdout, stderr)
	}

	// A copy with one byte changed is not allowed, and the reason names
	// the copy's digest.
	raw, _ := os.ReadFile(dummy)
	raw[100] ^= 0xff
	modified := filepath.Join(t.TempDir(), "dummy.ko")
	writeFile(t, modified, raw)
	stdout, stderr, code = kg(t, "allowlist", "check", "-a", out, modified)
	want := "sha256 " + fileDigest(t, modified) + ` of dummy is not listed for "dummy"`
	if code != exitDenied || !strings.Contains(stdout, want) {
		t.Errorf("check modified dummy: exit %d, want %d and %q\n%s%s", code, exitDenied, want, stdout, stderr)
	}
	// Both together: one denial makes the exit code 1.
	if _, _, code := kg(t, "allowlist", "check", "-a", out, dummy, modified); code != exitDenied {
		t.Errorf("check allowed+denied: exit %d, want %d", code, exitDenied)
	}

	// A malformed allowlist is exit 2 with file:line.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	writeFile(t, bad, []byte("apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nspec:\n  mode: enforce\n  modules:\n    - name: dummy\n      sha256: [nothex]\n"))
	_, stderr, code = kg(t, "allowlist", "check", "-a", bad, dummy)
	if code != exitError || !strings.Contains(stderr, bad+":7: spec.modules[0].sha256[0]") {
		t.Errorf("check with a malformed list: exit %d, want %d and %s:7\n%s", code, exitError, bad, stderr)
	}
}

// smallTree copies a few real modules, plus a forged one when forged is
// set, into a fresh tree.
func smallTree(t *testing.T, k *debkernel.Kernel, forged bool, names ...string) (dir string, paths map[string]string) {
	t.Helper()
	dir = filepath.Join(t.TempDir(), "lib", "modules", k.Release)
	paths = map[string]string{}
	for _, n := range names {
		src, err := k.Module(n)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(k.ModulesDir(), src)
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		paths[n] = filepath.Join(dir, rel)
		writeFile(t, paths[n], data)
	}
	if forged {
		src, _ := k.Module("dummy")
		data, _ := os.ReadFile(src)
		data = bytes.Replace(data, []byte("\x00name=dummy\x00"), []byte("\x00name=dumbo\x00"), 1)
		paths["forged"] = filepath.Join(dir, "extra", "dumbo.ko")
		writeFile(t, paths["forged"], data)
	}
	return dir, paths
}

func TestAllowlistInitRefusesForgedModule(t *testing.T) {
	k := kernel61(t)
	dir, paths := smallTree(t, k, true, "dummy")
	out := filepath.Join(t.TempDir(), "allow.yaml")
	_, stderr, code := kg(t, "allowlist", "init", "--modules-dir", dir, "--out-file", out)
	if code != exitError || !strings.Contains(stderr, "name mismatch") || !strings.Contains(stderr, "dumbo.ko") {
		t.Errorf("init over a forged module: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("an allowlist was written despite the forged module")
	}
	// And check refuses it against a list that allows dummy by name.
	writeFile(t, out, []byte("apiVersion: kmodguard.io/v1\nkind: ModuleAllowlist\nspec:\n  mode: enforce\n  modules:\n    - name: dummy\n    - name: dumbo\n"))
	stdout, _, code := kg(t, "allowlist", "check", "-a", out, paths["forged"])
	if code != exitDenied || !strings.Contains(stdout, "name mismatch") {
		t.Errorf("check forged: exit %d\n%s", code, stdout)
	}
}

func TestAllowlistInitLoaded(t *testing.T) {
	k := kernel61(t)
	dir, paths := smallTree(t, k, false, "dummy", "veth", "nf_tables")
	rel := func(n string) string { r, _ := filepath.Rel(dir, paths[n]); return r }
	writeFile(t, filepath.Join(dir, "modules.dep"), []byte(rel("dummy")+":\n"+rel("veth")+":\n"+rel("nf_tables")+": kernel/net/netfilter/nfnetlink.ko\n"))
	proc := filepath.Join(t.TempDir(), "modules")
	writeFile(t, proc, []byte("veth 40960 0 - Live 0x0000000000000000\nnf_tables 303104 0 - Live 0x0000000000000000\n"))
	out := filepath.Join(t.TempDir(), "etc", "kmodguard", "allow.yaml") // a directory init creates
	if _, stderr, code := kg(t, "allowlist", "init", "--loaded", "--modules-dir", dir, "--proc-modules", proc, "--out-file", out); code != exitOK {
		t.Fatalf("init --loaded: exit %d\n%s", code, stderr)
	}
	a, err := allowlist.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(a.Names(), ","); got != "nf_tables,veth" {
		t.Errorf("names %s, want the two loaded modules", got)
	}
	// A loaded module that modules.dep does not know is an error, not a gap.
	writeFile(t, proc, []byte("veth 1 0 - Live 0x0\nmystery 1 0 - Live 0x0\n"))
	if _, stderr, code := kg(t, "allowlist", "init", "--loaded", "--modules-dir", dir, "--proc-modules", proc, "--out-file", out); code != exitError || !strings.Contains(stderr, "mystery") {
		t.Errorf("unknown loaded module: exit %d\n%s", code, stderr)
	}
}

func TestAllowlistEditAndExport(t *testing.T) {
	k := kernel61(t)
	dir, paths := smallTree(t, k, false, "dummy", "veth")
	list := filepath.Join(t.TempDir(), "allow.yaml")
	if _, stderr, code := kg(t, "allowlist", "init", "--modules-dir", dir, "--out-file", list); code != exitOK {
		t.Fatalf("init: %s", stderr)
	}
	before, _ := os.ReadFile(list)
	old := filepath.Join(t.TempDir(), "old.yaml")
	writeFile(t, old, before)

	// remove, then check says no entry.
	if _, stderr, code := kg(t, "allowlist", "remove", "-a", list, "veth"); code != exitOK {
		t.Fatalf("remove: %s", stderr)
	}
	if stdout, _, code := kg(t, "allowlist", "check", "-a", list, paths["veth"]); code != exitDenied || !strings.Contains(stdout, `no entry for "veth"`) {
		t.Errorf("check after remove: exit %d %s", code, stdout)
	}
	if _, stderr, code := kg(t, "allowlist", "remove", "-a", list, "veth"); code != exitError || !strings.Contains(stderr, "veth") {
		t.Errorf("removing a missing name: exit %d %s", code, stderr)
	}
	// diff shows it.
	stdout, _, code := kg(t, "allowlist", "diff", "--exit-code", old, list)
	if code != exitDenied || !strings.Contains(stdout, "- veth") {
		t.Errorf("diff: exit %d\n%s", code, stdout)
	}
	// add it back: the file is as before, byte for byte (deterministic).
	if _, stderr, code := kg(t, "allowlist", "add", "-a", list, paths["veth"]); code != exitOK {
		t.Fatalf("add: %s", stderr)
	}
	after, _ := os.ReadFile(list)
	if !bytes.Equal(before, after) {
		t.Errorf("remove+add changed the file:\n%s\n---\n%s", before, after)
	}
	if stdout, _, code := kg(t, "allowlist", "diff", "-o", "json", old, list); code != exitOK || !strings.Contains(stdout, "{}") {
		t.Errorf("diff of equal lists: exit %d %s", code, stdout)
	}

	// list -o json is the document.
	stdout, _, code = kg(t, "allowlist", "list", "-o", "json", "-a", list)
	var doc allowlist.Allowlist
	if err := json.Unmarshal([]byte(stdout), &doc); code != exitOK || err != nil || len(doc.Spec.Modules) != 2 {
		t.Errorf("list -o json: exit %d, %v\n%s", code, err, stdout)
	}

	// export: a Falco list with both spellings.
	stdout, _, code = kg(t, "allowlist", "export", "--format", "falco-list", "-a", list)
	if code != exitOK || !strings.Contains(stdout, "- list: kmodguard_allowed_modules\n") || !strings.Contains(stdout, `- "veth"`) {
		t.Errorf("export: exit %d\n%s", code, stdout)
	}
	stdout, _, code = kg(t, "allowlist", "export", "--files", "--list-name", "mods", "-a", list)
	if code != exitOK || !strings.Contains(stdout, "- list: mods_files\n") || !strings.Contains(stdout, `- "dummy.ko.xz"`) {
		t.Errorf("export --files: exit %d\n%s", code, stdout)
	}
	if _, _, code := kg(t, "allowlist", "export", "--format", "csv", "-a", list); code != exitError {
		t.Errorf("unknown export format: exit %d", code)
	}
}

func TestAllowlistSigning(t *testing.T) {
	k := kernel61(t)
	dir, paths := smallTree(t, k, false, "dummy")
	tmp := t.TempDir()
	list, prefix := filepath.Join(tmp, "allow.yaml"), filepath.Join(tmp, "signing")
	if _, stderr, code := kg(t, "allowlist", "init", "--modules-dir", dir, "--out-file", list); code != exitOK {
		t.Fatalf("init: %s", stderr)
	}
	if stdout, stderr, code := kg(t, "allowlist", "keygen", "--prefix", prefix); code != exitOK || !regexp.MustCompile(`key id [0-9a-f]{16}`).MatchString(stdout) {
		t.Fatalf("keygen: exit %d %s%s", code, stdout, stderr)
	}
	if fi, err := os.Stat(prefix + ".key"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("private key mode: %v %v", fi, err)
	}
	if _, _, code := kg(t, "allowlist", "keygen", "--prefix", prefix); code != exitError {
		t.Errorf("keygen over an existing key: exit %d", code)
	}
	if _, stderr, code := kg(t, "allowlist", "sign", "--key", prefix+".key", list); code != exitOK {
		t.Fatalf("sign: %s", stderr)
	}
	if stdout, stderr, code := kg(t, "allowlist", "verify", "--pubkey", prefix+".pub", list); code != exitOK || !strings.Contains(stdout, "signature OK") {
		t.Errorf("verify: exit %d %s%s", code, stdout, stderr)
	}
	if _, stderr, code := kg(t, "allowlist", "check", "-a", list, "--pubkey", prefix+".pub", paths["dummy"]); code != exitOK {
		t.Errorf("check with --pubkey: exit %d %s", code, stderr)
	}
	// --require-signature without a key is an error.
	if _, _, code := kg(t, "allowlist", "check", "-a", list, "--require-signature", paths["dummy"]); code != exitError {
		t.Errorf("--require-signature without --pubkey: exit %d", code)
	}

	// Another key does not verify.
	other := filepath.Join(tmp, "other")
	kg(t, "allowlist", "keygen", "--prefix", other)
	if _, stderr, code := kg(t, "allowlist", "verify", "--pubkey", other+".pub", list); code != exitError || !strings.Contains(stderr, "does not verify") {
		t.Errorf("verify with another key: exit %d %s", code, stderr)
	}

	// Editing without --key leaves a stale signature, which is reported
	// and then refused; editing with --key re-signs.
	_, stderr, code := kg(t, "allowlist", "remove", "-a", list, "dummy")
	if code != exitOK || !strings.Contains(stderr, "no longer matches") {
		t.Errorf("remove from a signed list: exit %d %s", code, stderr)
	}
	if _, _, code := kg(t, "allowlist", "lint", "--pubkey", prefix+".pub", list); code != exitError {
		t.Errorf("lint of a tampered list with --pubkey: exit %d", code)
	}
	if _, stderr, code := kg(t, "allowlist", "add", "-a", list, "--key", prefix+".key", paths["dummy"]); code != exitOK {
		t.Fatalf("add --key: %s", stderr)
	}
	if _, stderr, code := kg(t, "allowlist", "verify", "--pubkey", prefix+".pub", list); code != exitOK {
		t.Errorf("verify after add --key: %s", stderr)
	}
	os.Remove(list + allowlist.SigSuffix)
	if _, stderr, code := kg(t, "allowlist", "verify", "--pubkey", prefix+".pub", list); code != exitError || !strings.Contains(stderr, "not signed") {
		t.Errorf("verify unsigned: exit %d %s", code, stderr)
	}
}

func TestAllowlistUsageErrors(t *testing.T) {
	out := filepath.Join(t.TempDir(), "x.yaml")
	for _, args := range [][]string{
		{"allowlist", "init", "--out-file", out},
		{"allowlist", "init", "--modules-dir", t.TempDir(), "--out-file", out},
		{"allowlist", "init", "--modules-dir", "/nonexistent", "--out-file", out},
		{"allowlist", "init", "--modules-dir", t.TempDir(), "--mode", "block", "--out-file", out},
		{"allowlist", "check", "-a", "/nonexistent.yaml", "x.ko"},
		{"allowlist", "lint", "/nonexistent.yaml"},
	} {
		if _, stderr, code := kg(t, args...); code != exitError {
			t.Errorf("%v: exit %d, want %d\n%s", args, code, exitError, stderr)
		}
	}
}

func TestAllowlistHelpHasExamples(t *testing.T) {
	root := newRootCmd()
	for _, c := range root.Commands() {
		if c.Name() != "allowlist" {
			continue
		}
		if c.Example == "" {
			t.Error("allowlist has no example")
		}
		for _, sub := range c.Commands() {
			if sub.Example == "" {
				t.Errorf("allowlist %s has no example", sub.Name())
			}
		}
		return
	}
	t.Fatal("no allowlist command")
}

// TestAllowlistCompressedModule: a .ko.xz entry carries the file's digest
// and the ELF's, and either one admits the module.
func TestAllowlistCompressedModule(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Debian kernel package: skipped in -short mode")
	}
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("needs xz to compute the ELF digest independently")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := debkernel.Get(ctx, debkernel.Series612)
	if err != nil {
		t.Skipf("needs the Debian 6.12 kernel package: %v", err)
	}
	dir, paths := smallTree(t, k, false, "dummy")
	if !strings.HasSuffix(paths["dummy"], ".ko.xz") {
		t.Skipf("the 6.12 dummy is not .ko.xz: %s", paths["dummy"])
	}
	elf, err := exec.Command("xz", "-dc", paths["dummy"]).Output()
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(elf)
	fileSum, elfSum := fileDigest(t, paths["dummy"]), hex.EncodeToString(sum[:])

	list := filepath.Join(t.TempDir(), "allow.yaml")
	if _, stderr, code := kg(t, "allowlist", "init", "--modules-dir", dir, "--out-file", list); code != exitOK {
		t.Fatalf("init: %s", stderr)
	}
	a, err := allowlist.Load(list)
	if err != nil {
		t.Fatal(err)
	}
	if es := a.Lookup("dummy"); len(es) != 1 || strings.Join(es[0].SHA256, " ") != strings.Join(sorted(fileSum, elfSum), " ") {
		t.Fatalf("entry %+v, want file %s and ELF %s", es, fileSum, elfSum)
	}
	for _, tc := range []struct{ keep, want string }{{fileSum, "allowed: file sha256 " + fileSum}, {elfSum, "allowed: ELF sha256 " + elfSum}} {
		a.Spec.Modules[0].SHA256 = []string{tc.keep}
		if err := allowlist.Save(list, a); err != nil {
			t.Fatal(err)
		}
		stdout, stderr, code := kg(t, "allowlist", "check", "-a", list, paths["dummy"])
		if code != exitOK || !strings.Contains(stdout, tc.want) {
			t.Errorf("check with only %s listed: exit %d\n%s%s", tc.keep, code, stdout, stderr)
		}
	}
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

// TestBuildEntriesFoldsNames: a name found in two files (say kernel/ and
// updates/) gets one entry with both files' digests.
func TestBuildEntriesFoldsNames(t *testing.T) {
	d := func(c byte) string { return strings.Repeat(string(c), 64) }
	results := []inspected{
		{path: "kernel/a/nf-tables.ko", mod: &kmod.Module{Name: "nf_tables", ThisModuleName: "nf_tables", FileSHA256: d('1'), ELFSHA256: d('1'), Vermagic: "6.1.0-1-amd64 SMP"}},
		{path: "updates/nf_tables.ko.xz", mod: &kmod.Module{Name: "nf-tables", ThisModuleName: "nf_tables", FileSHA256: d('2'), ELFSHA256: d('3'), Vermagic: "6.1.0-2-amd64 SMP"}},
		{path: "kernel/veth.ko", mod: &kmod.Module{Name: "veth", ThisModuleName: "veth", FileSHA256: d('4'), ELFSHA256: d('4'), Vermagic: "6.1.0-1-amd64 SMP"}},
	}
	entries, err := buildEntries(results, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("%d entries, want 2: %+v", len(entries), entries)
	}
	nf, veth := entries[0], entries[1]
	if got := strings.Join(nf.SHA256, ","); got != d('1')+","+d('2')+","+d('3') || nf.Kernel != "" {
		t.Errorf("nf_tables entry %+v: want three digests and no kernel (the releases differ)", nf)
	}
	if len(veth.SHA256) != 1 || veth.Kernel != "6.1.0-1-amd64" {
		t.Errorf("veth entry %+v", veth)
	}
	if entries, _ := buildEntries(results, "6.1.0-9-amd64"); entries[0].Kernel != "6.1.0-9-amd64" {
		t.Errorf("--kernel not applied: %+v", entries[0])
	}
	results = append(results, inspected{path: "bad.ko", err: errors.New("bad.ko: not an ELF file")})
	if _, err := buildEntries(results, ""); err == nil || !strings.Contains(err.Error(), "bad.ko") {
		t.Errorf("a bad file was not reported: %v", err)
	}
}

// TestAllowlistAddModulesDir merges a second kernel release's tree into a
// list: each module gets an entry for the new release beside the old one,
// both releases' files check as allowed, and a tree holding a forged
// module saves nothing.
func TestAllowlistAddModulesDir(t *testing.T) {
	k61 := kernel61(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k612, err := debkernel.Get(ctx, debkernel.Series612)
	if err != nil {
		t.Skipf("needs the Debian 6.12 kernel package: %v", err)
	}
	oldDir, oldPaths := smallTree(t, k61, false, "dummy")
	list := filepath.Join(t.TempDir(), "allow.yaml")
	if _, stderr, code := kg(t, "allowlist", "init", "--modules-dir", oldDir, "--out-file", list); code != exitOK {
		t.Fatalf("init: %s", stderr)
	}
	newDir, newPaths := smallTree(t, k612, false, "dummy", "veth")
	if _, _, code := kg(t, "allowlist", "check", "-a", list, newPaths["dummy"]); code != exitDenied {
		t.Fatalf("the new release's dummy is allowed before it was added: exit %d", code)
	}
	stdout, stderr, code := kg(t, "allowlist", "add", "-a", list, "--modules-dir", newDir)
	if code != exitOK || !strings.Contains(stdout, newDir+": 2 modules added, 0 already allowed") {
		t.Fatalf("add --modules-dir: exit %d\n%s%s", code, stdout, stderr)
	}
	for _, p := range []string{oldPaths["dummy"], newPaths["dummy"], newPaths["veth"]} {
		if stdout, _, code := kg(t, "allowlist", "check", "-a", list, p); code != exitOK {
			t.Errorf("%s after add --modules-dir: exit %d %s", p, code, stdout)
		}
	}
	a, err := allowlist.Load(list)
	if err != nil {
		t.Fatal(err)
	}
	releases := map[string]bool{}
	for _, e := range a.Spec.Modules {
		releases[e.Kernel] = true
	}
	if !releases[k61.Release] || !releases[k612.Release] {
		t.Errorf("entries record releases %v, want %s and %s", releases, k61.Release, k612.Release)
	}
	// Again: nothing new.
	if stdout, _, code := kg(t, "allowlist", "add", "-a", list, "--modules-dir", newDir); code != exitOK || !strings.Contains(stdout, "0 modules added, 2 already allowed") {
		t.Errorf("second add --modules-dir: exit %d %s", code, stdout)
	}
	// A forged module in the tree: refused, and the list is untouched.
	before, _ := os.ReadFile(list)
	forgedDir, _ := smallTree(t, k61, true, "veth")
	if _, stderr, code := kg(t, "allowlist", "add", "-a", list, "--modules-dir", forgedDir); code != exitError || !strings.Contains(stderr, "name mismatch") {
		t.Errorf("a tree with a forged module: exit %d %s", code, stderr)
	}
	if after, _ := os.ReadFile(list); !bytes.Equal(before, after) {
		t.Error("a refused add --modules-dir changed the list")
	}
	if _, stderr, code := kg(t, "allowlist", "add", "-a", list); code != exitError || !strings.Contains(stderr, "--modules-dir") {
		t.Errorf("add with neither files nor a tree: exit %d %s", code, stderr)
	}
}

// TestAllowlistMergedUsrTree builds an allowlist from Debian sid's kernel,
// whose split packages put every module (.ko.xz) under
// /usr/lib/modules/<release> (merged /usr): each name gets one entry with
// the release, the file's digest and the decompressed ELF's, so that it
// matches whether the kernel or kmod decompresses.
func TestAllowlistMergedUsrTree(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a Debian kernel package: skipped in -short mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := debkernel.Get(ctx, debkernel.SeriesSid)
	if err != nil {
		t.Skipf("needs Debian sid's kernel packages: %v", err)
	}
	dir := k.ModulesDir()
	if !strings.HasSuffix(dir, filepath.Join("usr", "lib", "modules", k.Release)) {
		t.Fatalf("sid's modules are at %s, not under usr/lib/modules", dir)
	}
	out := filepath.Join(t.TempDir(), "allow.yaml")
	_, stderr, code := kg(t, "allowlist", "init", "--modules-dir", dir, "--mode", "enforce", "--name", "debian-sid", "--out-file", out)
	if code != exitOK {
		t.Fatalf("init: exit %d\n%s", code, stderr)
	}
	a, err := allowlist.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.Spec.Modules) < 500 {
		t.Fatalf("only %d entries from %s", len(a.Spec.Modules), dir)
	}
	dummy, err := k.Module("dummy")
	if err != nil {
		t.Fatal(err)
	}
	es := a.Lookup("dummy")
	if len(es) != 1 || es[0].Kernel != k.Release || len(es[0].SHA256) != 2 || !slices.Contains(es[0].SHA256, fileDigest(t, dummy)) {
		t.Fatalf("dummy entries %+v: want one for %s with the file's digest %s and the ELF's", es, k.Release, fileDigest(t, dummy))
	}
	stdout, stderr, code := kg(t, "allowlist", "check", "-a", out, dummy)
	if code != exitOK || !strings.Contains(stdout, "allowed") {
		t.Errorf("check %s: exit %d\n%s%s", dummy, code, stdout, stderr)
	}
	t.Logf("%s (%s): %d entries from %s", k.Release, k, len(a.Spec.Modules), dir)
}
