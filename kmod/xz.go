package kmod

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// The xz container is checked before it is decoded, because the decoder
// trusts it: a 30-byte stream can ask for a 4 GiB LZMA2 dictionary, which
// the decoder allocates up front. checkXZ walks one stream from its footer
// (stream footer -> index -> block headers) with every size bounded, and
// returns the total uncompressed size that the index promises. Facts from
// the .xz file format specification 1.1.0.

// maxXZDict bounds the LZMA2 dictionary of a block (and the zstd window):
// xz -9 uses 64 MiB, and kernel modules are compressed with 1 or 2 MiB.
const maxXZDict = 64 << 20

// maxXZBlocks bounds the index; a module is one block (kmod and the kernel
// build compress each .ko as a single block).
const maxXZBlocks = 1 << 16

var (
	errXZFormat      = errors.New("malformed xz container")
	errXZUnsupported = errors.New("unsupported xz stream")
)

const (
	xzHeaderSize  = 12 // stream header and stream footer
	xzFilterLZMA2 = 0x21
)

// xzCheckSize is the size of the integrity check of each check type.
var xzCheckSize = [16]uint64{0, 4, 4, 4, 8, 8, 8, 16, 16, 16, 32, 32, 32, 64, 64, 64}

// xzVarint reads a multibyte integer (at most 9 bytes, 63 bits).
func xzVarint(b []byte) (v uint64, n int, err error) {
	for i := 0; i < len(b) && i < 9; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			if i > 0 && b[i] == 0 {
				return 0, 0, fmt.Errorf("%w: non-minimal integer", errXZFormat)
			}
			return v, i + 1, nil
		}
	}
	return 0, 0, fmt.Errorf("%w: truncated integer", errXZFormat)
}

func pad4(n uint64) uint64 { return (n + 3) &^ 3 }

// xzInfo is what checkXZ learns about a stream.
type xzInfo struct {
	// size is the uncompressed size the index declares.
	size uint64
	// dictOff is the offset in the file of the LZMA2 dictionary-size byte
	// of a single-block stream, or 0 when there is none or several.
	dictOff int
}

// checkXZ validates the container of a single-stream .xz file and returns
// what the index declares, or an error wrapping ErrTooLarge when the size
// or a dictionary exceeds the limits.
func checkXZ(b []byte) (xzInfo, error) {
	var info xzInfo
	n := uint64(len(b))
	if n < 2*xzHeaderSize {
		return info, fmt.Errorf("%w: %d bytes is too short", errXZFormat, n)
	}
	footer := b[n-xzHeaderSize:]
	if footer[10] != 'Y' || footer[11] != 'Z' {
		return info, fmt.Errorf("%w: no stream footer at the end (trailing data or several streams)", errXZFormat)
	}
	if footer[8] != b[6] || footer[9] != b[7] {
		return info, fmt.Errorf("%w: stream header and footer flags differ", errXZFormat)
	}
	checkType := b[7] & 0x0f
	if b[6] != 0 || b[7]&0xf0 != 0 {
		return info, fmt.Errorf("%w: reserved stream flags set", errXZFormat)
	}
	indexSize := (uint64(binary.LittleEndian.Uint32(footer[4:])) + 1) * 4
	if indexSize > n-2*xzHeaderSize {
		return info, fmt.Errorf("%w: index of %d bytes does not fit", errXZFormat, indexSize)
	}
	indexStart := n - xzHeaderSize - indexSize
	index := b[indexStart : n-xzHeaderSize]
	if index[0] != 0 {
		return info, fmt.Errorf("%w: no index indicator", errXZFormat)
	}
	p := 1
	count, k, err := xzVarint(index[p:])
	if err != nil {
		return info, err
	}
	p += k
	if count > maxXZBlocks {
		return info, fmt.Errorf("%w: %d blocks", errXZFormat, count)
	}
	var total uint64
	blockStart := uint64(xzHeaderSize)
	for i := uint64(0); i < count; i++ {
		unpadded, k, err := xzVarint(index[p:])
		if err != nil {
			return info, err
		}
		p += k
		size, k, err := xzVarint(index[p:])
		if err != nil {
			return info, err
		}
		p += k
		if total += size; total > uint64(MaxImageSize) || total < size {
			return info, fmt.Errorf("%w: the index declares over %d bytes", ErrTooLarge, MaxImageSize)
		}
		if unpadded == 0 || unpadded > indexStart || pad4(unpadded) > indexStart-blockStart {
			return info, fmt.Errorf("%w: block %d of %d bytes does not fit", errXZFormat, i, unpadded)
		}
		dictOff, err := checkXZBlockHeader(b[blockStart:indexStart], unpadded, xzCheckSize[checkType])
		if err != nil {
			return info, fmt.Errorf("block %d: %w", i, err)
		}
		if count == 1 && dictOff > 0 {
			info.dictOff = int(blockStart) + dictOff
		}
		blockStart += pad4(unpadded)
	}
	if blockStart != indexStart {
		return info, fmt.Errorf("%w: blocks end at %d but the index starts at %d", errXZFormat, blockStart, indexStart)
	}
	info.size = total
	return info, nil
}

