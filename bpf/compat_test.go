//go:build amd64

package bpf

import (
	"os"
	"runtime"
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

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	if r := ia32.Syscall(nr32RtSigprocmask, 0, 0, 0); r != 0 && r != -int64(unix.EINVAL) {
		t.Skipf("no ia32 emulation: rt_sigprocmask returned %d", r)
	}
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
		ev := c.wait(t, func(ev *event.Event) bool { return int(ev.Tid) == tid && !seen(ev) })
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
