package vmtest_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/internal/vmtest"
)

// loadingModule is LOADING_MODULE of enum kernel_load_data_id.
const loadingModule = 2

// denyModuleLoads builds a BPF LSM program on kernel_load_data that counts
// every call in counts[0] and refuses module images (init_module) with
// -EPERM: the smallest guard there is.
func denyModuleLoads(counts *ebpf.Map) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1), // r6 = ctx: u64 args[] (id, contents)
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.LoadMapPtr(asm.R1, counts.FD()),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "decide"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R6, 0, asm.DWord).WithSymbol("decide"), // id
		asm.Mov.Imm(asm.R0, 0),
		asm.JNE.Imm(asm.R1, loadingModule, "out"),
		asm.Mov.Imm(asm.R0, -int32(unix.EPERM)),
		asm.Return().WithSymbol("out"),
	}
}

// TestGuestBPFLSM shows that BPF LSM works in the guest: an attached
// program denies init_module and counts the hook, and the same load
// succeeds once it is detached. A kernel without ftrace direct calls
// (Debian's arm64 6.1) loads LSM programs but cannot attach them, as it
// has no way into their BPF trampoline: there the test checks that the
// attach is refused, and says so.
func TestGuestBPFLSM(t *testing.T) {
	vmtest.RequireGuest(t)
	lsms, err := os.ReadFile("/sys/kernel/security/lsm")
	if err != nil {
		t.Fatalf("securityfs: %v", err)
	}
	if !strings.Contains(","+string(lsms)+",", ",bpf,") {
		t.Fatalf("bpf is not an active LSM: %s", lsms)
	}
	t.Logf("active LSMs: %s", lsms)

	counts, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer counts.Close()
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "deny_modules",
		Type:         ebpf.LSM,
		AttachType:   ebpf.AttachLSMMac,
		AttachTo:     "kernel_load_data",
		Instructions: denyModuleLoads(counts),
		License:      "GPL",
	})
	if err != nil {
		t.Fatalf("load LSM program: %+v", err)
	}
	defer prog.Close()

	img, err := os.ReadFile(vmtest.Fixture(t, "dummy"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := link.AttachLSM(link.LSMOptions{Program: prog})
	if vmtest.KernelConfig(t, "CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS") != "y" {
		if err == nil {
			l.Close()
			t.Fatal("an LSM program attached on a kernel without CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS")
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			t.Fatalf("attach LSM program without ftrace direct calls: %v, want not supported", err)
		}
		t.Logf("BPF LSM NOT AVAILABLE on %s (no CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS): the program loads, the attach is refused: %v", vmtest.Release(), err)
		return
	}
	if err != nil {
		t.Fatalf("attach LSM program: %v", err)
	}
	err = unix.InitModule(img, "")
	if !errors.Is(err, unix.EPERM) {
		if err == nil {
			_ = unix.DeleteModule("dummy", 0)
		}
		l.Close()
		t.Fatalf("init_module(dummy) under the LSM program = %v, want EPERM", err)
	}
	requireLoaded(t, "dummy", false)
	var n uint64
	if err := counts.Lookup(uint32(0), &n); err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Error("kernel_load_data hook count is 0 after a denied init_module")
	}
	t.Logf("kernel_load_data ran %d time(s); init_module denied with EPERM", n)

	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := unix.InitModule(img, ""); err != nil {
		t.Fatalf("init_module(dummy) after detaching: %v", err)
	}
	requireLoaded(t, "dummy", true)
	unload(t, "dummy")
}