// checkXZBlockHeader checks a block header's filters; only LZMA2's
// dictionary size matters for memory. It returns the offset of the LZMA2
// dictionary byte in b, or 0.
func checkXZBlockHeader(b []byte, unpadded, checkSize uint64) (dictOff int, err error) {
	hsize := (uint64(b[0]) + 1) * 4
	if b[0] == 0 || hsize > uint64(len(b)) || hsize+checkSize >= unpadded {
		return 0, fmt.Errorf("%w: bad block header size", errXZFormat)
	}
	h := b[1 : hsize-4] // without the size byte and the CRC32
	flags := h[0]
	if flags&0x3c != 0 {
		return 0, fmt.Errorf("%w: reserved block flags set", errXZFormat)
	}
	p := 1
	for _, present := range []bool{flags&0x40 != 0, flags&0x80 != 0} { // compressed, uncompressed size
		if present {
			_, k, err := xzVarint(h[p:])
			if err != nil {
				return 0, err
			}
			p += k
		}
	}
	for f := 0; f <= int(flags&3); f++ {
		id, k, err := xzVarint(h[p:])
		if err != nil {
			return 0, err
		}
		p += k
		psize, k, err := xzVarint(h[p:])
		if err != nil {
			return 0, err
		}
		p += k
		if psize > uint64(len(h)-p) {
			return 0, fmt.Errorf("%w: filter properties do not fit", errXZFormat)
		}
		propsAt := 1 + p // h starts at b[1]
		props := h[p : p+int(psize)]
		p += int(psize)
		if id != xzFilterLZMA2 {
			// The kernel build and kmod compress with LZMA2 alone; the
			// decoder has no branch-conversion (BCJ) or delta filters.
			return 0, fmt.Errorf("%w: xz filter %#x (only LZMA2 alone, as the kernel build uses)", errXZUnsupported, id)
		}
		if id == xzFilterLZMA2 {
			dictOff = propsAt
			if len(props) != 1 || props[0] > 40 {
				return 0, fmt.Errorf("%w: bad LZMA2 properties", errXZFormat)
			}
			if dict := xzDictSize(props[0]); dict > maxXZDict {
				return 0, fmt.Errorf("%w: LZMA2 dictionary of %d bytes, the limit is %d", ErrTooLarge, xzDictSize(props[0]), maxXZDict)
			}
		}
	}
	return dictOff, nil
}

// shrinkXZDict returns a reader over b in which the dictionary of a
// single-block stream is cut down to the uncompressed size. The decoder
// allocates and clears the whole dictionary up front (1 or 2 MiB for a
// kernel module, often 50 times the module), yet no match can reach
// further back than the bytes already produced. Only the block header is
// copied and its CRC32 recomputed; the data, the index and the checks are
// untouched. A stream that lies about its size still fails: either a match
// reaches past the smaller window or the index check does.
func shrinkXZDict(b []byte, info xzInfo) io.Reader {
	if info.dictOff == 0 {
		return bytes.NewReader(b)
	}
	const hdr = xzHeaderSize // the single block starts after the stream header
	bits := byte(0)          // 4 KiB, the LZMA2 minimum
	for xzDictSize(bits) < info.size {
		bits++
	}
	if bits >= b[info.dictOff] {
		return bytes.NewReader(b)
	}
	hsize := (int(b[hdr]) + 1) * 4
	h := bytes.Clone(b[hdr : hdr+hsize])
	h[info.dictOff-hdr] = bits
	binary.LittleEndian.PutUint32(h[hsize-4:], crc32.ChecksumIEEE(h[:hsize-4]))
	return io.MultiReader(bytes.NewReader(b[:hdr]), bytes.NewReader(h), bytes.NewReader(b[hdr+hsize:]))
}

// xzDictSize decodes an LZMA2 dictionary-size byte (0..40).
func xzDictSize(bits byte) uint64 {
	if bits >= 40 {
		return 1<<32 - 1
	}
	return (2 | uint64(bits)&1) << (bits/2 + 11)
}
