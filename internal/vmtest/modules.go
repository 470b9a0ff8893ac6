package vmtest

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/kmodguard/kmodguard/internal/debkernel"
)

// maxModuleImage bounds a decompressed fixture: the largest Debian module
// is a few tens of MiB, so anything past this is a broken or hostile file.
const maxModuleImage = 256 << 20

// stageModules puts the requested modules into the initramfs: each as a
// plain and, when shipped compressed, a compressed fixture in fixtures (a
// host folder), and each with its dependencies under /lib/modules/<release>
// with a modules.dep that lists only what is there.
func stageModules(rfs *initramfs, k *debkernel.Kernel, names []string, fixtures string) error {
	modDir := path.Join("lib/modules", k.Release)
	rfs.mkdirAll(modDir)
	for _, f := range []string{"modules.builtin", "modules.builtin.modinfo", "modules.order"} {
		if _, err := os.Stat(filepath.Join(k.ModulesDir(), f)); err == nil {
			rfs.addFile(path.Join(modDir, f), filepath.Join(k.ModulesDir(), f), 0o644)
		}
	}
	if len(names) == 0 {
		return nil
	}
	deps, err := k.ModulesDep()
	if err != nil {
		return err
	}
	want := map[string]bool{}
	var add func(rel string)
	add = func(rel string) {
		if want[rel] {
			return
		}
		want[rel] = true
		for _, d := range deps[rel] {
			add(d)
		}
	}
	for _, n := range names {
		src, err := k.Module(n)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(k.ModulesDir(), src)
		if err != nil {
			return err
		}
		add(filepath.ToSlash(rel))
		if err := stageFixture(src, n, fixtures); err != nil {
			return err
		}
	}
	var lines []string
	for rel := range want {
		rfs.addFile(path.Join(modDir, rel), filepath.Join(k.ModulesDir(), rel), 0o644)
		lines = append(lines, rel+":"+prefixJoin(deps[rel]))
	}
	sort.Strings(lines)
	rfs.addData(path.Join(modDir, "modules.dep"), []byte(strings.Join(lines, "\n")+"\n"), 0o644)
	return nil
}

func prefixJoin(deps []string) string {
	if len(deps) == 0 {
		return ""
	}
	return " " + strings.Join(deps, " ")
}

// moduleBase turns "kernel/drivers/net/dummy.ko.xz" into "dummy".
func moduleBase(rel string) string {
	b := path.Base(rel)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return b
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// stageFixture writes <name>.ko (the plain ELF) into dir and, for a
// compressed module, also <name>.ko.xz (or .zst, .gz) as shipped.
func stageFixture(src, name, dir string) error {
	raw, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	plain := raw
	if ext := compressedExt(src); ext != "" {
		if err := os.WriteFile(filepath.Join(dir, name+ext), raw, 0o644); err != nil {
			return err
		}
		if plain, err = Decompress(raw); err != nil {
			return fmt.Errorf("decompress %s: %w", src, err)
		}
	}
	return os.WriteFile(filepath.Join(dir, name+".ko"), plain, 0o644)
}

func compressedExt(p string) string {
	for _, ext := range []string{".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(p, ext) {
			return ext
		}
	}
	return ""
}

// Decompress returns the ELF image inside a compressed module (xz, zstd or
// gzip, recognised by magic); a plain ELF comes back as it is.
func Decompress(b []byte) ([]byte, error) {
	var r io.Reader
	switch {
	case bytes.HasPrefix(b, []byte("\x7fELF")):
		return b, nil
	case bytes.HasPrefix(b, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		xr, err := xz.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		r = xr
	case bytes.HasPrefix(b, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		r = zr
	case bytes.HasPrefix(b, []byte{0x1f, 0x8b}):
		gr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		r = gr
	default:
		return nil, fmt.Errorf("not an ELF image and no known compression")
	}
	out, err := io.ReadAll(io.LimitReader(r, maxModuleImage+1))
	if err != nil {
		return nil, err
	}
	if len(out) > maxModuleImage {
		return nil, fmt.Errorf("decompressed image exceeds %d bytes", maxModuleImage)
	}
	return out, nil
}
