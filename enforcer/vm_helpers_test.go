//go:build linux

package enforcer_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/enforcer"
	"github.com/kmodguard/kmodguard/internal/vmtest"
	"github.com/kmodguard/kmodguard/lsm"
)

func runCmd(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

type daemon struct {
	cmd *exec.Cmd
	log string
}

// daemonSetup is what a test of the real daemon starts from: the
// kmodguard binary, a pin directory of the test's own (the guard in it
// stopped at the end), a directory for files, and an allowlist file there
// that lists dummy.
func daemonSetup(t *testing.T) (kg, pins, dir, file string) {
	t.Helper()
	kg = vmtest.Binary(t, "kmodguard")
	pins, dir = pinDir(t), t.TempDir()
	file = filepath.Join(dir, "allow.yaml")
	if err := allowlist.Save(file, list(t, allowlist.ModeEnforce, entry{"dummy", []string{sum(readFixture(t, "dummy"))}})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { runCmd(kg, "enforcer", "stop", "--pin-dir", pins) })
	return kg, pins, dir, file
}

// startDaemon runs `kmodguard enforcer run` in the background, logging to
// logPath, with env added to its environment, and kills it at the end of
// the test if it still runs.
func startDaemon(t *testing.T, kg, file, pins, logPath string, env ...string) *daemon {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(kg, "enforcer", "run", "--allowlist", file, "--pin-dir", pins, "--poll", "200ms")
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		f.Close()
		b, _ := os.ReadFile(logPath)
		t.Logf("daemon log %s:\n%s", logPath, b)
	})
	return &daemon{cmd: cmd, log: logPath}
}

// waitStatus polls `kmodguard enforcer status -o json` until the guard is
// pinned at generation minGen or later.
func waitStatus(t *testing.T, kg, pins string, minGen uint64) lsm.Status {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out, err := exec.Command(kg, "enforcer", "status", "-o", "json", "--pin-dir", pins).Output()
		var st lsm.Status
		if err == nil {
			if err := json.Unmarshal(out, &st); err != nil {
				t.Fatalf("status -o json: %v\n%s", err, out)
			}
			if st.Generation >= minGen && len(st.Links) == len(lsm.Hooks()) {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("guard in %s not at generation %d within 60s (last: %v %s)", pins, minGen, err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitLog waits until the log file contains s.
func waitLog(t *testing.T, path, s string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), s) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q not logged in %s within 30s:\n%s", s, path, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func openPinnedMap(path string, readOnly bool) (*ebpf.Map, error) {
	return ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: readOnly})
}

// detachPinned opens a pinned link and asks the kernel to detach it
// (BPF_LINK_DETACH).
func detachPinned(path string) error {
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return err
	}
	defer l.Close()
	return l.Detach()
}

// What a program from loadOverride returns.
type overrideRet int

const (
	// retSize is its third argument: for kernel_post_read_file the file's
	// size, which the kernel takes for the length read, so the load goes
	// on without any other LSM asked.
	retSize overrideRet = iota
	// retZero lets the hook go on (kernels from 6.12 refuse an LSM program
	// that can return a positive value: this one loads there).
	retZero
	// retOne is a positive value, which kernels from 6.12 refuse.
	retOne
)

// loadOverride loads a program on fn that returns ret. kind is
// "fmod_ret" (fn is a security_ function) or "lsm" (fn is an LSM hook).
func loadOverride(kind, fn string, ret overrideRet) (*ebpf.Program, error) {
	insns := map[overrideRet]asm.Instructions{
		retSize: {asm.LoadMem(asm.R0, asm.R1, 16, asm.DWord), asm.Return()},
		retZero: {asm.Mov.Imm(asm.R0, 0), asm.Return()},
		retOne:  {asm.Mov.Imm(asm.R0, 1), asm.Return()},
	}[ret]
	spec := &ebpf.ProgramSpec{Name: "kgtest_override", License: "GPL", Instructions: insns, AttachTo: fn}
	switch kind {
	case "fmod_ret":
		spec.Type, spec.AttachType = ebpf.Tracing, ebpf.AttachModifyReturn
	case "lsm":
		spec.Type, spec.AttachType = ebpf.LSM, ebpf.AttachLSMMac
	default:
		return nil, fmt.Errorf("kind %q", kind)
	}
	p, err := ebpf.NewProgram(spec)
	if err != nil {
		return nil, fmt.Errorf("load %s on %s: %w", kind, fn, err)
	}
	return p, nil
}

