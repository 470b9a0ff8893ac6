package vmtest

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmodguard/kmodguard/internal/debkernel"
	"github.com/kmodguard/kmodguard/internal/vmtest/proto"
)

// TestInitramfsCpio writes an archive and lists and extracts it with the
// system's cpio, the independent reader.
func TestInitramfsCpio(t *testing.T) {
	cpio, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("needs cpio(1): scripts/deps.sh vm")
	}
	dir := t.TempDir()
	big := bytes.Repeat([]byte("0123456789abcdef"), 70000) // not a multiple of 4 with the odd file below
	src := filepath.Join(dir, "big")
	if err := os.WriteFile(src, big, 0o600); err != nil {
		t.Fatal(err)
	}
	r := newInitramfs()
	r.addFile("/vmtest/bin/big", src, 0o755)
	r.addData("etc/odd", []byte("abc"), 0o644)
	r.addData("empty", nil, 0o600)
	r.addSymlink("bin/sh", "/bin/busybox")
	r.addSymlink("etc/odd", "/nowhere") // must not shadow the file
	r.mkdirAll("a/b/c")

	gz := filepath.Join(dir, "initramfs.cpio.gz")
	f, err := os.Create(gz)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.writeTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()

	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	cmd := exec.Command("sh", "-c", "gzip -dc "+gz+" | "+cpio+" -idm --quiet --no-absolute-filenames")
	cmd.Dir = out
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, b)
	}
	got, err := os.ReadFile(filepath.Join(out, "vmtest/bin/big"))
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("big file did not round-trip: %v (len %d)", err, len(got))
	}
	if st, _ := os.Stat(filepath.Join(out, "vmtest/bin/big")); st.Mode().Perm() != 0o755 {
		t.Errorf("mode %v, want 0755", st.Mode().Perm())
	}
	if b, _ := os.ReadFile(filepath.Join(out, "etc/odd")); string(b) != "abc" {
		t.Errorf("etc/odd = %q", b)
	}
	if l, err := os.Readlink(filepath.Join(out, "bin/sh")); err != nil || l != "/bin/busybox" {
		t.Errorf("bin/sh -> %q, %v", l, err)
	}
	if st, err := os.Stat(filepath.Join(out, "a/b/c")); err != nil || !st.IsDir() {
		t.Errorf("a/b/c: %v", err)
	}
	if st, err := os.Stat(filepath.Join(out, "empty")); err != nil || st.Size() != 0 {
		t.Errorf("empty: %v", err)
	}
}

func TestResultParse(t *testing.T) {
	k := &debkernel.Kernel{Release: "6.1.0-99-amd64"}
	port := strings.Join([]string{
		proto.MarkerStart + " uptime=2.50",
		proto.MarkerStep + " x.test",
		"=== RUN   TestGuestA",
		"--- PASS: TestGuestA (0.01s)",
		"=== RUN   TestGuestB",
		"    --- FAIL: TestGuestB/sub (0.00s)",
		"--- FAIL: TestGuestB (0.00s)",
		"--- SKIP: TestGuestC (0.00s)",
		"FAIL",
		"",
		proto.MarkerExit + " x.test 1 0.250",
		"",
		proto.MarkerDone,
	}, "\r\n")
	var r Result
	r.Kernel = k
	r.parse(port)
	if !r.Started || !r.Done || r.ExitCode != 1 {
		t.Fatalf("started=%v done=%v exit=%d", r.Started, r.Done, r.ExitCode)
	}
	if r.Boot.Seconds() != 2.5 || r.Tests.Milliseconds() != 250 {
		t.Errorf("boot %s tests %s", r.Boot, r.Tests)
	}
	if strings.Join(r.Failed, ",") != "TestGuestB/sub,TestGuestB" || strings.Join(r.Passed, ",") != "TestGuestA" || strings.Join(r.Skipped, ",") != "TestGuestC" {
		t.Errorf("passed %v failed %v skipped %v", r.Passed, r.Failed, r.Skipped)
	}
	if strings.Contains(r.Output, "@@vmtest") || !strings.Contains(r.Output, "=== RUN   TestGuestA") {
		t.Errorf("output:\n%s", r.Output)
	}
	err := r.Err()
	if err == nil || !strings.Contains(err.Error(), k.Release) || !strings.Contains(err.Error(), "TestGuestB") {
		t.Errorf("Err() = %v", err)
	}
}

