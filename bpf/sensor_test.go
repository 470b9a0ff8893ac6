package bpf

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/debkernel"
	"github.com/kmodguard/kmodguard/internal/elftest"
)

// collector gathers a sensor's events.
type collector struct {
	mu     sync.Mutex
	cond   *sync.Cond
	events []*event.Event
	done   bool
}

// newTestSensor starts a sensor for one test and collects its events, or
// skips with the reason the host cannot run it.
func newTestSensor(t *testing.T, cfg Config) (*Sensor, *collector) {
	t.Helper()
	s := startTestSensor(t, cfg)
	return s, collect(s)
}

// startTestSensor starts a sensor for one test, or skips with the reason
// the host cannot run it. Nothing reads its events yet.
func startTestSensor(t *testing.T, cfg Config) *Sensor {
	t.Helper()
	return startTestSensorWith(t, cfg, func(*Sensor) {})
}

// startTestSensorWith is startTestSensor with set applied to the sensor
// before it starts.
func startTestSensorWith(t *testing.T, cfg Config, set func(*Sensor)) *Sensor {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs and issues module syscalls")
	}
	if err := CheckSystem(); err != nil {
		t.Skipf("needs BPF support: %v", err)
	}
	s, err := NewSensor(cfg)
	if err != nil {
		t.Fatalf("NewSensor: %+v", err)
	}
	t.Cleanup(func() { s.Close() })
	set(s)
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return s
}

// collect gathers s's events from now on.
func collect(s *Sensor) *collector {
	c := &collector{}
	c.cond = sync.NewCond(&c.mu)
	go func() {
		for ev := range s.Events() {
			c.mu.Lock()
			c.events = append(c.events, ev)
			c.cond.Broadcast()
			c.mu.Unlock()
		}
		c.mu.Lock()
		c.done = true
		c.cond.Broadcast()
		c.mu.Unlock()
	}()
	return c
}

// wait returns the first event that match accepts, failing after 10s.
func (c *collector) wait(t *testing.T, match func(*event.Event) bool) *event.Event {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	timer := time.AfterFunc(10*time.Second, func() {
		c.mu.Lock()
		c.cond.Broadcast()
		c.mu.Unlock()
	})
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for _, ev := range c.events {
			if match(ev) {
				return ev
			}
		}
		if c.done || time.Now().After(deadline) {
			t.Fatalf("no matching event among %d", len(c.events))
		}
		c.cond.Wait()
	}
}

// waitCount waits for n events that match accepts, failing after 10s.
func (c *collector) waitCount(t *testing.T, match func(*event.Event) bool, n int) {
	t.Helper()
	c.wait(t, func(*event.Event) bool {
		got := 0
		for _, ev := range c.events { // wait holds c.mu
			if match(ev) {
				got++
			}
		}
		return got >= n
	})
}

// all waits for the sensor to close and returns every event.
func (c *collector) all() []*event.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.done {
		c.cond.Wait()
	}
	return c.events
}

// mine matches the events of this thread and syscall.
// kernelRecord reports whether ev is the kernel's own record of a module
// formed or freed (module_load, module_free), which a load or unload
// syscall brings along with its own event.
func kernelRecord(ev *event.Event) bool {
	return ev.Syscall == event.ModuleLoad || ev.Syscall == event.ModuleFree
}

func mine(tid int, sc event.Syscall) func(*event.Event) bool {
	return func(ev *event.Event) bool { return int(ev.Tid) == tid && ev.Syscall == sc }
}

// dummyModule returns the path of Debian 6.1's dummy.ko, or skips.
func dummyModule(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k, err := debkernel.Get(ctx, debkernel.Series61)
	if err != nil {
		t.Skipf("needs a Debian 6.1 kernel package: %v", err)
	}
	p, err := k.Module("dummy")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// checkProcess asserts the process context of an event from this thread.
func checkProcess(t *testing.T, ev *event.Event, tid int) {
	t.Helper()
	eq := func(what string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	eq("pid", int(ev.Pid), os.Getpid())
	eq("tid", int(ev.Tid), tid)
	eq("ppid", int(ev.Ppid), os.Getppid())
	eq("uid", int(ev.UID), os.Getuid())
	eq("gid", int(ev.GID), os.Getgid())
	comm, _ := os.ReadFile("/proc/thread-self/comm")
	eq("comm", ev.Comm, strings.TrimSpace(string(comm)))
	exe, _ := os.Readlink("/proc/self/exe")
	eq("exe", ev.Exe, exe)
	eq("cmdline", ev.Cmdline, strings.Join(os.Args, " "))
	if b, err := os.ReadFile("/proc/self/loginuid"); err == nil {
		eq("loginuid", strconv.FormatUint(uint64(ev.LoginUID), 10), strings.TrimSpace(string(b)))
	}
	eq("pidns", uint64(ev.PidNS), inode(t, "/proc/self/ns/pid"))
	eq("mntns", uint64(ev.MntNS), inode(t, "/proc/self/ns/mnt"))
	eq("userns", uint64(ev.UserNS), inode(t, "/proc/self/ns/user"))
	eq("host_ns", ev.HostNS, inode(t, "/proc/self/ns/pid") == event.InitPidNS && inode(t, "/proc/self/ns/user") == event.InitUserNS)
	eq("cap_effective", ev.CapEffective, mustCaps(t))
	// cgroup v2: "0::/path"; its id is the cgroup folder's inode.
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			eq("cgroup", ev.Cgroup, p)
			if id := inode(t, filepath.Join("/sys/fs/cgroup", p)); id != 0 {
				eq("cgroup_id", ev.CgroupID, id)
			}
		}
	}
	if ev.TS == 0 || time.Since(time.Unix(0, int64(ev.TS))).Abs() > time.Minute {
		t.Errorf("ts %d is not about now", ev.TS)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0
	}
	return st.Ino
}

