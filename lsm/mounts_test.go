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
`

func TestAncestorMountDevs(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		want []uint32
	}{
		// /, /sys and the bpffs; not /dev, and not /sys/fs/bpfx (a prefix
		// by bytes, not by components).
		{"/sys/fs/bpf/kmodguard", []uint32{254<<20 | 1, 21, 22}},
		{"/sys/fs/bpf", []uint32{254<<20 | 1, 21, 22}},
		{"/mnt/with space/pins", []uint32{254<<20 | 1, 24}},
		{"/var/lib", []uint32{254<<20 | 1}},
	} {
		got, err := ancestorMountDevs(strings.NewReader(sampleMountinfo), tc.dir)
		if err != nil {
			t.Fatalf("%s: %v", tc.dir, err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: devices %v, want %v", tc.dir, got, tc.want)
		}
	}
}

func TestAncestorMountDevsBadInput(t *testing.T) {
	for _, tc := range []struct{ name, info, dir string }{
		{"relative dir", sampleMountinfo, "sys/fs/bpf"},
		{"unclean dir", sampleMountinfo, "/sys/fs/../fs/bpf"},
		{"short line", "22 1 254:1 /\n", "/sys"},
		{"bad device", "22 1 254-1 / / rw - ext4 x rw\n", "/sys"},
		{"major too big", "22 1 4096:1 / / rw - ext4 x rw\n", "/sys"},
		{"truncated escape", "22 1 254:1 / /a\\04 rw - ext4 x rw\n", "/sys"},
		{"bad escape", "22 1 254:1 / /a\\9zz rw - ext4 x rw\n", "/sys"},
		{"no mount on the path", "25 22 0:5 / /dev rw - devtmpfs udev rw\n", "/sys"},
	} {
		if devs, err := ancestorMountDevs(strings.NewReader(tc.info), tc.dir); err == nil {
			t.Errorf("%s: devices %v, want an error", tc.name, devs)
		}
	}
}

func FuzzAncestorMountDevs(f *testing.F) {
	f.Add(sampleMountinfo, "/sys/fs/bpf/kmodguard")
	f.Add("1 0 0:1 / /a\\ rw\n", "/a")
	f.Fuzz(func(t *testing.T, info, dir string) {
		devs, err := ancestorMountDevs(strings.NewReader(info), dir)
		if err == nil && len(devs) == 0 {
			t.Fatal("no error and no devices")
		}
	})
}
