package kmod

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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

// zstdTree recompresses up to n modules of the plain 6.1 tree with zstd(1)
// at the level the kernel's scripts/Makefile.modinst uses (its default),
// into dir: Ubuntu and Fedora ship .ko.zst, Debian does not.
func zstdTree(b *testing.B, n int, dir string) (paths []string, total int64) {
	b.Helper()
	if _, err := exec.LookPath("zstd"); err != nil {
		b.Skip("needs zstd(1)")
	}
	plain, _ := treeFiles(b, debkernel.Series61)
	for i, p := range plain[:min(n, len(plain))] {
		out := filepath.Join(dir, fmt.Sprintf("%04d-%s.zst", i, filepath.Base(p)))
		if err := exec.Command("zstd", "-q", "-T0", "-o", out, p).Run(); err != nil {
			b.Fatalf("zstd %s: %v", p, err)
		}
		fi, err := os.Stat(out)
		if err != nil {
			b.Fatal(err)
		}
		paths = append(paths, out)
		total += fi.Size()
	}
	return paths, total
}

// BenchmarkInspectTree times Inspect over a whole Debian modules tree,
// interleaved round by round with the tools over the same files: on the
// plain 6.1 tree, sha256sum(1); on the .ko.xz trees (6.12, 7.2), xz -dc
// piped into a SHA-256 (the floor for anything that must see the
// decompressed image); on 6.1 recompressed with zstd (6.1-zst), zstd -dc.
// First on one goroutine against one tool process at a time, then on every
// core (a goroutine per CPU against as many processes, xargs -P style).
// `kmodguard allowlist init` is Inspect in a loop on every core. Targets:
// inspect/sha256sum <= 1 on the plain tree, inspect/<tool> <= 1 on the
// compressed ones, both ways.
func BenchmarkInspectTree(b *testing.B) {
	var trees []string
	for _, s := range debkernel.AllSeries {
		trees = append(trees, string(s))
	}
	for _, name := range append(trees, "6.1-zst") {
		b.Run(name, func(b *testing.B) {
			var paths []string
			var total int64
			if name == "6.1-zst" {
				paths, total = zstdTree(b, 1000, b.TempDir())
			} else {
				paths, total = treeFiles(b, debkernel.Series(name))
			}
			tool, args := "sha256sum", []string(nil)
			switch {
			case strings.HasSuffix(paths[0], ".xz"):
				tool, args = "xz", []string{"-dc", "--"}
			case strings.HasSuffix(paths[0], ".zst"):
				tool, args = "zstd", []string{"-dcq", "--"}
			}
			if _, err := exec.LookPath(tool); err != nil {
				b.Skipf("needs %s(1)", tool)
			}
			cpus := runtime.GOMAXPROCS(0)
			// shares splits the files in n interleaved shares.
			shares := func(n int) [][]string {
				s := make([][]string, n)
				for i, p := range paths {
					s[i%n] = append(s[i%n], p)
				}
				return s
			}
			inspect := func(workers int) {
				var wg sync.WaitGroup
				for _, share := range shares(workers) {
					wg.Go(func() {
						for _, p := range share {
							if _, err := Inspect(p); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
			}
			// run runs the tool over the files in procs parallel streams,
			// 1000 files per process as xargs would; the decompressors'
			// output goes into a SHA-256, sha256sum's is discarded.
			run := func(procs int) {
				var wg sync.WaitGroup
				for _, share := range shares(procs) {
					wg.Go(func() {
						var w io.Writer = io.Discard
						if tool != "sha256sum" {
							w = sha256.New()
						}
						for i := 0; i < len(share); i += 1000 {
							cmd := exec.Command(tool, append(args, share[i:min(i+1000, len(share))]...)...)
							cmd.Stdout = w
							if err := cmd.Run(); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
			}
			// timed returns the wall time of f(n) and the CPU time it
			// cost, this process's and its children's (the tool
			// processes), user and system.
			timed := func(f func(int), n int) (wall, cpu time.Duration) {
				before := cpuTime(b)
				start := time.Now()
				f(n)
				return time.Since(start), cpuTime(b) - before
			}
			// Warm the page cache.
			run(cpus)
			inspect(cpus)

			var tInspect, tTool, tInspectAll, tToolAll time.Duration
			var cInspect, cTool time.Duration
			add := func(wall, cpuSum *time.Duration, w, c time.Duration) {
				*wall += w
				if cpuSum != nil {
					*cpuSum += c
				}
			}
			b.SetBytes(total)
			b.ResetTimer()
			for b.Loop() {
				w, c := timed(run, 1)
				add(&tTool, &cTool, w, c)
				w, c = timed(inspect, 1)
				add(&tInspect, &cInspect, w, c)
				w, _ = timed(run, cpus)
				add(&tToolAll, nil, w, 0)
				w, _ = timed(inspect, cpus)
				add(&tInspectAll, nil, w, 0)
			}
			n := float64(b.N)
			short := map[string]string{"sha256sum": "sha256sum", "xz": "xz-dc", "zstd": "zstd-dc"}[tool]
			b.ReportMetric(float64(len(paths)), "modules")
			b.ReportMetric(tInspect.Seconds()/n, "inspect-s/op")
			b.ReportMetric(tTool.Seconds()/n, short+"-s/op")
			b.ReportMetric(tInspect.Seconds()/tTool.Seconds(), "inspect/"+short)
			// Per core: the CPU time each way costs, whatever the number
			// of cores it spreads over (xz -dc and the digest of its
			// output run on two at once; Inspect's collector runs beside
			// it).
			b.ReportMetric(cInspect.Seconds()/cTool.Seconds(), "inspect/"+short+"-cpu")
			b.ReportMetric(tInspectAll.Seconds()/tToolAll.Seconds(), fmt.Sprintf("inspect/%s-%dcpu", short, cpus))
		})
	}
}

// cpuTime is the CPU time, user and system, of this process and of its
// children that have been waited for.
func cpuTime(b *testing.B) time.Duration {
	var total time.Duration
	for _, who := range []int{unix.RUSAGE_SELF, unix.RUSAGE_CHILDREN} {
		var ru unix.Rusage
		if err := unix.Getrusage(who, &ru); err != nil {
			b.Fatal(err)
		}
		total += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return total
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

// BenchmarkDecompressTree is the decompressor alone: every .ko.xz of the
// 6.12 tree, read into memory first, decoded on one goroutine.
func BenchmarkDecompressTree(b *testing.B) {
	paths, total := treeFiles(b, debkernel.Series612)
	files := make([][]byte, len(paths))
	for i, p := range paths {
		var err error
		if files[i], err = os.ReadFile(p); err != nil {
			b.Fatal(err)
		}
	}
	var out []byte
	var produced int64
	b.SetBytes(total)
	for b.Loop() {
		produced = 0
		for _, f := range files {
			img, err := decompress(out, f, detectCompression(f))
			if err != nil {
				b.Fatal(err)
			}
			produced += int64(len(img))
			out = img[:0]
		}
	}
	b.ReportMetric(float64(produced)/1e6/(b.Elapsed().Seconds()/float64(b.N)), "image-MB/s")
}
