package vmtest_test

import (
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/internal/vmtest"
)

// TestGuestEnvironment checks what the harness promises the guest tests:
// the pseudo filesystems, the kernel it booted, the modules tree, the
// testdata folder and busybox.
func TestGuestEnvironment(t *testing.T) {
	vmtest.RequireGuest(t)

	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	if rel := unix.ByteSliceToString(u.Release[:]); rel != vmtest.Release() {
		t.Errorf("uname -r = %s, the host booted %s", rel, vmtest.Release())
	}
	machine := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH]
	if m := unix.ByteSliceToString(u.Machine[:]); m != machine {
		t.Errorf("uname -m = %s, but this test binary is %s (want %s)", m, runtime.GOARCH, machine)
	}
	if os.Getuid() != 0 {
		t.Errorf("guest tests run as uid %d, want root", os.Getuid())
	}

	mounts, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct{ fstype, dir string }{
		{"devtmpfs", "/dev"}, {"sysfs", "/sys"}, {"securityfs", "/sys/kernel/security"},
		{"bpf", "/sys/fs/bpf"}, {"tracefs", "/sys/kernel/tracing"}, {"debugfs", "/sys/kernel/debug"},
		{"cgroup2", "/sys/fs/cgroup"}, {"tmpfs", "/tmp"},
	} {
		if !strings.Contains(string(mounts), " "+m.dir+" "+m.fstype+" ") {
			t.Errorf("%s is not mounted on %s:\n%s", m.fstype, m.dir, mounts)
		}
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		t.Errorf("no kernel BTF: %v", err)
	}

	dep, err := os.ReadFile(filepath.Join("/lib/modules", vmtest.Release(), "modules.dep"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range strings.Split(os.Getenv("KMODGUARD_VMTEST_MODULES"), ",") {
		if !strings.Contains(string(dep), "/"+name+".ko") {
			t.Errorf("modules.dep does not list %s:\n%s", name, dep)
		}
	}
	if vmtest.KernelConfig(t, "CONFIG_BPF_LSM") != "y" {
		t.Error("KernelConfig(CONFIG_BPF_LSM) is not y on a Debian kernel")
	}
	if got := vmtest.KernelConfig(t, "CONFIG_NO_SUCH_OPTION"); got != "" {
		t.Errorf("an unknown option reads %q", got)
	}

	if b, err := os.ReadFile("testdata/hello.txt"); err != nil || !strings.Contains(string(b), "rides along") {
		t.Errorf("testdata/hello.txt: %q, %v", b, err)
	}
	for _, applet := range []string{"sh", "insmod", "rmmod", "lsmod", "modprobe"} {
		if _, err := os.Stat(filepath.Join("/sbin", applet)); err != nil {
			if _, err := os.Stat(filepath.Join("/bin", applet)); err != nil {
				t.Errorf("busybox applet %s is missing", applet)
			}
		}
	}
}
