//go:build linux

package bpftest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
)

// TestSHA256Vectors checks kg_sha256 on the FIPS 180-4 example messages,
// against both the published digests and crypto/sha256.
func TestSHA256Vectors(t *testing.T) {
	h := newHarness(t, 1<<20)
	for _, tc := range []struct {
		name string
		msg  string
		want string
	}{
		{"empty", "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"abc", "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"448 bits", "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
			"248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
		{"896 bits", "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu",
			"cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1"},
		{"million a", strings.Repeat("a", 1_000_000),
			"cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := h.sha256([]byte(tc.msg))
			if err != nil {
				t.Fatal(err)
			}
			if hex.EncodeToString(got[:]) != tc.want {
				t.Errorf("kg_sha256 = %x, want %s", got, tc.want)
			}
			if std := sha256.Sum256([]byte(tc.msg)); got != std {
				t.Errorf("kg_sha256 = %x, crypto/sha256 = %x", got, std)
			}
		})
	}
}

// sha256Lengths lists the lengths TestSHA256Random hashes: every length up
// to 200, every length within 3 bytes of a multiple of 64 (and of the
// 512-byte chunk the loop reads) up to a few KiB, then a spread of large
// sizes up to 4 MiB.
func sha256Lengths() []int {
	var n []int
	for i := 0; i <= 200; i++ {
		n = append(n, i)
	}
	for m := 256; m <= 5000; m += 64 {
		for d := -3; d <= 3; d++ {
			n = append(n, m+d)
		}
	}
	for _, m := range []int{8 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20} {
		n = append(n, m-65, m-64, m-56, m-55, m-1, m)
	}
	n = append(n, 12345, 99999, 1_000_003, 3_333_333)
	return n
}

// TestSHA256Random checks kg_sha256 against crypto/sha256 on random buffers
// of many lengths, with the padding falling everywhere in the last block.
func TestSHA256Random(t *testing.T) {
	const maxLen = 4 << 20
	h := newHarness(t, maxLen)
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, maxLen)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	// Load the buffer once; each case hashes a prefix of it.
	if err := h.setInput(buf); err != nil {
		t.Fatal(err)
	}
	for _, n := range sha256Lengths() {
		got, err := h.sha256Loaded(n)
		if err != nil {
			t.Fatalf("len %d: %v", n, err)
		}
		if want := sha256.Sum256(buf[:n]); got != want {
			t.Errorf("len %d: kg_sha256 = %x, crypto/sha256 = %x", n, got, want)
		}
	}
}

// TestSHA256Errors checks the documented failures: a size over the maximum
// and a buffer that cannot be read.
func TestSHA256Errors(t *testing.T) {
	h := newHarness(t, 1<<20)
	const kgSHA256MaxSize = 64 << 20 // KG_SHA256_MAX_SIZE
	for _, tc := range []struct {
		name string
		size uint64
		want int64
	}{
		{"over max", kgSHA256MaxSize + 1, -7 /* -E2BIG */},
		// The input buffer is 1 MiB; 512 MiB reads run off the end of the
		// vmalloc area into unmapped memory.
		{"unreadable", kgSHA256MaxSize, -14 /* -EFAULT */},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := h.run(h.objs.TestSha256, tc.size)
			if err != nil {
				t.Fatal(err)
			}
			if res.Ret != tc.want {
				t.Errorf("kg_sha256(size %d) returned %d, want %d", tc.size, res.Ret, tc.want)
			}
		})
	}
	// A buffer that fits still hashes after the failures.
	msg := bytes.Repeat([]byte("kmodguard"), 1000)
	got, err := h.sha256(msg)
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(msg); got != want {
		t.Errorf("after errors: kg_sha256 = %x, want %x", got, want)
	}
}

// TestScratchBusy checks that kg_sha256 and kg_elf_names refuse to run,
// rather than share state, when their per-CPU slot is claimed by a call
// that was preempted on the same CPU, and run again once it is released.
func TestScratchBusy(t *testing.T) {
	h := newHarness(t, 1<<20)
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	setBusy := func(t *testing.T, busy uint64) {
		t.Helper()
		shaSlots := make([]bpftestKgSha256Scratch, cpus)
		elfSlots := make([]bpftestKgElfScratch, cpus)
		for i := range cpus {
			shaSlots[i].Busy = busy
			elfSlots[i].Busy = busy
		}
		if err := h.objs.KgSha256Scratch.Put(uint32(0), shaSlots); err != nil {
			t.Fatal(err)
		}
		if err := h.objs.KgElfScratch.Put(uint32(0), elfSlots); err != nil {
			t.Fatal(err)
		}
	}
	img := module(goodModinfo, "dummy")

	setBusy(t, 1)
	if _, err := h.sha256(img); err == nil || !strings.Contains(err.Error(), "returned -16") {
		t.Errorf("kg_sha256 with its slot taken: %v, want -EBUSY (-16)", err)
	}
	if r, err := h.elfNames(img); err != nil || r.status != bpftestKgElfStatusKG_ELF_BUSY {
		t.Errorf("kg_elf_names with its slot taken: %v, %v, want KG_ELF_BUSY", r, err)
	}

	setBusy(t, 0)
	got, err := h.sha256(img)
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(img); got != want {
		t.Errorf("kg_sha256 after release = %x, want %x", got, want)
	}
	if r, err := h.elfNames(img); err != nil || r.status != bpftestKgElfStatusKG_ELF_OK {
		t.Errorf("kg_elf_names after release: %v, %v, want KG_ELF_OK", r, err)
	}
	// A completed call leaves the slot free.
	if _, err := h.sha256(img); err != nil {
		t.Errorf("second kg_sha256: %v", err)
	}
}