// mustCaps returns the calling thread's effective capabilities, which is
// what the sensor records: /proc/self/status shows the main thread's, and
// another test may have dropped one there (dropCapSysModule locks a thread,
// and it can be the main one).
func mustCaps(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			c, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
	}
	t.Fatal("no CapEff line in /proc/thread-self/status")
	return 0
}

// expectErrno asserts the result of a module syscall on this host, where
// the kernel has no module support.
func checkRes(t *testing.T, ev *event.Event, err error) {
	t.Helper()
	var errno unix.Errno
	if !errors.As(err, &errno) {
		t.Fatalf("syscall returned %v, want an errno", err)
	}
	if ev.Res != -int64(errno) {
		t.Errorf("res = %d, want %d (%v)", ev.Res, -int64(errno), errno)
	}
}

func TestInitModule(t *testing.T) {
	path := dummyModule(t)
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, c := newTestSensor(t, Config{})
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	err = unix.InitModule(img, "numdummies=3")
	ev := c.wait(t, mine(tid, event.InitModule))

	checkRes(t, ev, err)
	checkProcess(t, ev, tid)
	if ev.Name != "dummy" || ev.ThisModuleName != "dummy" || ev.NameMismatch {
		t.Errorf("names = %q/%q (mismatch %v), want dummy/dummy", ev.Name, ev.ThisModuleName, ev.NameMismatch)
	}
	if ev.SHA256 != sha(img) || ev.ELFSHA256 != sha(img) {
		t.Errorf("sha256 = %s, elf %s, want %s", ev.SHA256, ev.ELFSHA256, sha(img))
	}
	if ev.Size != uint64(len(img)) {
		t.Errorf("size = %d, want %d", ev.Size, len(img))
	}
	if ev.Params != "numdummies=3" {
		t.Errorf("params = %q", ev.Params)
	}
	if ev.Truncated || ev.Unreadable {
		t.Errorf("truncated %v, unreadable %v", ev.Truncated, ev.Unreadable)
	}
	if !strings.HasPrefix(ev.Vermagic, "6.1.") || !ev.Signed {
		t.Errorf("vermagic %q, signed %v: want Debian's signed 6.1 module", ev.Vermagic, ev.Signed)
	}
	if ev.Allowed != nil {
		t.Errorf("allowed = %v without an allowlist", *ev.Allowed)
	}
}

func TestFinitModule(t *testing.T) {
	path := dummyModule(t)
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	list := allowlist.New("test", allowlist.ModeEnforce)
	if _, err := list.Add(allowlist.Entry{Name: "dummy", SHA256: []string{sha(img)}}); err != nil {
		t.Fatal(err)
	}
	_, c := newTestSensor(t, Config{Allowlist: func() *allowlist.Allowlist { return list }})
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		t.Fatal(err)
	}
	const flags = 1 | 2 // MODULE_INIT_IGNORE_MODVERSIONS | MODULE_INIT_IGNORE_VERMAGIC
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	err = unix.FinitModule(int(f.Fd()), "numdummies=2", flags)
	ev := c.wait(t, mine(tid, event.FinitModule))

	checkRes(t, ev, err)
	checkProcess(t, ev, tid)
	if ev.FD != int32(f.Fd()) || ev.RawFlags != flags {
		t.Errorf("fd %d flags %#x, want %d %#x", ev.FD, ev.RawFlags, f.Fd(), flags)
	}
	if strings.Join(ev.Flags, "|") != "MODULE_INIT_IGNORE_MODVERSIONS|MODULE_INIT_IGNORE_VERMAGIC" {
		t.Errorf("flags = %v", ev.Flags)
	}
	if ev.Path != real {
		t.Errorf("path = %q, want %q", ev.Path, real)
	}
	if ev.Inode != st.Ino || ev.Dev != uint64(st.Dev) || ev.Size != uint64(st.Size) || ev.Mtime != st.Mtim.Nano() || ev.Ctime != st.Ctim.Nano() {
		t.Errorf("inode/dev/size/mtime/ctime = %d/%d/%d/%d/%d, want %d/%d/%d/%d/%d",
			ev.Inode, ev.Dev, ev.Size, ev.Mtime, ev.Ctime, st.Ino, st.Dev, st.Size, st.Mtim.Nano(), st.Ctim.Nano())
	}
	if ev.FileChanged {
		t.Error("file_changed on an unchanged file")
	}
	if ev.Name != "dummy" || ev.SHA256 != sha(img) || ev.Params != "numdummies=2" {
		t.Errorf("name %q sha256 %s params %q", ev.Name, ev.SHA256, ev.Params)
	}
	if ev.Allowed == nil || !*ev.Allowed || ev.AllowlistEntry != "dummy" {
		t.Errorf("allowed %v entry %q, want allowed by dummy", ev.Allowed, ev.AllowlistEntry)
	}
}

