package debkernel

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// SystemdRootfsPackages are what SystemdRootfs adds to Debian's minbase
// variant: systemd as init, udev to load drivers, kmod (modprobe), and
// linux-base, whose tools a kernel package's maintainer scripts run
// (linux-update-symlinks, linux-run-hooks for /etc/kernel/postinst.d).
var SystemdRootfsPackages = []string{"systemd", "systemd-sysv", "udev", "kmod", "linux-base"}

// RootfsMaxAge is how long a cached root file system serves before it is
// built again, so that it follows Debian's point releases and security
// updates.
const RootfsMaxAge = 14 * 24 * time.Hour

// rootfsArgs is the mmdebstrap command line, without the output file.
func rootfsArgs() []string {
	return []string{"--variant=minbase", "--include=" + strings.Join(SystemdRootfsPackages, ","), "bookworm"}
}

// SystemdRootfs returns a tarball of a Debian 12 (bookworm, amd64) root
// file system with systemd and udev, built once with mmdebstrap (about a
// minute; about 220 MB) and cached under CacheDir()/rootfs. Its name carries
// a digest of the mmdebstrap command line, so a changed recipe builds a new
// one; a tarball older than RootfsMaxAge is built again. A lock file
// serialises builds across processes; the tarball is written under a
// temporary name and renamed into place. Offline, a stale tarball still
// serves. Building needs root (mmdebstrap's root mode, and a tarball whose
// files belong to root) and mmdebstrap (scripts/deps.sh vm).
func SystemdRootfs(ctx context.Context) (string, error) {
	sum := sha256.Sum256([]byte(strings.Join(rootfsArgs(), "\x00")))
	dir := filepath.Join(CacheDir(), "rootfs")
	tarball := filepath.Join(dir, "bookworm-systemd-"+hex.EncodeToString(sum[:6])+".tar")
	fresh := func() bool {
		st, err := os.Stat(tarball)
		return err == nil && time.Since(st.ModTime()) < RootfsMaxAge
	}
	if fresh() {
		return tarball, nil
	}
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		if fileExists(tarball) {
			return tarball, nil
		}
		return "", fmt.Errorf("debkernel: mmdebstrap is not installed (scripts/deps.sh vm)")
	}
	if os.Geteuid() != 0 {
		if fileExists(tarball) {
			return tarball, nil
		}
		return "", fmt.Errorf("debkernel: building the systemd root file system needs root")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("debkernel: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("debkernel: %w", err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", fmt.Errorf("debkernel: lock %s: %w", lock.Name(), err)
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	// Another process may have built it while this one waited.
	if fresh() {
		return tarball, nil
	}
	tmp := tarball + ".tmp.tar"
	defer os.Remove(tmp)
	cmd := exec.CommandContext(ctx, "mmdebstrap", append(append([]string{"--quiet", "--mode=root", "--format=tar"}, rootfsArgs()...), tmp)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		if fileExists(tarball) {
			// Offline, or the mirror is down: the old one serves.
			return tarball, nil
		}
		return "", fmt.Errorf("debkernel: mmdebstrap %s: %w\n%s", strings.Join(rootfsArgs(), " "), err, out)
	}
	if err := os.Rename(tmp, tarball); err != nil {
		return "", fmt.Errorf("debkernel: %w", err)
	}
	// Older recipes' tarballs are of no more use.
	old, _ := filepath.Glob(filepath.Join(dir, "bookworm-systemd-*.tar"))
	for _, o := range old {
		if o != tarball {
			os.Remove(o)
		}
	}
	return tarball, nil
}
