package vmtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/kmodguard/kmodguard/internal/debkernel"
)

// System is a guest that boots as a real host does: Debian 12's systemd as
// PID 1 and udev loading the drivers of the machine's devices, from a root
// file system on a disk.
//
// The root file system is Debian's own (debkernel.SystemdRootfs: mmdebstrap
// --variant=minbase with systemd, systemd-sysv, udev, kmod and linux-base,
// cached). For each kernel the host unpacks it into a folder, adds the
// kernel's whole modules tree (/usr/lib/modules/<release>, with depmod's
// indexes), a machine id, the harness's files under /vmtest, and a unit
// that runs the guest tests once the boot reached multi-user.target; then
// Install adds
// what the test installs, and mkfs.ext4 -d turns the folder into the root
// disk (no loop mount). The kernel boots a small initramfs (busybox) that
// loads the root disk's drivers where they are modules (virtio_blk, ext4
// on 6.1), mounts it and hands over to /sbin/init: the drivers a real
// host's initramfs loads, before any unit starts.
//
// QEMU gives the guest devices whose drivers are modules, for udev to load
// at boot: a virtio and an e1000 NIC, a virtio RNG, an i6300esb watchdog,
// an Intel HD Audio controller with a codec, an xHCI controller with a USB
// tablet, and an AHCI controller with a second disk. A kernel that lacks a
// driver (the 6.12 cloud flavour has no e1000 or sound) leaves that device
// without one.
//
// The guest test binary runs as the unit vmtest.service (/vmtest/init in
// its service mode: the same steps, markers and result port as the busybox
// guest), as root in the host's namespaces, after multi-user.target; it
// powers the machine off when the tests end. Result.Boot is therefore the
// time from QEMU's start to multi-user.target.
//
// Building the root file system and the disk needs root (files owned by
// root, mmdebstrap's root mode), mmdebstrap and mkfs.ext4 (scripts/deps.sh
// vm).
type System struct {
	// Install, when set, runs on the host once per kernel with the guest's
	// root file system (a host folder) before it becomes the root disk:
	// install files, enable units (systemctl --root=ROOT enable). The
	// Spec's Binaries are already in ROOT/vmtest/bin.
	Install func(k *debkernel.Kernel, root string) error
	// Disk, when set, is a host path where the root disk is kept. A boot
	// makes it (root file system, Install) only when it does not exist;
	// otherwise it boots the disk as the last boot left it, on the Spec's
	// kernel, with this run's harness files (/vmtest) copied onto it by
	// the stage-1 initramfs. Two Runs on one Disk are a reboot: into the
	// kernel a guest test installed, say.
	Disk string
}

// skipUnlessSystem skips a systemd guest's run on a host that cannot
// build its disk, and says what is missing.
func skipUnlessSystem(t testing.TB, spec Spec) {
	t.Helper()
	if spec.System == nil {
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("the systemd guest needs root: its root file system's files must belong to root (mmdebstrap, mkfs.ext4 -d)")
	}
	for _, tool := range []string{"mmdebstrap", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("the systemd guest needs %s (scripts/deps.sh vm)", tool)
		}
	}
}

// systemInit is where a systemd guest keeps vminit, which its
// vmtest.service runs.
const systemInit = "vmtest/init"

// SystemUnit is the unit that runs the guest tests in a systemd guest.
const SystemUnit = "vmtest.service"

const systemUnitText = `[Unit]
Description=vmtest: run the guest tests once the boot is done
After=multi-user.target

[Service]
# exec, not oneshot: the boot counts as finished (is-system-running) once
# this has started, and the tests wait for it themselves.
Type=exec
ExecStart=/vmtest/init
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
`

// stage1 is the systemd guest's initramfs /init: it loads the root disk's
// drivers (MODULES), mounts the disk and hands over to systemd.
const stage1 = `#!/bin/sh
mkdir -p /proc /sys /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in MODULES; do
	modprobe "$m" || echo "stage1: modprobe $m failed"
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do
	sleep 0.1
	i=$((i + 1))
done
mkdir -p /newroot
if ! mount -t ext4 /dev/vda /newroot; then
	echo "stage1: cannot mount the root disk /dev/vda"
	poweroff -f
fi
if [ -d /vmtest ]; then
	rm -rf /newroot/vmtest
	cp -a /vmtest /newroot/
fi
mount --move /dev /newroot/dev
umount /proc /sys
exec switch_root /newroot /sbin/init
`

