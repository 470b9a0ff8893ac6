package lsm

import (
	"slices"
	"strings"
	"testing"
)

const sampleMountinfo = `22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
23 22 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
24 23 0:22 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:3 - bpf bpf rw,mode=700
25 22 0:5 / /dev rw,nosuid shared:4 - devtmpfs udev rw
26 23 0:23 / /sys/fs/bpfx rw - tmpfs none rw
27 22 0:24 / /mnt/with\040space rw - tmpfs none rw
28 22 254:1 /srv/data /mnt/bind rw shared:1 - ext4 /dev/vda1 rw
29 22 0:21 / /tmp/sys2 rw - sysfs none rw
30 29 0:22 / /tmp/sys2/fs/bpf rw - bpf bpf rw
`

func ids(ms []mountInfo) []int {
	var out []int
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

func TestAncestorMounts(t *testing.T) {
	for _, tc := range []struct {
		name, info, dir string
		want            []int
	}{
		// The bpffs, /sys and /; not /dev, not /sys/fs/bpfx (a prefix by
		// bytes, not by components), and not the other mounts of the same
		// file systems (the bind mount of /, the second sysfs and bpffs).
		{"pins", sampleMountinfo, "/sys/fs/bpf/kmodguard", []int{24, 23, 22}},
		{"bpffs root", sampleMountinfo, "/sys/fs/bpf", []int{24, 23, 22}},
		{"escaped path", sampleMountinfo, "/mnt/with space/pins", []int{27, 22}},
		{"root only", sampleMountinfo, "/var/lib", []int{22}},
		{"root itself", sampleMountinfo, "/", []int{22}},
		{"second sysfs", sampleMountinfo, "/tmp/sys2/fs/bpf/x", []int{30, 29, 22}},
		// A second bpffs on the same path sits on the first: both count,
		// the one on top first, whatever the order of the lines.
		{"stacked", "40 24 0:30 / /sys/fs/bpf rw - bpf bpf rw\n" + sampleMountinfo, "/sys/fs/bpf/kmodguard", []int{40, 24, 23, 22}},
		// A tmpfs mounted over /sys later hides the bpffs below it: the
		// walk goes through the tmpfs.
		{"hidden by a mount above", sampleMountinfo + "41 23 0:31 / /sys rw - tmpfs none rw\n", "/sys/fs/bpf/kmodguard", []int{41, 23, 22}},
		// The root mount's parent (the initramfs rootfs) is not listed.
		{"root parent outside", "1 1 0:2 / / rw - rootfs rootfs rw\n" + strings.Replace(sampleMountinfo, "22 1 ", "22 1 ", 1), "/sys/fs/bpf", []int{24, 23, 22, 1}},
	} {
		got, err := ancestorMounts(strings.NewReader(tc.info), tc.dir)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !slices.Equal(ids(got), tc.want) {
			t.Errorf("%s: mounts %v, want %v", tc.name, ids(got), tc.want)
		}
	}
	got, _ := ancestorMounts(strings.NewReader(sampleMountinfo), "/sys/fs/bpf/kmodguard")
	if got[0].Point != "/sys/fs/bpf" || got[0].Dev != 22 || got[0].Parent != 23 || got[2].Dev != 254<<20|1 {
		t.Errorf("fields of the chain: %+v", got)
	}
}

func TestAncestorMountsBadInput(t *testing.T) {
	for _, tc := range []struct{ name, info, dir string }{
		{"relative dir", sampleMountinfo, "sys/fs/bpf"},
		{"unclean dir", sampleMountinfo, "/sys/fs/../fs/bpf"},
		{"short line", "22 1 254:1 /\n", "/sys"},
		{"bad id", "x 1 254:1 / / rw - ext4 x rw\n", "/sys"},
		{"bad parent", "22 -1 254:1 / / rw - ext4 x rw\n", "/sys"},
		{"bad device", "22 1 254-1 / / rw - ext4 x rw\n", "/sys"},
		{"major too big", "22 1 4096:1 / / rw - ext4 x rw\n", "/sys"},
		{"truncated escape", "22 1 254:1 / /a\\04 rw - ext4 x rw\n", "/sys"},
		{"bad escape", "22 1 254:1 / /a\\9zz rw - ext4 x rw\n", "/sys"},
		{"relative mount point", "22 1 254:1 / sys rw - ext4 x rw\n", "/sys"},
		{"id twice", "22 1 254:1 / / rw - ext4 x rw\n22 1 254:1 / /a rw - ext4 x rw\n", "/sys"},
		{"no root mount", "25 22 0:5 / /dev rw - devtmpfs udev rw\n", "/sys"},
		// Parents in a cycle: every mount has a listed parent, so none is
		// a root.
		{"parent cycle", "22 23 254:1 / / rw - ext4 x rw\n23 22 0:21 / /sys rw - sysfs x rw\n", "/sys"},
	} {
		if ms, err := ancestorMounts(strings.NewReader(tc.info), tc.dir); err == nil {
			t.Errorf("%s: mounts %v, want an error", tc.name, ids(ms))
		}
	}
}

// FuzzAncestorMounts checks, on any mountinfo, that the parser either
// fails or returns a chain a path walk could take: the first mount's point
// is on dir's path, every mount's parent is the next one, each point is on
// the path of the one before, and the last is a root.
func FuzzAncestorMounts(f *testing.F) {
	f.Add(sampleMountinfo, "/sys/fs/bpf/kmodguard")
	f.Add("40 24 0:30 / /sys/fs/bpf rw - bpf bpf rw\n"+sampleMountinfo, "/sys/fs/bpf/x")
	f.Add("1 0 0:1 / /a\\ rw\n", "/a")
	f.Add("1 1 0:1 / / rw\n2 1 0:2 / / rw\n3 2 0:3 / / rw\n", "/")
	f.Fuzz(func(t *testing.T, info, dir string) {
		ms, err := ancestorMounts(strings.NewReader(info), dir)
		if err != nil {
			return
		}
		if len(ms) == 0 {
			t.Fatal("no error and no mounts")
		}
		onPath := func(a, p string) bool {
			return a == "/" || a == p || strings.HasPrefix(p, a+"/")
		}
		if !onPath(ms[0].Point, dir) {
			t.Fatalf("first mount %+v is not on the path to %s", ms[0], dir)
		}
		seen := map[int]bool{}
		for i, m := range ms {
			if seen[m.ID] {
				t.Fatalf("mount %d twice in %v", m.ID, ids(ms))
			}
			seen[m.ID] = true
			if i+1 < len(ms) {
				if m.Parent != ms[i+1].ID {
					t.Fatalf("mount %+v is followed by %+v, not by its parent", m, ms[i+1])
				}
				if !onPath(ms[i+1].Point, m.Point) {
					t.Fatalf("parent %+v is not on the path to %s", ms[i+1], m.Point)
				}
			}
		}
		if last := ms[len(ms)-1]; last.Point != "/" {
			t.Fatalf("chain ends at %+v, not at a root mount", last)
		}
	})
}
