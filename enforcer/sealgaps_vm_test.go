//go:build linux

package enforcer_test

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/enforcer"
	"github.com/kmodguard/kmodguard/internal/vmtest"
	"github.com/kmodguard/kmodguard/lsm"
)

// TestVMSealGaps boots each kernel once more for the roads around the seal
// that the sealed test does not take: pivot_root(2), kdump, cgroup LSM
// programs and extensions. A sealed guard stays until reboot, so these
// need a guest of their own.
func TestVMSealGaps(t *testing.T) {
	spec := vmSpec()
	spec.Run = "^TestSealGapsGuest"
	vmtest.Run(t, spec)
}

// Flags of kexec_load(2) and kexec_file_load(2) (uapi linux/kexec.h).
const (
	kexecOnCrash         = 0x1 // kexec_load: stage the crash (kdump) kernel
	kexecFileOnCrash     = 0x2 // kexec_file_load: the same
	kexecFileNoInitramfs = 0x4
)

// TestSealGapsGuest seals the guard, then tries what the seal must refuse
// and the sealed test does not try:
//
//   - kdump: kexec_load and kexec_file_load of a crash kernel
//     (KEXEC_ON_CRASH, KEXEC_FILE_ON_CRASH). The crash kernel runs when
//     the kernel panics, which root can cause: it is a kexec like any
//     other. Before the seal, the same calls get past the LSM check (an
//     unload of no staged kernel succeeds; the file is read and then
//     refused as no kernel image), so an EPERM after it is the guard's.
//   - pivot_root(2) in the host's mount namespace, from a thread chrooted
//     into /sys: it swaps the sysfs mount for the bpffs that sits on
//     /sys/fs/bpf, so the pins leave their path (/sys/kmodguard, and sysfs
//     under the bpffs) without MS_MOVE or move_mount(2). The seal refuses
//     it as it refuses MS_MOVE there. In a new mount namespace, whose
//     mounts are copies, the same pivot_root is allowed and leaves the
//     host's pins where they are.
//   - BPF_LSM_CGROUP programs that set the hook's return value to the
//     file's size, and extensions (freplace) of LSM programs
//     (cgroupOverridesBeforeSeal shows what they do to the unsealed guard
//     and that the enforcer finds them; cgroupOverridesSealed, that the
//     seal refuses them).
//
// After each, the guard is whole: pinned, sealed, veth refused, dummy
// loaded.
func TestSealGapsGuest(t *testing.T) {
	vmtest.RequireGuest(t)
	dummy, veth := readFixture(t, "dummy"), readFixture(t, "veth")
	pins := lsm.DefaultPinDir
	enf := start(t, list(t, allowlist.ModeEnforce, entry{"dummy", []string{sum(dummy)}}), enforcer.Config{PinDir: pins})
	// pivot_root's put_old: a directory in the bpffs (the new root).
	putOld := "/sys/fs/bpf/kg-put-old"
	if err := os.Mkdir(putOld, 0o700); err != nil {
		t.Fatal(err)
	}
	ko := vmtest.Fixture(t, "dummy")

	// Controls before the seal: the kdump calls get past the LSM check.
	kexecFile := true
	if err := kexecLoadFlags(kexecOnCrash); err != nil && !errors.Is(err, unix.ENOSYS) {
		t.Fatalf("kexec_load(KEXEC_ON_CRASH, no segments) before the seal = %v, want success (nothing staged to unload)", err)
	} else {
		t.Logf("kexec_load(KEXEC_ON_CRASH, no segments) before the seal: %v", errText(err))
	}
	switch err := kexecFileLoadFlags(t, ko, kexecFileOnCrash|kexecFileNoInitramfs); {
	case errors.Is(err, unix.ENOSYS) && vmtest.KernelConfig(t, "CONFIG_KEXEC_FILE") != "y":
		t.Logf("kexec_file_load: the kernel has none (ENOSYS, CONFIG_KEXEC_FILE unset)")
		kexecFile = false
	case err == nil || errors.Is(err, unix.EPERM):
		t.Fatalf("kexec_file_load(dummy.ko, KEXEC_FILE_ON_CRASH) before the seal = %v, want the kernel's refusal of a file that is no kernel image", err)
	default:
		t.Logf("kexec_file_load(dummy.ko, KEXEC_FILE_ON_CRASH) before the seal: %v (read, then refused by the kernel as no image)", err)
	}

	// lsm_cgroup and freplace programs (issue 11 item 2), before the seal.
	cg := cgroupOverridesBeforeSeal(t, enf, pins, veth)
	defer cg.close()

	if err := enf.Seal(); err != nil {
		t.Fatal(err)
	}
	refused := func(what string, op lsm.Op, err error) {
		t.Helper()
		if !errors.Is(err, unix.EPERM) {
			t.Errorf("%s under seal = %v, want EPERM from the guard", what, errText(err))
			return
		}
		d := next(t, enf, op)
		if d.Verdict != lsm.Blocked || !d.Sealed {
			t.Errorf("%s: decision %+v, want a sealed refusal", what, d)
			return
		}
		t.Logf("%s: refused (%s, object %#x)", what, d.Op, d.Object)
	}
	whole := func(after string) {
		t.Helper()
		st, err := enforcer.ReadStatus(pins)
		if err != nil || !st.Sealed || len(st.Missing) != 0 {
			t.Fatalf("after %s: status of %s: %+v, %v; want the sealed guard whole", after, pins, st, err)
		}
		if err := initModule(veth); !errors.Is(err, unix.EPERM) {
			t.Fatalf("after %s: init_module(unlisted veth) = %v, want EPERM", after, err)
		}
		next(t, enf, lsm.OpInitModule)
		if err := initModule(dummy); err != nil {
			t.Fatalf("after %s: init_module(listed dummy) = %v", after, err)
		}
		next(t, enf, lsm.OpInitModule)
		unload(t, "dummy")
	}

	cgroupOverridesSealed(t, enf, cg, refused)
	whole("lsm_cgroup and freplace programs")

	// kdump.
	if err := kexecLoadFlags(kexecOnCrash); errors.Is(err, unix.ENOSYS) {
		t.Logf("kexec_load: the kernel has none (ENOSYS)")
	} else {
		refused("kexec_load(KEXEC_ON_CRASH)", lsm.OpKexec, err)
	}
	if kexecFile {
		refused("kexec_file_load(KEXEC_FILE_ON_CRASH)", lsm.OpKexec, kexecFileLoadFlags(t, ko, kexecFileOnCrash|kexecFileNoInitramfs))
	}
	whole("kdump")

	// pivot_root in the host's mount namespace.
	err := pivotSysfs(false, false)
	if err == nil {
		_, errAt := os.Stat(filepath.Join(pins, "config"))
		_, errMoved := os.Stat("/sys/kmodguard/config")
		_, errStatus := enforcer.ReadStatus(pins)
		errVeth := initModule(veth)
		if errors.Is(errVeth, unix.EPERM) {
			next(t, enf, lsm.OpInitModule)
		}
		t.Errorf("pivot_root in the host's mount namespace under seal got through: the bpffs is now on /sys "+
			"(pins at /sys/kmodguard: %v), sysfs under it; %s: %v; enforcer status: %v; init_module(veth) meanwhile: %v",
			errText(errMoved), pins, errText(errAt), errText(errStatus), errText(errVeth))
		if err := pivotSysfs(false, true); err != nil {
			t.Fatalf("pivot_root back: %v", err)
		}
		t.Log("pivot_root back: sysfs on /sys, the bpffs on /sys/fs/bpf again")
	} else {
		refused("pivot_root(bpffs, bpffs/put_old) chrooted in /sys, host mount namespace", lsm.OpMount, err)
	}
	whole("pivot_root in the host's namespace")

	// pivot_root in a new mount namespace: copies only.
	if err := pivotSysfs(true, false); err != nil {
		t.Fatalf("pivot_root in a new mount namespace under seal: %v (its mounts are copies: allowed)", err)
	}
	t.Log("pivot_root in a new mount namespace: done (copies)")
	if _, err := os.Stat(filepath.Join(pins, "config")); err != nil {
		t.Fatalf("after pivot_root in a new mount namespace, the host's pins: %v", err)
	}
	whole("pivot_root in a new mount namespace")
}

