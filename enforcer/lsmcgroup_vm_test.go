//go:build linux

package enforcer_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/enforcer"
	"github.com/kmodguard/kmodguard/internal/vmtest"
	"github.com/kmodguard/kmodguard/lsm"
)

// The attacker's programs of issue 11 item 2: BPF_LSM_CGROUP programs,
// which decide a hook for the tasks of a cgroup and set the hook's return
// value with bpf_set_retval, and BPF_PROG_TYPE_EXT (freplace) programs,
// which replace a global function of a program already loaded.

const cgroupRoot = "/sys/fs/cgroup"

// loadCgroupOverride loads a BPF_LSM_CGROUP program on hook that sets the
// hook's return value to its argument arg (kernel_post_read_file: 2, the
// file's size) and returns 1 (keep that value).
func loadCgroupOverride(hook string, arg int16) (*ebpf.Program, error) {
	p, err := loadLSMCgroup(hook, asm.Instructions{
		asm.LoadMem(asm.R1, asm.R1, arg*8, asm.DWord),
		asm.FnSetRetval.Call(),
		asm.Mov.Imm(asm.R0, 1),
		asm.Return(),
	})
	if err != nil {
		return nil, fmt.Errorf("load lsm_cgroup on %s: %w", hook, err)
	}
	return p, nil
}

// loadLSMCgroup loads insns as a BPF_LSM_CGROUP program on hook with a
// BPF_PROG_LOAD of its own: cilium/ebpf resolves the hook only for
// BPF_LSM_MAC.
func loadLSMCgroup(hook string, insns asm.Instructions) (*ebpf.Program, error) {
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, err
	}
	var fn *btf.Func
	if err := kernel.TypeByName("bpf_lsm_"+hook, &fn); err != nil {
		return nil, err
	}
	id, err := kernel.TypeID(fn)
	if err != nil {
		return nil, err
	}
	var code bytes.Buffer
	if err := insns.Marshal(&code, binary.LittleEndian); err != nil {
		return nil, err
	}
	const bpfProgTypeLSM, bpfLSMCgroup = 29, 43
	license := []byte("GPL\x00")
	logBuf := make([]byte, 1<<16)
	var attr [128]byte
	le := binary.LittleEndian
	le.PutUint32(attr[0:], bpfProgTypeLSM)
	le.PutUint32(attr[4:], uint32(code.Len()/asm.InstructionSize))
	le.PutUint64(attr[8:], uint64(uintptr(unsafe.Pointer(&code.Bytes()[0]))))
	le.PutUint64(attr[16:], uint64(uintptr(unsafe.Pointer(&license[0]))))
	le.PutUint32(attr[24:], 1)
	le.PutUint32(attr[28:], uint32(len(logBuf)))
	le.PutUint64(attr[32:], uint64(uintptr(unsafe.Pointer(&logBuf[0]))))
	copy(attr[48:64], "kgtest_lsmcg")
	le.PutUint32(attr[68:], bpfLSMCgroup)
	le.PutUint32(attr[108:], uint32(id))
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr[0])), unsafe.Sizeof(attr))
	runtime.KeepAlive(code.Bytes())
	runtime.KeepAlive(license)
	if errno != 0 {
		lines := strings.Split(strings.TrimSpace(string(bytes.TrimRight(logBuf, "\x00"))), "\n")
		if len(lines) > 4 {
			lines = lines[len(lines)-4:]
		}
		return nil, fmt.Errorf("BPF_PROG_LOAD: %w (verifier: %s)", errno, strings.Join(lines, " | "))
	}
	return ebpf.NewProgramFromFD(int(fd))
}

// loadCgroupAttack is loadCgroupOverride where the kernel takes it. Where
// its verifier refuses the value set (checked true), it loads a program
// that only returns 1 (the hook's value left alone) instead: the seal must
// refuse that one too, but it overrides nothing.
func loadCgroupAttack(t *testing.T, hook string, arg int16) (p *ebpf.Program, checked bool, err error) {
	t.Helper()
	p, err = loadCgroupOverride(hook, arg)
	var errno unix.Errno
	if err == nil || !errors.As(err, &errno) || errno != unix.EINVAL {
		return p, false, err
	}
	t.Logf("lsm_cgroup/%s setting the return value: refused by this kernel's verifier: %v", hook, err)
	p, err = loadLSMCgroup(hook, asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()})
	return p, true, err
}

