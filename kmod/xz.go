package kmod

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/crc64"
	"sync"
)

// The xz container is checked before anything is decoded: checkXZ walks
// one stream from its footer (stream footer -> index -> block headers)
// with every size bounded and every CRC32 checked, and returns the total
// uncompressed size that the index promises, which is then allocated once
// and filled by decodeXZ block by block (lzma2.go). Facts from the .xz
// file format specification 1.1.0.

// maxXZDict bounds the LZMA2 dictionary of a block (and the zstd window):
// xz -9 uses 64 MiB, and kernel modules are compressed with 1 or 2 MiB.
// The flat decoder needs no dictionary of its own, but the kernel's
// allocates one: a module that asks for more is refused as too large.
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

func zeros(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// xzBlock is one block as the index and its header describe it.
type xzBlock struct {
	start    int    // offset of the block header in the file
	hsize    int    // block header size
	unpadded uint64 // header + compressed data + check, from the index
	size     uint64 // uncompressed size, from the index
	dictSize uint32 // LZMA2 dictionary size, from the header
	dictOff  int    // offset of the LZMA2 dictionary byte in the file
}

// xzInfo is what checkXZ learns about a stream.
type xzInfo struct {
	// size is the uncompressed size the index declares.
	size      uint64
	checkType byte
	blocks    []xzBlock
}

// checkXZ validates the container of a single-stream .xz file (its header,
// footer, index and block headers, with their CRC32s) and returns what the
// index declares, or an error wrapping ErrTooLarge when the size or a
// dictionary exceeds the limits. The blocks' data is decodeXZ's.
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
	if binary.LittleEndian.Uint32(b[8:]) != crc32.ChecksumIEEE(b[6:8]) {
		return info, fmt.Errorf("%w: stream header CRC32 mismatch", errXZFormat)
	}
	if binary.LittleEndian.Uint32(footer) != crc32.ChecksumIEEE(footer[4:10]) {
		return info, fmt.Errorf("%w: stream footer CRC32 mismatch", errXZFormat)
	}
	if footer[8] != b[6] || footer[9] != b[7] {
		return info, fmt.Errorf("%w: stream header and footer flags differ", errXZFormat)
	}
	info.checkType = b[7] & 0x0f
	if b[6] != 0 || b[7]&0xf0 != 0 {
		return info, fmt.Errorf("%w: reserved stream flags set", errXZFormat)
	}
	switch info.checkType {
	case xzCheckNone, xzCheckCRC32, xzCheckCRC64, xzCheckSHA256:
	default:
		return info, fmt.Errorf("%w: integrity check type %d", errXZUnsupported, info.checkType)
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
	if binary.LittleEndian.Uint32(index[len(index)-4:]) != crc32.ChecksumIEEE(index[:len(index)-4]) {
		return info, fmt.Errorf("%w: index CRC32 mismatch", errXZFormat)
	}
	index = index[:len(index)-4]
	p := 1
	count, k, err := xzVarint(index[p:])
	if err != nil {
		return info, err
	}
	p += k
	if count > maxXZBlocks || count > indexSize/2 {
		return info, fmt.Errorf("%w: %d blocks", errXZFormat, count)
	}
	var total uint64
	blockStart := uint64(xzHeaderSize)
	info.blocks = make([]xzBlock, 0, count)
	checkSize := xzCheckSize[info.checkType]
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
		blk, err := checkXZBlockHeader(b[blockStart:blockStart+unpadded], size, checkSize)
		if err != nil {
			return info, fmt.Errorf("block %d: %w", i, err)
		}
		blk.start, blk.unpadded, blk.size = int(blockStart), unpadded, size
		blk.dictOff += int(blockStart)
		info.blocks = append(info.blocks, blk)
		blockStart += pad4(unpadded)
	}
	if blockStart != indexStart {
		return info, fmt.Errorf("%w: blocks end at %d but the index starts at %d", errXZFormat, blockStart, indexStart)
	}
	// The index is a multiple of 4 bytes: what is left after the records
	// is its padding, 0 to 3 zero bytes.
	if pad := index[p:]; len(pad) > 3 || !zeros(pad) {
		return info, fmt.Errorf("%w: index padding", errXZFormat)
	}
	info.size = total
	return info, nil
}

