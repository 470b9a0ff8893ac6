// Package debpkg reads the kernel modules out of a Debian package file
// (.deb), without dpkg and without installing anything: an allowlist for a
// kernel release can then be built from the package a fleet will install.
//
// A .deb is an ar archive of debian-binary, control.tar.* and data.tar.*;
// the data archive is compressed with xz (bookworm's kernels), zstd or gzip,
// or not at all. The package is untrusted input: member names are never
// used as paths as they are, sizes are bounded, and a malformed archive is
// an error.
package debpkg

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Limits on what one package may make us write.
const (
	MaxModuleSize = 256 << 20 // one module file
	MaxTotalSize  = 8 << 30   // every module file of the package
)

// Module is a module file found in a package.
type Module struct {
	Name string // its path in the package, e.g. lib/modules/6.1.0-57-amd64/kernel/drivers/net/dummy.ko
	Path string // where ExtractModules wrote it
}

// IsModuleFile matches the names kmod loads: .ko, optionally compressed.
func IsModuleFile(name string) bool {
	for _, s := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// ExtractModules writes every module file under lib/modules or
// usr/lib/modules of the package at deb into dir (which must exist), under
// its path in the package, and lists them in the package's order.
func ExtractModules(deb, dir string) ([]Module, error) {
	f, err := os.Open(deb)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, comp, err := dataMember(bufio.NewReader(f))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", deb, err)
	}
	r, err := decompress(data, comp)
	if err != nil {
		return nil, fmt.Errorf("%s: data.tar%s: %w", deb, comp, err)
	}
	mods, err := extract(r, dir)
	if err != nil {
		return nil, fmt.Errorf("%s: data.tar%s: %w", deb, comp, err)
	}
	return mods, nil
}

// dataMember finds the data.tar member of an ar archive and returns a
// reader of its bytes and its compression suffix ("", ".xz", ".zst", ".gz").
func dataMember(r io.Reader) (io.Reader, string, error) {
	magic := make([]byte, 8)
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != "!<arch>\n" {
		return nil, "", errors.New("not a Debian package: no ar archive header")
	}
	hdr := make([]byte, 60)
	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			if errors.Is(err, io.EOF) {
				return nil, "", errors.New("not a Debian package: no data.tar member")
			}
			return nil, "", fmt.Errorf("ar header: %w", err)
		}
		if string(hdr[58:60]) != "`\n" {
			return nil, "", errors.New("ar header: bad magic")
		}
		name := strings.TrimRight(strings.TrimSpace(string(hdr[:16])), "/")
		size, err := strconv.ParseInt(strings.TrimSpace(string(hdr[48:58])), 10, 64)
		if err != nil || size < 0 {
			return nil, "", fmt.Errorf("ar member %q: bad size %q", name, hdr[48:58])
		}
		if comp, ok := strings.CutPrefix(name, "data.tar"); ok {
			return io.LimitReader(r, size), comp, nil
		}
		if _, err := io.CopyN(io.Discard, r, size+size%2); err != nil {
			return nil, "", fmt.Errorf("ar member %q: %w", name, err)
		}
	}
}

func decompress(r io.Reader, comp string) (io.Reader, error) {
	switch comp {
	case "":
		return r, nil
	case ".xz":
		return xz.NewReader(r)
	case ".zst":
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	case ".gz":
		return gzip.NewReader(r)
	}
	return nil, fmt.Errorf("compression %q is not supported", comp)
}

func extract(r io.Reader, dir string) ([]Module, error) {
	tr := tar.NewReader(r)
	var mods []Module
	var total int64
	for entries := 0; ; entries++ {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			if entries == 0 {
				return nil, errors.New("an empty or truncated archive")
			}
			// What follows the archive's end must still decompress: a
			// damaged stream is an error, not a short package.
			if _, err := io.Copy(io.Discard, r); err != nil {
				return nil, err
			}
			return mods, nil
		}
		if err != nil {
			return nil, err
		}
		name, ok := modulePath(h.Name)
		if !ok || h.Typeflag != tar.TypeReg {
			continue
		}
		if h.Size > MaxModuleSize {
			return nil, fmt.Errorf("%s: %d bytes, more than a module may have (%d)", name, h.Size, MaxModuleSize)
		}
		if total += h.Size; total > MaxTotalSize {
			return nil, fmt.Errorf("the package's modules exceed %d bytes", int64(MaxTotalSize))
		}
		dst := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, err
		}
		if err := writeFile(dst, tr, h.Size); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		mods = append(mods, Module{Name: name, Path: dst})
	}
}

// modulePath cleans a member name and says whether it is a module file
// under lib/modules or usr/lib/modules. Names that leave the archive's
// root (absolute, or with ..) are not.
func modulePath(name string) (string, bool) {
	name = strings.TrimPrefix(name, "./")
	if name == "" || strings.HasPrefix(name, "/") {
		return "", false
	}
	clean := path.Clean(name)
	if clean != name || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", false
	}
	if !strings.HasPrefix(clean, "lib/modules/") && !strings.HasPrefix(clean, "usr/lib/modules/") {
		return "", false
	}
	return clean, IsModuleFile(path.Base(clean))
}

func writeFile(dst string, r io.Reader, size int64) error {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(r, size))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != size {
		err = fmt.Errorf("truncated: %d of %d bytes", n, size)
	}
	return err
}

// Release returns the kernel release whose modules a package holds: the
// first folder under (usr/)lib/modules of its module names, "" when they
// name none or more than one.
func Release(mods []Module) string {
	rel := ""
	for _, m := range mods {
		rest := strings.TrimPrefix(strings.TrimPrefix(m.Name, "usr/"), "lib/modules/")
		r, _, _ := strings.Cut(rest, "/")
		switch {
		case rel == "":
			rel = r
		case rel != r:
			return ""
		}
	}
	return rel
}
