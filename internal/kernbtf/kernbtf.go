// Package kernbtf gives the BPF loaders a view of the kernel's BTF in which
// the functions they attach to have one name each.
//
// A kernel's BTF can carry two FUNC entries of one name. Debian's 6.1.0-57
// (6.1.192) has two each for __x64_sys_init_module, __x64_sys_finit_module
// and __x64_sys_delete_module: the syscall and the weak -ENOSYS stub that
// kernel/sys_ni.c declares for it (COND_SYSCALL), which the linker drops. The
// two have the same prototype, and the kernel resolves an attach target by
// the name of the BTF id it is given (kallsyms), so either id attaches to the
// one function that exists. cilium/ebpf refuses such a name outright
// ("attaching to ambiguous kernel symbol is not supported"), because in
// general the entries may be different static functions.
//
// Here they are told apart only where that is safe: when every FUNC of a
// wanted name has the same return and parameter types (by type id, so the
// very same types), the first keeps the name and the others are renamed in
// a private copy of the raw BTF ("__x64_sys_init_module.dup53346"). Type ids do not change, so the id the
// loader then passes to the kernel is one of the kernel's own. Names whose
// entries differ stay ambiguous, and the load fails as before.
package kernbtf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// VmlinuxPath is where the running kernel exposes its BTF.
const VmlinuxPath = "/sys/kernel/btf/vmlinux"

// Duplicate is a function name with more than one FUNC entry.
type Duplicate struct {
	Name string
	IDs  []btf.TypeID // every FUNC entry of the name, lowest first
	// Kept is the id that keeps the name, 0 when the entries' prototypes
	// differ and the name stays ambiguous.
	Kept btf.TypeID
}

// Resolvable says whether the duplicate was told apart.
func (d Duplicate) Resolvable() bool { return d.Kept != 0 }

func (d Duplicate) String() string {
	if d.Kept == 0 {
		return fmt.Sprintf("%s: %d FUNC entries %v with different prototypes", d.Name, len(d.IDs), d.IDs)
	}
	return fmt.Sprintf("%s: %d FUNC entries %v with one prototype, attached through [%d]", d.Name, len(d.IDs), d.IDs, d.Kept)
}