// attachCgroupProg attaches p to the root cgroup with BPF_PROG_ATTACH and
// returns its detach.
func attachCgroupProg(p *ebpf.Program) (func(), error) {
	cg, err := os.Open(cgroupRoot)
	if err != nil {
		return nil, err
	}
	defer cg.Close()
	opts := link.RawAttachProgramOptions{Target: int(cg.Fd()), Program: p, Attach: ebpf.AttachLSMCgroup, Flags: unix.BPF_F_ALLOW_MULTI}
	if err := link.RawAttachProgram(opts); err != nil {
		return nil, err
	}
	return func() {
		cg, err := os.Open(cgroupRoot)
		if err != nil {
			return
		}
		defer cg.Close()
		link.RawDetachProgram(link.RawDetachProgramOptions{Target: int(cg.Fd()), Program: p, Attach: ebpf.AttachLSMCgroup})
	}, nil
}

// linkCgroupProg attaches p to the root cgroup with BPF_LINK_CREATE.
func linkCgroupProg(p *ebpf.Program) (link.Link, error) {
	cg, err := os.Open(cgroupRoot)
	if err != nil {
		return nil, err
	}
	defer cg.Close()
	return link.AttachRawLink(link.RawLinkOptions{Target: int(cg.Fd()), Program: p, Attach: ebpf.AttachLSMCgroup})
}

var (
	btfInt = &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	btfU64 = &btf.Int{Name: "unsigned long long", Size: 8}
)

// loadFreplace loads an extension of fn in target that returns 0 (for a
// guard program: "allowed"). proto is fn's prototype.
func loadFreplace(target *ebpf.Program, fn string, proto *btf.FuncProto) (*ebpf.Program, error) {
	meta := &btf.Func{Name: "kgtest_freplace", Type: proto, Linkage: btf.GlobalFunc}
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "kgtest_freplace", Type: ebpf.Extension, AttachTarget: target, AttachTo: fn, License: "GPL",
		Instructions: asm.Instructions{btf.WithFuncMetadata(asm.Mov.Imm(asm.R0, 0), meta), asm.Return()},
	})
	if err != nil {
		return nil, fmt.Errorf("load freplace of %s: %w", fn, err)
	}
	return p, nil
}

// guardProtoCtx is the prototype of the guard's programs: int f(__u64 *ctx).
var guardProtoCtx = &btf.FuncProto{Return: btfInt, Params: []btf.FuncParam{{Name: "ctx", Type: &btf.Pointer{Target: btfU64}}}}

// subProto is the prototype of loadLSMWithSub's global function: int f(int).
var subProto = &btf.FuncProto{Return: btfInt, Params: []btf.FuncParam{{Name: "x", Type: btfInt}}}

// loadLSMWithSub loads an LSM program on hook (returning 0) that calls a
// global function kgtest_sub(int): what an extension can replace, unlike
// the guard's programs, whose only global functions are their entries.
func loadLSMWithSub(hook string) (*ebpf.Program, error) {
	main := &btf.Func{Name: "kgtest_lsm", Linkage: btf.GlobalFunc,
		Type: &btf.FuncProto{Return: btfInt, Params: []btf.FuncParam{{Name: "ctx", Type: &btf.Pointer{Target: btfU64}}}}}
	sub := &btf.Func{Name: "kgtest_sub", Linkage: btf.GlobalFunc, Type: subProto}
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "kgtest_lsm", Type: ebpf.LSM, AttachType: ebpf.AttachLSMMac, AttachTo: hook, License: "GPL",
		Instructions: asm.Instructions{
			btf.WithFuncMetadata(asm.Mov.Imm(asm.R1, 0), main),
			asm.Call.Label("kgtest_sub"),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
			btf.WithFuncMetadata(asm.Mov.Imm(asm.R0, 0).WithSymbol("kgtest_sub"), sub),
			asm.Return(),
		},
	})
	if err != nil {
		return nil, fmt.Errorf("load LSM program with a global function on %s: %w", hook, err)
	}
	return p, nil
}

