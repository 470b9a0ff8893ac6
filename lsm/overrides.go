//go:build linux

package lsm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Override is someone else's BPF program attached where it can decide a
// hook the guard relies on before the guard does, and skip it:
//
//   - an fmod_ret program on the hook's security_ function: any non-zero
//     return skips every LSM, and a positive one from
//     security_kernel_post_read_file is taken for the file's length, so
//     the load goes on;
//   - an LSM program on one of the hooks where a positive return skips
//     the guard (overrideHooks), on a kernel that lets LSM programs
//     return any value (before 6.12): programs on one hook run newest
//     first, and the first non-zero return ends the hook;
//   - a BPF_LSM_CGROUP program on one of those hooks, attached to a cgroup
//     (with or without a link), on a kernel that does not check the value
//     it sets with bpf_set_retval, the hook's return (6.1 and 6.12; 7.2
//     does): it runs for the cgroup's tasks, before the guard when
//     attached after it;
//   - an extension (freplace) of one of the guard's own programs.
//
// The seal refuses new ones; Overrides finds those attached before it (or
// before the guard started).
type Override struct {
	// Kind is "fmod_ret", "lsm", "lsm_cgroup" or "freplace".
	Kind string `json:"kind"`
	// Target is the kernel function, e.g. security_kernel_post_read_file
	// or bpf_lsm_kernel_post_read_file; for freplace, the guard's program
	// replaced. Empty for an lsm_cgroup program whose hook cannot be read:
	// on a sealed guard a descriptor to it is refused, and a process that
	// did not see it before the seal cannot tell its hook.
	Target string `json:"target"`
	// LinkID is 0 for a program attached to a cgroup without a link
	// (BPF_PROG_ATTACH).
	LinkID uint32 `json:"link_id"`
	ProgID uint32 `json:"prog_id"`
	// ProgName is empty on a sealed guard: the seal refuses a descriptor
	// to such a program to everyone, this process included, and each try
	// would be reported as tampering.
	ProgName string `json:"prog_name,omitempty"`
	// Cgroup is the path of the cgroup an lsm_cgroup program is attached
	// to.
	Cgroup string `json:"cgroup,omitempty"`
}

func (o Override) String() string {
	target := o.Target
	if target == "" {
		target = "an LSM hook it hides under the seal"
	}
	where := fmt.Sprintf("link %d", o.LinkID)
	if o.LinkID == 0 {
		where = "no link"
	}
	if o.Cgroup != "" {
		where += ", cgroup " + o.Cgroup
	}
	return fmt.Sprintf("%s program %d (%q, %s) on %s", o.Kind, o.ProgID, o.ProgName, where, target)
}

// guardedTargets is the set of security_ functions that call the guard's
// hooks, from the guard object's own attach points.
var guardedTargets = sync.OnceValues(func() (map[string]bool, error) {
	spec, err := loadGuard()
	if err != nil {
		return nil, fmt.Errorf("read guard object: %w", err)
	}
	out := map[string]bool{}
	for _, name := range hooks {
		p := spec.Programs[name]
		if p == nil || p.AttachTo == "" {
			return nil, fmt.Errorf("guard object: program %s has no attach point", name)
		}
		out["security_"+p.AttachTo] = true
	}
	return out, nil
})

// lsmReturnsChecked reports whether this kernel's verifier keeps BPF LSM
// programs to the hook's return values (from 6.12: [-MAX_ERRNO, 0] for the
// hooks the guard uses), so that another LSM program can only refuse more.
// It asks the verifier for a program that returns 1, on file_open, a hook
// the seal leaves open (on one of overrideHooks a sealed guard would
// refuse it, and report the refusal). Only the verifier's own range error
// answers true: any other outcome answers false, the side that protects.
var lsmReturnsChecked = sync.OnceValue(func() bool {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.LSM, AttachType: ebpf.AttachLSMMac, AttachTo: "file_open", License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 1), asm.Return()},
	})
	if err == nil {
		p.Close()
		return false
	}
	var ve *ebpf.VerifierError
	return errors.As(err, &ve) && strings.Contains(err.Error(), "should have been in")
})

