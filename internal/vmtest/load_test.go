package vmtest_test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/internal/vmtest"
)

// TestVM runs this package's guest tests on every kernel: real module
// loads, crafted modules and BPF LSM. None of them may skip in the guest.
func TestVM(t *testing.T) {
	vmtest.Run(t, vmtest.Spec{
		Modules: []string{"dummy", "veth"},
		Crafted: []vmtest.Crafted{
			{Name: "dumbo", From: "dummy", ModinfoName: "dumbo", StripSignature: true},
			{Name: "dummy-unsigned", From: "dummy", StripSignature: true},
		},
		FailOnSkip: true,
	})
}

// TestVMArm64 runs the same guest tests on Debian's arm64 kernels under
// qemu-system-aarch64: the harness itself (busybox linked in the guest, the
// PCI result port, fixtures and modprobe) on the second architecture.
func TestVMArm64(t *testing.T) {
	vmtest.Run(t, vmtest.Spec{
		Arch:    "arm64",
		Modules: []string{"dummy", "veth"},
		Crafted: []vmtest.Crafted{
			{Name: "dumbo", From: "dummy", ModinfoName: "dumbo", StripSignature: true},
			{Name: "dummy-unsigned", From: "dummy", StripSignature: true},
		},
		FailOnSkip: true,
	})
}

// loaded returns the taint flags of a module in /proc/modules ("" for none)
// and whether it is listed at all.
func loaded(t *testing.T, name string) (taints string, ok bool) {
	t.Helper()
	f, err := os.Open("/proc/modules")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != name {
			continue
		}
		// name size refcount deps state address [(taints)]
		if len(fields) > 6 {
			taints = strings.Trim(fields[6], "()")
		}
		return taints, true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return "", false
}

func requireLoaded(t *testing.T, name string, want bool) {
	t.Helper()
	if _, ok := loaded(t, name); ok != want {
		b, _ := os.ReadFile("/proc/modules")
		t.Fatalf("%s loaded = %v, want %v; /proc/modules:\n%s", name, ok, want, b)
	}
}

func unload(t *testing.T, name string) {
	t.Helper()
	if err := unix.DeleteModule(name, 0); err != nil {
		t.Fatalf("delete_module(%s): %v", name, err)
	}
	requireLoaded(t, name, false)
}

func TestGuestInitModule(t *testing.T) {
	vmtest.RequireGuest(t)
	img, err := os.ReadFile(vmtest.Fixture(t, "dummy"))
	if err != nil {
		t.Fatal(err)
	}
	requireLoaded(t, "dummy", false)
	if err := unix.InitModule(img, "numdummies=2"); err != nil {
		t.Fatalf("init_module(dummy): %v", err)
	}
	requireLoaded(t, "dummy", true)
	if err := unix.InitModule(img, ""); !errors.Is(err, unix.EEXIST) {
		t.Errorf("second init_module(dummy) = %v, want EEXIST", err)
	}
	unload(t, "dummy")
}

// MODULE_INIT_COMPRESSED_FILE (include/uapi/linux/module.h).
const moduleInitCompressedFile = 4

func finit(t *testing.T, path string, flags int) error {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return unix.FinitModule(int(f.Fd()), "", flags)
}

func TestGuestFinitModule(t *testing.T) {
	vmtest.RequireGuest(t)
	if err := finit(t, vmtest.Fixture(t, "dummy"), 0); err != nil {
		t.Fatalf("finit_module(dummy.ko): %v", err)
	}
	requireLoaded(t, "dummy", true)
	unload(t, "dummy")

	xzPath := filepath.Join(vmtest.FixtureDir(), "dummy.ko.xz")
	if _, err := os.Stat(xzPath); err != nil {
		if vmtest.KernelConfig(t, "CONFIG_MODULE_COMPRESS_XZ") == "y" {
			t.Fatalf("kernel compresses modules with xz but the fixture is missing: %v", err)
		}
		t.Logf("%s ships dummy uncompressed: no compressed finit_module to test", vmtest.Release())
		return
	}
	// The compressed file without the flag is not an ELF image to the kernel.
	if err := finit(t, xzPath, 0); err == nil {
		unload(t, "dummy")
		t.Fatal("finit_module(dummy.ko.xz) without MODULE_INIT_COMPRESSED_FILE succeeded")
	}
	requireLoaded(t, "dummy", false)
	err := finit(t, xzPath, moduleInitCompressedFile)
	switch decompress := vmtest.KernelConfig(t, "CONFIG_MODULE_DECOMPRESS"); {
	case decompress == "y" && err != nil:
		t.Fatalf("finit_module(dummy.ko.xz, MODULE_INIT_COMPRESSED_FILE) with CONFIG_MODULE_DECOMPRESS: %v", err)
	case decompress == "y":
		requireLoaded(t, "dummy", true)
		unload(t, "dummy")
	case !errors.Is(err, unix.EOPNOTSUPP):
		t.Fatalf("finit_module(dummy.ko.xz, MODULE_INIT_COMPRESSED_FILE) without CONFIG_MODULE_DECOMPRESS = %v, want EOPNOTSUPP", err)
	}
}

// TestGuestBusybox loads through the user-space tools: modprobe resolves
// the module through /lib/modules/<release>/modules.dep, as it would on a
// real host.
func TestGuestBusybox(t *testing.T) {
	vmtest.RequireGuest(t)
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("modprobe", "veth")
	requireLoaded(t, "veth", true)
	if out := run("lsmod"); !strings.Contains(out, "veth") {
		t.Errorf("lsmod does not list veth:\n%s", out)
	}
	run("rmmod", "veth")
	requireLoaded(t, "veth", false)

	run("insmod", vmtest.Fixture(t, "dummy"))
	requireLoaded(t, "dummy", true)
	run("rmmod", "dummy")
	requireLoaded(t, "dummy", false)
}

// TestGuestCraftedNameMismatch loads the forgery of DESIGN.md: .modinfo
// says dumbo, but the module registers under its struct module name.
func TestGuestCraftedNameMismatch(t *testing.T) {
	vmtest.RequireGuest(t)
	img, err := os.ReadFile(vmtest.Fixture(t, "dumbo"))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.InitModule(img, ""); err != nil {
		t.Fatalf("init_module(dumbo.ko): %v", err)
	}
	requireLoaded(t, "dumbo", false)
	requireLoaded(t, "dummy", true)
	unload(t, "dummy")
}

// TestGuestCraftedUnsigned loads dummy without its signature: the kernel
// (no CONFIG_MODULE_SIG_FORCE) accepts it and taints it 'E'.
func TestGuestCraftedUnsigned(t *testing.T) {
	vmtest.RequireGuest(t)
	if vmtest.KernelConfig(t, "CONFIG_MODULE_SIG_FORCE") == "y" {
		t.Fatal("kernel enforces module signatures: this test needs a kernel that does not")
	}
	img, err := os.ReadFile(vmtest.Fixture(t, "dummy-unsigned"))
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.InitModule(img, ""); err != nil {
		t.Fatalf("init_module(dummy-unsigned.ko): %v", err)
	}
	taints, _ := loaded(t, "dummy")
	unload(t, "dummy")
	if !strings.Contains(taints, "E") {
		t.Errorf("unsigned dummy has taints %q, want E (unsigned module)", taints)
	}
}