// checkXZBlockHeader checks a block header (b is the whole block, as long
// as the index says): its CRC32, the sizes it may repeat, and its filter,
// which must be LZMA2 alone with a dictionary within maxXZDict.
func checkXZBlockHeader(b []byte, size, checkSize uint64) (blk xzBlock, err error) {
	hsize := (uint64(b[0]) + 1) * 4
	if b[0] == 0 || hsize+checkSize >= uint64(len(b)) {
		return blk, fmt.Errorf("%w: bad block header size", errXZFormat)
	}
	blk.hsize = int(hsize)
	if binary.LittleEndian.Uint32(b[hsize-4:]) != crc32.ChecksumIEEE(b[:hsize-4]) {
		return blk, fmt.Errorf("%w: block header CRC32 mismatch", errXZFormat)
	}
	h := b[1 : hsize-4] // without the size byte and the CRC32
	flags := h[0]
	if flags&0x3c != 0 {
		return blk, fmt.Errorf("%w: reserved block flags set", errXZFormat)
	}
	p := 1
	for i, present := range []bool{flags&0x40 != 0, flags&0x80 != 0} {
		if !present {
			continue
		}
		v, k, err := xzVarint(h[p:])
		if err != nil {
			return blk, err
		}
		p += k
		// The compressed size is the block less header and check.
		if want := [2]uint64{uint64(len(b)) - hsize - checkSize, size}[i]; v != want {
			return blk, fmt.Errorf("%w: block header and index disagree on a size", errXZFormat)
		}
	}
	if flags&3 != 0 {
		// The kernel build and kmod compress with LZMA2 alone; the decoder
		// has no branch-conversion (BCJ) or delta filters.
		id, _, _ := xzVarint(h[p:])
		return blk, fmt.Errorf("%w: xz filter %#x and %d more (only LZMA2 alone, as the kernel build uses)", errXZUnsupported, id, flags&3)
	}
	id, k, err := xzVarint(h[p:])
	if err != nil {
		return blk, err
	}
	p += k
	if id != xzFilterLZMA2 {
		return blk, fmt.Errorf("%w: xz filter %#x (only LZMA2 alone, as the kernel build uses)", errXZUnsupported, id)
	}
	psize, k, err := xzVarint(h[p:])
	if err != nil {
		return blk, err
	}
	p += k
	if psize != 1 || p >= len(h) || h[p] > 40 {
		return blk, fmt.Errorf("%w: bad LZMA2 properties", errXZFormat)
	}
	blk.dictOff = 1 + p // h starts at b[1]
	dict := xzDictSize(h[p])
	if dict > maxXZDict {
		return blk, fmt.Errorf("%w: LZMA2 dictionary of %d bytes, the limit is %d", ErrTooLarge, dict, maxXZDict)
	}
	blk.dictSize = uint32(dict)
	if !zeros(h[p+1:]) {
		return blk, fmt.Errorf("%w: block header padding", errXZFormat)
	}
	return blk, nil
}

// decodeXZ decodes the blocks checkXZ found into dst, whose length must be
// info.size, and verifies each block's padding and integrity check.
func decodeXZ(dst, b []byte, info xzInfo) error {
	checkSize := int(xzCheckSize[info.checkType])
	at := 0
	for i, blk := range info.blocks {
		out := dst[at : at+int(blk.size)]
		at += int(blk.size)
		// header | compressed data | padding to 4 | check
		dataEnd := blk.start + int(blk.unpadded) - checkSize
		data := b[blk.start+blk.hsize : dataEnd]
		if err := decodeLZMA2(out, data, blk.dictSize); err != nil {
			return fmt.Errorf("block %d: %w", i, err)
		}
		checkAt := blk.start + int(pad4(uint64(dataEnd-blk.start)))
		if !zeros(b[dataEnd:checkAt]) {
			return fmt.Errorf("block %d: %w: block padding", i, errXZFormat)
		}
		check := b[checkAt : checkAt+checkSize]
		if !xzCheck(info.checkType, out, check) {
			return fmt.Errorf("block %d: %w: integrity check mismatch", i, errXZFormat)
		}
	}
	return nil
}

const (
	xzCheckNone   = 0
	xzCheckCRC32  = 1
	xzCheckCRC64  = 4
	xzCheckSHA256 = 10
)

var crc64Table = sync.OnceValue(func() *crc64.Table { return crc64.MakeTable(crc64.ECMA) })

// xzCheck verifies a block's integrity check over its uncompressed data.
func xzCheck(typ byte, data, want []byte) bool {
	switch typ {
	case xzCheckNone:
		return true
	case xzCheckCRC32:
		return binary.LittleEndian.Uint32(want) == crc32.ChecksumIEEE(data)
	case xzCheckCRC64:
		return binary.LittleEndian.Uint64(want) == crc64.Checksum(data, crc64Table())
	case xzCheckSHA256:
		sum := sha256.Sum256(data)
		return bytes.Equal(want, sum[:])
	}
	return false
}

// xzDictSize decodes an LZMA2 dictionary-size byte (0..40).
func xzDictSize(bits byte) uint64 {
	if bits >= 40 {
		return 1<<32 - 1
	}
	return (2 | uint64(bits)&1) << (bits/2 + 11)
}
