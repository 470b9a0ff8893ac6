//go:build linux

package bpftest

import (
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// Kinds of readid.h's enum kg_read_kind.
const (
	kindOther      = 0
	kindModule     = 1
	kindCompressed = 2
)

// TestReadKind asks kg_read_kind, the guard's answer to "is this
// kernel_read_file id a module load?", about every id of the running
// kernel's enum kernel_read_file_id (from its BTF) and the ids past it:
// READING_MODULE and every id the guard does not know are decided as
// modules (fail closed), READING_MODULE_COMPRESSED (where the kernel has
// it) waits for the decompressed image, and the known others (firmware,
// kexec, IMA policy, x509, READING_UNKNOWN) pass.
func TestReadKind(t *testing.T) {
	h := newHarness(t, inputChunk)
	spec, err := btf.LoadKernelSpec()
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, btf.ErrNotSupported) {
		t.Skipf("needs the kernel's BTF (/sys/kernel/btf/vmlinux): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	var ids *btf.Enum
	if err := spec.TypeByName("kernel_read_file_id", &ids); err != nil {
		t.Fatalf("kernel BTF: enum kernel_read_file_id: %v", err)
	}
	want := map[uint64]uint64{}
	var top uint64
	for _, v := range ids.Values {
		switch v.Name {
		case "READING_MODULE":
			want[v.Value] = kindModule
		case "READING_MODULE_COMPRESSED":
			want[v.Value] = kindCompressed
		case "READING_UNKNOWN", "READING_FIRMWARE", "READING_KEXEC_IMAGE", "READING_KEXEC_INITRAMFS",
			"READING_POLICY", "READING_X509_CERTIFICATE":
			want[v.Value] = kindOther
		default: // READING_MAX_ID, and what a newer kernel adds
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
		res, err := h.run(h.objs.TestReadKind, id)
		if err != nil {
			t.Fatal(err)
		}
		if uint64(res.Ret) != kind {
			t.Errorf("kg_read_kind(%d) = %d, want %d", id, res.Ret, kind)
		}
	}
}
