package kernbtf

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// fixture builds raw BTF shaped like Debian 6.1.0-57's: "sys_a" twice with
// one prototype under different parameter names (the syscall and its weak
// stub), "sys_b" twice with different parameter types, "sys_c" once, and a
// struct and an enum so that records of several sizes are walked.
func fixture(t testing.TB) []byte {
	t.Helper()
	long := &btf.Int{Name: "long", Size: 8, Encoding: btf.Signed}
	uint := &btf.Int{Name: "unsigned int", Size: 4}
	regs := &btf.Struct{Name: "pt_regs", Size: 16, Members: []btf.Member{
		{Name: "di", Type: long}, {Name: "si", Type: long, Offset: 64},
	}}
	pregs := &btf.Pointer{Target: &btf.Const{Type: regs}}
	proto := func(name string, typ btf.Type) *btf.FuncProto {
		return &btf.FuncProto{Return: long, Params: []btf.FuncParam{{Name: name, Type: typ}}}
	}
	types := []btf.Type{
		&btf.Enum{Name: "kernel_read_file_id", Size: 4, Values: []btf.EnumValue{{Name: "READING_MODULE", Value: 2}}},
		&btf.Func{Name: "sys_a", Type: proto("__unused", pregs), Linkage: btf.StaticFunc},
		&btf.Func{Name: "sys_b", Type: proto("regs", pregs), Linkage: btf.StaticFunc},
		&btf.Func{Name: "sys_c", Type: proto("regs", pregs), Linkage: btf.StaticFunc},
		&btf.Func{Name: "sys_a", Type: proto("regs", pregs), Linkage: btf.StaticFunc},
		&btf.Func{Name: "sys_b", Type: proto("regs", uint), Linkage: btf.StaticFunc},
	}
	b, err := btf.NewBuilder(types, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := b.Marshal(nil, btf.KernelMarshalOptions())
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func funcIDs(t *testing.T, spec *btf.Spec, name string) []btf.TypeID {
	t.Helper()
	types, err := spec.AnyTypesByName(name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var ids []btf.TypeID
	for _, typ := range types {
		if _, ok := typ.(*btf.Func); ok {
			id, err := spec.TypeID(typ)
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}

func TestDisambiguate(t *testing.T) {
	raw := fixture(t)
	orig := slices.Clone(raw)
	before, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	aIDs, bIDs := funcIDs(t, before, "sys_a"), funcIDs(t, before, "sys_b")
	if len(aIDs) != 2 || len(bIDs) != 2 {
		t.Fatalf("fixture: sys_a %v, sys_b %v: want two of each", aIDs, bIDs)
	}
	var fn *btf.Func
	if err := before.TypeByName("sys_a", &fn); !errors.Is(err, btf.ErrMultipleMatches) {
		t.Fatalf("fixture: sys_a is not ambiguous to the library: %v", err)
	}

	out, dups, err := Disambiguate(raw, []string{"sys_a", "sys_b", "sys_c", "sys_a", "absent"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, orig) {
		t.Fatal("the input was changed")
	}
	want := []Duplicate{{Name: "sys_a", IDs: aIDs, Kept: aIDs[0]}, {Name: "sys_b", IDs: bIDs}}
	if len(dups) != len(want) {
		t.Fatalf("duplicates %v, want %v", dups, want)
	}
	for i := range want {
		if dups[i].Name != want[i].Name || !slices.Equal(dups[i].IDs, want[i].IDs) || dups[i].Kept != want[i].Kept {
			t.Errorf("duplicate %d: %v, want %v", i, dups[i], want[i])
		}
	}

	after, err := btf.LoadSpecFromReader(bytes.NewReader(out))
	if err != nil {
		t.Fatalf("the patched BTF does not parse: %v", err)
	}
	if err := after.TypeByName("sys_a", &fn); err != nil {
		t.Fatalf("sys_a still ambiguous: %v", err)
	}
	if id, _ := after.TypeID(fn); id != aIDs[0] {
		t.Errorf("sys_a resolves to [%d], want the first entry [%d]", id, aIDs[0])
	}
	if renamed, err := after.TypeByID(aIDs[1]); err != nil || renamed.TypeName() != fmt.Sprintf("sys_a.dup%d", aIDs[1]) {
		t.Errorf("the other sys_a entry is %v (%v), want it renamed sys_a.dup%d", renamed, err, aIDs[1])
	}
	if err := after.TypeByName("sys_b", &fn); !errors.Is(err, btf.ErrMultipleMatches) {
		t.Errorf("sys_b, whose entries differ, was told apart: %v", err)
	}
	if err := after.TypeByName("sys_c", &fn); err != nil {
		t.Errorf("sys_c: %v", err)
	}
	// Every type keeps its id: only names moved.
	for typ, err := range before.All() {
		if err != nil {
			t.Fatal(err)
		}
		id, _ := before.TypeID(typ)
		got, err := after.TypeByID(id)
		if err != nil || got.TypeName() != typ.TypeName() && id != aIDs[1] {
			t.Errorf("type [%d] %v became %v (%v)", id, typ, got, err)
		}
	}

	// Nothing wanted is duplicated: the input comes back as it is.
	same, dups, err := Disambiguate(raw, []string{"sys_c"})
	if err != nil || len(dups) != 0 || &same[0] != &raw[0] {
		t.Errorf("sys_c alone: dups %v, err %v, copied %v", dups, err, &same[0] != &raw[0])
	}
}

func TestDisambiguateMalformed(t *testing.T) {
	raw := fixture(t)
	for _, tc := range []struct {
		name string
		edit func(b []byte) []byte
	}{
		{"empty", func([]byte) []byte { return nil }},
		{"bad magic", func(b []byte) []byte { b[0] ^= 0xff; return b }},
		{"header past the end", func(b []byte) []byte { b[4] = 0xff; b[5] = 0xff; return b }},
		{"types past the end", func(b []byte) []byte { b[12] = 0xff; b[13] = 0xff; return b }},
		{"strings past the end", func(b []byte) []byte { b[20] = 0xff; b[21] = 0xff; return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)-40] }},
		{"unknown kind", func(b []byte) []byte { b[24+4+3] = 31; return b }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.edit(slices.Clone(raw))
			if _, _, err := Disambiguate(b, []string{"sys_a"}); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

// TestHostBTF walks the running kernel's BTF: the walk must reach its end
// with every record's size right, or it fails with an error. Every FUNC the
// host lists twice with one prototype must then resolve to one id.
func TestHostBTF(t *testing.T) {
	raw, err := os.ReadFile(VmlinuxPath)
	if err != nil {
		t.Skipf("needs kernel BTF: %v", err)
	}
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for typ, err := range spec.All() {
		if err != nil {
			t.Fatal(err)
		}
		if fn, ok := typ.(*btf.Func); ok {
			seen[fn.Name]++
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	slices.Sort(names)
	out, dups, err := Disambiguate(raw, names)
	if err != nil {
		t.Fatalf("walk the host's BTF: %v", err)
	}
	want := 0
	for _, n := range seen {
		if n > 1 {
			want++
		}
	}
	if len(dups) != want {
		t.Fatalf("%d duplicated names found, the library sees %d", len(dups), want)
	}
	after, err := btf.LoadSpecFromReader(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dups {
		var fn *btf.Func
		if err := after.TypeByName(d.Name, &fn); (err == nil) != d.Resolvable() {
			t.Errorf("%v: lookup after: %v", d, err)
		}
	}
	t.Logf("%d FUNC names in the host's BTF, %d listed more than once", len(names), len(dups))
}

func TestCacheHandsOutPatchedTypes(t *testing.T) {
	spec, err := btf.LoadSpecFromReader(bytes.NewReader(fixture(t)))
	if err != nil {
		t.Fatal(err)
	}
	c := btf.NewCache()
	if err := setKernelTypes(c, spec); err != nil {
		t.Fatal(err)
	}
	got, err := c.Kernel()
	if err != nil || got != spec {
		t.Fatalf("the cache hands out %p (%v), want the patched spec %p", got, err, spec)
	}
}

func TestTargets(t *testing.T) {
	spec := &ebpf.CollectionSpec{Programs: map[string]*ebpf.ProgramSpec{
		"a": {Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFEntry, AttachTo: "__x64_sys_init_module"},
		"b": {Type: ebpf.Tracing, AttachType: ebpf.AttachTraceFExit, AttachTo: "__x64_sys_init_module"},
		"c": {Type: ebpf.Tracing, AttachType: ebpf.AttachModifyReturn, AttachTo: "security_kernel_read_file"},
		"d": {Type: ebpf.LSM, AttachType: ebpf.AttachLSMMac, AttachTo: "kernel_read_file"},
		"e": {Type: ebpf.Tracing, AttachType: ebpf.AttachTraceRawTp, AttachTo: "sys_enter"},
		"f": {Type: ebpf.RawTracepoint, AttachTo: "sys_enter"},
	}}
	want := []string{"__x64_sys_init_module", "bpf_lsm_kernel_read_file", "security_kernel_read_file"}
	if got := Targets(spec); !slices.Equal(got, want) {
		t.Errorf("Targets = %v, want %v", got, want)
	}
}

func FuzzDisambiguate(f *testing.F) {
	f.Add(fixture(f))
	f.Add([]byte{0x9f, 0xeb, 1, 0, 24, 0, 0, 0})
	f.Fuzz(func(t *testing.T, raw []byte) {
		orig := slices.Clone(raw)
		out, _, err := Disambiguate(raw, []string{"sys_a", "sys_b"})
		if !bytes.Equal(raw, orig) {
			t.Fatal("the input was changed")
		}
		if err == nil && len(out) < len(raw) {
			t.Fatalf("output of %d bytes for %d", len(out), len(raw))
		}
	})
}
