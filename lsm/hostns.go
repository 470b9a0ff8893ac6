//go:build linux

package lsm

import (
	"errors"
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// procPidInitIno is the initial PID namespace's fixed inode number
// (include/linux/proc_ns.h).
const procPidInitIno = 0xEFFFFFFC

// ErrNotHostNamespace is wrapped by Seal's error when the seal cannot act
// on the host's mount namespace.
var ErrNotHostNamespace = errors.New("the seal must act on the host's mount namespace")

// hostMountNS says where the host's mount namespace is for the seal: ""
// when the calling thread is in it, else the path to enter it by (PID 1's,
// /proc/1/ns/mnt). It fails where it cannot tell: outside the host's PID
// namespace /proc/1 is not the host's init (a container without hostPID),
// and without ptrace access to PID 1 (CAP_SYS_PTRACE for a process with
// fewer capabilities than init, as in a sandboxed service) its namespace
// cannot be seen.
func hostMountNS() (string, error) {
	var pid, self, init unix.Stat_t
	if err := unix.Stat("/proc/self/ns/pid", &pid); err != nil {
		return "", fmt.Errorf("%w: %w", ErrNotHostNamespace, err)
	}
	if pid.Ino != procPidInitIno {
		return "", fmt.Errorf("%w: this process is not in the host's PID namespace (its /proc/1 is not the host's init); "+
			"seal from the host, or run the container with hostPID", ErrNotHostNamespace)
	}
	if err := unix.Stat("/proc/thread-self/ns/mnt", &self); err != nil {
		return "", fmt.Errorf("%w: %w", ErrNotHostNamespace, err)
	}
	if err := unix.Stat("/proc/1/ns/mnt", &init); err != nil {
		return "", fmt.Errorf("%w: PID 1's mount namespace cannot be seen from here (%w); "+
			"seal from the host's namespace (kmodguard enforcer seal, e.g. ExecStartPost=+ in the unit), "+
			"or give this process CAP_SYS_PTRACE and CAP_SYS_CHROOT", ErrNotHostNamespace, err)
	}
	if self.Dev == init.Dev && self.Ino == init.Ino {
		return "", nil
	}
	return "/proc/1/ns/mnt", nil
}

// inMountNS runs f on a thread of its own moved into the mount namespace
// at nsPath. The thread is never handed back to the Go scheduler: it ends
// with its goroutine, namespace and all.
func inMountNS(nsPath string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- func() error {
			fd, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("%w: open %s: %w", ErrNotHostNamespace, nsPath, err)
			}
			defer unix.Close(fd)
			// A thread that shares its file system attributes with the
			// others cannot change mount namespace.
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				return fmt.Errorf("%w: unshare CLONE_FS: %w", ErrNotHostNamespace, err)
			}
			if err := unix.Setns(fd, unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("%w: enter %s (needs CAP_SYS_ADMIN and CAP_SYS_CHROOT): %w", ErrNotHostNamespace, nsPath, err)
			}
			return f()
		}()
	}()
	return <-errc
}