// cgroupRetvalChecked reports whether this kernel's verifier keeps the
// value a BPF_LSM_CGROUP program sets with bpf_set_retval to the hook's
// return values ([-MAX_ERRNO, 0] for the guard's hooks; 7.2 does, 6.1 and
// 6.12 do not), so that such a program can only refuse more. It asks the
// verifier for one that sets 1, on file_open (a hook the seal leaves open).
// Only the verifier's own range error answers true.
var cgroupRetvalChecked = sync.OnceValue(func() bool {
	fd, log, err := loadLSMCgroup("file_open", asm.Instructions{
		asm.Mov.Imm(asm.R1, 1),
		asm.FnSetRetval.Call(),
		asm.Mov.Imm(asm.R0, 1),
		asm.Return(),
	})
	if err == nil {
		unix.Close(fd)
		return false
	}
	return strings.Contains(log, "should have been in")
})

// loadLSMCgroup loads insns as a BPF_LSM_CGROUP program on hook and
// returns its fd, or the verifier's log with the error (cilium/ebpf
// resolves the hook of BPF_LSM_MAC programs only).
func loadLSMCgroup(hook string, insns asm.Instructions) (int, string, error) {
	ids, err := hookBTFIDs([]string{hook})
	if err != nil {
		return -1, "", err
	}
	var code bytes.Buffer
	if err := insns.Marshal(&code, binary.LittleEndian); err != nil {
		return -1, "", err
	}
	const progTypeLSM = 29
	license := []byte("GPL\x00")
	logBuf := make([]byte, 4096)
	attr := struct {
		progType, insnCnt            uint32
		insns, license               uint64
		logLevel, logSize            uint32
		logBuf                       uint64
		kernVersion, progFlags       uint32
		name                         [16]byte
		ifindex, expectedAttachType  uint32
		btfFD, funcInfoRecSize       uint32
		funcInfo                     uint64
		funcInfoCnt, lineInfoRecSize uint32
		lineInfo                     uint64
		lineInfoCnt, attachBTFID     uint32
	}{
		progType: progTypeLSM, insnCnt: uint32(code.Len() / asm.InstructionSize),
		insns:    uint64(uintptr(unsafe.Pointer(&code.Bytes()[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
		logLevel: 1, logSize: uint32(len(logBuf)), logBuf: uint64(uintptr(unsafe.Pointer(&logBuf[0]))),
		expectedAttachType: uint32(ebpf.AttachLSMCgroup), attachBTFID: uint32(ids[0]),
	}
	copy(attr.name[:], "kg_probe")
	fd, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(code.Bytes())
	runtime.KeepAlive(license)
	runtime.KeepAlive(logBuf)
	if errno != 0 {
		return -1, string(bytes.TrimRight(logBuf, "\x00")), fmt.Errorf("load lsm_cgroup on %s: %w", hook, errno)
	}
	return int(fd), "", nil
}

// Overrides lists someone else's programs that can decide a hook the guard
// relies on before it does (see [Override]), in link id order (those
// without a link first). It needs CAP_SYS_ADMIN (to open links by id).
func (g *Guard) Overrides() ([]Override, error) {
	g.mu.Lock()
	own := ownObjects{links: map[uint32]bool{}, progs: map[uint32]string{}}
	for name, l := range g.links {
		if info, err := l.Info(); err == nil {
			own.links[uint32(info.ID)] = true
			own.progs[uint32(info.Program)] = name
		}
	}
	sealed, err := g.sealedLocked()
	g.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return findOverrides(own, !sealed)
}

// ownObjects are the guard's links (by id) and programs (id -> name).
type ownObjects struct {
	links map[uint32]bool
	progs map[uint32]string
}

// findOverrides is Overrides, the guard's own links excepted; names says
// whether to open each program for its name (not on a sealed guard).
func findOverrides(own ownObjects, names bool) ([]Override, error) {
	targets, err := guardedTargets()
	if err != nil {
		return nil, err
	}
	lsmTargets := map[string]bool{}
	for _, h := range overrideHooks {
		lsmTargets["bpf_lsm_"+h] = true
	}
	var (
		out     []Override
		kernel  *btf.Spec
		cgLinks = map[cgroupProg]uint32{}
	)
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		info, err := it.Link.Info()
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				continue // detached meanwhile
			}
			return nil, fmt.Errorf("link %d: %w", it.ID, err)
		}
		if cg := info.Cgroup(); cg != nil {
			if ebpf.AttachType(cg.AttachType) == ebpf.AttachLSMCgroup {
				cgLinks[cgroupProg{cg.CgroupId, uint32(info.Program)}] = uint32(it.ID)
			}
			continue
		}
		tr := info.Tracing()
		if tr == nil || own.links[uint32(it.ID)] {
			continue
		}
		kind := ""
		switch ebpf.AttachType(tr.AttachType) {
		case ebpf.AttachModifyReturn:
			kind = "fmod_ret"
		case ebpf.AttachLSMMac:
			kind = "lsm"
		default:
			continue
		}
		// An extension takes its target's attach type, and its target
		// object is that program (by id), not a BTF object.
		target, err := vmlinuxFunc(&kernel, tr.TargetObjectId, btf.TypeID(tr.TargetBtfId))
		if err != nil && kind == "lsm" && own.progs[tr.TargetObjectId] != "" {
			target, err = "", nil
		}
		if err != nil {
			return nil, fmt.Errorf("link %d: %w", it.ID, err)
		}
		switch {
		case kind == "fmod_ret" && targets[target]:
		case kind == "lsm" && lsmTargets[target] && !lsmReturnsChecked():
		case kind == "lsm" && !strings.HasPrefix(target, "bpf_lsm_") && own.progs[tr.TargetObjectId] != "":
			kind, target = "freplace", fmt.Sprintf("%s (guard program %d)", own.progs[tr.TargetObjectId], tr.TargetObjectId)
		default:
			continue
		}
		o := Override{Kind: kind, Target: target, LinkID: uint32(it.ID), ProgID: uint32(info.Program)}
		if names {
			o.ProgName = progName(info.Program)
		}
		out = append(out, o)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list BPF links: %w", err)
	}
	cg, err := cgroupOverrides(&kernel, lsmTargets, cgLinks, names)
	if err != nil {
		return nil, err
	}
	out = append(out, cg...)
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.LinkID != b.LinkID {
			return a.LinkID < b.LinkID
		}
		if a.ProgID != b.ProgID {
			return a.ProgID < b.ProgID
		}
		return a.Cgroup < b.Cgroup
	})
	return out, nil
}

