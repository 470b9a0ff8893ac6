//go:build linux

package lsm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// serialDir is a fresh directory on a bpffs, for a Guard that only keeps
// its serial record (no program loads: this runs where BPF LSM does not).
func serialDir(t *testing.T) *Guard {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates and pins BPF maps")
	}
	// A bpffs of its own, so as not to touch the host's.
	mnt := t.TempDir()
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		t.Skipf("needs to mount a bpffs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	dir := filepath.Join(mnt, "kmodguard")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return &Guard{pinDir: dir}
}

func TestSerialRecord(t *testing.T) {
	g := serialDir(t)
	if s, err := g.AppliedSerial(); s != 0 || err != nil {
		t.Fatalf("no record yet: %d, %v; want 0", s, err)
	}
	// A list without serial leaves no record behind.
	if err := g.RecordSerial(0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(g.pinDir, pinSerial)); !os.IsNotExist(err) {
		t.Fatalf("serial 0 created the record: %v", err)
	}
	for _, c := range []struct{ record, want uint64 }{{5, 5}, {3, 5}, {5, 5}, {9, 9}, {0, 9}} {
		if err := g.RecordSerial(c.record); err != nil {
			t.Fatal(err)
		}
		if s, err := g.AppliedSerial(); s != c.want || err != nil {
			t.Fatalf("after recording %d: %d, %v; want %d (the record never goes down)", c.record, s, err, c.want)
		}
	}
	// Another Guard on the same pins (a restarted daemon) reads it.
	if s, _ := (&Guard{pinDir: g.pinDir}).AppliedSerial(); s != 9 {
		t.Fatalf("a second Guard reads %d, want 9", s)
	}
}

func TestSerialRecordOfAnotherShape(t *testing.T) {
	g := serialDir(t)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Skipf("needs BPF maps: %v", err)
	}
	defer m.Close()
	if err := m.Pin(filepath.Join(g.pinDir, pinSerial)); err != nil {
		t.Fatal(err)
	}
	// Not read as 0: that would let any list through.
	if s, err := g.AppliedSerial(); err == nil || !strings.Contains(err.Error(), "is not one") {
		t.Fatalf("a 4-byte map as the record: %d, %v; want an error", s, err)
	}
	if err := g.RecordSerial(7); err == nil {
		t.Fatal("recorded into a map of another shape")
	}
}