// TestFinitModuleFileChanged replaces the file after opening it: the kernel
// reads the old inode, the path now names another.
func TestFinitModuleFileChanged(t *testing.T) {
	img, err := os.ReadFile(dummyModule(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "dummy.ko")
	if err := os.WriteFile(path, img, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.WriteFile(path+".new", append(img[:len(img):len(img)], 0), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
	_, c := newTestSensor(t, Config{})
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	unix.FinitModule(int(f.Fd()), "", 0)
	ev := c.wait(t, mine(tid, event.FinitModule))
	if !ev.FileChanged {
		t.Errorf("file_changed not set: path %q inode %d", ev.Path, ev.Inode)
	}
}

// TestFinitModuleRewrittenInPlace: the file's owner rewrites the module in
// place after finit_module and sets its mtime back, so that inode, device,
// size and mtime all match what the kernel saw. The ctime, which utimensat
// cannot set, still tells: file_changed.
func TestFinitModuleRewrittenInPlace(t *testing.T) {
	img, err := os.ReadFile(dummyModule(t))
	if err != nil {
		t.Fatal(err)
	}
	ev, _, rewritten, _ := finitRewritten(t, img, Config{})
	if sha(rewritten) == sha(img) {
		t.Fatal("the rewrite left the content as it was")
	}
	// The enricher read the new content: only file_changed says so.
	if ev.SHA256 != sha(rewritten) {
		t.Errorf("sha256 %s, want the rewritten file's %s", ev.SHA256, sha(rewritten))
	}
}

// finitRewritten calls finit_module on a copy of img and then, as the
// file's owner can, rewrites it in place (same size, the last byte
// changed) and sets its atime and mtime back with utimensat. It checks the
// event: the stat at the call (ctime included) and file_changed. It returns
// the event, the stat at the call, the rewritten content and finit_module's
// error.
//
// The rewrite is done before the enricher looks at the file, whatever the
// scheduler does: with an Events channel one deep and nobody reading yet,
// the events of two delete_module calls made just before fill the channel
// and block the sensor's reader, which reads this thread's finit_module
// record only once the rewrite is done and the test starts reading.
func finitRewritten(t *testing.T, img []byte, cfg Config) (*event.Event, unix.Stat_t, []byte, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "dummy.ko")
	if err := os.WriteFile(path, img, 0o600); err != nil {
		t.Fatal(err)
	}
	// An old mtime, as a module from a package has.
	old := time.Unix(1_700_000_000, 123_456_789)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}

	cfg.EventBuffer = 1
	s := startTestSensor(t, cfg)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	for range 2 {
		unix.DeleteModule("kmodguard_hold_reader", unix.O_NONBLOCK)
	}
	finitErr := unix.FinitModule(int(f.Fd()), "", 0)

	// A later clock tick than the last change (file times are as coarse as
	// a jiffy on 6.1 and 6.12), then the rewrite.
	time.Sleep(20 * time.Millisecond)
	rewritten := bytes.Clone(img)
	rewritten[len(rewritten)-1] ^= 0xff
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(rewritten[len(rewritten)-1:], int64(len(rewritten)-1)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := unix.UtimesNano(path, []unix.Timespec{st.Atim, st.Mtim}); err != nil {
		t.Fatal(err)
	}
	var now unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &now); err != nil {
		t.Fatal(err)
	}
	if now.Ino != st.Ino || now.Dev != st.Dev || now.Size != st.Size || now.Mtim != st.Mtim {
		t.Fatalf("the rewrite changed inode/dev/size/mtime: %d/%d/%d/%d, was %d/%d/%d/%d",
			now.Ino, now.Dev, now.Size, now.Mtim.Nano(), st.Ino, st.Dev, st.Size, st.Mtim.Nano())
	}
	if now.Ctim == st.Ctim {
		t.Fatalf("the rewrite left the ctime at %d: the clock did not move", st.Ctim.Nano())
	}

	c := collect(s)
	ev := c.wait(t, func(ev *event.Event) bool { return mine(tid, event.FinitModule)(ev) && !seen(ev) })
	if ev.Inode != st.Ino || ev.Dev != uint64(st.Dev) || ev.Size != uint64(st.Size) || ev.Mtime != st.Mtim.Nano() || ev.Ctime != st.Ctim.Nano() {
		t.Errorf("inode/dev/size/mtime/ctime = %d/%d/%d/%d/%d, want %d/%d/%d/%d/%d (as at the call)",
			ev.Inode, ev.Dev, ev.Size, ev.Mtime, ev.Ctime, st.Ino, st.Dev, st.Size, st.Mtim.Nano(), st.Ctim.Nano())
	}
	if !ev.FileChanged {
		t.Errorf("file_changed not set on a file rewritten in place (ctime %d, now %d)", ev.Ctime, now.Ctim.Nano())
	}
	return ev, st, rewritten, finitErr
}

// TestSameFile runs sameFile on real stat data: a file rewritten in place
// with its mtime set back differs only in its ctime.
func TestSameFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.ko")
	if err := os.WriteFile(path, []byte("module"), 0o600); err != nil {
		t.Fatal(err)
	}
	stat := func() *unix.Stat_t {
		t.Helper()
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return &st
	}
	st := stat()
	ev := &event.Event{Inode: st.Ino, Dev: uint64(st.Dev), Size: uint64(st.Size), Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano()}
	var n enricher
	if !n.sameFile(stat(), ev) {
		t.Fatal("an unchanged file is not the same")
	}
	time.Sleep(20 * time.Millisecond) // a later clock tick
	if err := os.WriteFile(path, []byte("MODULE"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.UtimesNano(path, []unix.Timespec{st.Atim, st.Mtim}); err != nil {
		t.Fatal(err)
	}
	now := stat()
	if now.Ino != st.Ino || now.Size != st.Size || now.Mtim != st.Mtim {
		t.Fatalf("rewrite changed inode/size/mtime")
	}
	if n.sameFile(now, ev) {
		t.Errorf("a file rewritten in place with its mtime set back is the same (ctime %d, was %d)", now.Ctim.Nano(), st.Ctim.Nano())
	}
	// An unlinked file's ctime moved with the unlink: not compared.
	unlinked := *now
	unlinked.Nlink = 0
	if !n.sameFile(&unlinked, ev) {
		t.Error("an unlinked file whose ctime moved is not the same: a loader deleting its temporary file would be flagged")
	}
	// Only the ctime differs: with the event's ctime moved on, it matches.
	ev.Ctime = now.Ctim.Nano()
	if !n.sameFile(now, ev) {
		t.Error("sameFile compares more than inode, device, size, mtime and ctime")
	}
}

func TestDeleteModule(t *testing.T) {
	_, c := newTestSensor(t, Config{Allowlist: func() *allowlist.Allowlist { return allowlist.New("x", allowlist.ModeAudit) }})
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	err := unix.DeleteModule("dummy", unix.O_NONBLOCK|unix.O_TRUNC)
	ev := c.wait(t, mine(tid, event.DeleteModule))
	checkRes(t, ev, err)
	checkProcess(t, ev, tid)
	if ev.Name != "dummy" || ev.RawFlags != unix.O_NONBLOCK|unix.O_TRUNC || strings.Join(ev.Flags, "|") != "O_NONBLOCK|O_TRUNC" {
		t.Errorf("name %q flags %#x %v", ev.Name, ev.RawFlags, ev.Flags)
	}
	if ev.Allowed != nil {
		t.Error("delete_module got an allowlist decision")
	}
}

// hostileMem maps n pages followed by an unmapped page.
func hostileMem(t *testing.T, pages int, flags int) []byte {
	t.Helper()
	ps := os.Getpagesize()
	p, err := unix.MmapPtr(-1, 0, nil, uintptr((pages+1)*ps), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|flags)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.MunmapPtr(unsafe.Add(p, pages*ps), uintptr(ps)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.MunmapPtr(p, uintptr(pages*ps)) })
	return unsafe.Slice((*byte)(p), pages*ps)
}

func ptr(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

func TestHostileArguments(t *testing.T) {
	s, c := newTestSensor(t, Config{ImageCap: 1 << 20})
	ps := os.Getpagesize()

	resident := hostileMem(t, 1, 0)
	for i := range resident {
		resident[i] = 0x7f
	}
	// An image that passes the kernel's header checks, so that the sensor
	// sends every one of these calls (it folds junk: TestJunkFlood).
	elftest.Header(resident)
	untouched := hostileMem(t, 4, unix.MAP_NORESERVE)
	noNUL := hostileMem(t, 2, 0)
	for i := range noNUL {
		noNUL[i] = 'a'
	}
	empty := []byte("\x00")
	// Unmapped last, so that no later mapping of this test takes its place.
	unmapped := hostileMem(t, 1, 0)
	if err := unix.MunmapPtr(unsafe.Pointer(&unmapped[0]), uintptr(ps)); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name                  string
		nr                    uintptr
		a0, a1, a2            uintptr
		truncated, unreadable bool
		check                 func(*testing.T, *event.Event)
	}{
		{name: "init NULL image", nr: unix.SYS_INIT_MODULE, a0: 0, a1: 4096, a2: ptr(empty), unreadable: true},
		{name: "init len 2^40", nr: unix.SYS_INIT_MODULE, a0: ptr(resident), a1: 1 << 40, a2: ptr(empty), truncated: true, unreadable: true,
			check: func(t *testing.T, ev *event.Event) {
				if ev.Size != 1<<40 {
					t.Errorf("size = %d, want 2^40", ev.Size)
				}
			}},
		{name: "init unmapped image", nr: unix.SYS_INIT_MODULE, a0: ptr(unmapped), a1: uintptr(ps), a2: ptr(empty), unreadable: true},
		{name: "init non-resident image", nr: unix.SYS_INIT_MODULE, a0: ptr(untouched), a1: uintptr(len(untouched)), a2: ptr(empty), unreadable: true},
		{name: "init params without NUL", nr: unix.SYS_INIT_MODULE, a0: ptr(resident), a1: 64, a2: ptr(noNUL), truncated: true,
			check: func(t *testing.T, ev *event.Event) {
				if len(ev.Params) != 4095 || strings.Trim(ev.Params, "a") != "" {
					t.Errorf("params: %d bytes, want 4095 'a'", len(ev.Params))
				}
				if ev.SHA256 != sha(resident[:64]) {
					t.Errorf("sha256 %s of a readable 64-byte image, want %s", ev.SHA256, sha(resident[:64]))
				}
			}},
		{name: "init NULL params", nr: unix.SYS_INIT_MODULE, a0: ptr(resident), a1: 64, a2: 0, unreadable: true},
		{name: "finit bad fd", nr: unix.SYS_FINIT_MODULE, a0: 1 << 30, a1: ptr(empty), a2: 0, unreadable: true},
		{name: "finit fd -1", nr: unix.SYS_FINIT_MODULE, a0: ^uintptr(0), a1: ptr(empty), a2: 0xffffffff, unreadable: true},
		{name: "delete NULL name", nr: unix.SYS_DELETE_MODULE, a0: 0, a1: 0, unreadable: true},
		{name: "delete name without NUL", nr: unix.SYS_DELETE_MODULE, a0: ptr(noNUL), a1: 0, truncated: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tid := unix.Gettid()
			_, _, errno := unix.Syscall(tc.nr, tc.a0, tc.a1, tc.a2)
			sc := map[uintptr]event.Syscall{unix.SYS_INIT_MODULE: event.InitModule, unix.SYS_FINIT_MODULE: event.FinitModule, unix.SYS_DELETE_MODULE: event.DeleteModule}[tc.nr]
			ev := c.wait(t, func(ev *event.Event) bool { return mine(tid, sc)(ev) && ev.TS > 0 && !seen(ev) })
			if ev.Res != -int64(errno) {
				t.Errorf("res = %d, want %d", ev.Res, -int64(errno))
			}
			if ev.Truncated != tc.truncated || ev.Unreadable != tc.unreadable {
				t.Errorf("truncated %v unreadable %v, want %v %v", ev.Truncated, ev.Unreadable, tc.truncated, tc.unreadable)
			}
			if tc.check != nil {
				tc.check(t, ev)
			}
		})
	}
	st := s.Stats()
	if st.ReadFailures == 0 || st.Truncations == 0 {
		t.Errorf("stats %+v: want read failures and truncations counted", st)
	}
}