// attachOverride attaches a program from loadOverride.
func attachOverride(p *ebpf.Program) (link.Link, error) {
	if p.Type() == ebpf.LSM {
		return link.AttachLSM(link.LSMOptions{Program: p})
	}
	return link.AttachTracing(link.TracingOptions{Program: p, AttachType: ebpf.AttachModifyReturn})
}

// loadFmodRet loads an fmod_ret program that would make
// security_kernel_post_read_file return 0, and closes it.
func loadFmodRet() error {
	p, err := loadOverride("fmod_ret", "security_kernel_post_read_file", retZero)
	if err == nil {
		p.Close()
	}
	return err
}

// kexecFileLoad asks to stage path as the next kernel.
func kexecFileLoad(t *testing.T, path string) error {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const kexecFileNoInitramfs = 0x4
	cmdline := []byte{0}
	_, _, errno := unix.Syscall6(unix.SYS_KEXEC_FILE_LOAD, f.Fd(), ^uintptr(0), 1,
		uintptr(unsafe.Pointer(&cmdline[0])), kexecFileNoInitramfs, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// kexecLoad calls kexec_load with no segments (which unloads a staged
// kernel when allowed).
func kexecLoad() error {
	_, _, errno := unix.Syscall6(unix.SYS_KEXEC_LOAD, 0, 0, 0, 0, 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// bpffsRenames reports whether this kernel's bpffs renames pins at all, by
// trying on a pin of its own.
func bpffsRenames(t *testing.T) bool {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p := "/sys/fs/bpf/kg-rename-probe"
	if err := m.Pin(p); err != nil {
		t.Fatal(err)
	}
	err = os.Rename(p, p+".moved")
	os.Remove(p)
	os.Remove(p + ".moved")
	if err != nil {
		t.Logf("bpffs rename probe: %v", err)
	}
	return err == nil
}

type mapRef struct {
	id   ebpf.MapID
	name string
}

// guardMaps lists the maps of the guard's init_module program (read-only
// opens, which the seal allows), scratch maps included.
func guardMaps(t *testing.T, pins string) []mapRef {
	t.Helper()
	p := guardProgram(t, pins, "kg_post_load_data")
	defer p.Close()
	pi, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	ids, _ := pi.MapIDs()
	var out []mapRef
	for _, id := range ids {
		m, err := mapFromIDReadOnly(id)
		if err != nil {
			t.Fatalf("read-only open of map %d under seal: %v", id, err)
		}
		info, err := m.Info()
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, mapRef{id: id, name: info.Name})
	}
	if len(out) < 5 {
		t.Fatalf("the init_module program uses %d maps, want the policy, config, events, counters and scratch maps", len(out))
	}
	return out
}

// mapFromIDReadOnly is BPF_MAP_GET_FD_BY_ID with BPF_F_RDONLY.
func mapFromIDReadOnly(id ebpf.MapID) (*ebpf.Map, error) {
	const bpfMapGetFDByID, bpfFRdonly = 14, 1 << 3
	attr := struct{ id, nextID, openFlags uint32 }{uint32(id), 0, bpfFRdonly}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, bpfMapGetFDByID, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		return nil, errno
	}
	return ebpf.NewMapFromFD(int(fd))
}

// loadProgUsing loads a socket filter that references m: a program can
// write any map it references, whatever the mode of the fd it came from.
func loadProgUsing(m *ebpf.Map) error {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SocketFilter,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
	})
	if err == nil {
		p.Close()
	}
	return err
}

