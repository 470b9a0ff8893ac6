//go:build linux

package lsm

import (
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
)

// Mode is what the guard does with a module that is not allowed.
type Mode uint32

const (
	// ModeEnforce refuses the load with EPERM.
	ModeEnforce Mode = 0
	// ModeAudit lets it load and reports an audit decision.
	ModeAudit Mode = 1
)

func (m Mode) String() string {
	switch m {
	case ModeEnforce:
		return "enforce"
	case ModeAudit:
		return "audit"
	}
	return fmt.Sprintf("mode(%d)", uint32(m))
}

// Require is what a policy demands of every load before its list is
// looked at: checks that need no digest.
type Require uint32

const (
	// RequireHostNamespaces refuses callers outside the initial user and
	// PID namespaces (the sensor's host_ns false): containers, as far as
	// namespaces tell.
	RequireHostNamespaces Require = 1 << 0
	// RequireSignature refuses images that do not end with an appended
	// module signature. Whether it verifies is the kernel's check
	// (module.sig_enforce); a compressed file, whose signature is inside
	// the compression, is refused too.
	RequireSignature Require = 1 << 1
)

// Names lists the requirements in r, in the words of the allowlist's spec.
func (r Require) Names() []string {
	var out []string
	if r&RequireHostNamespaces != 0 {
		out = append(out, "hostNamespaces")
	}
	if r&RequireSignature != 0 {
		out = append(out, "moduleSignature")
	}
	if rest := r &^ (RequireHostNamespaces | RequireSignature); rest != 0 {
		out = append(out, fmt.Sprintf("unknown(%#x)", uint32(rest)))
	}
	return out
}

// NameLen is the size of a module name in the kernel (MODULE_NAME_LEN on
// 64-bit), terminating NUL included.
const NameLen = 56

// Entry is the allowlist entry a digest or a name admits.
type Entry struct {
	// Name is the entry's module name. The guard folds it ('-' as '_', as
	// modprobe takes names) and compares it with the names parsed from the
	// image as they are (the kernel does not fold those).
	Name string
	// Index is the entry's position in the allowlist, for reports.
	Index uint32
}

// Policy is one allowlist in the guard's terms.
type Policy struct {
	Mode Mode
	// Generation numbers the policy; decisions carry the generation that
	// made them.
	Generation uint64
	// Require is checked before the list (the meta record's index).
	Require Require
	// Digests maps the SHA-256 of an image (ELF or compressed file) to the
	// entry it admits.
	Digests map[[32]byte]Entry
	// Names maps the name of an entry without digests to that entry.
	Names map[string]Entry
	// AutoloadDeny holds the allowlist's spec.autoload.deny patterns,
	// folded (allowlist.FoldPattern: '-' as '_', no two stars in a row), at
	// most MaxAutoloadPatterns of at most NameLen-1 bytes: autoload
	// requests whose alias matches one are refused (glob.h).
	AutoloadDeny []string
}

// MaxAutoloadPatterns is the most deny patterns a policy holds
// (KG_AUTOLOAD_MAX).
const MaxAutoloadPatterns = 32

// Fold folds an entry's module name as modprobe and kbuild do: '-'
// becomes '_'.
func Fold(name string) string {
	b := []byte(name)
	for i, c := range b {
		if c == '-' {
			b[i] = '_'
		}
	}
	return string(b)
}

func nameBytes(name string) ([NameLen]uint8, error) {
	var b [NameLen]uint8
	if name == "" || len(name) >= NameLen {
		return b, fmt.Errorf("module name %q must be 1 to %d bytes", name, NameLen-1)
	}
	copy(b[:], Fold(name))
	return b, nil
}

func entryVal(e Entry) (guardKgPolicyVal, error) {
	var v guardKgPolicyVal
	n, err := nameBytes(e.Name)
	if err != nil {
		return v, err
	}
	for i, c := range n {
		v.Name[i] = int8(c)
	}
	v.Index = e.Index
	return v, nil
}

// Policy key kinds, as in guard.bpf.c.
const (
	keyMeta   = 0
	keyDigest = 1
	keyName   = 2
	// keyAutoload numbers the deny patterns (data[0]) from 0; see
	// KG_KEY_AUTOLOAD in decide.h for why they share the policy map.
	keyAutoload = 3
)

