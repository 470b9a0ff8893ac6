//go:build linux

package bpftest

import (
	"testing"

	"github.com/cilium/ebpf"
)

// TestVerifierBudget keeps the verifier's work on the helpers well below
// its one-million-instruction limit, on whatever kernel runs the test: the
// guard's own programs add to these counts.
func TestVerifierBudget(t *testing.T) {
	h := newHarness(t, 1<<20)
	for _, tc := range []struct {
		name   string
		prog   *ebpf.Program
		budget uint32
	}{
		// kg_sha256: the unrolled compression lives in one bpf_loop
		// callback, verified at its two call sites (about 9.5k).
		{"test_sha256", h.objs.TestSha256, 30_000},
		// kg_elf_names: every loop is a bpf_loop callback, verified once.
		{"test_elf_names", h.objs.TestElfNames, 20_000},
		// kg_glob_match: a global function, verified once, without a
		// branch on the bytes it compares (glob.h).
		{"test_glob", h.objs.TestGlob, 100_000},
		// kg_autoload_denied: 32 lookups, each calling kg_glob_match.
		{"test_autoload", h.objs.TestAutoload, 100_000},
	} {
		info, err := tc.prog.Info()
		if err != nil {
			t.Fatal(err)
		}
		n, ok := info.VerifiedInstructions()
		if !ok {
			t.Logf("%s: this kernel does not report verified instructions", tc.name)
			continue
		}
		t.Logf("%s: %d instructions verified", tc.name, n)
		if n > tc.budget {
			t.Errorf("%s: verifier processed %d instructions, budget %d", tc.name, n, tc.budget)
		}
	}
}