var seenEvents sync.Map

// seen marks an event as consumed by a subtest, so that the next subtest on
// the same thread waits for its own.
func seen(ev *event.Event) bool {
	_, loaded := seenEvents.LoadOrStore(ev, true)
	return loaded
}

// TestLoad makes 4 threads issue 20,000 init_module calls each, with
// images that pass the kernel's header checks (so that none is folded as
// junk): every call is either delivered or counted as a drop.
func TestLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test: skipped with -short")
	}
	s, c := newTestSensor(t, Config{})
	const threads, calls = 4, 20000
	img := elftest.Header(make([]byte, 256))
	var wg sync.WaitGroup
	tids := make(chan int, threads)
	for range threads {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tids <- unix.Gettid()
			for range calls {
				unix.InitModule(img, "")
			}
		})
	}
	wg.Wait()
	close(tids)
	mine := map[uint32]bool{}
	for tid := range tids {
		mine[uint32(tid)] = true
	}
	s.Close() // drains the ring buffer and delivers what is pending
	st := s.Stats()
	var ours, others, unknown int
	for _, ev := range c.all() {
		switch {
		case !mine[ev.Tid] || ev.Syscall != event.InitModule:
			others++
		default:
			ours++
			if ev.Res == ResUnknown {
				unknown++
			}
		}
	}
	t.Logf("calls %d: delivered %d (+%d from other processes), drops %d, exit drops %d, chunk drops %d, results unknown %d",
		threads*calls, ours, others, st.Drops, st.ExitDrops, st.ChunkDrops, unknown)
	if got := uint64(ours+others) + st.Drops; got != st.Events+st.Drops || uint64(ours+others) != st.Delivered {
		t.Errorf("delivered %d, kernel events %d, stats delivered %d: some events vanished", ours+others, st.Events, st.Delivered)
	}
	if others == 0 && uint64(ours)+st.Drops != threads*calls {
		t.Errorf("delivered %d + dropped %d != %d calls", ours, st.Drops, threads*calls)
	}
	if uint64(unknown) > st.ExitDrops {
		t.Errorf("%d results unknown, but only %d exit records dropped", unknown, st.ExitDrops)
	}
}

