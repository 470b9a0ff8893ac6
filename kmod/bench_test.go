package kmod

import (
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

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

// BenchmarkInspectTree compares, side by side on the same files, Inspect
// over a whole Debian modules tree with sha256sum(1) and with a plain
// read-and-hash loop in Go. `kmodguard allowlist init` does the first and
// must be no slower than the second.
func BenchmarkInspectTree(b *testing.B) {
	for _, s := range debkernel.AllSeries {
		b.Run(string(s), func(b *testing.B) {
			paths, total := treeFiles(b, s)
			b.Run("inspect", func(b *testing.B) {
				b.SetBytes(total)
				for b.Loop() {
					for _, p := range paths {
						if _, err := Inspect(p); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
			b.Run("sha256sum", func(b *testing.B) {
				if _, err := exec.LookPath("sha256sum"); err != nil {
					b.Skip("needs sha256sum(1)")
				}
				b.SetBytes(total)
				for b.Loop() {
					// One process per 1000 files, as xargs would.
					for i := 0; i < len(paths); i += 1000 {
						cmd := exec.Command("sha256sum", paths[i:min(i+1000, len(paths))]...)
						cmd.Stdout = io.Discard
						if err := cmd.Run(); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
			b.Run("xz-dc", func(b *testing.B) {
				// For a compressed tree, the fair floor is xz(1) itself:
				// Inspect hashes the decompressed image too.
				if !strings.HasSuffix(paths[0], ".xz") {
					b.Skip("the tree is not xz-compressed")
				}
				if _, err := exec.LookPath("xz"); err != nil {
					b.Skip("needs xz(1)")
				}
				b.SetBytes(total)
				for b.Loop() {
					for i := 0; i < len(paths); i += 1000 {
						cmd := exec.Command("xz", append([]string{"-dc"}, paths[i:min(i+1000, len(paths))]...)...)
						h := sha256.New()
						cmd.Stdout = h
						if err := cmd.Run(); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
			b.Run("go-read-sha256", func(b *testing.B) {
				b.SetBytes(total)
				for b.Loop() {
					for _, p := range paths {
						f, err := os.Open(p)
						if err != nil {
							b.Fatal(err)
						}
						h := sha256.New()
						_, err = io.Copy(h, f)
						f.Close()
						if err != nil {
							b.Fatal(err)
						}
						h.Sum(nil)
					}
				}
			})
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
