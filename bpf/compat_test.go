//go:build amd64

package bpf

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/bpf/internal/ia32"
	"github.com/kmodguard/kmodguard/event"
)

// ia32 syscall numbers (arch/x86/entry/syscalls/syscall_32.tbl).
const (
	nr32InitModule    = 128
	nr32DeleteModule  = 129
	nr32FinitModule   = 350
	nr32RtSigprocmask = 175 // init_module's number on amd64
)

// low maps n bytes below 4 GiB, where 32-bit syscall arguments can point.
func low(t *testing.T, n int) []byte {
	t.Helper()
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_32BIT)
	if err != nil {
		t.Skipf("needs MAP_32BIT: %v", err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b
}

// ia32ProbeEnv, in the environment of a re-executed test binary, makes
// TestIA32Probe the probe's child. Its value is the probe to make: "int80"
// (a 32-bit rt_sigprocmask through int 0x80), "fault" (a software
// interrupt no user may make: a general protection fault, as int 0x80 is
// where IA32 emulation is unusable), or "exit" (exit 3 and say nothing: a
// child that failed without a fault).
const ia32ProbeEnv = "KG_IA32_PROBE"

// ia32ProbeChild is the child side of probeIA32: it makes its probe on a
// locked thread and prints the result. A fault kills it before it prints.
func ia32ProbeChild(mode string) {
	runtime.LockOSThread()
	switch mode {
	case "int80":
		fmt.Printf("ia32 %d\n", ia32.Syscall(nr32RtSigprocmask, 0, 0, 0))
	case "fault":
		ia32.Fault()
		fmt.Println("ia32 fault returned")
	default:
		os.Exit(3)
	}
}

// ia32Probe is what probeIA32 found.
type ia32Probe struct {
	// Result is the child's 32-bit rt_sigprocmask(0, NULL, NULL) result,
	// when it printed one.
	Result int64
	// Fault, when the child died of a fault before printing, says how: the
	// signal and the Go runtime's own lines about it.
	Fault string
}

// probeIA32 makes probe mode (see ia32ProbeEnv) in a child process, this
// test binary re-executed, because on some machines int 0x80 raises a
// general protection fault (IA32 emulation compiled in but unusable, as
// under some hypervisors) and the fault kills the process that made it,
// with every test in it. An error is a child that neither printed a result
// nor died of a fault.
func probeIA32(mode string) (ia32Probe, error) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestIA32Probe$", "-test.count=1")
	cmd.Env = append(os.Environ(), ia32ProbeEnv+"="+mode)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if line, ok := strings.CutPrefix(strings.TrimSpace(stdout.String()), "ia32 "); ok && err == nil {
		r, perr := strconv.ParseInt(line, 10, 64)
		if perr != nil {
			return ia32Probe{}, fmt.Errorf("ia32 probe child printed %q: %w", stdout.String(), perr)
		}
		return ia32Probe{Result: r}, nil
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return ia32Probe{}, fmt.Errorf("ia32 probe child: %w (stdout %q)", err, stdout.String())
	}
	// The Go runtime turns a fault outside Go's own checks into "unexpected
	// fault address", "fatal error: fault" and "[signal SIGSEGV: ...]",
	// and exit status 2; a signal it does not catch kills the child.
	var lines []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "unexpected fault") || strings.HasPrefix(l, "fatal error:") || strings.HasPrefix(l, "[signal SIG") {
			lines = append(lines, l)
		}
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ia32Probe{Fault: strings.Join(append([]string{"killed by " + ws.Signal().String()}, lines...), "; ")}, nil
	}
	if strings.Contains(stderr.String(), "[signal SIGSEGV") || strings.Contains(stderr.String(), "[signal SIGBUS") {
		return ia32Probe{Fault: strings.Join(lines, "; ")}, nil
	}
	return ia32Probe{}, fmt.Errorf("ia32 probe child: %w, without a fault: %q", err, stderr.String())
}

// requireIA32 skips unless 32-bit syscalls through int 0x80 work here, as
// a child process found, and says why not.
func requireIA32(t *testing.T) {
	t.Helper()
	skipUnlessProbe(t, "int80")
}

// skipUnlessProbe is requireIA32 with the probe mode given.
func skipUnlessProbe(t *testing.T, mode string) {
	t.Helper()
	p, err := probeIA32(mode)
	switch {
	case err != nil:
		t.Fatal(err)
	case p.Fault != "":
		t.Skipf("int 0x80 faults on this machine (IA32 emulation unusable here), in a child process: %s", p.Fault)
	case p.Result != 0 && p.Result != -int64(unix.EINVAL):
		t.Skipf("no ia32 emulation: 32-bit rt_sigprocmask returned %d", p.Result)
	}
}

