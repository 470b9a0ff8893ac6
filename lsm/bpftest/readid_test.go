//go:build linux

package bpftest

import (
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// Kinds of readid.h's enum kg_read_kind.
const (
	kindOther      = 0
	kindModule     = 1
	kindCompressed = 2
)

// TestReadKind asks kg_read_kind and kg_load_kind, the guard's answers to
// "is this kernel_read_file (kernel_load_data) id a module load?", about
// every id of the running kernel's enum kernel_read_file_id
// (kernel_load_data_id), from its BTF, and the ids past it: the module id
// and every id the guard does not know are decided as modules (fail
// closed), READING_MODULE_COMPRESSED (where the kernel has it) waits for
// the decompressed image, and the known others (firmware, kexec, IMA
// policy, x509, the UNKNOWN ids) pass. Both enums come from one list in
// the kernel, so 7.2 has a LOADING_MODULE_COMPRESSED too; no load uses it
// (only finit_module decompresses), and the guard decides it as a module,
// on the bytes it is shown.
func TestReadKind(t *testing.T) {
	h := newHarness(t, inputChunk)
	spec, err := btf.LoadKernelSpec()
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, btf.ErrNotSupported) {
		t.Skipf("needs the kernel's BTF (/sys/kernel/btf/vmlinux): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		enum, prefix string
		prog         *ebpf.Program
		compressed   uint64 // the kind of MODULE_COMPRESSED
	}{
		{"kernel_read_file_id", "READING_", h.objs.TestReadKind, kindCompressed},
		{"kernel_load_data_id", "LOADING_", h.objs.TestLoadKind, kindModule},
	} {
		t.Run(tc.enum, func(t *testing.T) {
			var ids *btf.Enum
			if err := spec.TypeByName(tc.enum, &ids); err != nil {
				t.Fatalf("kernel BTF: enum %s: %v", tc.enum, err)
			}
			want := map[uint64]uint64{}
			var top uint64
			for _, v := range ids.Values {
				switch v.Name[len(tc.prefix):] {
				case "MODULE":
					want[v.Value] = kindModule
				case "MODULE_COMPRESSED":
					want[v.Value] = tc.compressed
				case "UNKNOWN", "FIRMWARE", "KEXEC_IMAGE", "KEXEC_INITRAMFS", "POLICY", "X509_CERTIFICATE":
					want[v.Value] = kindOther
				default: // MAX_ID, and what a newer kernel adds
					want[v.Value] = kindModule
				}
				top = max(top, v.Value)
				t.Logf("%s = %d: kind %d", v.Name, v.Value, want[v.Value])
			}
			for _, id := range []uint64{top + 1, top + 2, 64, 0x7fffffff, 0xffffffff} {
				if _, ok := want[id]; !ok {
					want[id] = kindModule
				}
			}
			for id, kind := range want {
				res, err := h.run(tc.prog, id)
				if err != nil {
					t.Fatal(err)
				}
				if uint64(res.Ret) != kind {
					t.Errorf("%s %d: kind %d, want %d", tc.enum, id, res.Ret, kind)
				}
			}
		})
	}
}