func TestResultErr(t *testing.T) {
	k := &debkernel.Kernel{Release: "6.12.1+deb12-cloud-amd64"}
	for _, tc := range []struct {
		name, port, console  string
		timedOut, failOnSkip bool
		want                 string // "" for success
	}{
		{"pass", proto.MarkerStart + "\n--- PASS: TestGuestA (0.00s)\n" + proto.MarkerExit + " t 0 0.1\n" + proto.MarkerDone + "\n", "", false, false, ""},
		{"panic before start", "", "[ 1.0] Kernel panic - not syncing: VFS", false, false, "never started the tests (kernel panic)"},
		{"died", proto.MarkerStart + "\n=== RUN   TestGuestA\n", "Kernel panic - not syncing: Fatal exception", false, false, "died while testing (kernel panic)"},
		{"soft lockup", proto.MarkerStart + "\n=== RUN   TestGuestA\n", "[ 368.4] watchdog: BUG: soft lockup - CPU#0 stuck for 23s! [a.test:101]\n[ 368.5] Kernel panic - not syncing: softlockup: hung tasks", false, false, "died while testing (soft lockup: a CPU stuck in the kernel)"},
		{"hang", proto.MarkerStart + "\n", "", true, false, "did not finish"},
		{"exit without failure line", proto.MarkerStart + "\npanic: boom\n" + proto.MarkerExit + " t 2 0.1\n" + proto.MarkerDone + "\n", "", false, false, "exited 2"},
		{"nothing ran", proto.MarkerStart + "\ntesting: warning: no tests to run\nPASS\n" + proto.MarkerExit + " t 0 0.1\n" + proto.MarkerDone + "\n", "", false, false, "no guest test ran"},
		{"skip allowed", proto.MarkerStart + "\n--- SKIP: TestGuestA (0.00s)\n" + proto.MarkerExit + " t 0 0.1\n" + proto.MarkerDone + "\n", "", false, false, ""},
		{"skip refused", proto.MarkerStart + "\n--- SKIP: TestGuestA (0.00s)\n" + proto.MarkerExit + " t 0 0.1\n" + proto.MarkerDone + "\n", "", false, true, "skipped (Spec.FailOnSkip): TestGuestA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &Result{Kernel: k, Console: tc.console, TimedOut: tc.timedOut, failOnSkip: tc.failOnSkip}
			r.parse(tc.port)
			err := r.Err()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Err() = %v, want nil", err)
			case tc.want != "" && err == nil:
				t.Fatalf("Err() = nil, want %q", tc.want)
			case tc.want != "" && (!strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), k.Release)):
				t.Fatalf("Err() = %v, want it to contain %q and the release", err, tc.want)
			}
		})
	}
}

func FuzzResultParse(f *testing.F) {
	f.Add(proto.MarkerStart + " uptime=1\n--- FAIL: TestX (0.1s)\n" + proto.MarkerExit + " a 1 0.5\n" + proto.MarkerDone)
	f.Add(proto.MarkerExit + " a b c\n" + proto.MarkerStart + " uptime=NaN\n")
	f.Fuzz(func(t *testing.T, s string) {
		var r Result
		r.parse(s)
		_ = r.Err()
	})
}

