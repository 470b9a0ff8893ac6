//go:build linux

package bpftest

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/kmodguard/kmodguard/internal/debkernel"
	"github.com/kmodguard/kmodguard/kmod"
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

// BenchmarkBPFELFNames measures kg_elf_names against kmod.ParseNames on real
// Debian 6.1 modules: dummy (small), option (the largest .modinfo, 76 KB)
// and kvm (the most sections, 93), alternating as above. The BPF time is
// what the guard adds to a module load, besides hashing.
func BenchmarkBPFELFNames(b *testing.B) {
	h := newHarness(b, 4<<20)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := debkernel.Get(ctx, debkernel.Series61)
	if err != nil {
		b.Skipf("needs the Debian 6.1 kernel package: %v", err)
	}
	for _, name := range []string{"dummy", "option", "kvm"} {
		b.Run(name, func(b *testing.B) {
			path, err := k.Module(name)
			if err != nil {
				b.Fatal(err)
			}
			img, err := readModule(path)
			if err != nil {
				b.Fatal(err)
			}
			if err := h.setInput(img); err != nil {
				b.Fatal(err)
			}
			var tBPF, tGo time.Duration
			for b.Loop() {
				t0 := time.Now()
				res, err := h.run(h.objs.TestElfNames, uint64(len(img)))
				t1 := time.Now()
				mi, _, gerr := kmod.ParseNames(img)
				t2 := time.Now()
				if err != nil || gerr != nil {
					b.Fatal(err, gerr)
				}
				if res.Ret != 0 || mi != name {
					b.Fatalf("kg_elf_names returned %d; kmod.ParseNames %q", res.Ret, mi)
				}
				tBPF += t1.Sub(t0)
				tGo += t2.Sub(t1)
			}
			b.ReportMetric(float64(tBPF.Microseconds())/float64(b.N), "bpf-µs/op")
			b.ReportMetric(float64(tGo.Microseconds())/float64(b.N), "go-µs/op")
		})
	}
}