func progName(id ebpf.ProgramID) string {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return ""
	}
	defer p.Close()
	if pi, err := p.Info(); err == nil {
		return pi.Name
	}
	return ""
}

// cgroupProg is an lsm_cgroup program on a cgroup (by id: its inode).
type cgroupProg struct {
	cgroup uint64
	prog   uint32
}

// cgroupHooks caches the hook of each lsm_cgroup program seen (program id
// -> bpf_lsm_ function): a sealed guard refuses a descriptor to those on
// overrideHooks, so a process learns their hook only before the seal.
var cgroupHooks sync.Map

// cgroupOverrides walks the cgroup2 hierarchy and lists the BPF_LSM_CGROUP
// programs attached to each cgroup (BPF_PROG_QUERY, with or without a
// link: cgLinks names the links) whose hook is one of lsmTargets, or
// cannot be read.
func cgroupOverrides(kernel **btf.Spec, lsmTargets map[string]bool, cgLinks map[cgroupProg]uint32, names bool) ([]Override, error) {
	root := cgroup2Root()
	if root == "" {
		return nil, nil
	}
	var out []Override
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == root {
				return err
			}
			return nil // gone meanwhile, or not ours to read
		}
		if !d.IsDir() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return nil
		}
		defer f.Close()
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			return nil
		}
		progs, err := queryLSMCgroup(int(f.Fd()))
		if err != nil {
			if path == root && errors.Is(err, unix.EINVAL) {
				return filepath.SkipAll // no lsm_cgroup on this kernel (before 6.0)
			}
			if errors.Is(err, unix.ENOENT) {
				return nil // removed meanwhile
			}
			return fmt.Errorf("query lsm_cgroup programs of %s: %w", path, err)
		}
		for _, id := range progs {
			target := cgroupHook(kernel, ebpf.ProgramID(id), names)
			if (target != "" && !lsmTargets[target]) || cgroupRetvalChecked() {
				continue
			}
			o := Override{Kind: "lsm_cgroup", Target: target, ProgID: id, Cgroup: path,
				LinkID: cgLinks[cgroupProg{st.Ino, id}]}
			if names && target != "" {
				o.ProgName = progName(ebpf.ProgramID(id))
			}
			out = append(out, o)
		}
		return nil
	})
	return out, err
}

