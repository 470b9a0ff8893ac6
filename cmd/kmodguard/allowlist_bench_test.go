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
		args := []string{"allowlist", "init", "--modules-dir", k.ModulesDir(), "-o", out}
		if jobs > 0 {
			args = append(args, "-j", strconv.Itoa(jobs))
		}
		return exec.Command(bin, args...)
	}
	sha := func() *exec.Cmd {
		return exec.Command("sh", "-c", `find "$1" -name '*.ko*' | xargs sha256sum >/dev/null`, "sh", k.ModulesDir())
	}
	timed := func(c *exec.Cmd) time.Duration {
		start := time.Now()
		if o, err := c.CombinedOutput(); err != nil {
			b.Fatalf("%v: %v\n%s", c.Args, err, o)
		}
		return time.Since(start)
	}
	// Warm the page cache (and check that both commands work).
	timed(sha())
	timed(ours(0))

	var tOurs, tOurs1, tSha time.Duration
	b.ResetTimer()
	for b.Loop() {
		tSha += timed(sha())
		tOurs += timed(ours(0))
		tOurs1 += timed(ours(1))
	}
	n := float64(b.N)
	b.ReportMetric(tOurs.Seconds()/n, "ours-s/op")
	b.ReportMetric(tOurs1.Seconds()/n, "ours-j1-s/op")
	b.ReportMetric(tSha.Seconds()/n, "sha256sum-s/op")
	b.ReportMetric(tOurs.Seconds()/tSha.Seconds(), "ours/sha256sum")
	b.ReportMetric(tOurs1.Seconds()/tSha.Seconds(), "ours-j1/sha256sum")
}
