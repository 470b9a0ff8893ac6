//go:build linux

package lsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

func rawEvent(t testing.TB, e guardKgEvent) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.NativeEndian, &e); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func setStr[T int8 | uint8](dst []T, s string) {
	for i := range len(s) {
		dst[i] = T(s[i])
	}
}

func TestDecode(t *testing.T) {
	digest := sha256.Sum256([]byte("module"))
	base := guardKgEvent{
		TsBoot: 5e9, Size: 17497, Generation: 3, Pid: 10, Tid: 11, Uid: 0,
		Op: 1, Verdict: 1, Reason: 1, Flags: flagNames | flagDigest, Digest: digest,
	}
	setStr(base.Name[:], "dummy")
	setStr(base.ThisName[:], "dummy")
	setStr(base.Entry[:], "dummy")
	setStr(base.Comm[:], "insmod")

	forged := base
	forged.Verdict, forged.Reason, forged.Ret = 2, 6, -1
	forged.Flags |= flagMismatch
	setStr(forged.Name[:], "dumbo")
	forged.Entry = [56]int8{}

	compressed := base
	compressed.Op, compressed.Reason = 2, 3
	compressed.Flags = flagDigest | flagCompressed
	compressed.Name, compressed.ThisName = [64]int8{}, [64]int8{}

	badELF := base
	badELF.Verdict, badELF.Reason, badELF.ElfStatus, badELF.Flags = 3, 7, 12, flagDigest

	seal := guardKgEvent{TsBoot: 6e9, Op: 4, Verdict: 2, Reason: 12, Ret: -1, Flags: flagSealed, Object: 1445}

	for _, tc := range []struct {
		name string
		in   guardKgEvent
		want Decision
	}{
		{"allowed", base, Decision{Op: OpInitModule, Verdict: Allowed, Reason: reasons[1], SHA256: hex.EncodeToString(digest[:]),
			Name: "dummy", ThisModuleName: "dummy", Entry: "dummy", Size: 17497, Generation: 3, Pid: 10, Tid: 11, Comm: "insmod"}},
		{"forged", forged, Decision{Op: OpInitModule, Verdict: Blocked, Reason: reasons[6], Ret: -1, SHA256: hex.EncodeToString(digest[:]),
			Name: "dumbo", ThisModuleName: "dummy", NameMismatch: true, Size: 17497, Generation: 3, Pid: 10, Tid: 11, Comm: "insmod"}},
		{"compressed", compressed, Decision{Op: OpFinitModule, Verdict: Allowed, Reason: reasons[3], SHA256: hex.EncodeToString(digest[:]),
			Compressed: true, Entry: "dummy", Size: 17497, Generation: 3, Pid: 10, Tid: 11, Comm: "insmod"}},
		{"bad elf", badELF, Decision{Op: OpInitModule, Verdict: Audit, Reason: reasons[7] + " (truncated image)", SHA256: hex.EncodeToString(digest[:]),
			Name: "dummy", ThisModuleName: "dummy", Entry: "dummy", Size: 17497, Generation: 3, Pid: 10, Tid: 11, Comm: "insmod"}},
		{"seal", seal, Decision{Op: OpUnlink, Verdict: Blocked, Reason: reasons[12], Ret: -1, Object: 1445, Sealed: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const offset = int64(1_700_000_000e9)
			got, err := decode(rawEvent(t, tc.in), offset)
			if err != nil {
				t.Fatal(err)
			}
			tc.want.Time = time.Unix(0, int64(tc.in.TsBoot)+offset)
			if !got.Time.Equal(tc.want.Time) {
				t.Errorf("time %v, want %v", got.Time, tc.want.Time)
			}
			got.Time, tc.want.Time = time.Time{}, time.Time{}
			if got != tc.want {
				t.Errorf("decode:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	good := rawEvent(t, guardKgEvent{Op: 1, Verdict: 1, Reason: 1})
	if _, err := decode(good[:len(good)-1], 0); err == nil {
		t.Error("short record decoded")
	}
	if _, err := decode(rawEvent(t, guardKgEvent{Op: 1, Verdict: 9}), 0); err == nil {
		t.Error("unknown verdict decoded")
	}
	d, err := decode(rawEvent(t, guardKgEvent{Op: 99, Verdict: 2, Reason: 200}), 0)
	if err != nil || d.Op != "op(99)" || d.Reason != "reason(200)" {
		t.Errorf("unknown op and reason: %+v, %v", d, err)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(rawEvent(f, guardKgEvent{Op: 1, Verdict: 1, Reason: 1}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decode(b, 0)
		if err == nil && d.Verdict == "" {
			t.Fatalf("decoded without a verdict: %+v", d)
		}
	})
}

func TestEventLayoutMatchesObject(t *testing.T) {
	spec, err := loadGuard()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		m    string
		size uint32
		want int
	}{
		{"kg_scratch", spec.Maps["kg_scratch"].ValueSize, binary.Size(guardKgEvent{})},
		{"kg_cfg", spec.Maps["kg_cfg"].ValueSize, binary.Size(guardKgConfig{})},
		{"kg_protect", spec.Maps["kg_protect"].KeySize, binary.Size(guardKgProtectKey{})},
		{"kg_policy_inner key", spec.Maps["kg_policy_inner"].KeySize, binary.Size(guardKgPolicyKey{})},
		{"kg_policy_inner value", spec.Maps["kg_policy_inner"].ValueSize, binary.Size(guardKgPolicyVal{})},
	} {
		if int(tc.size) != tc.want {
			t.Errorf("%s: object says %d bytes, Go mirror %d", tc.m, tc.size, tc.want)
		}
	}
	for _, h := range hooks {
		p, ok := spec.Programs[h]
		if !ok || p.Type != ebpf.LSM {
			t.Errorf("hook %s: program missing or not LSM (%v)", h, p)
		}
	}
	if len(spec.Programs) != len(hooks) {
		t.Errorf("object has %d programs, hooks lists %d", len(spec.Programs), len(hooks))
	}
}

func TestKernelDev(t *testing.T) {
	for _, tc := range []struct {
		major, minor uint32
	}{{0, 24}, {0, 300}, {8, 1}, {259, 70000}} {
		got := kernelDev(unix.Mkdev(tc.major, tc.minor))
		if want := tc.major<<20 | tc.minor; got != want {
			t.Errorf("kernelDev(%d:%d) = %#x, want %#x", tc.major, tc.minor, got, want)
		}
	}
}

func TestLSMList(t *testing.T) {
	for _, tc := range []struct {
		list string
		has  bool
		with string
	}{
		{"lockdown,capability,landlock,yama,apparmor", false, "lockdown,capability,landlock,yama,apparmor,bpf"},
		{"capability,bpf", true, "capability,bpf,bpf"},
		{"bpfx,xbpf", false, "bpfx,xbpf,bpf"},
		{"", false, "bpf"},
	} {
		if got := hasBPF(tc.list); got != tc.has {
			t.Errorf("hasBPF(%q) = %v", tc.list, got)
		}
		if got := withBPF(tc.list); got != tc.with {
			t.Errorf("withBPF(%q) = %q", tc.list, got)
		}
	}
}

func TestSupportedSaysWhatToDo(t *testing.T) {
	err := Supported()
	if err == nil {
		t.Skip("BPF LSM is active here: nothing to explain")
	}
	if !errors.Is(err, ErrNoBPFLSM) {
		t.Fatalf("Supported() = %v, want ErrNoBPFLSM", err)
	}
	if b, rerr := os.ReadFile(lsmFile); rerr == nil && !strings.Contains(err.Error(), "lsm="+withBPF(strings.TrimSpace(string(b)))) {
		t.Fatalf("error %q does not show the lsm= to use", err)
	}
}

// TestPolicyBuild fills a policy map (maps need root and BPF, not LSM).
func TestPolicyBuild(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates BPF maps")
	}
	d1, d2 := sha256.Sum256([]byte("a")), sha256.Sum256([]byte("b"))
	p := &Policy{Mode: ModeAudit, Generation: 7,
		Digests: map[[32]byte]Entry{d1: {Name: "dummy", Index: 0}, d2: {Name: "snd-hda-intel", Index: 1}},
		Names:   map[string]Entry{"veth": {Name: "veth", Index: 2}},
	}
	m, n, err := p.build()
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			t.Skipf("needs BPF maps: %v", err)
		}
		t.Fatal(err)
	}
	defer m.Close()
	if n != 3 {
		t.Errorf("build counted %d entries, want 3", n)
	}
	var v guardKgPolicyVal
	if err := m.Lookup(&guardKgPolicyKey{Kind: keyMeta}, &v); err != nil || v.Mode != uint32(ModeAudit) || v.Generation != 7 {
		t.Errorf("meta %+v, %v", v, err)
	}
	k := guardKgPolicyKey{Kind: keyDigest}
	copy(k.Data[:], d2[:])
	if err := m.Lookup(&k, &v); err != nil || cstr(v.Name[:]) != "snd_hda_intel" || v.Index != 1 {
		t.Errorf("digest entry %q %d, %v: want the folded name", cstr(v.Name[:]), v.Index, err)
	}
	k = guardKgPolicyKey{Kind: keyName}
	copy(k.Data[:], "veth")
	if err := m.Lookup(&k, &v); err != nil || cstr(v.Name[:]) != "veth" {
		t.Errorf("name entry %q, %v", cstr(v.Name[:]), err)
	}
	if _, _, err := (&Policy{Mode: ModeEnforce, Names: map[string]Entry{"x": {Name: strings.Repeat("a", NameLen)}}}).build(); err == nil {
		t.Error("an over-long name was accepted")
	}
	if _, _, err := (&Policy{Mode: 5}).build(); err == nil {
		t.Error("an invalid mode was accepted")
	}

	// Autoload deny patterns: keys of their own, numbered from 0, not
	// counted as entries.
	p.AutoloadDeny = []string{"net_pf_*", "fs_cramfs"}
	m2, n, err := p.build()
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if n != 3 {
		t.Errorf("build counted %d entries with patterns, want 3", n)
	}
	for i, want := range p.AutoloadDeny {
		k := guardKgPolicyKey{Kind: keyAutoload}
		k.Data[0] = uint8(i)
		if err := m2.Lookup(&k, &v); err != nil || cstr(v.Name[:]) != want || v.Index != uint32(i) {
			t.Errorf("pattern %d: %q %d, %v; want %q", i, cstr(v.Name[:]), v.Index, err, want)
		}
	}
	for _, bad := range [][]string{
		{""}, {strings.Repeat("a", NameLen)}, {"a**"}, {"a\x00b"},
		make([]string, MaxAutoloadPatterns+1),
	} {
		if _, _, err := (&Policy{Mode: ModeEnforce, AutoloadDeny: bad}).build(); err == nil {
			t.Errorf("autoload deny %q accepted", bad)
		}
	}
}

func TestDecodeModuleRequest(t *testing.T) {
	in := guardKgEvent{TsBoot: 7e9, Op: 9, Verdict: 2, Reason: 16, Ret: -1, Generation: 4, Pid: 30, Tid: 31}
	setStr(in.Name[:], "net-pf-21")
	setStr(in.Entry[:], "net_pf_*")
	setStr(in.Comm[:], "python3")
	d, err := decode(rawEvent(t, in), 0)
	if err != nil {
		t.Fatal(err)
	}
	if d.Op != OpModuleRequest || d.Verdict != Blocked || d.Name != "net-pf-21" || d.Entry != "net_pf_*" ||
		!strings.Contains(d.Reason, "autoload.deny") || d.IsLoad() {
		t.Errorf("decode: %+v", d)
	}
	e := d.Event()
	if !e.IsRequest() || e.RequestName != "net-pf-21" || e.Allowed == nil || *e.Allowed || e.AllowlistEntry != "" {
		t.Errorf("event of the decision: %+v", e)
	}
}

// TestMountpointInode checks, on this host's own mounts, that the inode
// Seal records for a mount is the directory it hides, on its parent's file
// system, and not the mount's root.
func TestMountpointInode(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: open_tree(OPEN_TREE_CLONE) needs CAP_SYS_ADMIN")
	}
	ms, err := pinMounts("/proc/self")
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) < 2 || ms[0].Point != "/proc" {
		t.Skipf("needs /proc mounted on its own: mounts above /proc/self are %+v", ms)
	}
	dev, ino, ok, err := mountpointInode(ms[1].Point, ms[0].Point)
	if err != nil || !ok {
		t.Fatalf("mountpointInode(%s, /proc) = %v, %v", ms[1].Point, ok, err)
	}
	var proc, parent unix.Stat_t
	if err := unix.Stat("/proc", &proc); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(ms[1].Point, &parent); err != nil {
		t.Fatal(err)
	}
	if dev != kernelDev(parent.Dev) || dev != ms[1].Dev {
		t.Errorf("device %#x, want the parent's %#x (mountinfo %#x)", dev, kernelDev(parent.Dev), ms[1].Dev)
	}
	if dev == kernelDev(proc.Dev) && ino == proc.Ino {
		t.Errorf("inode %d on %#x is procfs's root, not the directory under it", ino, dev)
	}
	if _, _, ok, err := mountpointInode("/proc", "/proc"); ok || err != nil {
		t.Errorf("a mount stacked on its parent's root: ok %v, err %v; want no inode and no error", ok, err)
	}
	if _, _, _, err := mountpointInode("/proc", "/sys"); err == nil {
		t.Error("a mount point outside its parent: no error")
	}
}