// pivotSysfs runs pivot_root(2) on a thread of its own, chrooted into /sys
// (the sysfs mount, whose parent is /): the bpffs on /sys/fs/bpf becomes
// the root and sysfs goes to its kg-put-old. With back, it undoes that
// (chrooted into /sys, now the bpffs). With newNS, it first moves the
// thread to a new private mount namespace. The thread is never returned
// to the Go scheduler (it ends with its goroutine): its root and mount
// namespace are its own.
func pivotSysfs(newNS, back bool) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		flags := unix.CLONE_FS
		if newNS {
			flags |= unix.CLONE_NEWNS
		}
		if err := unix.Unshare(flags); err != nil {
			errc <- err
			return
		}
		if newNS {
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				errc <- err
				return
			}
		}
		if err := unix.Chroot("/sys"); err != nil {
			errc <- err
			return
		}
		if err := unix.Chdir("/"); err != nil {
			errc <- err
			return
		}
		if back {
			errc <- unix.PivotRoot("/kg-put-old", "/kg-put-old/fs/bpf")
			return
		}
		errc <- unix.PivotRoot("/fs/bpf", "/fs/bpf/kg-put-old")
	}()
	select {
	case err := <-errc:
		return err
	case <-time.After(30 * time.Second):
		return errors.New("pivot_root: no answer in 30 s")
	}
}

// kexecLoadFlags calls kexec_load with no segments and flags: an unload of
// the staged kernel of that kind, when allowed.
func kexecLoadFlags(flags uintptr) error {
	if _, _, errno := unix.Syscall6(unix.SYS_KEXEC_LOAD, 0, 0, 0, flags, 0, 0); errno != 0 {
		return errno
	}
	return nil
}

// kexecFileLoadFlags asks kexec_file_load to stage path, with flags.
func kexecFileLoadFlags(t *testing.T, path string, flags uintptr) error {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmdline := []byte{0}
	if _, _, errno := unix.Syscall6(unix.SYS_KEXEC_FILE_LOAD, f.Fd(), ^uintptr(0), 1,
		uintptr(unsafe.Pointer(&cmdline[0])), flags, 0); errno != 0 {
		return errno
	}
	return nil
}

// errText is err's text, or "ok".
func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}
