package bpf

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/vmtest"
)

// TestVM runs the TestGuest tests below in Debian 6.1 and 6.12 under QEMU,
// where modules really load: the sensor's CO-RE reads meet older kernels'
// layouts (kernfs parent, inode mtime and ctime, kernel_cap_t) and results
// are 0.
func TestVM(t *testing.T) {
	vmtest.Run(t, vmtest.Spec{
		Modules:    []string{"dummy"},
		Crafted:    []vmtest.Crafted{{Name: "dummy-unsigned", From: "dummy", StripSignature: true}},
		FailOnSkip: true,
		Run:        os.Getenv("KMODGUARD_GUEST_RUN"),
	})
}

// TestVMArm64 runs the same guest tests in Debian's arm64 6.1 and 6.12
// under qemu-system-aarch64, so that the committed sensor_arm64_bpfel.o is
// loaded and watches real module loads: arm64's syscall numbers, pt_regs
// and the kernel's arm64 structure layouts. The guest also gets
// aarch32mod, a 32-bit ARM program (bpf/internal/aarch32mod), for the
// aarch32 callers (compat_arm64_test.go).
func TestVMArm64(t *testing.T) {
	files := map[string]string{}
	if vmtest.Enabled() {
		files["aarch32mod"] = buildAarch32(t)
	}
	vmtest.Run(t, vmtest.Spec{
		Arch:       "arm64",
		Modules:    []string{"dummy"},
		Crafted:    []vmtest.Crafted{{Name: "dummy-unsigned", From: "dummy", StripSignature: true}},
		Files:      files,
		FailOnSkip: true,
	})
}

// buildAarch32 builds bpf/internal/aarch32mod as a static 32-bit ARM
// (ARMv7, EABI) binary and returns its path.
func buildAarch32(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "aarch32mod")
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	cmd := exec.Command(gobin, "build", "-trimpath", "-o", out, "./internal/aarch32mod")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm", "GOARM=7", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the aarch32 test program: %v\n%s", err, b)
	}
	return out
}

// guestCompat, where the architecture has 32-bit callers, loads and
// unloads the image through the 32-bit syscalls (see compat_test.go).
var guestCompat func(t *testing.T, c *collector, img []byte)

// TestGuestSensorLoadUnload loads and unloads dummy.ko through finit_module
// and init_module while the sensor watches, and checks every event, with
// each hook: real kernels allow fentry on the syscall functions when they
// have ftrace direct calls (not Debian's arm64 6.1, see fentryExpected).
func TestGuestSensorLoadUnload(t *testing.T) {
	vmtest.RequireGuest(t)
	for _, h := range []Hook{HookBTF, HookRaw, HookFentry} {
		t.Run(string(h), func(t *testing.T) { guestLoadUnload(t, h) })
	}
}

