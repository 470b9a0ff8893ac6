//go:build linux

package plugin

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	ebpflink "github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/internal/vmtest"
)

// The guest half of plugin/falcovm's TestVM: Falco's view of the real guard.
// In the QEMU guest (a Debian kernel with BPF LSM and module loading) the
// plugin runs its live sensor and launches the real kmodguard binary as its
// enforcer companion, and the tests drive it as Falco does: Open, NextBatch,
// Extract. This binary is built with cgo (the plugin SDK needs it) by
// falcovm, which ships it to the guest.

// openGuestPlugin starts the plugin with the guard enforcing a, and waits
// until the companion streams decisions.
func openGuestPlugin(t *testing.T, a *allowlist.Allowlist) (*Plugin, *liveInstance) {
	t.Helper()
	vmtest.RequireGuest(t)
	kg := vmtest.Binary(t, "kmodguard")
	p := newPlugin(t, fmt.Sprintf(`{"allowlist": %q, "log_level": "debug", "enforcer": {"enabled": true, "path": %q}}`, saveAllowlist(t, a), kg))
	in, err := p.Open("")
	if err != nil {
		t.Fatalf("open the live source: %v", err)
	}
	inst := in.(*liveInstance)
	t.Cleanup(inst.Close)
	src, ok := inst.src.(*companionSource)
	if !ok {
		t.Fatalf("the live source is %T, not joined with the companion", inst.src)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		c, err := src.status()
		if c {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the companion did not connect: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return p, inst
}

func guestFixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(vmtest.Fixture(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func guestAllowlist(t *testing.T, name string, img []byte) *allowlist.Allowlist {
	t.Helper()
	a := allowlist.New("guest", allowlist.ModeEnforce)
	if _, err := a.Add(allowlist.Entry{Name: name, SHA256: []string{hexDigest(img)}}); err != nil {
		t.Fatal(err)
	}
	return a
}

func initModule(img []byte) error { return unix.InitModule(img, "") }

func deleteModule(t *testing.T, name string) {
	t.Helper()
	if err := unix.DeleteModule(name, unix.O_NONBLOCK); err != nil {
		t.Fatalf("delete_module %s: %v", name, err)
	}
}

// TestGuestFalcoInventory runs first, before any guard is pinned: the
// modules loaded before the live sensor starts come to Falco as present
// events, tied to their files and judged. veth, loaded from the kernel's
// own module, is tied to its file in the release's tree by the build ID the
// kernel shows for it, and allowed; dumbo (dummy renamed, without its signature),
// which no module tree holds, is tied to nothing, not allowed, and carries
// the E taint the kernel gave it.
func TestGuestFalcoInventory(t *testing.T) {
	vmtest.RequireGuest(t)
	veth, dumbo := guestFixture(t, "veth"), guestFixture(t, "dumbo")
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	tree := "/lib/modules/" + unix.ByteSliceToString(uts.Release[:])
	if _, err := os.Stat(tree + "/modules.dep"); err != nil {
		t.Fatalf("the guest has no module tree to tie loaded modules to: %v", err)
	}
	for name, img := range map[string][]byte{"veth": veth, "dumbo": dumbo} {
		if err := initModule(img); err != nil {
			t.Fatalf("init_module(%s) before the sensor: %v", name, err)
		}
		t.Cleanup(func() { unix.DeleteModule(name, unix.O_NONBLOCK) })
	}

	p := newPlugin(t, fmt.Sprintf(`{"allowlist": %q}`, saveAllowlist(t, guestAllowlist(t, "veth", veth))))
	in, err := p.Open("")
	if err != nil {
		t.Fatalf("open the live source: %v", err)
	}
	inst := in.(*liveInstance)
	t.Cleanup(inst.Close)
	present := map[string]map[string]any{}
	falcoLoop(t, p, inst, time.Minute, func(evts []map[string]any) bool {
		for _, e := range evts {
			if e["kmod.syscall"] == "present" {
				present[fmt.Sprint(e["kmod.name"])] = e
			}
		}
		return present["veth"] != nil && present["dumbo"] != nil
	})
	t.Logf("%d present events", len(present))
	for _, name := range []string{"veth", "dumbo"} {
		e := present[name]
		t.Logf("present %s: allowed=%v inventory=%v taint=%q path=%v signed=%v elf_sha256=%v", name, e["kmod.allowed"],
			e["kmod.inventory"], e["kmod.taint"], e["kmod.path"], e["kmod.signed"], e["kmod.elf_sha256"])
	}
	v := present["veth"]
	if path, _ := v["kmod.path"].(string); v["kmod.inventory"] != "file:build-id" || v["kmod.allowed"] != true ||
		v["kmod.elf_sha256"] != hexDigest(veth) || !strings.HasPrefix(path, tree+"/") || v["kmod.signed"] != true || v["kmod.taint"] != "" {
		t.Errorf("veth: %v; want tied by build ID to the tree's veth, allowed, signed, untainted", v)
	}
	d := present["dumbo"]
	if inv, _ := d["kmod.inventory"].(string); !strings.HasPrefix(inv, "no file: no dumbo.ko* in modules.dep") || d["kmod.allowed"] != false ||
		d["kmod.sha256"] != nil || !strings.Contains(fmt.Sprint(d["kmod.taint"]), "E") {
		t.Errorf("dumbo: %v; want tied to no file, not allowed, no digest, taint E", d)
	}
}

// TestGuestFalcoBlocked: Falco receives the event of a blocked init_module
// with kmod.verdict = blocked, joined with the sensor's view; an allowed
// load says allowed.
func TestGuestFalcoBlocked(t *testing.T) {
	dummy, veth := guestFixture(t, "dummy"), guestFixture(t, "veth")
	p, inst := openGuestPlugin(t, guestAllowlist(t, "dummy", dummy))

	if err := initModule(veth); !errors.Is(err, unix.EPERM) {
		t.Fatalf("init_module(veth) = %v, want EPERM from the guard", err)
	}
	if err := initModule(dummy); err != nil {
		t.Fatalf("init_module(dummy) = %v, want success", err)
	}
	deleteModule(t, "dummy")

	want := func(e map[string]any, name, verdict string) bool {
		return e["kmod.syscall"] == "init_module" && e["kmod.name"] == name && e["kmod.verdict"] == verdict
	}
	evts := falcoLoop(t, p, inst, time.Minute, func(evts []map[string]any) bool {
		var blocked, allowed bool
		for _, e := range evts {
			blocked = blocked || want(e, "veth", "blocked")
			allowed = allowed || want(e, "dummy", "allowed")
		}
		return blocked && allowed
	})
	for _, e := range evts {
		t.Logf("event: syscall=%v name=%v res=%v verdict=%v allowed=%v toctou=%v", e["kmod.syscall"], e["kmod.name"],
			e["kmod.res"], e["kmod.verdict"], e["kmod.allowed"], e["kmod.toctou"])
		switch {
		case want(e, "veth", "blocked"):
			if e["kmod.res"] != "EPERM" || e["kmod.toctou"] != false || e["kmod.guard_sha256"] != hexDigest(veth) || e["kmod.allowed"] != false ||
				e["kmod.guard_reason"] != "not on the allowlist" {
				t.Errorf("blocked load: %v", e)
			}
		case want(e, "dummy", "allowed"):
			if e["kmod.res"] != "SUCCESS" || e["kmod.guard_sha256"] != hexDigest(dummy) || e["kmod.allowed"] != true {
				t.Errorf("allowed load: %v", e)
			}
		}
	}

	// Falco's metrics (plugin_get_metrics reads the same values): the
	// sensor saw the three syscalls, the companion sent both decisions,
	// and every event Falco got is counted.
	m := metricValues(p)
	t.Logf("metrics: %v", m)
	if m["sensor_events"] < 3 || m["guard_decisions"] < 2 || m["companion_connected"] != 1 ||
		m["allowlist_entries"] != 1 || m["events_delivered"] != uint64(len(evts)) {
		t.Errorf("metrics %v: want sensor_events >= 3, guard_decisions >= 2, companion_connected 1, allowlist_entries 1, events_delivered %d",
			m, len(evts))
	}
}

// TestGuestFalcoOverride: a program attached before the guard that can
// decide loads before it (fmod_ret on security_kernel_post_read_file) is
// reported to Falco as a guard event the rule "Kernel Module Guard
// Overridden" matches, naming the program's link.
func TestGuestFalcoOverride(t *testing.T) {
	vmtest.RequireGuest(t)
	dummy := guestFixture(t, "dummy")
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "kgtest_override", Type: ebpf.Tracing, AttachType: ebpf.AttachModifyReturn,
		AttachTo: "security_kernel_post_read_file", License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer prog.Close()
	l, err := ebpflink.AttachTracing(ebpflink.TracingOptions{Program: prog, AttachType: ebpf.AttachModifyReturn})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	linkRef := fmt.Sprintf("link %d) on security_kernel_post_read_file", info.ID)

	p, inst := openGuestPlugin(t, guestAllowlist(t, "dummy", dummy))
	isOverride := func(e map[string]any) bool {
		r, _ := e["kmod.guard_reason"].(string)
		return e["kmod.syscall"] == "guard" && e["kmod.verdict"] == "none" && strings.HasPrefix(r, "override: ") && strings.Contains(r, linkRef)
	}
	evts := falcoLoop(t, p, inst, time.Minute, func(evts []map[string]any) bool {
		return slices.ContainsFunc(evts, isOverride)
	})
	for _, e := range evts {
		if isOverride(e) {
			t.Logf("Falco event: syscall=%v verdict=%v reason=%v", e["kmod.syscall"], e["kmod.verdict"], e["kmod.guard_reason"])
		}
	}
}

// modinfoByte finds a byte of .modinfo's author= value: changing it makes
// another image that still loads (the fixture has no signature).
func modinfoByte(t *testing.T, img []byte) int {
	t.Helper()
	i := bytes.Index(img, []byte("\x00author="))
	if i < 0 {
		i = bytes.Index(img, []byte("\x00license="))
	}
	if i < 0 {
		t.Fatal("no author= or license= in .modinfo")
	}
	return i + bytes.IndexByte(img[i:], '=') + 1
}

// TestGuestFalcoTOCTOU: the init_module buffer is rewritten while the
// syscall runs, at a moment the test controls, so the kernel's copy (which
// the guard hashes) differs from the image the sensor reads, every time,
// and Falco sees kmod.toctou.
//
// The image's last page is left missing behind userfaultfd. The sensor
// cannot read it at sys_enter (BPF reads do not fault pages in) and reads
// the whole image again at sys_exit. The kernel copies the image in order
// and stops on that page: the handler then rewrites a byte of an earlier
// page, which the kernel has already copied, and only then supplies the
// last page. The kernel's copy is the original image; the sensor's read at
// exit has the rewritten byte.
func TestGuestFalcoTOCTOU(t *testing.T) {
	img := guestFixture(t, "dummy_nosig")
	off := modinfoByte(t, img)
	ps := os.Getpagesize()
	last := (len(img) - 1) / ps * ps // where the last page starts
	if off >= last {
		t.Fatalf("the modinfo byte at %d is on the image's last page (from %d): no earlier page to rewrite", off, last)
	}
	p, inst := openGuestPlugin(t, guestAllowlist(t, "dummy", img))

	buf, faults := uffdImage(t, img, off)
	if err := initModule(buf); err != nil {
		t.Fatalf("init_module: %v", err)
	}
	deleteModule(t, "dummy")
	if n := faults.Load(); n != 1 {
		t.Fatalf("the kernel faulted on the held page %d times, want once", n)
	}
	if buf[off] == img[off] {
		t.Fatal("the handler did not rewrite the buffer")
	}

	evts := falcoLoop(t, p, inst, time.Minute, func(evts []map[string]any) bool {
		for _, e := range evts {
			if e["kmod.syscall"] == "init_module" && e["kmod.verdict"] != nil {
				return true
			}
		}
		return false
	})
	for _, e := range evts {
		if e["kmod.syscall"] != "init_module" || e["kmod.verdict"] == nil {
			continue
		}
		t.Logf("sensor's digest %v, guard's digest %v, verdict %v, image at exit %v, toctou %v",
			e["kmod.sha256"], e["kmod.guard_sha256"], e["kmod.verdict"], e["kmod.image_at_exit"], e["kmod.toctou"])
		rewritten := bytes.Clone(img)
		rewritten[off] = buf[off]
		if e["kmod.guard_sha256"] != hexDigest(img) || e["kmod.verdict"] != "allowed" {
			t.Errorf("the guard decided %v on %v, want allowed on the original image %s", e["kmod.verdict"], e["kmod.guard_sha256"], hexDigest(img))
		}
		if e["kmod.sha256"] != hexDigest(rewritten) {
			t.Errorf("the sensor read %v, want the rewritten image %s", e["kmod.sha256"], hexDigest(rewritten))
		}
		if e["kmod.toctou"] != true {
			t.Errorf("kmod.toctou = %v, want true", e["kmod.toctou"])
		}
		return
	}
	t.Fatalf("no joined init_module event in %d events", len(evts))
}

// userfaultfd(2) ABI (include/uapi/linux/userfaultfd.h), the same on amd64
// and arm64.
const (
	uffdAPI            = 0xaa
	uffdioAPI          = 0xc018aa3f // _IOWR(0xaa, 0x3f, struct uffdio_api)
	uffdioRegister     = 0xc020aa00 // _IOWR(0xaa, 0x00, struct uffdio_register)
	uffdioCopy         = 0xc028aa03 // _IOWR(0xaa, 0x03, struct uffdio_copy)
	uffdRegisterMiss   = 1
	uffdEventPagefault = 0x12
	uffdMsgSize        = 32
)

// uffdImage returns img in fresh anonymous memory whose last page is
// missing and held by userfaultfd. At the first fault on it, a handler
// flips the case of img[off], then supplies the page; faults counts the
// faults handled. Everything is undone at the test's end.
func uffdImage(t *testing.T, img []byte, off int) ([]byte, *atomic.Int32) {
	t.Helper()
	ps := os.Getpagesize()
	size := (len(img) + ps - 1) / ps * ps
	last := size - ps
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	copy(mem[:last], img[:last]) // every page but the last is resident
	page := make([]byte, ps)
	copy(page, img[last:])

	fd, _, errno := unix.Syscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC|unix.O_NONBLOCK, 0, 0)
	if errno != 0 {
		t.Fatalf("userfaultfd: %v (needs CONFIG_USERFAULTFD)", errno)
	}
	uffd := int(fd)
	t.Cleanup(func() { unix.Close(uffd) })
	ioctl := func(req uintptr, arg unsafe.Pointer) error {
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(uffd), req, uintptr(arg)); e != 0 {
			return e
		}
		return nil
	}
	api := [3]uint64{uffdAPI, 0, 0}
	if err := ioctl(uffdioAPI, unsafe.Pointer(&api)); err != nil {
		t.Fatalf("UFFDIO_API: %v", err)
	}
	reg := [4]uint64{uint64(uintptr(unsafe.Pointer(&mem[last]))), uint64(ps), uffdRegisterMiss, 0}
	if err := ioctl(uffdioRegister, unsafe.Pointer(&reg)); err != nil {
		t.Fatalf("UFFDIO_REGISTER: %v", err)
	}

	faults := new(atomic.Int32)
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		msg := make([]byte, uffdMsgSize)
		for !stop.Load() {
			pfd := []unix.PollFd{{Fd: int32(uffd), Events: unix.POLLIN}}
			if n, err := unix.Poll(pfd, 50); err != nil || n == 0 {
				continue
			}
			if n, err := unix.Read(uffd, msg); err != nil || n != uffdMsgSize || msg[0] != uffdEventPagefault {
				continue
			}
			faults.Add(1)
			// The kernel has copied every page before the held one.
			mem[off] ^= 0x20
			cp := [5]uint64{uint64(uintptr(unsafe.Pointer(&mem[last]))), uint64(uintptr(unsafe.Pointer(&page[0]))), uint64(ps), 0, 0}
			if err := ioctl(uffdioCopy, unsafe.Pointer(&cp)); err != nil {
				t.Errorf("UFFDIO_COPY: %v", err)
			}
			runtime.KeepAlive(page)
		}
	}()
	t.Cleanup(func() { stop.Store(true); <-done })
	return mem[:len(img)], faults
}