// iterOver attaches a bpf_map_elem iterator to m (which may write its
// elements).
func iterOver(m *ebpf.Map) error {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.Tracing,
		AttachType:   ebpf.AttachTraceIter,
		AttachTo:     "bpf_map_elem",
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return fmt.Errorf("load iterator program: %w", err)
	}
	defer p.Close()
	l, err := link.AttachIter(link.IterOptions{Program: p, Map: m})
	if err == nil {
		l.Close()
	}
	return err
}

// iterTask attaches a task iterator (which has no map to write), the way
// libbpf does with no options (no iter_info) when withInfo is false, and
// the way cilium/ebpf and Falco's libpman do (an all-zero
// bpf_iter_link_info, iter_info_len non-zero) when it is true.
func iterTask(withInfo bool) error {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.Tracing,
		AttachType:   ebpf.AttachTraceIter,
		AttachTo:     "task",
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return fmt.Errorf("load iterator program: %w", err)
	}
	defer p.Close()
	if withInfo {
		l, err := link.AttachIter(link.IterOptions{Program: p})
		if err == nil {
			l.Close()
		}
		return err
	}
	// BPF_LINK_CREATE: prog_fd, target_fd, attach_type, flags, then
	// iter_info and iter_info_len, here zero.
	var attr [32]byte
	*(*uint32)(unsafe.Pointer(&attr[0])) = uint32(p.FD())
	*(*uint32)(unsafe.Pointer(&attr[8])) = uint32(ebpf.AttachTraceIter)
	fd, _, errno := unix.Syscall(unix.SYS_BPF, 28, uintptr(unsafe.Pointer(&attr[0])), unsafe.Sizeof(attr))
	if errno != 0 {
		return fmt.Errorf("BPF_LINK_CREATE: %w", errno)
	}
	return unix.Close(int(fd))
}

// writeThroughOuter is the map-of-maps attack on a sealed guard map: with
// only a read-only fd to inner, it creates its own ARRAY_OF_MAPS whose inner
// template is inner itself (BPF_MAP_CREATE with inner_map_fd), puts inner in
// slot 0, and loads and test-runs a socket filter that looks up slot 0, then
// the all-zero key of inner, and stores zero into the first 4 bytes of the
// value. The
// program names only the attacker's outer map. It returns the first error.
func writeThroughOuter(inner *ebpf.Map) error {
	const bpfMapCreate, bpfMapTypeArrayOfMaps = 0, 12
	var attr [20]uint32 // map_type, key_size, value_size, max_entries, map_flags, inner_map_fd, ...
	attr[0], attr[1], attr[2], attr[3], attr[5] = bpfMapTypeArrayOfMaps, 4, 4, 1, uint32(inner.FD())
	fd, _, errno := unix.Syscall(unix.SYS_BPF, bpfMapCreate, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		return fmt.Errorf("create the outer map: %w", errno)
	}
	outer, err := ebpf.NewMapFromFD(int(fd))
	if err != nil {
		unix.Close(int(fd))
		return fmt.Errorf("outer map: %w", err)
	}
	defer outer.Close()
	if err := outer.Put(uint32(0), uint32(inner.FD())); err != nil {
		return fmt.Errorf("put the inner map in slot 0: %w", err)
	}
	// An all-zero key of inner's size, 8-byte aligned, at the bottom of
	// the stack; its first 4 bytes are the outer map's key 0 too.
	keyOff := -int16((inner.KeySize() + 7) &^ 7)
	var insns asm.Instructions
	for off := keyOff; off < 0; off += 4 {
		insns = append(insns, asm.StoreImm(asm.RFP, off, 0, asm.Word))
	}
	insns = append(insns,
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(keyOff)),
		asm.LoadMapPtr(asm.R1, outer.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.Mov.Reg(asm.R1, asm.R0),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(keyOff)),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "out"),
		asm.StoreImm(asm.R0, 0, 0, asm.Word),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("out"),
		asm.Return(),
	)
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SocketFilter,
		License:      "GPL",
		Instructions: insns,
	})
	if err != nil {
		return fmt.Errorf("load the writing program: %w", err)
	}
	defer p.Close()
	if _, err := p.Run(&ebpf.RunOptions{Data: make([]byte, 64)}); err != nil {
		return fmt.Errorf("test-run the writing program: %w", err)
	}
	return nil
}

