package vmtest

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/internal/vmtest/proto"
)

// InGuest reports whether this process runs inside a vmtest guest: /init set
// the guest environment, and the running kernel is the one the host booted.
func InGuest() bool {
	if os.Getenv(proto.EnvGuest) != "1" {
		return false
	}
	return Release() != "" && Release() == uname()
}

// RequireGuest skips the test unless it runs inside a vmtest guest. Call it
// first in every TestGuest... test.
func RequireGuest(t testing.TB) {
	t.Helper()
	if !InGuest() {
		t.Skip("runs only in a vmtest QEMU guest (vmtest.Run boots it; make vmtest)")
	}
}

// Release is the release (uname -r) of the guest kernel, as the host booted
// it; empty outside a guest.
func Release() string { return os.Getenv(proto.EnvRelease) }

// Series is the debkernel series of the guest kernel ("6.1", "6.12");
// empty outside a guest.
func Series() string { return os.Getenv(proto.EnvSeries) }

// FixtureDir is the guest folder that holds the fixture modules.
func FixtureDir() string { return proto.FixtureDir }

// Fixture returns the guest path of the plain ELF image (.ko) of a module
// that the Spec listed in Modules. When the kernel ships the module
// compressed, the host decompressed it, so the image suits init_module as
// it is. The test fails when the module was not asked for.
func Fixture(t testing.TB, name string) string {
	t.Helper()
	RequireGuest(t)
	p := filepath.Join(proto.FixtureDir, name+".ko")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("fixture %q is not in the guest (list it in vmtest.Spec.Modules): %v", name, err)
	}
	return p
}

// CompressedFixture returns the guest path of a module as the kernel package
// ships it compressed (.ko.xz on Debian 6.12), byte for byte. It skips the
// test when this kernel ships the module uncompressed (Debian 6.1), and
// fails it when the module was not asked for.
func CompressedFixture(t testing.TB, name string) string {
	t.Helper()
	RequireGuest(t)
	if _, err := os.Stat(filepath.Join(proto.FixtureDir, name+".ko")); err != nil {
		t.Fatalf("fixture %q is not in the guest (list it in vmtest.Spec.Modules): %v", name, err)
	}
	for _, ext := range []string{".ko.xz", ".ko.zst", ".ko.gz"} {
		p := filepath.Join(proto.FixtureDir, name+ext)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skipf("kernel %s ships %s uncompressed", Release(), name)
	return ""
}

// Binary returns the guest path of a binary that rides along (Spec.Binaries
// or Spec.Files under bin/), failing the test when it is absent. The folder
// is also on PATH.
func Binary(t testing.TB, name string) string {
	t.Helper()
	RequireGuest(t)
	p := filepath.Join(proto.BinDir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("binary %q is not in the guest (list it in vmtest.Spec.Binaries): %v", name, err)
	}
	return p
}

// File returns the guest path of a file the Spec put in with Files, failing
// the test when it is absent.
func File(t testing.TB, rel string) string {
	t.Helper()
	RequireGuest(t)
	p := filepath.Join(proto.Root, "files", filepath.Clean("/"+rel))
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("file %q is not in the guest (list it in vmtest.Spec.Files): %v", rel, err)
	}
	return p
}

func uname() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return strings.TrimRight(string(u.Release[:]), "\x00")
}

// KernelConfig returns the value of a kernel build option of the guest
// kernel ("y", "m", a string's contents without quotes), or "" when it is
// not set. The host ships the package's /boot/config-<release> into the
// guest; the test fails when it is missing.
func KernelConfig(t testing.TB, option string) string {
	t.Helper()
	RequireGuest(t)
	b, err := os.ReadFile("/boot/config-" + Release())
	if err != nil {
		t.Fatalf("kernel config: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, option+"="); ok {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// HeldTracepoints returns the link ids /init holds on each syscall
// tracepoint ("sys_enter", "sys_exit"), or nil when it holds none
// (Spec.LiveSyscallTracepoints, or a guest with one CPU).
func HeldTracepoints(t testing.TB) map[string][]uint32 {
	t.Helper()
	RequireGuest(t)
	b, err := os.ReadFile(proto.HeldTracepointsPath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	held := map[string][]uint32{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		tp, id, ok := strings.Cut(line, " ")
		n, err := strconv.ParseUint(id, 10, 32)
		if !ok || err != nil {
			t.Fatalf("%s: bad line %q", proto.HeldTracepointsPath, line)
		}
		held[tp] = append(held[tp], uint32(n))
	}
	return held
}
