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

// mountInfo is one line of mountinfo.
type mountInfo struct {
	// ID is the mount id (struct mount's mnt_id), Parent its parent's.
	ID, Parent int
	// Dev is the device of the mount's superblock (the kernel's s_dev).
	Dev uint32
	// Point is the mount point, relative to the process's root.
	Point string
}

// ancestorMounts returns the mounts that a path walk from / down to dir
// crosses, in the mount namespace mountinfo (the format of
// /proc/self/mountinfo) describes: the mount holding dir first, then its
// parent, and so on up to the namespace's root mount. A lazy umount of any
// of them would detach dir's mount with it, without the sb_umount hook ever
// seeing that one.
//
// The walk follows the kernel's: at each component it goes to the mount on
// that path whose parent is the mount it is in, then to the top of any
// stack of mounts on the same path. So a mount hidden under another on the
// same path is in the list when the walk goes through the one on top of it
// (it is that one's parent), and a mount hidden under a mount above it
// (a bpffs under a tmpfs mounted over /sys later) is not. Other mounts of
// the same file systems (bind mounts, another sysfs) are not in it. dir
// must be absolute and clean.
func ancestorMounts(mountinfo io.Reader, dir string) ([]mountInfo, error) {
	if !filepath.IsAbs(dir) || filepath.Clean(dir) != dir {
		return nil, fmt.Errorf("mounts above %q: not an absolute, clean path", dir)
	}
	var all []*mountInfo
	byID := map[int]*mountInfo{}
	sc := bufio.NewScanner(mountinfo)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for line := 1; sc.Scan(); line++ {
		m, err := parseMountInfo(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", line, err)
		}
		if byID[m.ID] != nil {
			return nil, fmt.Errorf("mountinfo line %d: mount id %d twice", line, m.ID)
		}
		byID[m.ID] = m
		all = append(all, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	isRoot := func(m *mountInfo) bool { return m.Parent == m.ID || byID[m.Parent] == nil }
	// on returns the last mount on path point whose parent is parent.
	on := func(parent *mountInfo, point string) *mountInfo {
		var found *mountInfo
		for _, m := range all {
			if m.Parent == parent.ID && m.ID != parent.ID && m.Point == point {
				found = m
			}
		}
		return found
	}
	// top climbs a stack of mounts on one path. Every step goes to a
	// child, and a mount is visited once, so it ends on any input.
	top := func(m *mountInfo, seen map[int]bool) *mountInfo {
		for !seen[m.ID] {
			seen[m.ID] = true
			next := on(m, m.Point)
			if next == nil {
				break
			}
			m = next
		}
		return m
	}
	var cur *mountInfo
	for _, m := range all {
		if m.Point == "/" && isRoot(m) {
			cur = m
			break
		}
	}
	if cur == nil {
		return nil, fmt.Errorf("mounts above %s: no root mount in mountinfo", dir)
	}
	seen := map[int]bool{}
	cur = top(cur, seen)
	if dir != "/" {
		for i := 1; i <= len(dir); i++ {
			if i < len(dir) && dir[i] != '/' {
				continue
			}
			if next := on(cur, dir[:i]); next != nil && !seen[next.ID] {
				cur = top(next, seen)
			}
		}
	}
	var chain []mountInfo
	for m, visited := cur, map[int]bool{}; ; m = byID[m.Parent] {
		if visited[m.ID] {
			return nil, fmt.Errorf("mounts above %s: mount %d is its own ancestor", dir, m.ID)
		}
		visited[m.ID] = true
		chain = append(chain, *m)
		if isRoot(m) {
			break
		}
	}
	return chain, nil
}

// parseMountInfo parses one mountinfo line:
// id parent major:minor root mount-point options [optional...] - fstype source super-options
func parseMountInfo(line string) (*mountInfo, error) {
	f := strings.Fields(line)
	if len(f) < 5 {
		return nil, fmt.Errorf("%d fields, want at least 5", len(f))
	}
	id, err := strconv.ParseUint(f[0], 10, 31)
	if err != nil {
		return nil, fmt.Errorf("mount id: %w", err)
	}
	parent, err := strconv.ParseUint(f[1], 10, 31)
	if err != nil {
		return nil, fmt.Errorf("parent id: %w", err)
	}
	dev, err := parseMajorMinor(f[2])
	if err != nil {
		return nil, err
	}
	point, err := unescapeMountPath(f[4])
	if err != nil {
		return nil, err
	}
	if !filepath.IsAbs(point) {
		return nil, fmt.Errorf("mount point %q is not absolute", point)
	}
	return &mountInfo{ID: int(id), Parent: int(parent), Dev: dev, Point: filepath.Clean(point)}, nil
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

// pinMounts reads the calling thread's mountinfo for the mounts from the one
// holding the pin directory dir (symlinks resolved) up to /. The thread's:
// Seal reads it again from a thread in the host's mount namespace.
func pinMounts(dir string) ([]mountInfo, error) {
	resolved, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", dir, err)
	}
	if resolved, err = filepath.Abs(resolved); err != nil {
		return nil, fmt.Errorf("resolve %s: %w", dir, err)
	}
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	return ancestorMounts(f, resolved)
}
