package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/kmodguard/kmodguard/internal/debkernel"
)

// BenchmarkInitVsSha256sum times `kmodguard allowlist init` over the whole
// Debian 6.1 modules tree against `find DIR -name '*.ko*' | xargs sha256sum`
// on the same tree, alternating the two in each round with a warm page
// cache, and reports the ratio ours/sha256sum. Ours parses every ELF too;
// the -j1 run shows what the second core buys.
//
// Each iteration is one round; run it with -benchtime=5x for five rounds
// (scripts/bench.sh does).
func BenchmarkInitVsSha256sum(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := debkernel.Get(ctx, debkernel.Series61)
	if err != nil {
		b.Skipf("needs the Debian 6.1 kernel package: %v", err)
	}
	if _, err := exec.LookPath("sha256sum"); err != nil {
		b.Skip("needs sha256sum")
	}
	dir := b.TempDir()
	bin := filepath.Join(dir, "kmodguard")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("go build: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "allow.yaml")
	// jobs 0 leaves -j at its default: all cores.
	ours := func(jobs int) *exec.Cmd {
		args := []string{"allowlist", "init", "--modules-dir", k.ModulesDir(), "--out-file", out}
		if jobs > 0 {
			args = append(args, "-j", strconv.Itoa(jobs))
		}
		return exec.Command(bin, args...)
	}
	sha := func() *exec.Cmd {
		return exec.Command("sh", "-c", `find "$1" -name '*.ko*' | xargs sha256sum >/dev/null`, "sh", k.ModulesDir())
	}
	// timed runs c and adds its wall time and its CPU time (user+system,
	// children included: wait4 reports the waited-for descendants too).
	timed := func(c *exec.Cmd, wall, cpu *time.Duration) {
		start := time.Now()
		if o, err := c.CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", c.Args, err, o)
		}
		*wall += time.Since(start)
		*cpu += c.ProcessState.UserTime() + c.ProcessState.SystemTime()
	}
	// Warm the page cache (and check that both commands work).
	var warm time.Duration
	timed(sha(), &warm, &warm)
	timed(ours(0), &warm, &warm)

	var wOurs, wOurs1, wSha, cOurs, cOurs1, cSha time.Duration
	b.ResetTimer()
	for b.Loop() {
		timed(sha(), &wSha, &cSha)
		timed(ours(0), &wOurs, &cOurs)
		timed(ours(1), &wOurs1, &cOurs1)
	}
	n := float64(b.N)
	b.ReportMetric(wOurs.Seconds()/n, "ours-s/op")
	b.ReportMetric(wOurs1.Seconds()/n, "ours-j1-s/op")
	b.ReportMetric(wSha.Seconds()/n, "sha256sum-s/op")
	b.ReportMetric(wOurs.Seconds()/wSha.Seconds(), "ours/sha256sum")
	b.ReportMetric(wOurs1.Seconds()/wSha.Seconds(), "ours-j1/sha256sum")
	// CPU time says how much work each does, whatever else the machine runs.
	b.ReportMetric(cOurs.Seconds()/cSha.Seconds(), "ours-cpu/sha256sum-cpu")
}
