package lsm

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ancestorMountDevs returns the devices (the kernel's s_dev encoding) of
// every mount in mountinfo (the format of /proc/self/mountinfo) whose mount
// point is dir or a directory above it: the mounts from / down to dir. A
// lazy umount of any of them would detach dir's bpffs with it, without the
// sb_umount hook ever seeing the bpffs. dir must be absolute and clean. A
// mount hidden under a later mount on the same path is included too.
func ancestorMountDevs(mountinfo io.Reader, dir string) ([]uint32, error) {
	if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir {
		return nil, fmt.Errorf("mount ancestors of %q: not an absolute, clean path", dir)
	}
	var devs []uint32
	seen := map[uint32]bool{}
	sc := bufio.NewScanner(mountinfo)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for line := 1; sc.Scan(); line++ {
		// id parent major:minor root mount-point options ... - fstype source super-options
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			return nil, fmt.Errorf("mountinfo line %d: %d fields, want at least 5", line, len(f))
		}
		dev, err := parseMajorMinor(f[2])
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", line, err)
		}
		mp, err := unescapeMountPath(f[4])
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", line, err)
		}
		if !isPathAncestor(mp, dir) || seen[dev] {
			continue
		}
		seen[dev] = true
		devs = append(devs, dev)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	if len(devs) == 0 {
		return nil, fmt.Errorf("mount ancestors of %s: no mount found on its path", dir)
	}
	return devs, nil
}

// parseMajorMinor turns mountinfo's "major:minor" into the kernel's dev_t
// (MAJOR << 20 | MINOR).
func parseMajorMinor(s string) (uint32, error) {
	maj, min, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("device %q: want major:minor", s)
	}
	a, err := strconv.ParseUint(maj, 10, 12)
	if err != nil {
		return 0, fmt.Errorf("device %q: major: %w", s, err)
	}
	b, err := strconv.ParseUint(min, 10, 20)
	if err != nil {
		return 0, fmt.Errorf("device %q: minor: %w", s, err)
	}
	return uint32(a)<<20 | uint32(b), nil
}

// unescapeMountPath undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in a mountinfo path.
func unescapeMountPath(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		if i+4 > len(s) {
			return "", fmt.Errorf("mount path %q: truncated escape", s)
		}
		v, err := strconv.ParseUint(s[i+1:i+4], 8, 8)
		if err != nil {
			return "", fmt.Errorf("mount path %q: bad escape: %w", s, err)
		}
		b.WriteByte(byte(v))
		i += 3
	}
	return b.String(), nil
}

// isPathAncestor reports whether the absolute path a is p or a directory
// above it, by whole components.
func isPathAncestor(a, p string) bool {
	if a == "/" || a == p {
		return true
	}
	return strings.HasPrefix(p, a) && p[len(a)] == '/'
}

// pinAncestorDevs reads /proc/self/mountinfo for the devices of the mounts
// from / down to the pin directory dir (symlinks resolved).
func pinAncestorDevs(dir string) ([]uint32, error) {
	resolved, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", dir, err)
	}
	if resolved, err = filepath.Abs(resolved); err != nil {
		return nil, fmt.Errorf("resolve %s: %w", dir, err)
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	return ancestorMountDevs(f, resolved)
}