// rootDrivers are the modules stage1 loads where they are not built in;
// ext4 asks the crypto API for crc32c, which stage1 has no aliases for.
var rootDrivers = []string{"virtio_pci", "virtio_blk", "crc32c_generic", "ext4"}

// systemDevices are the QEMU devices whose drivers udev loads.
var systemDevices = []string{
	"-nic", "user,model=virtio-net-pci",
	"-nic", "user,model=e1000",
	"-device", "virtio-rng-pci",
	"-device", "i6300esb",
	"-audiodev", "none,id=snd0", "-device", "intel-hda", "-device", "hda-duplex,audiodev=snd0",
	"-device", "qemu-xhci,id=xhci", "-device", "usb-tablet,bus=xhci.0",
	"-device", "ahci,id=ahci",
}

type system struct {
	ctx    context.Context
	dir    string
	k      *debkernel.Kernel
	spec   Spec
	root   string // the root file system's folder; "" to boot an existing disk
	disk   string // the root disk
	initrd string
}

// prepareSystem builds the systemd guest's root file system folder and its
// stage-1 initramfs in dir; run makes the disks from them and boots.
func prepareSystem(ctx context.Context, dir string, k *debkernel.Kernel, harness *initramfs, spec Spec) (*system, error) {
	if spec.Arch != debkernel.AMD64 {
		return nil, fmt.Errorf("Spec.System boots amd64 guests only, not %s", spec.Arch)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root: the root file system's files must belong to root")
	}
	for _, tool := range []string{"tar", "mkfs.ext4", "cp"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s is not installed (scripts/deps.sh vm)", tool)
		}
	}
	tarball, err := debkernel.SystemdRootfs(ctx)
	if err != nil {
		return nil, err
	}
	// modules.dep, modules.alias and the other indexes, which udev's
	// autoloading needs, are made in the kernel's cache once.
	if _, err := k.ModulesDep(); err != nil {
		return nil, err
	}
	s := &system{ctx: ctx, dir: dir, k: k, spec: spec, root: filepath.Join(dir, "root"), disk: filepath.Join(dir, "root.img")}
	// Stage 1: busybox and the root disk's drivers that are modules.
	rfs := newInitramfs()
	if d := spec.System.Disk; d != "" {
		s.disk = d
		if fileExists(d) {
			// A disk of an earlier boot: this run's harness files ride in
			// stage 1, which copies them onto it.
			s.root = ""
			rfs = harness
		}
	}
	if s.root != "" {
		if err := s.makeRoot(tarball, harness); err != nil {
			return nil, err
		}
	}
	rfs.addData("init", []byte(strings.Replace(stage1, "MODULES", strings.Join(s.rootModules(), " "), 1)), 0o755)
	if err := addBusybox(rfs); err != nil {
		return nil, err
	}
	if err := stagePlainModules(rfs, k, s.rootModules()); err != nil {
		return nil, err
	}
	s.initrd = filepath.Join(dir, "stage1.cpio.gz")
	f, err := os.Create(s.initrd)
	if err != nil {
		return nil, err
	}
	if err := rfs.writeTo(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("write the stage-1 initramfs: %w", err)
	}
	return s, f.Close()
}

// makeRoot builds the root file system's folder: Debian's tarball, the
// kernel's modules, the harness's files and unit, and Install's.
func (s *system) makeRoot(tarball string, harness *initramfs) error {
	ctx, k, spec := s.ctx, s.k, s.spec
	if err := os.RemoveAll(s.root); err != nil {
		return err
	}
	if err := os.MkdirAll(s.root, 0o755); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "tar", "-x", "--numeric-owner", "-p", "-f", tarball, "-C", s.root).CombinedOutput(); err != nil {
		return fmt.Errorf("unpack %s: %w\n%s", tarball, err, out)
	}
	mods := filepath.Join(s.root, "usr", "lib", "modules")
	if err := os.MkdirAll(mods, 0o755); err != nil {
		return err
	}
	// Hard links where the cache is on the same file system, a copy where
	// not: mkfs.ext4 reads the files either way.
	if _, err := exec.Command("cp", "-al", k.ModulesDir(), mods).CombinedOutput(); err != nil {
		if out, err := exec.Command("cp", "-a", k.ModulesDir(), mods).CombinedOutput(); err != nil {
			return fmt.Errorf("copy the modules of %s: %w\n%s", k.Release, err, out)
		}
	}
	id := make([]byte, 16)
	rand.Read(id)
	files := map[string]string{
		// A machine id: not a first boot, so no presets are applied.
		"etc/machine-id":                   hex.EncodeToString(id) + "\n",
		"etc/hostname":                     "vmtest\n",
		"etc/fstab":                        "/dev/vda / ext4 rw,errors=remount-ro 0 1\n",
		"etc/systemd/system/" + SystemUnit: systemUnitText,
	}
	for rel, text := range files {
		if err := os.WriteFile(filepath.Join(s.root, rel), []byte(text), 0o644); err != nil {
			return err
		}
	}
	wants := filepath.Join(s.root, "etc/systemd/system/multi-user.target.wants")
	if err := os.MkdirAll(wants, 0o755); err != nil {
		return err
	}
	if err := os.Symlink("../"+SystemUnit, filepath.Join(wants, SystemUnit)); err != nil {
		return err
	}
	if err := harness.writeDir(s.root); err != nil {
		return fmt.Errorf("write the harness's files: %w", err)
	}
	if spec.System.Install != nil {
		if err := spec.System.Install(k, s.root); err != nil {
			return fmt.Errorf("Spec.System.Install: %w", err)
		}
	}
	return nil
}