// outerMapOf creates an ARRAY_OF_MAPS whose inner template and slot 0 are
// inner (any fd to it, read-only included).
func outerMapOf(inner *ebpf.Map) (*ebpf.Map, error) {
	const bpfMapCreate, bpfMapTypeArrayOfMaps = 0, 12
	var attr [20]uint32 // map_type, key_size, value_size, max_entries, map_flags, inner_map_fd, ...
	attr[0], attr[1], attr[2], attr[3], attr[5] = bpfMapTypeArrayOfMaps, 4, 4, 1, uint32(inner.FD())
	fd, _, errno := unix.Syscall(unix.SYS_BPF, bpfMapCreate, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		return nil, fmt.Errorf("create the outer map: %w", errno)
	}
	outer, err := ebpf.NewMapFromFD(int(fd))
	if err != nil {
		unix.Close(int(fd))
		return nil, fmt.Errorf("outer map: %w", err)
	}
	if err := outer.Put(uint32(0), uint32(inner.FD())); err != nil {
		outer.Close()
		return nil, fmt.Errorf("put the inner map in slot 0: %w", err)
	}
	return outer, nil
}

// statusOf runs `kmodguard enforcer status -o json`.
func statusOf(t *testing.T, kg, pins string) lsm.Status {
	t.Helper()
	out, err := exec.Command(kg, "enforcer", "status", "-o", "json", "--pin-dir", pins).Output()
	if err != nil {
		t.Fatalf("enforcer status: %v\n%s", err, out)
	}
	var st lsm.Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
	return st
}

// countLog counts the lines of the log file that contain s.
func countLog(path, s string) int {
	b, _ := os.ReadFile(path)
	return strings.Count(string(b), s)
}