// queryLSMCgroup lists the BPF_LSM_CGROUP programs attached to the cgroup
// open as fd (not those inherited), with or without a link. For this
// attach type the kernel wants a buffer for the programs' attach flags
// too, which cilium/ebpf's QueryPrograms does not pass.
func queryLSMCgroup(fd int) ([]uint32, error) {
	var attr struct {
		target, attachType, queryFlags, attachFlags uint32
		progIDs                                     uint64
		progCnt, _                                  uint32
		progAttachFlags                             uint64
	}
	for n := 0; ; {
		var ids, flags []uint32
		attr.target, attr.attachType = uint32(fd), uint32(ebpf.AttachLSMCgroup)
		attr.progCnt, attr.progIDs, attr.progAttachFlags = uint32(n), 0, 0
		if n > 0 {
			ids, flags = make([]uint32, n), make([]uint32, n)
			attr.progIDs = uint64(uintptr(unsafe.Pointer(&ids[0])))
			attr.progAttachFlags = uint64(uintptr(unsafe.Pointer(&flags[0])))
		}
		_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_PROG_QUERY, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
		runtime.KeepAlive(ids)
		runtime.KeepAlive(flags)
		switch {
		case errno == unix.ENOSPC:
			n = int(attr.progCnt) + 4 // attached meanwhile
			continue
		case errno != 0:
			return nil, errno
		case n == 0 && attr.progCnt == 0:
			return nil, nil
		case n == 0:
			n = int(attr.progCnt) + 4
			continue
		}
		return ids[:attr.progCnt], nil
	}
}

// cgroupHook is the bpf_lsm_ function an lsm_cgroup program attaches to,
// from its attach_btf_id, or "" when it cannot be read (sealed, and not
// seen before).
func cgroupHook(kernel **btf.Spec, id ebpf.ProgramID, open bool) string {
	if h, ok := cgroupHooks.Load(id); ok {
		return h.(string)
	}
	if !open {
		return ""
	}
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return ""
	}
	defer p.Close()
	btfID, err := attachBTFID(p)
	if err != nil {
		return ""
	}
	name, err := vmlinuxFunc(kernel, 0, btf.TypeID(btfID))
	if err != nil || name == "" {
		return ""
	}
	cgroupHooks.Store(id, name)
	return name
}

// attachBTFID reads a program's attach_btf_id (struct bpf_prog_info, from
// 6.0 at offset 224), which cilium/ebpf's ProgramInfo does not carry.
func attachBTFID(p *ebpf.Program) (uint32, error) {
	var info [232]byte
	attr := struct {
		fd   uint32
		len  uint32
		info uint64
	}{uint32(p.FD()), uint32(len(info)), uint64(uintptr(unsafe.Pointer(&info[0])))}
	_, _, errno := unix.Syscall(unix.SYS_BPF, unix.BPF_OBJ_GET_INFO_BY_FD, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(p)
	if errno != 0 {
		return 0, errno
	}
	if attr.len < 228 {
		return 0, fmt.Errorf("program info of %d bytes has no attach_btf_id", attr.len)
	}
	return binary.LittleEndian.Uint32(info[224:]), nil
}

// cgroup2Root is where the cgroup2 hierarchy is mounted in this mount
// namespace, or "".
func cgroup2Root() string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		// ... mount-point options - fstype source super-options
		pre, post, ok := strings.Cut(line, " - ")
		if !ok || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		if f := strings.Fields(pre); len(f) >= 5 {
			return unescapeMountinfo(f[4])
		}
	}
	return ""
}

// unescapeMountinfo undoes the octal escapes of /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// vmlinuxFunc names the function a tracing link attaches to, or "" when
// it is in a module's BTF (no security_ function is).
func vmlinuxFunc(kernel **btf.Spec, objID uint32, id btf.TypeID) (string, error) {
	if objID != 0 {
		h, err := btf.NewHandleFromID(btf.ID(objID))
		if err != nil {
			return "", fmt.Errorf("open target BTF %d: %w", objID, err)
		}
		info, err := h.Info()
		h.Close()
		if err != nil {
			return "", fmt.Errorf("target BTF %d: %w", objID, err)
		}
		if !info.IsVmlinux() {
			return "", nil
		}
	}
	if *kernel == nil {
		s, err := btf.LoadKernelSpec()
		if err != nil {
			return "", fmt.Errorf("kernel BTF: %w", err)
		}
		*kernel = s
	}
	t, err := (*kernel).TypeByID(id)
	if err != nil {
		return "", fmt.Errorf("target type %d: %w", id, err)
	}
	fn, ok := t.(*btf.Func)
	if !ok {
		return "", nil
	}
	return fn.Name, nil
}