// TestIA32Probe checks the int 0x80 probe's child process: a general
// protection fault in the child comes back as a fault, not as a crash of
// this binary; a child that fails otherwise is an error; and where int 0x80
// works, the child's result is the one this process then gets itself.
func TestIA32Probe(t *testing.T) {
	if mode := os.Getenv(ia32ProbeEnv); mode != "" {
		ia32ProbeChild(mode)
		os.Exit(0)
	}
	for _, tc := range []struct {
		mode    string
		fault   bool // the probe must report a fault
		wantErr bool
	}{
		{mode: "fault", fault: true},
		{mode: "exit", wantErr: true},
		{mode: "int80"}, // works, or faults: checked below
	} {
		t.Run(tc.mode, func(t *testing.T) {
			p, err := probeIA32(tc.mode)
			if (err != nil) != tc.wantErr {
				t.Fatalf("probe %s: %+v, error %v, want error %v", tc.mode, p, err, tc.wantErr)
			}
			if err != nil {
				return
			}
			switch {
			case tc.fault && (p.Fault == "" || !strings.Contains(p.Fault, "SIGSEGV")):
				t.Fatalf("probe %s: %+v, want a SIGSEGV fault", tc.mode, p)
			case tc.fault:
				t.Logf("the child's fault: %s", p.Fault)
			case p.Fault != "":
				t.Logf("int 0x80 faults on this machine, in the child: %s", p.Fault)
			default:
				// The child said int 0x80 works: so it does, here, with
				// the same result.
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				if r := ia32.Syscall(nr32RtSigprocmask, 0, 0, 0); r != p.Result {
					t.Errorf("rt_sigprocmask through int 0x80: %d here, %d in the child", r, p.Result)
				}
				t.Logf("int 0x80 works on this machine: 32-bit rt_sigprocmask returned %d", p.Result)
			}
		})
	}
	// A test whose probe faults skips (and says why, in its SKIP line)
	// rather than dying.
	skipped := false
	t.Run("fault-skips", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		skipUnlessProbe(t, "fault")
		t.Error("the faulting probe did not skip the test")
	})
	if !skipped {
		t.Error("a test whose probe faulted was not skipped")
	}
}

// TestCompatSyscalls makes 32-bit module syscalls through int 0x80: the
// sensor sees them under their own numbers and arguments, and does not take
// a 32-bit rt_sigprocmask (175) for init_module.
func TestCompatSyscalls(t *testing.T) {
	img, err := os.ReadFile(dummyModule(t))
	if err != nil {
		t.Fatal(err)
	}
	_, c := newTestSensor(t, Config{})
	mem := low(t, len(img)+8192)
	image := mem[:len(img)]
	copy(image, img)
	params := mem[len(img) : len(img)+16]
	copy(params, "numdummies=4\x00")
	name := mem[len(img)+4096:]
	copy(name, "dummy\x00")
	addr := func(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

	requireIA32(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	resInit := ia32.Syscall(nr32InitModule, addr(image), uintptr(len(image)), addr(params))
	f, err := os.Open(dummyModule(t))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	resFinit := ia32.Syscall(nr32FinitModule, f.Fd(), addr(params), 2)
	resDelete := ia32.Syscall(nr32DeleteModule, addr(name), unix.O_NONBLOCK, 0)

	var got []*event.Event
	for len(got) < 3 {
		ev := c.wait(t, func(ev *event.Event) bool { return int(ev.Tid) == tid && !kernelRecord(ev) && !seen(ev) })
		got = append(got, ev)
	}
	want := []struct {
		sc  event.Syscall
		res int64
	}{{event.InitModule, resInit}, {event.FinitModule, resFinit}, {event.DeleteModule, resDelete}}
	for i, w := range want {
		ev := got[i]
		if ev.Syscall != w.sc || ev.Res != w.res || ev.Name != "dummy" {
			t.Errorf("event %d: %s res %d name %q, want %s res %d name dummy (a 32-bit rt_sigprocmask must not show)",
				i, ev.Syscall, ev.Res, ev.Name, w.sc, w.res)
		}
	}
	if ev := got[0]; ev.SHA256 != sha(img) || ev.Params != "numdummies=4" || ev.Size != uint64(len(img)) {
		t.Errorf("32-bit init_module: sha256 %s params %q size %d", ev.SHA256, ev.Params, ev.Size)
	}
	if ev := got[1]; ev.FD != int32(f.Fd()) || ev.RawFlags != 2 || ev.Path == "" {
		t.Errorf("32-bit finit_module: fd %d flags %d path %q", ev.FD, ev.RawFlags, ev.Path)
	}
}

func init() { guestCompat = guestCompatLoadUnload }

// guestCompatLoadUnload loads and unloads img through 32-bit init_module
// and delete_module in a real kernel: both results are 0.
func guestCompatLoadUnload(t *testing.T, c *collector, img []byte) {
	t.Helper()
	mem := low(t, len(img)+8192)
	copy(mem, img)
	params := mem[len(img):]
	copy(params, "numdummies=1\x00")
	name := mem[len(img)+4096:]
	copy(name, "dummy\x00")
	addr := func(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }
	requireIA32(t) // the guest runs FailOnSkip: a fault there fails, and says why
	tid := unix.Gettid()
	if r := ia32.Syscall(nr32InitModule, addr(mem), uintptr(len(img)), addr(params)); r != 0 {
		t.Fatalf("32-bit init_module: %d", r)
	}
	ev := c.wait(t, func(ev *event.Event) bool { return mine(tid, event.InitModule)(ev) && !seen(ev) })
	if ev.Res != 0 || ev.Name != "dummy" || ev.SHA256 != sha(img) || ev.Params != "numdummies=1" {
		t.Errorf("32-bit init_module event: res %d name %q sha256 %s params %q", ev.Res, ev.Name, ev.SHA256, ev.Params)
	}
	if r := ia32.Syscall(nr32DeleteModule, addr(name), unix.O_NONBLOCK, 0); r != 0 {
		t.Fatalf("32-bit delete_module: %d", r)
	}
	ev = c.wait(t, func(ev *event.Event) bool { return mine(tid, event.DeleteModule)(ev) && !seen(ev) })
	if ev.Res != 0 || ev.Name != "dummy" {
		t.Errorf("32-bit delete_module event: res %d name %q", ev.Res, ev.Name)
	}
}