// waitLogCount waits until n lines of the log file contain s.
func waitLogCount(t *testing.T, path, s string, n int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for countLog(path, s) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%q logged %d times in %s within 60s, want %d", s, countLog(path, s), path, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// refusedVeth loads the unlisted veth n times, each refused, and waits
// until the daemon logged them (so that the daemon has read up to there).
func refusedVeth(t *testing.T, d *daemon, veth []byte, n int) {
	t.Helper()
	const line = " module=veth " // not this_module=veth
	seen := countLog(d.log, line)
	for range n {
		if err := unix.InitModule(veth, ""); !errors.Is(err, unix.EPERM) {
			t.Fatalf("init_module(veth) under seal = %v, want EPERM", err)
		}
	}
	waitLogCount(t, d.log, line, seen+n)
}

// readAwayDecisions is the attack on the decision stream of a sealed
// guard: the ring buffer still opens writable (a daemon restarted under
// the seal must consume it), so another root process can consume the
// decisions before the daemon does. The daemon must find them missing and
// say so, and must not mistake its own drops (ring buffer full) for that.
func readAwayDecisions(t *testing.T, kg string, d *daemon, pins string, veth []byte) {
	t.Helper()
	const missingLog = "guard decisions are missing"
	// settle is more than the reader's settle delay plus one check.
	const settle = 5 * time.Second

	// No thief: nothing goes missing over loads.
	refusedVeth(t, d, veth, 3)
	time.Sleep(settle)
	st := statusOf(t, kg, pins)
	if st.ReaderPid != uint32(d.cmd.Process.Pid) {
		t.Fatalf("status reader pid %d, want the daemon's %d", st.ReaderPid, d.cmd.Process.Pid)
	}
	if st.MissingDecisions != 0 || countLog(d.log, missingLog) != 0 {
		t.Fatalf("decisions reported missing with no other reader: status %d", st.MissingDecisions)
	}

	// The daemon's own drops: stopped, it reads nothing, and a flood of
	// refused unlinks fills the ring buffer. Those are lost, not missing.
	linkPin := filepath.Join(pins, "link_kg_post_load_data")
	stopProcess(t, d.cmd.Process.Pid)
	lostBefore := st.LostEvents
	flood := 0
	for ; flood < 5000; flood++ {
		if err := unix.Unlink(linkPin); !errors.Is(err, unix.EPERM) {
			d.cmd.Process.Signal(unix.SIGCONT)
			t.Fatalf("unlink of a link pin under seal = %v, want EPERM", err)
		}
		if flood%500 == 499 && statusOf(t, kg, pins).LostEvents > lostBefore {
			break
		}
	}
	if err := d.cmd.Process.Signal(unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// Until the daemon has read the flood, the ring buffer is full and the
	// next decision would be dropped too.
	for n, stable := -1, 0; stable < 10; time.Sleep(200 * time.Millisecond) {
		if c := countLog(d.log, "op=unlink"); c != n {
			n, stable = c, 0
		} else {
			stable++
		}
	}
	refusedVeth(t, d, veth, 1) // the daemon has read past the flood
	time.Sleep(settle)
	st = statusOf(t, kg, pins)
	if st.LostEvents <= lostBefore {
		t.Fatalf("%d refusals with the daemon stopped: lost %d, want more than %d (the flood did not fill the ring buffer)", flood+1, st.LostEvents, lostBefore)
	}
	if st.MissingDecisions != 0 || countLog(d.log, missingLog) != 0 {
		t.Fatalf("the daemon's own drops (%d lost) reported as missing decisions: %d", st.LostEvents-lostBefore, st.MissingDecisions)
	}
	t.Logf("flood of %d refusals with the daemon stopped: %d lost, 0 missing", flood+1, st.LostEvents-lostBefore)

	// The thief: with the daemon stopped, another process consumes the
	// decisions of refused loads; the daemon resumes and must report them.
	stopProcess(t, d.cmd.Process.Pid)
	stolen := stealDecisions(t, pins, veth, 3)
	if err := d.cmd.Process.Signal(unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitLog(t, d.log, missingLog)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st = statusOf(t, kg, pins)
		if st.MissingDecisions == uint64(stolen) {
			break
		}
		if st.MissingDecisions > uint64(stolen) || time.Now().After(deadline) {
			t.Fatalf("status missing_decisions %d, want the %d consumed by the other reader", st.MissingDecisions, stolen)
		}
		time.Sleep(500 * time.Millisecond)
	}
	out, err := exec.Command(kg, "enforcer", "status", "--pin-dir", pins).CombinedOutput()
	if err != nil || !regexp.MustCompile(fmt.Sprintf(`missing decisions:\s+%d \(`, stolen)).Match(out) {
		t.Fatalf("enforcer status (text) does not show the %d missing decisions: %v\n%s", stolen, err, out)
	}
	t.Logf("another reader consumed %d decisions: the daemon reports %d missing", stolen, st.MissingDecisions)
}

// stopProcess sends SIGSTOP to pid and waits until every one of its
// threads is stopped: the signal is only queued when kill returns, and a
// thread still running (slow under TCG) could read one more record.
func stopProcess(t *testing.T, pid int) {
	t.Helper()
	if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
		if err != nil || len(tasks) == 0 {
			t.Fatalf("threads of %d: %v", pid, err)
		}
		running := 0
		for _, f := range tasks {
			b, err := os.ReadFile(f)
			// pid (comm) state ...: comm may hold spaces and parentheses.
			if i := strings.LastIndexByte(string(b), ')'); err == nil && i >= 0 && i+2 < len(b) && b[i+2] != 'T' && b[i+2] != 't' {
				running++
			}
		}
		if running == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d threads of pid %d still not stopped 10 s after SIGSTOP", running, len(tasks), pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stealDecisions consumes the guard's ring buffer through a writable fd to
// its pin while n unlisted loads are refused, and returns how many records
// it took (all of them: it reads until the ring buffer stays empty).
func stealDecisions(t *testing.T, pins string, veth []byte, n int) int {
	t.Helper()
	ev, err := openPinnedMap(filepath.Join(pins, "events"), false)
	if err != nil {
		t.Fatalf("writable open of the events pin: %v", err)
	}
	defer ev.Close()
	rd, err := ringbuf.NewReader(ev)
	if err != nil {
		t.Fatalf("consume the decision ring buffer: %v", err)
	}
	defer rd.Close()
	for range n {
		if err := unix.InitModule(veth, ""); !errors.Is(err, unix.EPERM) {
			t.Fatalf("init_module(veth) under seal = %v, want EPERM", err)
		}
	}
	stolen := 0
	for {
		rd.SetDeadline(time.Now().Add(time.Second))
		if _, err := rd.Read(); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			t.Fatalf("read the stolen decisions: %v", err)
		}
		stolen++
	}
	if stolen < n {
		t.Fatalf("the other reader took %d decisions, want at least the %d refused loads", stolen, n)
	}
	return stolen
}

// mountID returns the id of the mount on top at point, from
// /proc/self/mountinfo.
func mountID(t *testing.T, point string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	id := -1
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == point {
			fmt.Sscan(f[0], &id) // the last line on point is the top
		}
	}
	if id < 0 {
		t.Fatalf("no mount on %s in mountinfo:\n%s", point, b)
	}
	return id
}

// otherMounts checks, under the seal, that the guard holds the mounts
// that hold its pins and no others: bind mounts of the root file system, a
// second sysfs and a bpffs in another mount namespace unmount as usual,
// while the copies of the pins' mounts whose unmount would propagate to
// them (shared propagation: systemd makes every mount shared) are refused.
// refusedCmd runs busybox and expects a sealed umount refusal.
func otherMounts(t *testing.T, refusedCmd func(what string, args ...string) enforcer.Decision, linkPin string) {
	t.Helper()
	// As on a systemd host: every mount shares propagation.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SHARED, ""); err != nil {
		t.Fatalf("mount --make-rshared /: %v", err)
	}
	mustRun := func(what string, args ...string) {
		t.Helper()
		if out, err := exec.Command("busybox", args...).CombinedOutput(); err != nil {
			t.Fatalf("%s (busybox %v) under seal: %v\n%s", what, args, err, out)
		}
		t.Logf("%s: done", what)
	}
	mkdir := func(p string) string {
		t.Helper()
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}

	// A bind mount of a directory of the root file system, on the same
	// superblock as /, as runtimes and kubelet make and remove them.
	src, dst := mkdir("/kg-bind-src"), mkdir("/kg-bind-dst")
	var rootSt, srcSt unix.Stat_t
	if err := unix.Stat("/", &rootSt); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(src, &srcSt); err != nil || srcSt.Dev != rootSt.Dev {
		t.Fatalf("%s is not on the root file system (%v)", src, err)
	}
	for _, flags := range []int{0, unix.MNT_DETACH} {
		if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
			t.Fatalf("mount --bind %s %s: %v", src, dst, err)
		}
		if err := unix.Unmount(dst, flags); err != nil {
			t.Fatalf("umount (flags %#x) of a bind mount of the root file system under seal: %v", flags, err)
		}
	}
	t.Logf("bind mount of a root file system directory: unmounted (also lazily)")

	// sysfs mounted a second time elsewhere: the same superblock as /sys.
	sys2 := mkdir(filepath.Join(t.TempDir(), "sys2"))
	if err := unix.Mount("none", sys2, "sysfs", 0, ""); err != nil {
		t.Fatalf("mount -t sysfs none %s: %v", sys2, err)
	}
	if err := unix.Unmount(sys2, 0); err != nil {
		t.Fatalf("umount of a second sysfs under seal: %v", err)
	}
	t.Logf("second sysfs mount: unmounted")

	// The bpffs in a new mount namespace with private propagation (what
	// unshare does by default): gone there, the pins stay here.
	mustRun("umount of the bpffs in a private mount namespace",
		"unshare", "-m", "--propagation", "private", "sh", "-c",
		"umount /sys/fs/bpf && ! test -e "+linkPin)
	mustRun("lazy umount of /sys in a private mount namespace",
		"unshare", "-m", "--propagation", "private", "sh", "-c",
		"umount -l /sys && ! test -e "+linkPin)

	// Copies that share propagation with the pins' mounts: their unmount
	// would unmount the originals too, unseen by the hook. First the
	// control, on a bpffs of no importance: its copy's lazy umount in a
	// mount namespace that shares propagation unmounts it here too.
	ctl := mkdir("/kg-ctl")
	if err := unix.Mount("none", ctl, "tmpfs", 0, ""); err != nil {
		t.Fatalf("mount -t tmpfs none %s: %v", ctl, err)
	}
	ctlBPF := mkdir(filepath.Join(ctl, "bpf"))
	if err := unix.Mount("bpf", ctlBPF, "bpf", 0, ""); err != nil {
		t.Fatalf("mount -t bpf bpf %s: %v", ctlBPF, err)
	}
	mustRun("lazy umount of the copy of another bpffs in a mount namespace that shares propagation",
		"unshare", "-m", "--propagation", "shared", "sh", "-c", "umount -l "+ctlBPF)
	var fs unix.Statfs_t
	if err := unix.Statfs(ctlBPF, &fs); err != nil || fs.Type == unix.BPF_FS_MAGIC {
		t.Fatalf("control: the bpffs on %s is still mounted here after the umount of its copy (%v): no propagation, the refusals below would prove nothing", ctlBPF, err)
	}
	t.Logf("control: the umount of a copy in the other namespace unmounted %s here too", ctlBPF)
	refusedCmd("lazy umount of the bpffs in a mount namespace that shares propagation",
		"unshare", "-m", "--propagation", "shared", "sh", "-c", "umount -l /sys/fs/bpf")
	refusedCmd("lazy umount of /sys in a mount namespace that shares propagation",
		"unshare", "-m", "--propagation", "shared", "sh", "-c", "umount -l /sys")
	// Lazy umounts of trees that hold such a copy further down: the
	// hook walks the tree. Not t.TempDirs: they stay mounted.
	rsys := mkdir("/kg-rsys")
	if err := unix.Mount("/sys", rsys, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatalf("mount --rbind /sys %s: %v", rsys, err)
	}
	refusedCmd("lazy umount of a recursive bind mount of /sys", "umount", "-l", rsys)
	wrap := mkdir("/kg-wrap")
	if err := unix.Mount("none", wrap, "tmpfs", 0, ""); err != nil {
		t.Fatalf("mount -t tmpfs none %s: %v", wrap, err)
	}
	if err := unix.Mount("/sys", mkdir(filepath.Join(wrap, "sys")), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		t.Fatalf("mount --rbind /sys %s/sys: %v", wrap, err)
	}
	refusedCmd("lazy umount of a tmpfs holding a recursive bind mount of /sys", "umount", "-l", wrap)

	if _, err := os.Stat(linkPin); err != nil {
		t.Fatalf("link pin after the umounts: %v", err)
	}
}