// TestJunkFlood floods init_module from several threads with images that
// fail the kernel's ELF header checks (junk, which loads nothing), flat
// out, while one thread makes a call with a new image that passes them
// every 10 ms. Every one of those must arrive; the junk is folded, and
// every junk call is accounted for: delivered, folded, or dropped.
func TestJunkFlood(t *testing.T) {
	if testing.Short() {
		t.Skip("flood test: skipped with -short")
	}
	s, c := newTestSensor(t, Config{})
	flooders := max(2, runtime.GOMAXPROCS(0))
	var (
		stop      atomic.Bool
		junkCalls atomic.Uint64
		wg        sync.WaitGroup
		tidMu     sync.Mutex
		junkTids  = map[uint32]bool{}
	)
	for range flooders {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tidMu.Lock()
			junkTids[uint32(unix.Gettid())] = true
			tidMu.Unlock()
			junk := make([]byte, 4096)
			for !stop.Load() {
				unix.InitModule(junk, "")
				junkCalls.Add(1)
			}
		})
	}
	// The loader: distinct images, each with a header the kernel would
	// read on from.
	const loads = 150
	want := map[string]bool{}
	func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for i := range loads {
			img := elftest.Header(make([]byte, 8192))
			binary.LittleEndian.PutUint64(img[100:], uint64(i)+1)
			want[sha(img)] = true
			unix.InitModule(img, "")
			time.Sleep(10 * time.Millisecond)
		}
	}()
	stop.Store(true)
	wg.Wait()
	s.Close()
	st := s.Stats()
	var delivered, junkEvents int
	var folded uint64
	for _, ev := range c.all() {
		switch {
		case ev.Syscall != event.InitModule:
		case want[ev.SHA256]:
			delete(want, ev.SHA256)
			delivered++
		case junkTids[ev.Tid]:
			junkEvents++
			folded += uint64(ev.Coalesced)
		}
	}
	calls := junkCalls.Load()
	t.Logf("%d flood threads: %d junk calls (%.0f/s), %d junk events, %d folded (%d reported on events), %d dropped; loads delivered %d of %d",
		flooders, calls, float64(calls)/(loads*10*time.Millisecond).Seconds(), junkEvents, st.Coalesced, folded, st.Drops, delivered, loads)
	if len(want) > 0 {
		t.Errorf("%d of %d loads never arrived under the flood", len(want), loads)
	}
	if uint64(junkEvents)+st.Coalesced+st.Drops != calls {
		t.Errorf("junk calls: %d events + %d folded + %d dropped != %d made", junkEvents, st.Coalesced, st.Drops, calls)
	}
	if folded > st.Coalesced || st.Coalesced < calls/2 {
		t.Errorf("folded %d of %d junk calls (%d reported on events): the flood was not folded", st.Coalesced, calls, folded)
	}
}

