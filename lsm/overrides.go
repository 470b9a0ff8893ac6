//go:build linux

package lsm

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
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
//     first, and the first non-zero return ends the hook.
//
// The seal refuses new ones; Overrides finds those attached before it (or
// before the guard started).
type Override struct {
	// Kind is "fmod_ret" or "lsm".
	Kind string `json:"kind"`
	// Target is the kernel function, e.g. security_kernel_post_read_file
	// or bpf_lsm_kernel_post_read_file.
	Target string `json:"target"`
	LinkID uint32 `json:"link_id"`
	ProgID uint32 `json:"prog_id"`
	// ProgName is empty on a sealed guard: the seal refuses a descriptor
	// to such a program to everyone, this process included, and each try
	// would be reported as tampering.
	ProgName string `json:"prog_name,omitempty"`
}

func (o Override) String() string {
	return fmt.Sprintf("%s program %d (%q, link %d) on %s", o.Kind, o.ProgID, o.ProgName, o.LinkID, o.Target)
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

// Overrides lists someone else's programs that can decide a hook the guard
// relies on before it does (see [Override]), in link id order. It needs
// CAP_SYS_ADMIN (to open links by id).
func (g *Guard) Overrides() ([]Override, error) {
	g.mu.Lock()
	own := map[uint32]bool{}
	for _, l := range g.links {
		if info, err := l.Info(); err == nil {
			own[uint32(info.ID)] = true
		}
	}
	sealed, err := g.sealedLocked()
	g.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return findOverrides(own, !sealed)
}

// findOverrides is Overrides, the links in own excepted; names says
// whether to open each program for its name (not on a sealed guard).
func findOverrides(own map[uint32]bool, names bool) ([]Override, error) {
	targets, err := guardedTargets()
	if err != nil {
		return nil, err
	}
	lsmTargets := map[string]bool{}
	for _, h := range overrideHooks {
		lsmTargets["bpf_lsm_"+h] = true
	}
	var (
		out    []Override
		kernel *btf.Spec
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
		tr := info.Tracing()
		if tr == nil || own[uint32(it.ID)] {
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
		target, err := vmlinuxFunc(&kernel, tr.TargetObjectId, btf.TypeID(tr.TargetBtfId))
		if err != nil {
			return nil, fmt.Errorf("link %d: %w", it.ID, err)
		}
		switch {
		case kind == "fmod_ret" && targets[target]:
		case kind == "lsm" && lsmTargets[target] && !lsmReturnsChecked():
		default:
			continue
		}
		o := Override{Kind: kind, Target: target, LinkID: uint32(it.ID), ProgID: uint32(info.Program)}
		if names {
			if p, err := ebpf.NewProgramFromID(info.Program); err == nil {
				if pi, err := p.Info(); err == nil {
					o.ProgName = pi.Name
				}
				p.Close()
			}
		}
		out = append(out, o)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list BPF links: %w", err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].LinkID < out[j].LinkID })
	return out, nil
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