// moveMounts tries to move the bpffs holding the pins under the seal: with
// mount(2) MS_MOVE and with move_mount(2). Moved, it would sit on an inode
// the seal did not record, where a copy of it that shares propagation could
// unmount it. Then to mount over the path to the pins, which would hide
// them. Controls: a mount elsewhere, move_mount of another mount in this
// namespace, and MS_MOVE in a namespace of its own, still work.
func moveMounts(t *testing.T, refused func(what string, op lsm.Op, err error) enforcer.Decision, bpffsID int, pins string) {
	t.Helper()
	mkdir := func(p string) string {
		t.Helper()
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var ns unix.Stat_t
	if err := unix.Stat("/proc/self/ns/mnt", &ns); err != nil {
		t.Fatal(err)
	}
	dst := mkdir("/kg-move-dst")
	if d := refused("mount --move of the bpffs", lsm.OpMount, unix.Mount("/sys/fs/bpf", dst, "", unix.MS_MOVE, "")); d.Object != ns.Ino {
		t.Fatalf("MS_MOVE refusal reported for %d, want this mount namespace %d", d.Object, ns.Ino)
	}
	if d := refused("move_mount(2) of the bpffs", lsm.OpMount,
		unix.MoveMount(unix.AT_FDCWD, "/sys/fs/bpf", unix.AT_FDCWD, dst, 0)); d.Object != uint64(bpffsID) {
		t.Fatalf("move_mount refusal reported for mount %d, want the bpffs's id %d", d.Object, bpffsID)
	}

	// Control: move_mount(2) of a tmpfs (under a private parent: the
	// kernel refuses to move a mount out of a shared one).
	box := mkdir("/kg-move-box")
	if err := unix.Mount("kgbox", box, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(box, unix.MNT_DETACH)
	if err := unix.Mount("", box, "", unix.MS_PRIVATE, ""); err != nil {
		t.Fatal(err)
	}
	src, to := mkdir(box+"/src"), mkdir(box+"/dst")
	if err := unix.Mount("kgsrc", src, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := unix.MoveMount(unix.AT_FDCWD, src, unix.AT_FDCWD, to, 0); err != nil {
		t.Fatalf("move_mount(2) of a tmpfs under seal: %v (only the protected mounts are held)", err)
	}
	t.Log("move_mount(2) of another mount: done")

	// Over the path to the pins: every directory from them up to /.
	inode := func(p string) uint64 {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	for _, dir := range []string{pins, "/sys/fs/bpf", "/sys/fs", "/sys"} {
		if d := refused("tmpfs mounted on "+dir, lsm.OpMount, unix.Mount("kgover", dir, "tmpfs", 0, "")); d.Object != inode(dir) {
			t.Fatalf("mount on %s reported for inode %d, want %d", dir, d.Object, inode(dir))
		}
	}
	refused("bind mount on /sys/fs", lsm.OpMount, unix.Mount(box, "/sys/fs", "", unix.MS_BIND, ""))
	refused("move_mount(2) of a tmpfs onto the bpffs", lsm.OpMount, unix.MoveMount(unix.AT_FDCWD, to, unix.AT_FDCWD, "/sys/fs/bpf", 0))
	// Remounts and propagation changes of the same mounts pass.
	if err := unix.Mount("", "/sys/fs/bpf", "", unix.MS_REMOUNT, "mode=0700"); err != nil {
		t.Fatalf("remount of the bpffs under seal: %v", err)
	}
	if err := unix.Mount("", "/sys/fs/bpf", "", unix.MS_SHARED, ""); err != nil {
		t.Fatalf("propagation change of the bpffs under seal: %v", err)
	}
	if _, err := os.Stat(filepath.Join(pins, "config")); err != nil {
		t.Fatalf("the pins after the attempts: %v", err)
	}

	// Control: MS_MOVE in a mount namespace of its own.
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with its namespace
		errc <- func() error {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("unshare: %w", err)
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return fmt.Errorf("make / private: %w", err)
			}
			if err := unix.Mount("/sys/fs/bpf", dst, "", unix.MS_MOVE, ""); err != nil {
				return fmt.Errorf("MS_MOVE of the bpffs's copy: %w", err)
			}
			return nil
		}()
	}()
	if err := <-errc; err != nil {
		t.Fatalf("in a mount namespace of its own: %v (its mounts are copies: moving them leaves the pins in place)", err)
	}
	t.Log("mount --move in a private mount namespace: done")
}