// TestHooks runs each hook flavour: fentry falls back to the tracepoints
// where the kernel refuses it (as on hosts without module support).
func TestHooks(t *testing.T) {
	// Whether this kernel attaches fexit to the syscall functions, asked
	// through the fentry mode, decides where tp_btf's results come from.
	fexit := false
	for _, h := range []Hook{HookFentry, HookBTF, HookRaw} {
		t.Run(string(h), func(t *testing.T) {
			s, c := newTestSensor(t, Config{Hook: h})
			t.Logf("asked for %s, loaded %s, results from %s", h, s.Hook(), s.ExitSide())
			wantExit := ExitSysExit
			switch {
			case h == HookFentry:
				fexit = s.Hook() == HookFentry
				if fexit {
					wantExit = ExitFexit
				}
			case h == HookBTF && fexit:
				wantExit = ExitFexit
			}
			if s.ExitSide() != wantExit {
				t.Errorf("results from %s, want %s", s.ExitSide(), wantExit)
			}
			if h != HookFentry && s.Hook() != h {
				t.Fatalf("hook = %s, want %s", s.Hook(), h)
			}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tid := unix.Gettid()
			err := unix.DeleteModule("kmodguard_hook_test", 0)
			ev := c.wait(t, mine(tid, event.DeleteModule))
			checkRes(t, ev, err)
			if ev.Name != "kmodguard_hook_test" {
				t.Errorf("name = %q", ev.Name)
			}
		})
	}
}

// dropCapSysModule runs f on a fresh OS thread without CAP_SYS_MODULE in
// its effective set, and returns that thread's id.
func dropCapSysModule(t *testing.T, f func()) int {
	t.Helper()
	done := make(chan int)
	go func() {
		// This thread's capabilities change: never unlock it, so that the
		// runtime discards it when the goroutine ends.
		runtime.LockOSThread()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			t.Errorf("capget: %v", err)
			done <- 0
			return
		}
		data[0].Effective &^= 1 << unix.CAP_SYS_MODULE
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			t.Errorf("capset: %v", err)
			done <- 0
			return
		}
		f()
		done <- unix.Gettid()
	}()
	tid := <-done
	if tid == 0 {
		t.FailNow()
	}
	return tid
}

// TestThrottleUnprivileged floods delete_module from a thread without
// CAP_SYS_MODULE: events stop at the rate, the rest is counted, and no
// result record is left without its event.
func TestThrottleUnprivileged(t *testing.T) {
	const rate, calls = 50, 2000
	s, c := newTestSensor(t, Config{UnprivilegedRate: rate})
	start := time.Now()
	tid := dropCapSysModule(t, func() {
		for range calls {
			unix.DeleteModule("kmodguard_flood", 0)
		}
	})
	elapsed := time.Since(start)
	s.Close()
	var got int
	for _, ev := range c.all() {
		if int(ev.Tid) == tid {
			got++
		}
	}
	st := s.Stats()
	t.Logf("%d calls in %v: %d events, %d throttled, %d drops, %d orphans", calls, elapsed, got, st.Throttled, st.Drops, st.Orphans)
	// Each CPU lets rate events through per second.
	if limit := rate * runtime.NumCPU() * (int(elapsed/time.Second) + 1); got > limit {
		t.Errorf("%d events passed, more than %d", got, limit)
	}
	if uint64(got)+st.Throttled+st.Drops != calls {
		t.Errorf("events %d + throttled %d + drops %d != %d calls", got, st.Throttled, st.Drops, calls)
	}
	if st.Orphans != 0 {
		t.Errorf("%d orphan records: throttled calls left their exits", st.Orphans)
	}
}

// TestInitModuleWithoutCapSysModule drops CAP_SYS_MODULE from one thread:
// the kernel refuses such a caller before reading the image, so the sensor
// reports the call without copying the image.
func TestInitModuleWithoutCapSysModule(t *testing.T) {
	_, c := newTestSensor(t, Config{})
	img := make([]byte, 1<<20)
	img[0] = 1
	var err error
	tid := dropCapSysModule(t, func() { err = unix.InitModule(img, "") })
	ev := c.wait(t, mine(tid, event.InitModule))
	checkRes(t, ev, err)
	if !ev.Truncated || ev.Unreadable || ev.SHA256 != "" || ev.Size != uint64(len(img)) {
		t.Errorf("truncated %v unreadable %v sha256 %q size %d: want the image skipped", ev.Truncated, ev.Unreadable, ev.SHA256, ev.Size)
	}
	if ev.CapEffective&(1<<unix.CAP_SYS_MODULE) != 0 {
		t.Errorf("cap_effective %#x still has CAP_SYS_MODULE", ev.CapEffective)
	}
}

// TestCloseWithoutReader closes a sensor whose events nobody reads: Close
// returns promptly and counts what it discarded.
func TestCloseWithoutReader(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads BPF programs and issues module syscalls")
	}
	if err := CheckSystem(); err != nil {
		t.Skipf("needs BPF support: %v", err)
	}
	s, err := NewSensor(Config{EventBuffer: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	runtime.LockOSThread()
	tid := uint32(unix.Gettid())
	for range 100 {
		unix.DeleteModule("kmodguard_unread", 0)
	}
	runtime.UnlockOSThread()
	// Let the reader fill the channel and block on it.
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Events < 100 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	s.Close()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v with nobody reading", d)
	}
	st := s.Stats()
	var queued uint64
	for ev := range s.Events() {
		if ev.Tid == tid {
			queued++
		}
	}
	if st.Discarded == 0 || st.Delivered+st.Discarded < 100 {
		t.Errorf("stats %+v: want the unread events discarded and counted", st)
	}
	t.Logf("closed in %v: %d delivered (%d of ours still queued), %d discarded", time.Since(start), st.Delivered, queued, st.Discarded)
}

