package kmod

import (
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmodguard/kmodguard/internal/debkernel"
)

// treeFiles lists the modules of a Debian kernel package.
func treeFiles(b *testing.B, s debkernel.Series) (paths []string, total int64) {
	b.Helper()
	k := realKernel(b, s)
	err := filepath.WalkDir(k.ModulesDir(), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.Contains(d.Name(), ".ko") {
			paths = append(paths, p)
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
			}
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	return paths, total
}

// BenchmarkInspectTree times Inspect over a whole Debian modules tree on one
// goroutine, interleaved round by round with sha256sum(1) over the same
// files (and, for the xz-compressed 6.12 tree, with xz -dc piped into a
// hash: the floor for anything that must see the decompressed image), and
// reports the ratios. `kmodguard allowlist init` is Inspect in a loop:
// target inspect/sha256sum <= 1 on the plain 6.1 tree.
func BenchmarkInspectTree(b *testing.B) {
	for _, s := range debkernel.AllSeries {
		b.Run(string(s), func(b *testing.B) {
			paths, total := treeFiles(b, s)
			if _, err := exec.LookPath("sha256sum"); err != nil {
				b.Skip("needs sha256sum(1)")
			}
			compressed := strings.HasSuffix(paths[0], ".xz")
			if _, err := exec.LookPath("xz"); compressed && err != nil {
				b.Skip("needs xz(1)")
			}
			inspect := func() {
				for _, p := range paths {
					if _, err := Inspect(p); err != nil {
						b.Fatal(err)
					}
				}
			}
			// batches runs a command over the files, 1000 per process as
			// xargs would, with stdout into w.
			batches := func(w io.Writer, name string, args ...string) {
				for i := 0; i < len(paths); i += 1000 {
					cmd := exec.Command(name, append(args, paths[i:min(i+1000, len(paths))]...)...)
					cmd.Stdout = w
					if err := cmd.Run(); err != nil {
						b.Fatal(err)
					}
				}
			}
			timed := func(f func()) time.Duration {
				start := time.Now()
				f()
				return time.Since(start)
			}
			// Warm the page cache.
			batches(io.Discard, "sha256sum")
			inspect()

			var tInspect, tSum, tXZ time.Duration
			b.SetBytes(total)
			b.ResetTimer()
			for b.Loop() {
				tSum += timed(func() { batches(io.Discard, "sha256sum") })
				tInspect += timed(inspect)
				if compressed {
					tXZ += timed(func() { batches(sha256.New(), "xz", "-dc") })
				}
			}
			n := float64(b.N)
			b.ReportMetric(float64(len(paths)), "modules")
			b.ReportMetric(tInspect.Seconds()/n, "inspect-s/op")
			b.ReportMetric(tSum.Seconds()/n, "sha256sum-s/op")
			b.ReportMetric(tInspect.Seconds()/tSum.Seconds(), "inspect/sha256sum")
			if compressed {
				b.ReportMetric(tXZ.Seconds()/n, "xz-dc-s/op")
				b.ReportMetric(tInspect.Seconds()/tXZ.Seconds(), "inspect/xz-dc")
			}
		})
	}
}

// BenchmarkInspectModule measures one module in memory, per format.
func BenchmarkInspectModule(b *testing.B) {
	for _, tc := range []struct {
		s    debkernel.Series
		name string
	}{{debkernel.Series61, "dummy"}, {debkernel.Series61, "veth"}, {debkernel.Series612, "dummy"}, {debkernel.Series612, "veth"}} {
		b.Run(string(tc.s)+"/"+tc.name, func(b *testing.B) {
			_, raw := realModule(b, tc.s, tc.name)
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := InspectBytes(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseNames is the cost of the name walk alone, the part the
// guard repeats in BPF.
func BenchmarkParseNames(b *testing.B) {
	_, raw := realModule(b, debkernel.Series61, "veth")
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ParseNames(raw); err != nil {
			b.Fatal(err)
		}
	}
}
