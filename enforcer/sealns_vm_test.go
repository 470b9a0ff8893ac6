//go:build linux

package enforcer_test

import (
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/internal/vmtest"
)

// TestVMSealNamespaces boots each kernel once more for a seal made from
// another mount namespace than the host's: a sealed guard stays until
// reboot, so this test needs a guest of its own.
func TestVMSealNamespaces(t *testing.T) {
	spec := vmSpec()
	spec.Run = "^TestSealNSGuest"
	vmtest.Run(t, spec)
}

// TestSealNSGuestPrivateMounts seals the guard from a private mount
// namespace, as a daemon sandboxed by systemd (ProtectSystem=,
// PrivateMounts=) would, and then runs the attack that such a seal used to
// let through, from the host's namespace: make /sys private, lazily
// unmount the host's bpffs and stop the daemon, so that the pins, and the
// guard with them, go. The seal now records the host's mounts too (PID 1's
// namespace): the unmounts are refused and the guard stays. Outside the
// host's PID namespace, where it cannot find the host's mounts, the seal
// refuses.
func TestSealNSGuestPrivateMounts(t *testing.T) {
	vmtest.RequireGuest(t)
	kg, pins, dir, file := daemonSetup(t)
	d := startDaemon(t, kg, file, pins, filepath.Join(dir, "daemon.log"))
	waitStatus(t, kg, pins, 1)
	veth := readFixture(t, "veth")

	// A new PID namespace: /proc/1 is not the host's init there.
	out, err := exec.Command("unshare", "-p", "-f", kg, "enforcer", "seal", "--pin-dir", pins).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not in the host's PID namespace") {
		t.Fatalf("seal from a new PID namespace: %v\n%s\nwant a refusal naming the PID namespace", err, out)
	}
	if st := waitStatus(t, kg, pins, 1); st.Sealed {
		t.Fatal("the refused seal sealed the guard")
	}
	t.Logf("seal from a new PID namespace refused: %s", strings.TrimSpace(string(out)))

	// The seal from a private mount namespace, whose mounts are copies.
	out, err = exec.Command("unshare", "-m", "--propagation", "private", kg, "enforcer", "seal", "--pin-dir", pins).CombinedOutput()
	if err != nil {
		t.Fatalf("seal from a private mount namespace: %v\n%s", err, out)
	}
	if st := waitStatus(t, kg, pins, 1); !st.Sealed {
		t.Fatalf("seal said %q, but the guard is not sealed", out)
	}
	t.Logf("sealed from a private mount namespace: %s", strings.TrimSpace(string(out)))

	// The attack, in the host's namespace. A propagation change passes;
	// the unmounts that would take the pins must not.
	if err := unix.Mount("", "/sys", "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
		t.Fatalf("mount --make-rprivate /sys: %v", err)
	}
	for _, target := range []string{"/sys/fs/bpf", "/sys"} {
		if err := unix.Unmount(target, unix.MNT_DETACH); !errors.Is(err, unix.EPERM) {
			t.Errorf("umount -l %s in the host's namespace under a seal made in a private one = %v, want EPERM", target, err)
		} else {
			t.Logf("umount -l %s in the host's namespace: refused", target)
		}
	}
	// The daemon stopped: the pins hold the guard.
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	d.cmd.Wait()
	if err := initModule(veth); !errors.Is(err, unix.EPERM) {
		t.Fatalf("init_module(veth) after the attack = %v, want EPERM: the guard is gone", err)
	}
	if st := waitStatus(t, kg, pins, 1); !st.Sealed {
		t.Fatal("the guard is no longer sealed")
	}
	t.Logf("after the attack: veth refused, the guard sealed and whole")
}