// TestFinitModuleUnlinked loads from an unlinked file and from a memfd: the
// enricher reads them through the caller's descriptor, and the path says
// "(deleted)" as /proc does.
func TestFinitModuleUnlinked(t *testing.T) {
	img, err := os.ReadFile(dummyModule(t))
	if err != nil {
		t.Fatal(err)
	}
	_, c := newTestSensor(t, Config{})

	tmp := filepath.Join(t.TempDir(), "dummy.ko")
	if err := os.WriteFile(tmp, img, 0o600); err != nil {
		t.Fatal(err)
	}
	unlinked, err := os.Open(tmp)
	if err != nil {
		t.Fatal(err)
	}
	defer unlinked.Close()
	if err := os.Remove(tmp); err != nil {
		t.Fatal(err)
	}
	mfd, err := unix.MemfdCreate("kmodguard-test", 0)
	if err != nil {
		t.Skipf("needs memfd_create: %v", err)
	}
	memfd := os.NewFile(uintptr(mfd), "memfd")
	defer memfd.Close()
	if _, err := memfd.Write(img); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		f    *os.File
		path string
	}{
		{"unlinked", unlinked, tmp + " (deleted)"},
		{"memfd", memfd, "/memfd:kmodguard-test (deleted)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tid := unix.Gettid()
			unix.FinitModule(int(tc.f.Fd()), "", 0)
			ev := c.wait(t, func(ev *event.Event) bool { return mine(tid, event.FinitModule)(ev) && !seen(ev) })
			if ev.Path != tc.path || ev.Name != "dummy" || ev.SHA256 != sha(img) || ev.FileChanged {
				t.Errorf("path %q (want %q) name %q sha256 %s file_changed %v", ev.Path, tc.path, ev.Name, ev.SHA256, ev.FileChanged)
			}
		})
	}
}

// TestInitModuleEmptyParams: an empty parameter string is a readable empty
// string. (Some kernels, Debian's 6.1 and 6.12 among them, return 0 from
// bpf_probe_read_user_str for it rather than 1; TestVM covers those.)
func TestInitModuleEmptyParams(t *testing.T) {
	path := dummyModule(t)
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, c := newTestSensor(t, Config{})
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	err = unix.InitModule(img, "")
	ev := c.wait(t, mine(tid, event.InitModule))
	checkRes(t, ev, err)
	if ev.Unreadable || ev.Truncated || ev.Params != "" || ev.SHA256 != sha(img) || ev.Name != "dummy" || ev.ImageAtExit {
		t.Errorf("unreadable %v truncated %v params %q sha256 %s name %q at exit %v: want a readable image and empty params",
			ev.Unreadable, ev.Truncated, ev.Params, ev.SHA256, ev.Name, ev.ImageAtExit)
	}
}

// untouchedMapping maps path MAP_PRIVATE and read-only, and never touches
// it: none of its pages is in the page tables when the syscall begins, as
// with a loader that maps the module file and passes the mapping.
func untouchedMapping(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(m) })
	return m
}

// TestInitModuleUntouchedMapping: an image in a never-touched file mapping
// cannot be read at sys_enter (a tracepoint cannot fault pages in). Here
// the kernel returns ENOSYS without copying it, so the read at sys_exit
// fails too: the event arrives, marked unreadable, with its size and params.
func TestInitModuleUntouchedMapping(t *testing.T) {
	path := dummyModule(t)
	_, c := newTestSensor(t, Config{})
	m := untouchedMapping(t, path)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	params := []byte("numdummies=1\x00")
	_, _, errno := unix.Syscall(unix.SYS_INIT_MODULE, ptr(m), uintptr(len(m)), ptr(params))
	if errno != unix.ENOSYS {
		t.Skipf("needs a kernel without module support, which leaves the mapping untouched: init_module returned %v", errno)
	}
	ev := c.wait(t, mine(tid, event.InitModule))
	if ev.Res != -int64(unix.ENOSYS) || !ev.Unreadable || ev.ImageAtExit || ev.SHA256 != "" ||
		ev.Size != uint64(len(m)) || ev.Params != "numdummies=1" {
		t.Errorf("res %d unreadable %v at exit %v sha256 %q size %d params %q: want an unreadable image of %d bytes",
			ev.Res, ev.Unreadable, ev.ImageAtExit, ev.SHA256, ev.Size, ev.Params, len(m))
	}
}

// untouchedParams returns a params string on a page that is not resident:
// with content "", a fresh anonymous page never touched (all zeros, so the
// empty string); else a never-touched MAP_PRIVATE mapping of a file that
// holds content and a NUL. Touching the slice makes the page resident.
func untouchedParams(t *testing.T, content string) []byte {
	t.Helper()
	if content == "" {
		return hostileMem(t, 1, 0)
	}
	path := filepath.Join(t.TempDir(), "params")
	if err := os.WriteFile(path, []byte(content+"\x00"), 0o600); err != nil {
		t.Fatal(err)
	}
	return untouchedMapping(t, path)
}

// touched takes a byte read to make a page resident, so that the compiler
// keeps the read.
var touched byte

// retryPending reports whether the sensor still holds a retry for tid: a
// call whose exit it has seen must leave none behind.
func retryPending(t *testing.T, s *Sensor, tid int) bool {
	t.Helper()
	var r sensorKgRetry
	err := s.coll.Maps["kg_retries"].Lookup(uint32(tid), &r)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		t.Fatalf("kg_retries: %v", err)
	}
	return err == nil
}

