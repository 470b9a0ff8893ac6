//go:build linux

package bpftest

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// BenchmarkBPFSHA256 measures kg_sha256 and Go's crypto/sha256 on the same
// buffer, alternating between them inside one loop so that both see the
// same machine noise, and reports each one's MB/s and their ratio, over all
// rounds (bpf/go) and between the fastest round of each (bpf/go-best). The Go
// implementation is whatever the process's GODEBUG selects: SHA-NI by
// default on CPUs that have it, AVX2 with GODEBUG=cpu.sha=off, and the
// portable Go code with GODEBUG=cpu.sha=off,cpu.avx2=off (scripts/bench.sh
// runs all three).
func BenchmarkBPFSHA256(b *testing.B) {
	const maxLen = 4 << 20
	h := newHarness(b, maxLen)
	buf := make([]byte, maxLen)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	if err := h.setInput(buf); err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{64 << 10, 1 << 20, 4 << 20} {
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			var tBPF, tGo time.Duration
			minBPF, minGo := time.Duration(1<<62), time.Duration(1<<62)
			b.SetBytes(int64(n))
			for b.Loop() {
				t0 := time.Now()
				got, err := h.sha256Loaded(n)
				t1 := time.Now()
				want := sha256.Sum256(buf[:n])
				t2 := time.Now()
				if err != nil {
					b.Fatal(err)
				}
				if got != want {
					b.Fatalf("kg_sha256 = %x, crypto/sha256 = %x", got, want)
				}
				tBPF += t1.Sub(t0)
				tGo += t2.Sub(t1)
				minBPF = min(minBPF, t1.Sub(t0))
				minGo = min(minGo, t2.Sub(t1))
			}
			mb := float64(n) * float64(b.N) / 1e6
			b.ReportMetric(mb/tBPF.Seconds(), "bpf-MB/s")
			b.ReportMetric(mb/tGo.Seconds(), "go-MB/s")
			b.ReportMetric(tGo.Seconds()/tBPF.Seconds(), "bpf/go")
			// On a busy machine the fastest round of each is the better
			// estimate of what the code can do.
			b.ReportMetric(minGo.Seconds()/minBPF.Seconds(), "bpf/go-best")
		})
	}
}
