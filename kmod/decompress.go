package kmod

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// MaxImageSize caps both the bytes read from a file and the ELF image that
// decompression may produce, so that a decompression bomb or a huge file is
// an error rather than an out-of-memory kill. The largest module of a
// Debian kernel is a few tens of MiB. Set it before inspecting anything;
// changing it while Inspect runs on other goroutines is a data race.
var MaxImageSize int64 = 256 << 20

// ErrTooLarge is returned when an input or its decompressed image exceeds
// MaxImageSize.
var ErrTooLarge = errors.New("module image too large")

var (
	magicXZ   = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	magicZstd = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicGzip = []byte{0x1f, 0x8b}
)

// detectCompression looks at magic bytes only; file names lie.
func detectCompression(b []byte) Compression {
	switch {
	case bytes.HasPrefix(b, magicXZ):
		return CompressionXZ
	case bytes.HasPrefix(b, magicZstd):
		return CompressionZstd
	case bytes.HasPrefix(b, magicGzip):
		return CompressionGzip
	}
	return CompressionNone
}

// zstdDecoders holds one shared decoder per size limit (MaxImageSize can be
// changed, by tests for one): DecodeAll is safe for concurrent use, and
// building a decoder costs more than decoding a small module. The limit
// matters because DecodeAll preallocates the content size a frame declares.
var zstdDecoders sync.Map // int64 -> *zstd.Decoder

func zstdDecoder(limit int64) (*zstd.Decoder, error) {
	if d, ok := zstdDecoders.Load(limit); ok {
		return d.(*zstd.Decoder), nil
	}
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxMemory(uint64(limit)),
		zstd.WithDecoderMaxWindow(uint64(max(min(limit, maxXZDict), zstd.MinWindowSize))))
	if err != nil {
		return nil, err
	}
	if prev, loaded := zstdDecoders.LoadOrStore(limit, d); loaded {
		d.Close()
		return prev.(*zstd.Decoder), nil
	}
	return d, nil
}

// decompress returns the ELF image inside b, appending to dst (which may
// come from a pool). The result never exceeds MaxImageSize.
func decompress(dst []byte, b []byte, c Compression) ([]byte, error) {
	limit := MaxImageSize
	switch c {
	case CompressionZstd:
		d, err := zstdDecoder(limit)
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		out, err := d.DecodeAll(b, dst[:0])
		if err != nil {
			if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrWindowSizeExceeded) {
				return nil, fmt.Errorf("zstd: %w: over %d bytes", ErrTooLarge, limit)
			}
			return nil, fmt.Errorf("zstd: %w", err)
		}
		if int64(len(out)) > limit {
			return nil, fmt.Errorf("zstd: %w: over %d bytes", ErrTooLarge, limit)
		}
		return out, nil
	case CompressionXZ:
		info, err := checkXZ(b)
		if err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		if uint64(cap(dst)) < info.size {
			dst = make([]byte, info.size)
		}
		dst = dst[:info.size]
		if err := decodeXZ(dst, b, info); err != nil {
			return nil, fmt.Errorf("xz: %w", err)
		}
		return dst, nil
	case CompressionGzip:
		r, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return readLimited(dst, r, "gzip")
	}
	return nil, fmt.Errorf("unknown compression %q", c)
}

// readLimited reads r to the end into dst[:0], failing once more than
// MaxImageSize bytes come out.
func readLimited(dst []byte, r io.Reader, what string) ([]byte, error) {
	limit := MaxImageSize
	buf := bytes.NewBuffer(dst[:0])
	n, err := buf.ReadFrom(io.LimitReader(r, limit+1))
	if err != nil {
		if strings.HasPrefix(err.Error(), what+":") { // the decoders name themselves
			return nil, err
		}
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if n > limit {
		return nil, fmt.Errorf("%s: %w: over %d bytes", what, ErrTooLarge, limit)
	}
	return buf.Bytes(), nil
}