// Targets lists the kernel BTF FUNC names the programs of spec attach to:
// the function itself for fentry, fexit and fmod_ret, bpf_lsm_<hook> for
// LSM programs. Other programs name no kernel function.
func Targets(spec *ebpf.CollectionSpec) []string {
	var names []string
	for _, p := range spec.Programs {
		if p.AttachTo == "" {
			continue
		}
		switch {
		case p.Type == ebpf.Tracing && (p.AttachType == ebpf.AttachTraceFEntry ||
			p.AttachType == ebpf.AttachTraceFExit || p.AttachType == ebpf.AttachModifyReturn):
			names = append(names, p.AttachTo)
		case p.Type == ebpf.LSM && p.AttachType == ebpf.AttachLSMMac:
			names = append(names, "bpf_lsm_"+p.AttachTo)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// Cache returns a btf.Cache to load programs that attach to the functions
// in names with (ebpf.CollectionOptions.Cache), and the duplicates found
// among those names. Where none of the names is duplicated, the cache is a
// plain btf.NewCache() that reads the kernel's BTF as usual. Otherwise it
// holds the running kernel's BTF with the resolvable duplicates renamed;
// unresolvable ones are returned but left as they are, so that the load
// still fails on them with the library's own error.
func Cache(names []string) (*btf.Cache, []Duplicate, error) {
	if len(names) == 0 {
		return btf.NewCache(), nil, nil
	}
	raw, err := os.ReadFile(VmlinuxPath)
	if errors.Is(err, os.ErrNotExist) {
		// No kernel BTF: the loader says so in its own words.
		return btf.NewCache(), nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("read kernel BTF: %w", err)
	}
	patched, dups, err := Disambiguate(raw, names)
	if err != nil {
		return nil, nil, fmt.Errorf("kernel BTF %s: %w", VmlinuxPath, err)
	}
	if !slices.ContainsFunc(dups, Duplicate.Resolvable) {
		return btf.NewCache(), dups, nil
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(patched))
	if err != nil {
		return nil, nil, fmt.Errorf("parse the kernel BTF with duplicates told apart: %w", err)
	}
	c := btf.NewCache()
	if err := setKernelTypes(c, spec); err != nil {
		return nil, nil, err
	}
	return c, dups, nil
}

// setKernelTypes makes c hand out spec as the kernel's types. btf.Cache has
// no setter (cilium/ebpf v0.22); the field is found by name and type, so a
// library whose Cache differs fails here, loudly, rather than misbehave.
func setKernelTypes(c *btf.Cache, spec *btf.Spec) error {
	f := reflect.ValueOf(c).Elem().FieldByName("kernelTypes")
	if !f.IsValid() || f.Type() != reflect.TypeFor[*btf.Spec]() {
		return errors.New("this cilium/ebpf's btf.Cache has no kernelTypes *btf.Spec field: cannot hand it the kernel's BTF with duplicates told apart")
	}
	reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Set(reflect.ValueOf(spec))
	return nil
}

// BTF kinds (include/uapi/linux/btf.h) and the size of what follows each
// kind's 12-byte common record.
const (
	kindFunc      = 12
	kindFuncProto = 13
	maxKind       = 19
)

func extraSize(kind, vlen uint32) (uint32, bool) {
	switch kind {
	case 2, 7, 8, 9, 10, 11, 12, 16, 18: // ptr, fwd, typedef, volatile, const, restrict, func, float, type_tag
		return 0, true
	case 1, 14, 17: // int, var, decl_tag
		return 4, true
	case 3: // array
		return 12, true
	case 4, 5, 15, 19: // struct, union, datasec, enum64
		return 12 * vlen, true
	case 6, 13: // enum, func_proto
		return 8 * vlen, true
	}
	return 0, false
}

type record struct {
	id   btf.TypeID
	off  uint32 // of the record in the type section
	name uint32
	info uint32
	typ  uint32
}

func (r record) kind() uint32 { return r.info >> 24 & 0x1f }
func (r record) vlen() uint32 { return r.info & 0xffff }

// Disambiguate returns a copy of the raw BTF blob raw in which every wanted
// FUNC name that has several entries with one prototype keeps only its
// first entry; the others are renamed "<name>.dup<id>". It also lists every
// duplicated wanted name. raw must be split-less BTF in the host's byte
// order, as /sys/kernel/btf/vmlinux is. A malformed blob is an error; raw is
// never changed.
func Disambiguate(raw []byte, names []string) ([]byte, []Duplicate, error) {
	bo := binary.NativeEndian
	const hdrMin = 24
	if len(raw) < hdrMin || bo.Uint16(raw) != 0xeb9f {
		return nil, nil, errors.New("not BTF in this host's byte order")
	}
	hdrLen := bo.Uint32(raw[4:])
	typeOff, typeLen := bo.Uint32(raw[8:]), bo.Uint32(raw[12:])
	strOff, strLen := bo.Uint32(raw[16:]), bo.Uint32(raw[20:])
	end := func(off, n uint32) (uint64, bool) {
		e := uint64(hdrLen) + uint64(off) + uint64(n)
		return e, e <= uint64(len(raw))
	}
	if hdrLen < hdrMin || uint64(hdrLen) > uint64(len(raw)) {
		return nil, nil, fmt.Errorf("header length %d out of range", hdrLen)
	}
	if _, ok := end(typeOff, typeLen); !ok {
		return nil, nil, errors.New("type section out of range")
	}
	if _, ok := end(strOff, strLen); !ok {
		return nil, nil, errors.New("string section out of range")
	}
	types := raw[hdrLen+typeOff : hdrLen+typeOff+typeLen]
	strs := raw[hdrLen+strOff : hdrLen+strOff+strLen]
	str := func(off uint32) (string, bool) {
		if off >= uint32(len(strs)) {
			return "", false
		}
		s, _, ok := bytes.Cut(strs[off:], []byte{0})
		return string(s), ok
	}

	wanted := map[string][]btf.TypeID{}
	for _, n := range names {
		wanted[n] = nil
	}
	recs := []record{{}} // type id 0 is void
	for off := uint32(0); off < uint32(len(types)); {
		if uint32(len(types))-off < 12 {
			return nil, nil, fmt.Errorf("type %d: truncated record", len(recs))
		}
		r := record{id: btf.TypeID(len(recs)), off: off, name: bo.Uint32(types[off:]), info: bo.Uint32(types[off+4:]), typ: bo.Uint32(types[off+8:])}
		if r.kind() == 0 || r.kind() > maxKind {
			return nil, nil, fmt.Errorf("type %d: unknown kind %d", len(recs), r.kind())
		}
		extra, _ := extraSize(r.kind(), r.vlen())
		if uint64(off)+12+uint64(extra) > uint64(len(types)) {
			return nil, nil, fmt.Errorf("type %d: truncated record", len(recs))
		}
		if r.kind() == kindFunc {
			name, ok := str(r.name)
			if !ok {
				return nil, nil, fmt.Errorf("type %d: name offset %d out of range", len(recs), r.name)
			}
			if ids, ok := wanted[name]; ok {
				wanted[name] = append(ids, btf.TypeID(len(recs)))
			}
		}
		recs = append(recs, r)
		off += 12 + extra
	}

	// proto returns a FUNC's prototype as the type ids that make it: the
	// return type, then each parameter's. Parameter names are left out.
	proto := func(fn btf.TypeID) ([]uint32, bool) {
		pid := recs[fn].typ
		if pid == 0 || pid >= uint32(len(recs)) || recs[pid].kind() != kindFuncProto {
			return nil, false
		}
		p := recs[pid]
		ids := []uint32{p.typ}
		for i := range p.vlen() {
			ids = append(ids, bo.Uint32(types[p.off+12+8*i+4:]))
		}
		return ids, true
	}

	var dups []Duplicate
	var renames []record // records to rename, in the order of names
	for _, name := range names {
		ids := wanted[name]
		if len(ids) < 2 {
			continue
		}
		wanted[name] = nil // once, however often names repeats it
		d := Duplicate{Name: name, IDs: ids, Kept: ids[0]}
		first, ok := proto(ids[0])
		for _, id := range ids[1:] {
			if p, pok := proto(id); !ok || !pok || !slices.Equal(first, p) {
				d.Kept = 0
				break
			}
		}
		dups = append(dups, d)
		if d.Kept != 0 {
			for _, id := range ids[1:] {
				renames = append(renames, recs[id])
			}
		}
	}
	if len(renames) == 0 {
		return raw, dups, nil
	}

	// The other entries get new names, added at the end of the string
	// section: "<name>.dup<id>" ('.' is in no C identifier, so no function
	// has it).
	if uint64(hdrLen)+uint64(strOff)+uint64(strLen) != uint64(len(raw)) {
		return nil, nil, errors.New("the string section is not last: cannot add names")
	}
	out := slices.Clone(raw)
	otypes := out[hdrLen+typeOff:]
	for _, r := range renames {
		name, _ := str(r.name)
		off := uint64(len(out)) - uint64(hdrLen) - uint64(strOff)
		if off > math.MaxUint32-64 {
			return nil, nil, errors.New("string section too large to add names")
		}
		bo.PutUint32(otypes[r.off:], uint32(off))
		out = fmt.Appendf(out, "%s.dup%d\x00", name, r.id)
		otypes = out[hdrLen+typeOff:]
	}
	bo.PutUint32(out[20:], uint32(uint64(len(out))-uint64(hdrLen)-uint64(strOff)))
	return out, dups, nil
}

// Summary is one line for logs: the duplicates found and what was done.
func Summary(dups []Duplicate) string {
	s := make([]string, len(dups))
	for i, d := range dups {
		s[i] = d.String()
	}
	return strings.Join(s, "; ")
}