// realDummy returns the plain dummy.ko image of a cached Debian kernel.
func realDummy(t testing.TB, s debkernel.Series) []byte {
	t.Helper()
	if testing.Short() {
		t.Skip("fetches a Debian kernel package: not in -short")
	}
	k, err := debkernel.Get(context.Background(), s)
	if errors.Is(err, debkernel.ErrNoApt) {
		t.Skip("needs apt-get and dpkg to fetch Debian kernels")
	}
	if err != nil {
		t.Fatal(err)
	}
	p, err := k.Module("dummy")
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	img, err := Decompress(b)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// modinfoName and thisModuleName read the two names back with debug/elf,
// independently of Craft's patching code.
func names(t *testing.T, img []byte) (modinfo, this string) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(img))
	if err != nil {
		t.Fatalf("crafted image is no longer ELF: %v", err)
	}
	mi, err := f.Section(".modinfo").Data()
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range strings.Split(string(mi), "\x00") {
		if v, ok := strings.CutPrefix(kv, "name="); ok {
			modinfo = v
		}
	}
	tm, err := f.Section(".gnu.linkonce.this_module").Data()
	if err != nil {
		t.Fatal(err)
	}
	this = string(bytes.TrimRight(tm[24:24+56], "\x00"))
	return modinfo, this
}

func TestCraftRealModules(t *testing.T) {
	for _, s := range debkernel.AllSeries {
		t.Run(string(s), func(t *testing.T) {
			img := realDummy(t, s)
			if mi, this := names(t, img); mi != "dummy" || this != "dummy" {
				t.Fatalf("real dummy names: %q %q", mi, this)
			}
			if !bytes.HasSuffix(img, []byte(signatureMagic)) {
				t.Fatal("Debian's dummy.ko is expected to be signed")
			}

			forged, err := Craft(img, Crafted{Name: "dumbo", ModinfoName: "dumbo", StripSignature: true})
			if err != nil {
				t.Fatal(err)
			}
			if mi, this := names(t, forged); mi != "dumbo" || this != "dummy" {
				t.Errorf("forged names: modinfo %q, this_module %q", mi, this)
			}
			if bytes.Contains(forged, []byte(signatureMagic)) {
				t.Error("signature still present")
			}
			if mi, _ := names(t, img); mi != "dummy" {
				t.Error("Craft modified its input")
			}

			short, err := Craft(img, Crafted{Name: "d", ModinfoName: "d", ThisModuleName: "evil_twin"})
			if err != nil {
				t.Fatal(err)
			}
			if mi, this := names(t, short); mi != "d" || this != "evil_twin" {
				t.Errorf("names %q %q", mi, this)
			}
			if len(short) != len(img) {
				t.Errorf("in-place patch changed the size: %d -> %d", len(img), len(short))
			}

			if _, err := Craft(img, Crafted{Name: "x", ModinfoName: "much_longer_name"}); err == nil {
				t.Error("a longer .modinfo name was accepted")
			}
			if _, err := Craft(img, Crafted{Name: "x", ThisModuleName: strings.Repeat("a", 56)}); err == nil {
				t.Error("a 56-byte this_module name was accepted")
			}
		})
	}
}

func TestStripSignature(t *testing.T) {
	sig := []byte("PKCS7-BLOB")
	trailer := make([]byte, moduleSignatureSize)
	trailer[moduleSignatureSize-1] = byte(len(sig))
	body := []byte("\x7fELF-body")
	img := append(append(append(append([]byte{}, body...), sig...), trailer...), signatureMagic...)
	got, ok, err := StripSignature(img)
	if err != nil || !ok || !bytes.Equal(got, body) {
		t.Fatalf("StripSignature = %q, %v, %v", got, ok, err)
	}
	if got, ok, err := StripSignature(body); err != nil || ok || !bytes.Equal(got, body) {
		t.Errorf("unsigned: %q %v %v", got, ok, err)
	}
	bad := append(append([]byte{}, trailer...), signatureMagic...)
	bad[moduleSignatureSize-4] = 0xff // sig_len far past the start
	if _, _, err := StripSignature(bad); err == nil {
		t.Error("an impossible signature length was accepted")
	}
	if _, _, err := StripSignature([]byte(signatureMagic)); err == nil {
		t.Error("a bare trailer was accepted")
	}
}

func FuzzCraft(f *testing.F) {
	f.Add([]byte("\x7fELF\x02\x01\x01"), "dumbo", "x", true)
	f.Add([]byte(signatureMagic), "", "", true)
	f.Fuzz(func(t *testing.T, img []byte, modinfo, this string, strip bool) {
		in := bytes.Clone(img)
		_, _ = Craft(img, Crafted{Name: "f", ModinfoName: modinfo, ThisModuleName: this, StripSignature: strip})
		if !bytes.Equal(in, img) {
			t.Fatal("Craft modified its input")
		}
	})
}