// TestParamsUntouchedPage passes init_module and finit_module params on a
// page that is not resident at sys_enter, where a tracepoint cannot fault
// it in. This host's kernel has no module support: it returns ENOSYS
// without copying the params, so the page is still not resident at
// sys_exit and the read there fails too: the event says unreadable, with
// no params and no params_at_exit, and the retry is gone. The same page
// touched first is read at sys_enter. (TestVM's guests, where the kernel
// copies the params, show the read at sys_exit.)
func TestParamsUntouchedPage(t *testing.T) {
	path := dummyModule(t)
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, h := range []Hook{HookBTF, HookRaw} {
		t.Run(string(h), func(t *testing.T) {
			s, c := newTestSensor(t, Config{Hook: h})
			if s.Hook() != h {
				t.Fatalf("hook %s loaded instead of %s", s.Hook(), h)
			}
			for _, tc := range []struct {
				name    string
				sc      event.Syscall
				content string
			}{
				{"init anonymous", event.InitModule, ""},
				{"init file", event.InitModule, "numdummies=3"},
				{"finit anonymous", event.FinitModule, ""},
				{"finit file", event.FinitModule, "numdummies=3"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					runtime.LockOSThread()
					defer runtime.UnlockOSThread()
					tid := unix.Gettid()
					call := func(params []byte) (unix.Errno, *event.Event) {
						t.Helper()
						var errno unix.Errno
						if tc.sc == event.InitModule {
							_, _, errno = unix.Syscall(unix.SYS_INIT_MODULE, ptr(img), uintptr(len(img)), ptr(params))
						} else {
							_, _, errno = unix.Syscall(unix.SYS_FINIT_MODULE, f.Fd(), ptr(params), 0)
						}
						ev := c.wait(t, func(ev *event.Event) bool { return mine(tid, tc.sc)(ev) && !seen(ev) })
						if ev.Res != -int64(errno) {
							t.Errorf("res %d, want %d", ev.Res, -int64(errno))
						}
						if ev.SHA256 != sha(img) {
							t.Errorf("sha256 %s, want %s: only the params are out of reach", ev.SHA256, sha(img))
						}
						return errno, ev
					}

					params := untouchedParams(t, tc.content)
					errno, ev := call(params)
					if errno != unix.ENOSYS {
						t.Skipf("needs a kernel without module support, which leaves the params page untouched: %v returned %v", tc.sc, errno)
					}
					t.Logf("untouched: unreadable %v params %q params_at_exit %v", ev.Unreadable, ev.Params, ev.ParamsAtExit)
					if !ev.Unreadable || ev.Params != "" || ev.ParamsAtExit || ev.Truncated {
						t.Errorf("untouched: unreadable %v params %q at exit %v truncated %v: want unreadable params, not read at exit either",
							ev.Unreadable, ev.Params, ev.ParamsAtExit, ev.Truncated)
					}
					if retryPending(t, s, tid) {
						t.Error("the retry outlived the call's sys_exit")
					}

					touched = params[0] // now resident
					_, ev = call(params)
					if ev.Unreadable || ev.Params != tc.content || ev.ParamsAtExit {
						t.Errorf("touched: unreadable %v params %q (want %q) at exit %v: want them read at sys_enter",
							ev.Unreadable, ev.Params, tc.content, ev.ParamsAtExit)
					}
				})
			}
			if st := s.Stats(); st.Drops+st.ExitDrops != 0 {
				t.Errorf("drops: %+v", st)
			}
		})
	}
}

// TestFinitModuleLongPath opens a file whose path is longer than the
// sensor's path segment (KG_PATH_MAX, 1024 bytes): the event says the path
// is truncated, keeps its leaf end within the segment, and the fields after
// it (exe, cmdline) are whole. TestGuestSensorLongPath runs it on Debian's
// kernels, whose verifiers (before 6.7) check a bpf_loop callback with its
// first call's state only.
func TestFinitModuleLongPath(t *testing.T) { finitLongPath(t) }

func finitLongPath(t *testing.T) {
	_, c := newTestSensor(t, Config{})
	dir := t.TempDir()
	for i := range 7 {
		dir = filepath.Join(dir, strings.Repeat(string(rune('a'+i)), 200))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "x.ko")
	if err := os.WriteFile(path, []byte("not a module"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	unix.FinitModule(int(f.Fd()), "", 0)
	ev := c.wait(t, mine(tid, event.FinitModule))
	checkProcess(t, ev, tid)
	tail, ok := strings.CutPrefix(ev.Path, "…")
	if !ok || !ev.Truncated {
		t.Fatalf("path %q (%d bytes) truncated %v: want a truncated path for %d bytes", ev.Path, len(ev.Path), ev.Truncated, len(path))
	}
	if !strings.HasSuffix(path, tail) || len(tail) > 1024 {
		t.Errorf("path kept %d bytes %q: want at most 1024 bytes of the leaf end of %q", len(tail), tail, path)
	}
}

// TestRecordsWithoutWakeupArrive: the BPF programs wake the reader at most
// once per wakeInterval and commit the records in between without a
// wakeup; the reader, once woken, polls for them. With the reader's idle
// poll out of the way, every event still arrives with its result: the
// first of a quiet spell by its wakeup, the rest by the poll that follows
// it. A call a fraction of wakeInterval after another, once the reader has
// read the first and gone back to sleep, is such a rest; so are the calls
// of a burst.
func TestRecordsWithoutWakeupArrive(t *testing.T) {
	s := startTestSensorWith(t, Config{}, func(s *Sensor) { s.idlePoll = time.Hour })
	c := collect(s)
	img := elftest.Header(make([]byte, 4096)) // not junk: each call is an event
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	want := 0
	call := func(n int) {
		for range n {
			unix.InitModule(img, "")
		}
		want += n
	}
	for range 20 {
		call(1)
		// Not time.Sleep, which takes over a millisecond on some VMs.
		for start := time.Now(); time.Since(start) < wakeInterval/3; {
		}
		call(1)
		c.waitCount(t, mine(tid, event.InitModule), want)
		time.Sleep(5 * wakeInterval) // a quiet spell: the next call wakes the reader
	}
	call(200)
	c.waitCount(t, mine(tid, event.InitModule), want)
	if st := s.Stats(); st.Drops != 0 {
		t.Errorf("%d drops", st.Drops)
	}
}
