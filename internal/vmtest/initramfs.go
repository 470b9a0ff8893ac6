package vmtest

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/gzip"
)

// initramfs collects the files of a guest's root filesystem and writes them
// as a gzip-compressed cpio archive in the "newc" format, the one the kernel
// unpacks into its rootfs. Files are read from disk only when the archive is
// written, so large test binaries are never held in memory twice.
type initramfs struct {
	entries map[string]entry // by clean path without leading '/'
}

type entry struct {
	mode   uint32 // full st_mode: type and permission bits
	source string // host file to copy (regular files)
	data   []byte // contents (regular files without source)
	target string // symlink target
}

// cpio st_mode type bits.
const (
	cpioDir     = 0o040000
	cpioRegular = 0o100000
	cpioSymlink = 0o120000
)

func newInitramfs() *initramfs {
	return &initramfs{entries: map[string]entry{}}
}

func cleanPath(p string) string {
	return strings.TrimPrefix(path.Clean("/"+p), "/")
}

// mkdirAll adds p and its parents as directories.
func (r *initramfs) mkdirAll(p string) {
	p = cleanPath(p)
	for p != "" && p != "." {
		if _, ok := r.entries[p]; !ok {
			r.entries[p] = entry{mode: cpioDir | 0o755}
		}
		p = path.Dir(p)
		if p == "." {
			break
		}
	}
}

// addFile adds the host file src at p with permissions perm.
func (r *initramfs) addFile(p, src string, perm fs.FileMode) {
	p = cleanPath(p)
	r.mkdirAll(path.Dir(p))
	r.entries[p] = entry{mode: cpioRegular | uint32(perm.Perm()), source: src}
}

// addData adds a file with the given contents.
func (r *initramfs) addData(p string, data []byte, perm fs.FileMode) {
	p = cleanPath(p)
	r.mkdirAll(path.Dir(p))
	r.entries[p] = entry{mode: cpioRegular | uint32(perm.Perm()), data: data}
}

// addSymlink adds a symbolic link at p pointing to target. An existing entry
// at p wins: a real file is never shadowed by a link.
func (r *initramfs) addSymlink(p, target string) {
	p = cleanPath(p)
	if _, ok := r.entries[p]; ok {
		return
	}
	r.mkdirAll(path.Dir(p))
	r.entries[p] = entry{mode: cpioSymlink | 0o777, target: target}
}

// writeTo writes the gzip-compressed archive. Parents sort before their
// children, so the kernel always finds a directory before its contents.
func (r *initramfs) writeTo(w io.Writer) error {
	zw, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(zw, 1<<20)
	names := make([]string, 0, len(r.entries))
	for n := range r.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	cw := &cpioWriter{w: bw}
	for _, n := range names {
		if err := cw.write(n, r.entries[n]); err != nil {
			return fmt.Errorf("initramfs: %s: %w", n, err)
		}
	}
	if err := cw.trailer(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return zw.Close()
}

type cpioWriter struct {
	w   io.Writer
	ino uint32
	n   int64 // bytes written, for padding
}

func (c *cpioWriter) put(b []byte) error {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return err
}

func (c *cpioWriter) pad() error {
	if r := c.n % 4; r != 0 {
		return c.put(make([]byte, 4-r))
	}
	return nil
}

func (c *cpioWriter) header(name string, mode uint32, size int64) error {
	if size > 0xffffffff {
		return fmt.Errorf("too large for cpio newc (%d bytes)", size)
	}
	c.ino++
	nlink := 1
	if mode&0o170000 == cpioDir {
		nlink = 2
	}
	// Fields: magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize (with NUL), check.
	h := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	if err := c.put([]byte(h)); err != nil {
		return err
	}
	if err := c.put(append([]byte(name), 0)); err != nil {
		return err
	}
	return c.pad()
}

func (c *cpioWriter) write(name string, e entry) error {
	switch e.mode & 0o170000 {
	case cpioDir:
		return c.header(name, e.mode, 0)
	case cpioSymlink:
		if err := c.header(name, e.mode, int64(len(e.target))); err != nil {
			return err
		}
		if err := c.put([]byte(e.target)); err != nil {
			return err
		}
		return c.pad()
	}
	if e.source == "" {
		if err := c.header(name, e.mode, int64(len(e.data))); err != nil {
			return err
		}
		if err := c.put(e.data); err != nil {
			return err
		}
		return c.pad()
	}
	f, err := os.Open(e.source)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", e.source)
	}
	if err := c.header(name, e.mode, st.Size()); err != nil {
		return err
	}
	n, err := io.Copy(c.w, f)
	c.n += n
	if err != nil {
		return err
	}
	if n != st.Size() {
		return fmt.Errorf("%s changed size while being archived", e.source)
	}
	return c.pad()
}

func (c *cpioWriter) trailer() error {
	if err := c.header("TRAILER!!!", 0, 0); err != nil {
		return err
	}
	// The kernel does not need it, but cpio(1) likes 512-byte blocks.
	if r := c.n % 512; r != 0 {
		return c.put(make([]byte, 512-r))
	}
	return nil
}

// writeDir writes the collected files into the host folder dir, as the
// kernel would unpack them: the systemd guest's root file system gets the
// harness's files this way.
func (r *initramfs) writeDir(dir string) error {
	names := make([]string, 0, len(r.entries))
	for n := range r.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		e := r.entries[n]
		p := filepath.Join(dir, filepath.FromSlash(n))
		switch e.mode & 0o170000 {
		case cpioDir:
			if err := os.MkdirAll(p, fs.FileMode(e.mode&0o777)); err != nil {
				return err
			}
			continue
		case cpioSymlink:
			os.Remove(p)
			if err := os.Symlink(e.target, p); err != nil {
				return err
			}
			continue
		}
		data := e.data
		if e.source != "" {
			b, err := os.ReadFile(e.source)
			if err != nil {
				return err
			}
			data = b
		}
		if err := os.WriteFile(p, data, fs.FileMode(e.mode&0o777)); err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
		if err := os.Chmod(p, fs.FileMode(e.mode&0o777)); err != nil {
			return err
		}
	}
	return nil
}