// guardProgram opens the guard's program behind the pinned link of hook.
func guardProgram(t *testing.T, pins, prog string) *ebpf.Program {
	t.Helper()
	l, err := link.LoadPinnedLink(filepath.Join(pins, "link_"+prog), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	li, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	p, err := ebpf.NewProgramFromID(li.Program)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// vethThrough loads veth through finit_module and says whether it loaded
// (unloading it then), and why not.
func vethThrough(t *testing.T) (bool, error) {
	t.Helper()
	err := finitModule(t, vmtest.Fixture(t, "veth"), 0)
	if loaded("veth") {
		unload(t, "veth")
		return true, err
	}
	return false, err
}

// vethInitThrough is vethThrough with init_module.
func vethInitThrough(t *testing.T, img []byte) (bool, error) {
	t.Helper()
	err := initModule(img)
	if loaded("veth") {
		unload(t, "veth")
		return true, err
	}
	return false, err
}

// cgroupHeld is what cgroupOverridesBeforeSeal keeps for after the seal.
type cgroupHeld struct {
	lsmcg     *ebpf.Program // lsm_cgroup on kernel_post_read_file, not attached
	checked   bool          // this kernel's verifier refuses the value lsmcg would set
	attached  func()        // detach of one attached to the root cgroup before the seal
	attProg   uint32        // its program id
	guardProg *ebpf.Program // the guard's kg_post_read_file
	withSub   *ebpf.Program // an LSM program with a global function (file_open)
	ext       *ebpf.Program // an extension of withSub's kgtest_sub, not attached
}

func (h *cgroupHeld) close() {
	for _, p := range []*ebpf.Program{h.lsmcg, h.guardProg, h.withSub, h.ext} {
		if p != nil {
			p.Close()
		}
	}
	if h.attached != nil {
		h.attached()
	}
}

// wantOverride checks that Status names the program prog as an override
// of kind kind (and its link, when not 0).
func wantOverride(t *testing.T, enf *enforcer.Enforcer, kind string, prog, linkID uint32) {
	t.Helper()
	st, err := enf.Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range st.Overrides {
		if o.Kind == kind && o.ProgID == prog && o.LinkID == linkID {
			t.Logf("  found by the enforcer: %s", o)
			return
		}
	}
	t.Errorf("status overrides %+v (%s): want %s program %d (link %d)", st.Overrides, st.OverridesError, kind, prog, linkID)
}

// noOverride checks that Status does not name the program prog.
func noOverride(t *testing.T, enf *enforcer.Enforcer, prog uint32) {
	t.Helper()
	st, err := enf.Status()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range st.Overrides {
		if o.ProgID == prog {
			t.Errorf("status names %s: it cannot override the guard on this kernel", o)
		}
	}
}

func progID(t *testing.T, p *ebpf.Program) uint32 {
	t.Helper()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, _ := info.ID()
	return uint32(id)
}

// cgroupOverridesBeforeSeal runs the attacks of issue 11 item 2 against an
// unsealed guard, which cannot refuse them (root may stop it anyway), to
// show what each does and that the enforcer finds it:
//
//   - an lsm_cgroup program on kernel_post_read_file that sets the return
//     value to the file's size, attached to the root cgroup with
//     BPF_PROG_ATTACH and with BPF_LINK_CREATE: does veth load through
//     finit_module?
//   - the same on kernel_post_load_data (init_module): a positive return
//     there is the syscall's, and no module loads;
//   - freplace of the guard's own kg_post_read_file.
//
// It returns what the sealed part tries to use after the seal.
func cgroupOverridesBeforeSeal(t *testing.T, enf *enforcer.Enforcer, pins string, veth []byte) *cgroupHeld {
	t.Helper()
	h := &cgroupHeld{}
	p, checked, err := loadCgroupAttack(t, "kernel_post_read_file", 2)
	h.checked = checked
	if err != nil {
		t.Fatalf("%v (kernels from 6.0 have lsm_cgroup)", err)
	}
	h.lsmcg = p
	// BPF_PROG_ATTACH.
	detach, err := attachCgroupProg(p)
	if err != nil {
		t.Fatalf("BPF_PROG_ATTACH of lsm_cgroup/kernel_post_read_file to %s: %v", cgroupRoot, err)
	}
	through, err := vethThrough(t)
	t.Logf("lsm_cgroup/kernel_post_read_file (retval = size), BPF_PROG_ATTACH to the root cgroup: finit_module(unlisted veth) loaded=%v err=%v", through, errText(err))
	if !through {
		next(t, enf, lsm.OpFinitModule)
	}
	if through == h.checked {
		t.Errorf("veth loaded=%v under an lsm_cgroup program, with the set value refused by the verifier=%v: the attack should get through exactly where the kernel takes it", through, h.checked)
	}
	if !h.checked {
		wantOverride(t, enf, "lsm_cgroup", progID(t, p), 0)
	} else {
		noOverride(t, enf, progID(t, p))
	}
	detach()
	// BPF_LINK_CREATE.
	l, err := linkCgroupProg(p)
	if err != nil {
		t.Fatalf("BPF_LINK_CREATE of lsm_cgroup/kernel_post_read_file on %s: %v", cgroupRoot, err)
	}
	through, err = vethThrough(t)
	t.Logf("lsm_cgroup/kernel_post_read_file (retval = size), BPF_LINK_CREATE on the root cgroup: finit_module(unlisted veth) loaded=%v err=%v", through, errText(err))
	if !through {
		next(t, enf, lsm.OpFinitModule)
	}
	li, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	if !h.checked {
		wantOverride(t, enf, "lsm_cgroup", progID(t, p), uint32(li.ID))
	} else {
		noOverride(t, enf, progID(t, p))
	}
	l.Close()

	// init_module: kernel_post_load_data's size is its second argument.
	pl, _, err := loadCgroupAttack(t, "kernel_post_load_data", 1)
	if err != nil {
		t.Fatal(err)
	}
	detach, err = attachCgroupProg(pl)
	if err != nil {
		t.Fatal(err)
	}
	through, err = vethInitThrough(t, veth)
	t.Logf("lsm_cgroup/kernel_post_load_data (retval = size), BPF_PROG_ATTACH: init_module(unlisted veth) loaded=%v err=%v", through, errText(err))
	if through {
		t.Errorf("init_module(veth) loaded under lsm_cgroup/kernel_post_load_data")
	}
	detach()
	pl.Close()

	// freplace of the guard's own program.
	h.guardProg = guardProgram(t, pins, "kg_post_read_file")
	ext, err := loadFreplace(h.guardProg, "kg_post_read_file", guardProtoCtx)
	if err != nil {
		t.Logf("freplace of the guard's kg_post_read_file: refused by the kernel: %v", err)
	} else {
		fl, err := link.AttachFreplace(h.guardProg, "kg_post_read_file", ext)
		if err != nil {
			t.Logf("freplace of the guard's kg_post_read_file: loaded, attach refused by the kernel: %v", err)
		} else {
			through, err := vethThrough(t)
			t.Errorf("freplace of the guard's kg_post_read_file attached: finit_module(unlisted veth) loaded=%v err=%v", through, errText(err))
			fl.Close()
		}
		ext.Close()
	}
	// What an extension can replace: a global function of an LSM program.
	h.withSub, err = loadLSMWithSub("file_open")
	if err != nil {
		t.Fatal(err)
	}
	h.ext, err = loadFreplace(h.withSub, "kgtest_sub", subProto)
	if err != nil {
		t.Fatalf("freplace of an LSM program's global function before the seal: %v", err)
	}
	t.Logf("freplace of an LSM program's global function: loads before the seal")

	// One attached before the seal, to be found under it.
	h.attached, err = attachCgroupProg(p)
	if err != nil {
		t.Fatal(err)
	}
	h.attProg = progID(t, p)
	return h
}

// cgroupOverridesSealed runs them against the sealed guard: each must be
// refused, and the one attached before the seal found. Where the kernel's
// verifier keeps the value an lsm_cgroup program sets to the hook's
// values (h.checked), such programs cannot override the guard: the seal
// leaves the hooks open to them, and veth stays refused with one attached.
func cgroupOverridesSealed(t *testing.T, enf *enforcer.Enforcer, h *cgroupHeld, refused func(string, lsm.Op, error)) {
	t.Helper()
	if !h.checked {
		wantOverride(t, enf, "lsm_cgroup", h.attProg, 0)
	} else {
		noOverride(t, enf, h.attProg)
	}
	h.attached()
	h.attached = nil
	if through, err := vethThrough(t); through {
		t.Fatalf("veth loaded (%v) once the lsm_cgroup program attached before the seal was detached", errText(err))
	}
	next(t, enf, lsm.OpFinitModule)

	// attempt checks one way to attach an lsm_cgroup program on
	// kernel_post_read_file under the seal: err is the load's or the
	// attach's, detach undoes it.
	attempt := func(what string, detach func(), err error) {
		t.Helper()
		switch {
		case err != nil && h.checked:
			t.Errorf("%s under the seal: %v; want it allowed (this kernel checks the value such a program sets)", what, err)
		case err != nil:
			refused(what, lsm.OpBPF, err)
		default:
			through, verr := vethThrough(t)
			detach()
			if !through {
				next(t, enf, lsm.OpFinitModule)
			}
			if h.checked && !through {
				t.Logf("%s under the seal: allowed (the verifier checks the value it sets); veth still refused: %v", what, errText(verr))
				return
			}
			t.Errorf("%s under the seal: attached; finit_module(unlisted veth) loaded=%v err=%v", what, through, errText(verr))
		}
	}
	// A new one, attached to the root cgroup with BPF_PROG_ATTACH.
	p, _, err := loadCgroupAttack(t, "kernel_post_read_file", 2)
	if err == nil {
		detach, err := attachCgroupProg(p)
		attempt("lsm_cgroup program on kernel_post_read_file, loaded and attached", func() { detach(); p.Close() }, err)
		if err != nil {
			p.Close()
		}
	} else {
		attempt("lsm_cgroup program on kernel_post_read_file", nil, err)
	}
	// The one loaded before the seal: BPF_PROG_ATTACH, BPF_LINK_CREATE.
	detach, err := attachCgroupProg(h.lsmcg)
	attempt("BPF_PROG_ATTACH of an lsm_cgroup program loaded before the seal", detach, err)
	l, err := linkCgroupProg(h.lsmcg)
	attempt("BPF_LINK_CREATE of an lsm_cgroup program loaded before the seal", func() { l.Close() }, err)
	// On a hook the guard does not depend on, lsm_cgroup still loads.
	if p, err := loadLSMCgroup("file_open", asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()}); err != nil {
		t.Errorf("lsm_cgroup on file_open under the seal: %v (only the guard's hooks are refused)", err)
	} else {
		p.Close()
	}

	// freplace: with the guard's program (its descriptor from before the
	// seal) as the target, and of an LSM program's global function.
	switch ext, err := loadFreplace(h.guardProg, "kg_post_read_file", guardProtoCtx); {
	case err == nil:
		ext.Close()
		t.Errorf("freplace of the guard's kg_post_read_file loaded under the seal")
	case errors.Is(err, unix.EPERM):
		refused("freplace of the guard's kg_post_read_file", lsm.OpBPF, err)
	default:
		t.Logf("freplace of the guard's kg_post_read_file under the seal: refused by the kernel: %v", err)
	}
	ext, err := loadFreplace(h.withSub, "kgtest_sub", subProto)
	if err == nil {
		ext.Close()
		t.Errorf("freplace of an LSM program's global function loaded under the seal")
	} else {
		refused("freplace of an LSM program's global function", lsm.OpBPF, err)
	}
	// To the target it was loaded for first: the kernel forgets that one
	// at the first attach.
	fl, err := link.AttachFreplace(nil, "", h.ext)
	if err == nil {
		fl.Close()
		t.Errorf("freplace of an LSM program's global function, loaded before the seal, attached under it (to its load target)")
	} else {
		refused("attach of a freplace of an LSM program loaded before the seal, to its load target", lsm.OpBPF, err)
	}
	fl, err = link.AttachFreplace(h.withSub, "kgtest_sub", h.ext)
	if err == nil {
		fl.Close()
		t.Errorf("freplace of an LSM program's global function, loaded before the seal, attached under it (target named)")
	} else {
		refused("attach of a freplace of an LSM program loaded before the seal, target named", lsm.OpBPF, err)
	}
}