func FuzzDecompress(f *testing.F) {
	f.Add([]byte("\x7fELF"))
	f.Add([]byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 0})
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0})
	f.Add([]byte{0x1f, 0x8b, 8, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := Decompress(b)
		if err == nil && len(out) > maxModuleImage {
			t.Fatal("limit not enforced")
		}
	})
}

func TestAddTree(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "sub"), 0o755)
	os.WriteFile(filepath.Join(src, "sub", "a.yaml"), []byte("spec: {}\n"), 0o644)
	os.Symlink("sub/a.yaml", filepath.Join(src, "link"))

	r := newInitramfs()
	if err := addTree(r, src, "/vmtest/testdata", 1<<20); err != nil {
		t.Fatal(err)
	}
	if e := r.entries["vmtest/testdata/sub/a.yaml"]; e.source != filepath.Join(src, "sub", "a.yaml") || e.mode != cpioRegular|0o644 {
		t.Errorf("file entry: %+v", e)
	}
	if e := r.entries["vmtest/testdata/link"]; e.target != "sub/a.yaml" {
		t.Errorf("symlink entry: %+v", e)
	}
	if err := addTree(newInitramfs(), src, "/x", 4); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("size limit: %v", err)
	}
	if err := addTree(newInitramfs(), filepath.Join(src, "missing"), "/x", 4); err != nil {
		t.Errorf("a missing testdata folder: %v", err)
	}
}

func TestReadTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	os.WriteFile(p, []byte("0123456789"), 0o644)
	for _, tc := range []struct {
		max  int64
		want string
	}{{100, "0123456789"}, {10, "0123456789"}, {4, "6789"}} {
		got, err := readTail(p, tc.max)
		if err != nil || string(got) != tc.want {
			t.Errorf("readTail(%d) = %q, %v; want %q", tc.max, got, err, tc.want)
		}
	}
	if _, err := readTail(filepath.Join(t.TempDir(), "none"), 4); err == nil {
		t.Error("a missing file read without error")
	}
}

func TestCheckStatic(t *testing.T) {
	if err := checkStatic("/bin/sh"); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("/bin/sh (dynamic on Debian): %v", err)
	}
	if bb, err := exec.LookPath("busybox"); err == nil {
		if err := checkStatic(bb); err != nil {
			t.Errorf("busybox-static: %v", err)
		}
	}
	if err := checkStatic(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("a missing file passed")
	}
}

// TestCrashExcerpt checks that a long console after an oops still shows
// the oops's first line and call trace, not only the final panic lines.
func TestCrashExcerpt(t *testing.T) {
	var b strings.Builder
	for i := range 200 {
		fmt.Fprintf(&b, "[ %d.0] boot noise %d\n", i, i)
	}
	b.WriteString("[ 7.40] int3: 0000 [#1] PREEMPT SMP NOPTI\n[ 7.41] RIP: 0010:syscall_exit_to_user_mode_prepare+0xe1/0x170\n")
	for i := range 150 {
		fmt.Fprintf(&b, "[ 7.5] trace line %d\n", i)
	}
	b.WriteString("[ 7.6] Kernel panic - not syncing: Fatal exception in interrupt\n")
	got := crashExcerpt(b.String())
	for _, want := range []string{"int3: 0000 [#1]", "RIP: 0010:syscall_exit", "Kernel panic - not syncing", "console lines ...]"} {
		if !strings.Contains(got, want) {
			t.Errorf("excerpt lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "boot noise 100") {
		t.Errorf("excerpt keeps boot noise long before the oops:\n%s", got)
	}
	if n := strings.Count(got, "\n"); n > 90 {
		t.Errorf("excerpt is %d lines, want it bounded", n)
	}
	if got := crashExcerpt("a\nb\n"); got != "a\nb" {
		t.Errorf("no oops: excerpt %q, want the tail", got)
	}
}