// build creates a complete policy map; the caller swaps it into place.
// It returns the map and the number of digest and name entries.
func (p *Policy) build() (*ebpf.Map, int, error) {
	if p == nil {
		return nil, 0, fmt.Errorf("no policy")
	}
	if p.Mode != ModeEnforce && p.Mode != ModeAudit {
		return nil, 0, fmt.Errorf("invalid mode %d", p.Mode)
	}
	if p.Require&^(RequireHostNamespaces|RequireSignature) != 0 {
		return nil, 0, fmt.Errorf("invalid requirements %#x", uint32(p.Require))
	}
	if len(p.AutoloadDeny) > MaxAutoloadPatterns {
		return nil, 0, fmt.Errorf("%d autoload deny patterns, over the %d the guard holds", len(p.AutoloadDeny), MaxAutoloadPatterns)
	}
	for _, pat := range p.AutoloadDeny {
		if pat == "" || len(pat) >= NameLen || strings.ContainsRune(pat, 0) || strings.Contains(pat, "**") {
			return nil, 0, fmt.Errorf("autoload deny pattern %q must be 1 to %d bytes without NUL, folded (no two stars in a row)", pat, NameLen-1)
		}
	}
	spec, err := loadGuard()
	if err != nil {
		return nil, 0, err
	}
	inner := spec.Maps["kg_policy_inner"].Copy()
	inner.Name = "kg_policy_gen"
	inner.MaxEntries = uint32(1 + len(p.Digests) + len(p.Names) + len(p.AutoloadDeny))
	m, err := ebpf.NewMap(inner)
	if err != nil {
		return nil, 0, fmt.Errorf("create policy map: %w", err)
	}
	keys := make([]guardKgPolicyKey, 0, inner.MaxEntries)
	vals := make([]guardKgPolicyVal, 0, inner.MaxEntries)
	for d, e := range p.Digests {
		v, err := entryVal(e)
		if err != nil {
			m.Close()
			return nil, 0, err
		}
		k := guardKgPolicyKey{Kind: keyDigest}
		copy(k.Data[:], d[:])
		keys, vals = append(keys, k), append(vals, v)
	}
	for name, e := range p.Names {
		v, err := entryVal(e)
		if err != nil {
			m.Close()
			return nil, 0, err
		}
		k := guardKgPolicyKey{Kind: keyName}
		if k.Data, err = nameBytes(name); err != nil {
			m.Close()
			return nil, 0, err
		}
		keys, vals = append(keys, k), append(vals, v)
	}
	n := len(keys)
	keys = append(keys, guardKgPolicyKey{Kind: keyMeta})
	vals = append(vals, guardKgPolicyVal{Mode: uint32(p.Mode), Generation: p.Generation, Index: uint32(p.Require)})
	for i, pat := range p.AutoloadDeny {
		k := guardKgPolicyKey{Kind: keyAutoload}
		k.Data[0] = uint8(i)
		v := guardKgPolicyVal{Index: uint32(i), Mode: uint32(p.Mode), Generation: p.Generation}
		for j := 0; j < len(pat); j++ {
			v.Name[j] = int8(pat[j])
		}
		keys, vals = append(keys, k), append(vals, v)
	}
	for i := range keys {
		if err := m.Update(&keys[i], &vals[i], ebpf.UpdateNoExist); err != nil {
			m.Close()
			return nil, 0, fmt.Errorf("fill policy map: %w", err)
		}
	}
	// Complete, it never changes again: frozen, the kernel refuses every
	// write to it from user space, sealed or not (a new policy is a new
	// map). The guard's programs only read it (BPF_F_RDONLY_PROG).
	if err := m.Freeze(); err != nil {
		m.Close()
		return nil, 0, fmt.Errorf("freeze policy map: %w", err)
	}
	return m, n, nil
}

// NewMap creates the map the guard would swap in for p, for code that runs
// the guard's judgement (decide.h) under its own kg_policy, such as the
// BPF_PROG_TEST_RUN tests in lsm/bpftest. The caller closes it.
func (p *Policy) NewMap() (*ebpf.Map, error) {
	m, _, err := p.build()
	return m, err
}