// stagePlainModules puts the named modules and their dependencies under
// /lib/modules/<release> in rfs as plain ELF images, with a modules.dep
// for busybox modprobe. Plain, because busybox first hands a compressed
// file to finit_module as it is, which the kernel refuses with "Invalid
// ELF header magic" on the console before busybox decompresses it itself.
func stagePlainModules(rfs *initramfs, k *debkernel.Kernel, names []string) error {
	deps, err := k.ModulesDep()
	if err != nil {
		return err
	}
	plain := func(rel string) string { return strings.TrimSuffix(rel, compressedExt(rel)) + ".ko" }
	want := map[string]bool{}
	var add func(rel string)
	add = func(rel string) {
		if want[rel] {
			return
		}
		want[rel] = true
		for _, d := range deps[rel] {
			add(d)
		}
	}
	for _, n := range names {
		src, err := k.Module(n)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(k.ModulesDir(), src)
		if err != nil {
			return err
		}
		add(filepath.ToSlash(rel))
	}
	dir := "lib/modules/" + k.Release
	var lines []string
	for rel := range want {
		b, err := os.ReadFile(filepath.Join(k.ModulesDir(), rel))
		if err != nil {
			return err
		}
		if b, err = Decompress(b); err != nil {
			return fmt.Errorf("decompress %s: %w", rel, err)
		}
		rfs.addData(dir+"/"+plain(rel), b, 0o644)
		line := plain(rel) + ":"
		for _, d := range deps[rel] {
			line += " " + plain(d)
		}
		lines = append(lines, line)
	}
	sort.Strings(lines)
	rfs.addData(dir+"/modules.dep", []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	return nil
}

// rootModules are the root disk's drivers that this kernel has as modules.
func (s *system) rootModules() []string {
	var out []string
	for _, m := range rootDrivers {
		if _, err := s.k.Module(m); err == nil {
			out = append(out, m)
		}
	}
	return out
}

// run makes fresh disks from the root folder and boots them.
func (s *system) run() (*Result, error) {
	disk := s.disk
	if s.root != "" {
		os.Remove(disk)
		size, err := treeSize(s.root)
		if err != nil {
			return nil, err
		}
		// Room for the journal, the tests' files, a kernel package to
		// install, and ext4's own.
		mib := size>>20*5/4 + 512
		if out, err := exec.CommandContext(s.ctx, "mkfs.ext4", "-q", "-F", "-L", "root", "-d", s.root, disk, strconv.FormatInt(mib, 10)+"M").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("mkfs.ext4 -d %s: %w\n%s", s.root, err, out)
		}
	}
	data := filepath.Join(s.dir, "data.img")
	if err := os.WriteFile(data, nil, 0o644); err != nil {
		return nil, err
	}
	if err := os.Truncate(data, 16<<20); err != nil {
		return nil, err
	}
	args := []string{
		"-drive", "file=" + disk + ",if=none,id=root,format=raw,cache=unsafe",
		"-device", "virtio-blk-pci,drive=root",
		"-drive", "file=" + data + ",if=none,id=data,format=raw,cache=unsafe",
	}
	args = append(args, systemDevices...)
	args = append(args, "-device", "ide-hd,drive=data,bus=ahci.0")
	return qemu(s.ctx, s.dir, s.k, s.initrd, s.spec, args...)
}

// treeSize adds up the sizes of the regular files under dir (a hard link
// counts each time: the file system mkfs makes does not share them).
func treeSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	return n, err
}