func guestLoadUnload(t *testing.T, h Hook) {
	path := vmtest.Fixture(t, "dummy")
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, c := newTestSensor(t, Config{Hook: h})
	t.Logf("kernel %s, hook %s", vmtest.Release(), s.Hook())
	if h == HookFentry {
		direct := fentryExpected(t)
		switch {
		case !direct && s.Hook() == HookFentry:
			t.Fatalf("fentry loaded on a kernel without CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS")
		case !direct:
			// Said out loud: this kernel cannot run the sensor in fentry
			// mode, and the sensor must fall back rather than fail.
			t.Logf("FENTRY NOT AVAILABLE on %s %s (no CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS: no way into a BPF trampoline): refused, the sensor fell back to %s, tested above",
				runtime.GOARCH, vmtest.Release(), s.Hook())
			if s.Hook() != HookBTF {
				t.Errorf("fentry refused: fell back to %s, want %s", s.Hook(), HookBTF)
			}
			return
		}
	}
	if s.Hook() != h {
		t.Fatalf("hook %s refused in a real kernel; %s loaded instead", h, s.Hook())
	}
	// The results come from fexit wherever the kernel attaches it, so that
	// unrelated syscalls pay sys_enter alone; the events below carry them.
	wantExit := ExitSysExit
	if h == HookFentry || h == HookBTF && fentryExpected(t) {
		wantExit = ExitFexit
	}
	t.Logf("results from %s", s.ExitSide())
	if s.ExitSide() != wantExit {
		t.Errorf("results from %s, want %s", s.ExitSide(), wantExit)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()

	unload := func() {
		t.Helper()
		if err := unix.DeleteModule("dummy", unix.O_NONBLOCK); err != nil {
			t.Fatalf("delete_module: %v", err)
		}
		// Each unload's own event: the first this thread's that no wait took.
		ev := c.wait(t, func(ev *event.Event) bool { return mine(tid, event.DeleteModule)(ev) && !seen(ev) })
		if ev.Res != 0 || ev.Name != "dummy" || strings.Join(ev.Flags, "|") != "O_NONBLOCK" {
			t.Errorf("delete_module event: res %d name %q flags %v", ev.Res, ev.Name, ev.Flags)
		}
	}

	// finit_module on the file.
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if err := unix.FinitModule(int(f.Fd()), "numdummies=1", 0); err != nil {
		t.Fatalf("finit_module: %v", err)
	}
	ev := c.wait(t, mine(tid, event.FinitModule))
	seen(ev)
	checkProcess(t, ev, tid)
	real, _ := filepath.EvalSymlinks(path)
	if ev.Res != 0 || ev.Name != "dummy" || ev.ThisModuleName != "dummy" || ev.Path != real || ev.Params != "numdummies=1" {
		t.Errorf("finit_module event: res %d names %q/%q path %q (want %q) params %q",
			ev.Res, ev.Name, ev.ThisModuleName, ev.Path, real, ev.Params)
	}
	if ev.Inode != st.Ino || ev.Dev != uint64(st.Dev) || ev.Size != uint64(st.Size) || ev.Mtime != st.Mtim.Nano() ||
		ev.Ctime != st.Ctim.Nano() || ev.FileChanged {
		t.Errorf("finit_module file: inode/dev/size/mtime/ctime %d/%d/%d/%d/%d, want %d/%d/%d/%d/%d (changed %v)",
			ev.Inode, ev.Dev, ev.Size, ev.Mtime, ev.Ctime, st.Ino, st.Dev, st.Size, st.Mtim.Nano(), st.Ctim.Nano(), ev.FileChanged)
	}
	if ev.SHA256 != sha(img) {
		t.Errorf("finit_module sha256 %s, want %s", ev.SHA256, sha(img))
	}
	unload()

	// init_module on the image.
	if err := unix.InitModule(img, "numdummies=2"); err != nil {
		t.Fatalf("init_module: %v", err)
	}
	ev = c.wait(t, func(ev *event.Event) bool { return mine(tid, event.InitModule)(ev) && !seen(ev) })
	checkProcess(t, ev, tid)
	if ev.Res != 0 || ev.Name != "dummy" || ev.ThisModuleName != "dummy" || ev.SHA256 != sha(img) ||
		ev.Size != uint64(len(img)) || ev.Params != "numdummies=2" || ev.Truncated || ev.Unreadable {
		t.Errorf("init_module event: %+v", ev)
	}
	unload()

	// init_module on a fresh, untouched MAP_PRIVATE mapping of the file,
	// with empty params: at sys_enter no page of the image is resident, so
	// the sensor reads it at sys_exit, after the kernel's copy. Then the
	// same with the first page touched, as busybox insmod does when it
	// checks the ELF header of the mapping before falling back to
	// init_module.
	for _, touch := range []bool{false, true} {
		m := untouchedMapping(t, path)
		if touch {
			_ = m[0]
		}
		empty := []byte{0}
		if _, _, errno := unix.Syscall(unix.SYS_INIT_MODULE, ptr(m), uintptr(len(m)), ptr(empty)); errno != 0 {
			t.Fatalf("init_module of a mapping (first page touched: %v): %v", touch, errno)
		}
		ev = c.wait(t, func(ev *event.Event) bool { return mine(tid, event.InitModule)(ev) && !seen(ev) })
		if ev.Res != 0 || ev.Unreadable || ev.Truncated || ev.Name != "dummy" || ev.SHA256 != sha(img) ||
			ev.Size != uint64(len(img)) || ev.Params != "" {
			t.Errorf("init_module of a mapping (first page touched: %v): res %d unreadable %v truncated %v name %q sha256 %s (want %s) size %d params %q",
				touch, ev.Res, ev.Unreadable, ev.Truncated, ev.Name, ev.SHA256, sha(img), ev.Size, ev.Params)
		}
		if !touch && !ev.ImageAtExit {
			t.Errorf("init_module of an untouched mapping: the image was read at sys_enter, want at sys_exit")
		}
		t.Logf("init_module of a mapping (first page touched: %v): image read at exit: %v", touch, ev.ImageAtExit)
		unload()
	}

	// Params on a page not resident at sys_enter: a fresh anonymous page
	// (the empty string) and a never-touched mapping of a file that holds
	// them. The kernel copies them (strndup_user), so the sensor reads them
	// at sys_exit. Last, an init_module with both its image and its params
	// out of reach at sys_enter.
	for _, tc := range []struct {
		name    string
		sc      event.Syscall
		content string
		mapped  bool // the image too, on an untouched mapping
	}{
		{"finit_module, params on an anonymous page", event.FinitModule, "", false},
		{"finit_module, params on a file mapping", event.FinitModule, "numdummies=3", false},
		{"init_module, params on an anonymous page", event.InitModule, "", false},
		{"init_module, params on a file mapping", event.InitModule, "numdummies=3", false},
		{"init_module, image and params on file mappings", event.InitModule, "numdummies=3", true},
	} {
		params := untouchedParams(t, tc.content)
		var errno unix.Errno
		switch {
		case tc.sc == event.FinitModule:
			_, _, errno = unix.Syscall(unix.SYS_FINIT_MODULE, f.Fd(), ptr(params), 0)
		case tc.mapped:
			m := untouchedMapping(t, path)
			_, _, errno = unix.Syscall(unix.SYS_INIT_MODULE, ptr(m), uintptr(len(m)), ptr(params))
		default:
			_, _, errno = unix.Syscall(unix.SYS_INIT_MODULE, ptr(img), uintptr(len(img)), ptr(params))
		}
		if errno != 0 {
			t.Fatalf("%s: %v", tc.name, errno)
		}
		ev = c.wait(t, func(ev *event.Event) bool { return mine(tid, tc.sc)(ev) && !seen(ev) })
		if ev.Res != 0 || ev.Unreadable || ev.Truncated || ev.Name != "dummy" || ev.SHA256 != sha(img) ||
			ev.Params != tc.content || !ev.ParamsAtExit || ev.ImageAtExit != tc.mapped {
			t.Errorf("%s: res %d unreadable %v truncated %v name %q sha256 %s (want %s) params %q (want %q) params at exit %v image at exit %v (want %v)",
				tc.name, ev.Res, ev.Unreadable, ev.Truncated, ev.Name, ev.SHA256, sha(img), ev.Params, tc.content,
				ev.ParamsAtExit, ev.ImageAtExit, tc.mapped)
		}
		t.Logf("%s: params %q, read at exit: %v; image read at exit: %v", tc.name, ev.Params, ev.ParamsAtExit, ev.ImageAtExit)
		unload()
	}

	// delete_module of an empty name: readable, empty.
	err = unix.DeleteModule("", 0)
	ev = c.wait(t, func(ev *event.Event) bool { return mine(tid, event.DeleteModule)(ev) && !seen(ev) })
	if ev.Res == 0 || ev.Res != -int64(err.(unix.Errno)) || ev.Unreadable || ev.Name != "" {
		t.Errorf("delete_module(\"\"): res %d (err %v) unreadable %v name %q", ev.Res, err, ev.Unreadable, ev.Name)
	}

	if guestCompat != nil {
		guestCompat(t, c, img)
	}

	if st := s.Stats(); st.Drops+st.ChunkDrops+st.ExitDrops != 0 {
		t.Errorf("drops in a quiet guest: %+v", st)
	}
}

// fentryExpected says whether the guest kernel can attach fentry programs to
// the syscall functions: BPF trampolines are entered through ftrace direct
// calls, which Debian's arm64 6.1 lacks (it loads the programs and refuses
// the attach: ENOTSUPP); arm64 6.12 and every amd64 kernel of the matrix
// have them.
func fentryExpected(t *testing.T) bool {
	t.Helper()
	return vmtest.KernelConfig(t, "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS") == "y"
}

// TestGuestSensorRewrittenInPlace: a module really loaded through
// finit_module, whose file is then rewritten in place with its mtime set
// back, is reported file_changed: the ctime read from this kernel's inode
// layout tells.
func TestGuestSensorRewrittenInPlace(t *testing.T) {
	vmtest.RequireGuest(t)
	img, err := os.ReadFile(vmtest.Fixture(t, "dummy"))
	if err != nil {
		t.Fatal(err)
	}
	ev, st, _, err := finitRewritten(t, img, Config{})
	if err != nil {
		t.Fatalf("finit_module: %v", err)
	}
	if err := unix.DeleteModule("dummy", unix.O_NONBLOCK); err != nil {
		t.Errorf("delete_module: %v", err)
	}
	t.Logf("kernel %s: ctime at the call %d, file_changed %v after the rewrite", vmtest.Release(), st.Ctim.Nano(), ev.FileChanged)
	if ev.Res != 0 {
		t.Errorf("finit_module event: res %d, want 0", ev.Res)
	}
}

// TestGuestSensorBusyboxInsmod: busybox insmod tries finit_module first and
// falls back to init_module, with the file read into memory (or, built with
// FEATURE_INSMOD_TRY_MMAP, mapped: first page resident, the rest not) and
// empty params when none are given. finit_module is refused to it with a
// seccomp filter, so that the fallback runs: its event must carry the whole
// image (read at sys_exit when needed) and readable empty params.
func TestGuestSensorBusyboxInsmod(t *testing.T) {
	vmtest.RequireGuest(t)
	path := vmtest.Fixture(t, "dummy")
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	_, c := newTestSensor(t, Config{})
	type result struct {
		pid int
		out []byte
		err error
	}
	done := make(chan result)
	go func() {
		// The filter stays on this thread, which ends with the goroutine
		// (it is never unlocked); insmod inherits it.
		runtime.LockOSThread()
		if err := refuseFinitModule(); err != nil {
			done <- result{err: err}
			return
		}
		cmd := exec.Command("insmod", path)
		out, err := cmd.CombinedOutput()
		pid := 0
		if cmd.Process != nil {
			pid = cmd.Process.Pid
		}
		done <- result{pid: pid, out: out, err: err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("busybox insmod with finit_module refused: %v: %s", r.err, r.out)
	}
	defer func() {
		if err := unix.DeleteModule("dummy", unix.O_NONBLOCK); err != nil {
			t.Errorf("delete_module: %v", err)
		}
	}()
	ev := c.wait(t, func(ev *event.Event) bool { return int(ev.Pid) == r.pid && ev.Syscall == event.InitModule })
	if ev.Res != 0 || ev.Unreadable || ev.Truncated || ev.Name != "dummy" || ev.SHA256 != sha(img) ||
		ev.Size != uint64(len(img)) || ev.Params != "" || ev.Comm != "insmod" {
		t.Errorf("insmod's init_module: res %d unreadable %v truncated %v name %q sha256 %s (want %s) size %d params %q comm %q",
			ev.Res, ev.Unreadable, ev.Truncated, ev.Name, ev.SHA256, sha(img), ev.Size, ev.Params, ev.Comm)
	}
	t.Logf("insmod's init_module: image read at exit: %v", ev.ImageAtExit)
}

// refuseFinitModule installs, on the calling thread, a seccomp filter that
// fails finit_module with ENOSYS, as on a kernel without it.
func refuseFinitModule() error {
	arch := map[string]uint32{"amd64": unix.AUDIT_ARCH_X86_64, "arm64": unix.AUDIT_ARCH_AARCH64}[runtime.GOARCH]
	if arch == 0 {
		return fmt.Errorf("no seccomp arch for %s", runtime.GOARCH)
	}
	const (
		ldW  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeqK = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		retK = unix.BPF_RET | unix.BPF_K
	)
	// struct seccomp_data: nr at 0, arch at 4.
	filter := []unix.SockFilter{
		{Code: ldW, K: 4},
		{Code: jeqK, Jt: 0, Jf: 3, K: arch},
		{Code: ldW, K: 0},
		{Code: jeqK, Jt: 0, Jf: 1, K: unix.SYS_FINIT_MODULE},
		{Code: retK, K: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
		{Code: retK, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0); err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	return nil
}

// TestGuestSensorAutoload: mounting a file system type the kernel does not
// know makes it ask modprobe for "fs-TYPE" on the caller's behalf
// (request_module, whatever modprobe then finds). The sensor's
// module_request event names that alias and the calling thread, with its
// process context: in the host's namespaces from this test, and outside
// them from a new PID namespace (unshare -p -f).
func TestGuestSensorAutoload(t *testing.T) {
	vmtest.RequireGuest(t)
	s, c := newTestSensor(t, Config{})
	hook, err := s.Autoload()
	if hook == "" {
		t.Fatalf("no autoload events on %s: %v", vmtest.Release(), err)
	}
	t.Logf("autoload requests through %s", hook)
	dir := t.TempDir()

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	fs := fmt.Sprintf("kgtest%d", tid)
	if err := unix.Mount("none", dir, fs, 0, ""); !errors.Is(err, unix.ENODEV) {
		t.Fatalf("mount -t %s: %v, want ENODEV (no such file system type)", fs, err)
	}
	ev := c.wait(t, mine(tid, event.ModuleRequest))
	t.Logf("module_request: name %q pid %d comm %q host_ns %v res %d flags %d", ev.Name, ev.Pid, ev.Comm, ev.HostNS, ev.Res, ev.RawFlags)
	if ev.Name != "fs-"+fs || int(ev.Pid) != os.Getpid() || !ev.HostNS || ev.Exe == "" || ev.Cmdline == "" || ev.Res != 0 {
		t.Errorf("module_request event %+v: want name fs-%s from this process, in the host's namespaces", ev, fs)
	}

	other := fs + "ns"
	out, err := exec.Command("unshare", "-p", "-f", "mount", "-t", other, "none", dir).CombinedOutput()
	if err == nil {
		t.Fatalf("mount -t %s from a new PID namespace succeeded: %s", other, out)
	}
	ev = c.wait(t, func(ev *event.Event) bool { return ev.Syscall == event.ModuleRequest && ev.Name == "fs-"+other })
	t.Logf("module_request from unshare -p -f: name %q comm %q host_ns %v pidns %d", ev.Name, ev.Comm, ev.HostNS, ev.PidNS)
	if ev.HostNS || ev.Comm != "mount" {
		t.Errorf("module_request from a new PID namespace: %+v; want host_ns false, comm mount", ev)
	}

	// The join: the kernel's modprobe (busybox's here), run for an alias
	// that /etc/modprobe.d maps to dummy, loads it; that load names the
	// request and this process.
	joined := fs + "join"
	if err := os.MkdirAll("/etc/modprobe.d", 0o755); err != nil {
		t.Fatal(err)
	}
	conf := "/etc/modprobe.d/kmodguard-test.conf"
	if err := os.WriteFile(conf, []byte("alias fs-"+joined+" dummy\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(conf)
	helper, _ := os.ReadFile("/proc/sys/kernel/modprobe")
	unix.Mount("none", dir, joined, 0, "") // dummy is no file system: ENODEV once it is loaded
	defer unix.DeleteModule("dummy", unix.O_NONBLOCK)
	ev = c.wait(t, func(ev *event.Event) bool {
		return (ev.Syscall == event.InitModule || ev.Syscall == event.FinitModule) && ev.Name == "dummy"
	})
	t.Logf("the helper's load (kernel.modprobe %s): %s by %q (ppid %d) cmdline %q: request %q by %q pid %d",
		strings.TrimSpace(string(helper)), ev.Syscall, ev.Comm, ev.Ppid, ev.Cmdline, ev.RequestName, ev.RequestComm, ev.RequestPid)
	if ev.RequestName != "fs-"+joined || int(ev.RequestPid) != os.Getpid() || !ev.ParentKthread {
		t.Errorf("the helper's load of dummy: request %q by pid %d, parent a kernel thread %v; want fs-%s by this process (%d), started by the kernel",
			ev.RequestName, ev.RequestPid, ev.ParentKthread, joined, os.Getpid())
	}
}

// TestGuestSensorModuleEvents: the kernel's own module:module_load and
// module:module_free events. Debian's dummy.ko, signed by Debian's key,
// loads with sig_ok true and no taint; the same module stripped of its
// signature loads (CONFIG_MODULE_SIG_FORCE is off) with sig_ok false and
// taint E. Each event names the loading or unloading thread, and the
// free carries the load's struct module address.
func TestGuestSensorModuleEvents(t *testing.T) {
	vmtest.RequireGuest(t)
	all := modEventPrograms
	defer func() { modEventPrograms = all }()
	for i, want := range []Hook{HookBTF, HookRaw} {
		t.Run(string(want), func(t *testing.T) {
			// The raw_tracepoint fallback, as where tp_btf is refused.
			modEventPrograms = all[i:]
			guestModuleEvents(t, want)
		})
	}
}

func guestModuleEvents(t *testing.T, want Hook) {
	s, c := newTestSensor(t, Config{})
	hook, err := s.ModuleEvents()
	if hook != want {
		t.Fatalf("module_load events on %s through %q (%v), want %s", vmtest.Release(), hook, err, want)
	}
	t.Logf("module_load and module_free through %s", hook)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	for _, tc := range []struct {
		fixture string
		sigOK   bool
		taint   string
	}{{"dummy", true, ""}, {"dummy-unsigned", false, "E"}} {
		img, err := os.ReadFile(vmtest.Fixture(t, tc.fixture))
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.InitModule(img, ""); err != nil {
			t.Fatalf("init_module %s: %v", tc.fixture, err)
		}
		load := c.wait(t, func(ev *event.Event) bool { return mine(tid, event.ModuleLoad)(ev) && !seen(ev) })
		sig := "unknown"
		if load.SigOK != nil {
			sig = fmt.Sprint(*load.SigOK)
		}
		t.Logf("%s: module_load name %q module %#x sig_ok %s taint %q comm %q", tc.fixture, load.Name, load.ModuleAddr, sig, load.Taint, load.Comm)
		if load.Name != "dummy" || load.ModuleAddr == 0 || load.SigOK == nil || *load.SigOK != tc.sigOK || load.Taint != tc.taint || int(load.Pid) != os.Getpid() {
			t.Errorf("%s: module_load %+v; want dummy from this process, sig_ok %v, taint %q", tc.fixture, load, tc.sigOK, tc.taint)
		}
		if err := unix.DeleteModule("dummy", unix.O_NONBLOCK); err != nil {
			t.Fatalf("delete_module: %v", err)
		}
		free := c.wait(t, func(ev *event.Event) bool { return mine(tid, event.ModuleFree)(ev) && !seen(ev) })
		t.Logf("%s: module_free name %q module %#x", tc.fixture, free.Name, free.ModuleAddr)
		if free.Name != "dummy" || free.ModuleAddr != load.ModuleAddr || free.SigOK != nil {
			t.Errorf("%s: module_free %+v; want dummy at %#x", tc.fixture, free, load.ModuleAddr)
		}
	}
}

// TestGuestSensorLongPath: see TestFinitModuleLongPath.
func TestGuestSensorLongPath(t *testing.T) {
	vmtest.RequireGuest(t)
	finitLongPath(t)
}
