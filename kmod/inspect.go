package kmod

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"sync"
)

// bufPool holds read and decompression buffers between calls, so that a
// sweep over thousands of modules does not allocate one image per module.
// Nothing a Module holds points into these buffers.
var bufPool = sync.Pool{New: func() any { return new([]byte) }}

func getBuf() *[]byte  { return bufPool.Get().(*[]byte) }
func putBuf(b *[]byte) { bufPool.Put(b) }

// Inspect reads a module file (.ko, .ko.xz, .ko.zst or .ko.gz, told apart by
// content) once and reports what InspectBytes does, plus Path. Files larger
// than MaxImageSize are refused.
func Inspect(path string) (*Module, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	if st.IsDir() {
		return nil, fmt.Errorf("inspect %s: is a directory", path)
	}
	if st.Size() > MaxImageSize {
		return nil, fmt.Errorf("inspect %s: %w: %d bytes, the limit is %d", path, ErrTooLarge, st.Size(), MaxImageSize)
	}
	bp := getBuf()
	defer putBuf(bp)
	b, err := readAll(f, (*bp)[:0], st.Size())
	*bp = b[:0]
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	m, err := InspectBytes(b)
	if err != nil {
		return nil, fmt.Errorf("inspect %s: %w", path, err)
	}
	m.Path = path
	return m, nil
}

// InspectReader reads a module image from r to the end (at most
// MaxImageSize bytes) and inspects it, e.g. a module piped on standard input.
func InspectReader(r io.Reader) (*Module, error) {
	bp := getBuf()
	defer putBuf(bp)
	b, err := readAll(r, (*bp)[:0], 0)
	*bp = b[:0]
	if err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	return InspectBytes(b)
}

// readAll reads r into dst, sized by hint for regular files, and stops with
// ErrTooLarge past MaxImageSize (a pipe or /proc file has no size).
func readAll(r io.Reader, dst []byte, hint int64) ([]byte, error) {
	if int64(cap(dst)) < hint+1 {
		dst = make([]byte, 0, hint+1) // +1 sees EOF without growing
	}
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := r.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if int64(len(dst)) > MaxImageSize {
			return dst, fmt.Errorf("%w: over %d bytes", ErrTooLarge, MaxImageSize)
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, err
		}
	}
}

// InspectBytes inspects a module image held in memory: plain ELF or
// compressed. It returns an error when the bytes are not a well-formed
// 64-bit little-endian module; a present but unparseable signature is
// reported in Signature.Err instead. b is not retained.
func InspectBytes(b []byte) (*Module, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("%w: empty input", ErrNotELF)
	}
	if int64(len(b)) > MaxImageSize {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(b), MaxImageSize)
	}
	m := &Module{FileSize: int64(len(b))}
	img := b
	m.Compression = detectCompression(b)
	if m.Compression != CompressionNone {
		bp := getBuf()
		defer putBuf(bp)
		out, err := decompress(*bp, b, m.Compression)
		if err != nil {
			return nil, fmt.Errorf("decompress: %w", err)
		}
		*bp = out[:0]
		img = out
	}
	m.ELFSize = int64(len(img))
	if err := m.inspectELF(img); err != nil {
		return nil, err
	}
	// The digests come last: bytes that are no module cost no hashing
	// here, and a caller that hashes them anyway hashes them once.
	fileSum := sha256.Sum256(b)
	m.FileSHA256 = hex.EncodeToString(fileSum[:])
	m.ELFSHA256 = m.FileSHA256
	if m.Compression != CompressionNone {
		elfSum := sha256.Sum256(img)
		m.ELFSHA256 = hex.EncodeToString(elfSum[:])
	}
	return m, nil
}

// inspectELF fills names, metadata and signature from a raw ELF image.
func (m *Module) inspectELF(img []byte) error {
	// Section bounds are checked against the whole image, signature
	// included, as the kernel's post_load_data hook (and the guard) sees it.
	_, m.Signature = splitSignature(img)
	mi, tm, bid, err := elfSectionsWith(img, secBuildID)
	if err != nil {
		return err
	}
	m.Name, m.ThisModuleName, err = sectionNames(img, mi, tm)
	if err != nil {
		return err
	}
	if bid.found {
		if note, err := bid.data(img); err == nil {
			m.BuildID, _ = BuildIDNote(note)
		}
	}
	if mi.found {
		info, err := mi.data(img)
		if err != nil {
			return err
		}
		if err := m.fillModinfo(info); err != nil {
			return err
		}
	}
	m.NameMismatch = m.Name != "" && m.ThisModuleName != "" && m.Name != m.ThisModuleName
	return nil
}
