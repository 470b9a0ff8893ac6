//go:build linux

package lsm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Pin names of the maps under the pin directory.
const (
	pinPolicy   = "policy"
	pinConfig   = "config"
	pinProtect  = "protect"
	pinEvents   = "events"
	pinCounters = "counters"
	// pinReader is the decision reader's own state (reader.go), not the
	// guard's: the seal does not protect it.
	pinReader = "reader"
	// pinSerial is the highest allowlist serial applied (serial.go): user
	// space's record, read by no guard program.
	pinSerial = "serial"
)

func linkPin(prog string) string { return "link_" + prog }

// guardPins names the guard's own pins in a pin directory: its links, then
// its maps (not the reader's state, pinReader).
func guardPins() []string {
	var names []string
	for _, h := range hooks {
		names = append(names, linkPin(h))
	}
	return append(names, pinPolicy, pinConfig, pinProtect, pinEvents, pinCounters)
}

// removePins removes the pins named in dir, those already gone aside.
func removePins(dir string, names []string) error {
	var errs []error
	for _, name := range names {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ensurePinDir creates dir on a bpffs, mounting bpffs on its parent when the
// parent is an empty, unmounted /sys/fs/bpf.
func ensurePinDir(dir string) error {
	parent := filepath.Dir(dir)
	var fs unix.Statfs_t
	if err := unix.Statfs(parent, &fs); err != nil {
		return fmt.Errorf("pin directory %s: %w", parent, err)
	}
	if fs.Type != unix.BPF_FS_MAGIC {
		if parent != "/sys/fs/bpf" {
			return fmt.Errorf("pin directory %s is not on a bpffs", parent)
		}
		if err := unix.Mount("bpf", parent, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpffs on %s: %w", parent, err)
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create pin directory: %w", err)
	}
	return nil
}

// ErrBusy is returned by Open when another process holds the guard.
var ErrBusy = errors.New("another process holds the guard")

// lockDir takes an exclusive flock on dir, held until the Guard is closed,
// so that two daemons never load two guards into one pin directory, nor
// apply two allowlists and split one decision stream. The kernel drops the
// lock when the holder dies, kill -9 included.
func lockDir(dir string) (func(), error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open pin directory: %w", err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("open guard in %s: %w (is 'kmodguard enforcer run' already running?)", dir, ErrBusy)
		}
		return nil, fmt.Errorf("lock pin directory: %w", err)
	}
	return func() { unix.Close(fd) }, nil
}
