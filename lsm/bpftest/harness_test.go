//go:build linux

package bpftest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/cilium/ebpf"
)

// inputChunk is the value size of kg_test_input (KG_TEST_CHUNK in C).
const inputChunk = 64 << 10

// harness holds the loaded test programs and an input buffer of a fixed
// capacity in kernel memory.
type harness struct {
	objs     bpftestObjects
	capacity int
	chunk    []byte
}

// requireBPF skips tb unless the process may load and test-run BPF
// programs.
func requireBPF(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("needs root: loads BPF programs (CAP_BPF, CAP_PERFMON) and runs them with BPF_PROG_TEST_RUN")
	}
}

// newHarness loads bpftest.bpf.c with an input buffer of at least capacity
// bytes. Verifier errors fail the test with the whole log.
func newHarness(tb testing.TB, capacity int) *harness {
	tb.Helper()
	requireBPF(tb)
	spec, err := loadBpftest()
	if err != nil {
		tb.Fatalf("load spec: %v", err)
	}
	entries := max(1, (capacity+inputChunk-1)/inputChunk)
	spec.Maps["kg_test_input"].MaxEntries = uint32(entries)
	h := &harness{capacity: entries * inputChunk, chunk: make([]byte, inputChunk)}
	if err := spec.LoadAndAssign(&h.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			tb.Fatalf("verifier rejected bpftest: %+v", ve)
		}
		if errors.Is(err, ebpf.ErrNotSupported) {
			tb.Skipf("needs BPF support in this kernel: %v", err)
		}
		tb.Fatalf("load bpftest: %v", err)
	}
	tb.Cleanup(func() { h.objs.Close() })
	return h
}

// setInput copies data into the kernel input buffer.
func (h *harness) setInput(data []byte) error {
	if len(data) > h.capacity {
		return fmt.Errorf("input of %d bytes exceeds the %d-byte test buffer", len(data), h.capacity)
	}
	for i := 0; i*inputChunk < len(data); i++ {
		n := copy(h.chunk, data[i*inputChunk:])
		clear(h.chunk[n:])
		if err := h.objs.KgTestInput.Put(uint32(i), h.chunk); err != nil {
			return fmt.Errorf("write input chunk %d: %w", i, err)
		}
	}
	return nil
}

// run test-runs prog with args as the raw_tp arguments and returns the
// result it left in kg_test_out.
func (h *harness) run(prog *ebpf.Program, args ...uint64) (*bpftestKgTestResult, error) {
	ctx := make([]byte, 8*len(args))
	for i, a := range args {
		binary.NativeEndian.PutUint64(ctx[8*i:], a)
	}
	ret, err := prog.Run(&ebpf.RunOptions{Context: ctx})
	if err != nil {
		return nil, fmt.Errorf("test run: %w", err)
	}
	if ret != 0 {
		return nil, fmt.Errorf("test program returned %d (map lookup failed)", ret)
	}
	var res bpftestKgTestResult
	if err := h.objs.KgTestOut.Lookup(uint32(0), &res); err != nil {
		return nil, fmt.Errorf("read result: %w", err)
	}
	return &res, nil
}

// sha256 hashes data with kg_sha256 and returns the digest.
func (h *harness) sha256(data []byte) ([32]byte, error) {
	if err := h.setInput(data); err != nil {
		return [32]byte{}, err
	}
	return h.sha256Loaded(len(data))
}

// sha256Loaded hashes the first n bytes already in the input buffer.
func (h *harness) sha256Loaded(n int) ([32]byte, error) {
	res, err := h.run(h.objs.TestSha256, uint64(n))
	if err != nil {
		return [32]byte{}, err
	}
	if res.Ret != 0 {
		return [32]byte{}, fmt.Errorf("kg_sha256 returned %d", res.Ret)
	}
	return res.Digest, nil
}
