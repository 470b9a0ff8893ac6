package kmod

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// An LZMA2 decoder that writes straight into the image buffer.
//
// A module is decompressed whole into one flat buffer whose size the xz
// index declares, so that buffer is the dictionary: a match copies from
// bytes already written, there is no window to wrap or flush, and nothing
// is copied twice. The hot paths (the bit trees of literals, lengths and
// distance slots) keep the range coder in locals. The format and its
// constants are those of the LZMA specification (lzma-specification.txt
// in the LZMA SDK) and the .xz file format 1.1.0; the acceptance rules
// are those of the kernel's own decompressor (lib/xz) and of liblzma,
// whichever is stricter, so that nothing is read differently from how the
// kernel would read it.

var errLZMA2 = errors.New("corrupt LZMA2 data")

const (
	lzmaStates      = 12
	lzmaPosBitsMax  = 4
	lzmaLitStates   = 1 << 4 // lc+lp <= 4 in LZMA2
	lzmaLitSize     = 0x300
	lzmaDistStates  = 4
	lzmaSlotBits    = 6
	lzmaEndPosModel = 14
	lzmaFullDists   = 1 << (lzmaEndPosModel / 2)
	lzmaAlignBits   = 4
	lzmaMatchMin    = 2
	lzmaProbInit    = 1 << 10
	lzmaLitOnly     = 7 // states below this followed a literal

	rcTopValue  = 1 << 24
	rcModelBits = 11
	rcMoveBits  = 5
)

// rangeDecoder is LZMA's binary range decoder over one chunk. It
// normalizes before each bit rather than after, so a chunk ends with one
// more normalization (finished). Reading past the chunk yields zeros and
// is caught there. The loops keep the decoder in locals and repeat the
// normalization inline: it is the innermost step of the whole decoder.
type rangeDecoder struct {
	// in holds the chunk (at most rcChunkMax bytes) at its start, so
	// that a read needs no bounds check: one past the end reads what an
	// earlier chunk left there, or zeros, and finished catches it.
	in   *[rcChunkMax]byte
	n    int // bytes of the chunk in in
	pos  int
	rng  uint32
	code uint32
}

// rcChunkMax is the largest compressed LZMA2 chunk (a 16-bit size less one).
const rcChunkMax = 1 << 16

func (rc *rangeDecoder) init(buf *[rcChunkMax]byte, in []byte) error {
	if len(in) < 5 || len(in) > rcChunkMax || in[0] != 0 {
		return fmt.Errorf("%w: bad range coder start", errLZMA2)
	}
	copy(buf[:], in)
	*rc = rangeDecoder{in: buf, n: len(in), pos: 5, rng: 0xffffffff, code: binary.BigEndian.Uint32(in[1:5])}
	return nil
}

// finished says whether the chunk ended where the encoder flushed it.
func (rc *rangeDecoder) finished() bool {
	if rc.rng < rcTopValue {
		rc.fill()
	}
	return rc.code == 0 && rc.pos == rc.n
}

// fill shifts in the next input byte, the cold half of a normalization.
func (rc *rangeDecoder) fill() {
	rc.rng <<= 8
	rc.code = rc.code<<8 | uint32(rc.in[uint16(rc.pos)])
	rc.pos++
}

// adapt moves a probability towards the bit just decoded, without a
// branch: mask is 0 after a 0 (p += (2048-p)>>5) and all ones after a 1
// (p -= p>>5). With an arithmetic shift both are p - (p-t)>>5, t being
// 2048-31 for a 0 (the 31 turns the shift's floor into the ceiling the
// first form needs) and 0 for a 1.
func adapt(p uint16, mask uint32) uint16 {
	v := int32(p)
	return uint16(v - (v-int32((1<<rcModelBits-(1<<rcMoveBits-1))&^mask))>>rcMoveBits)
}

// bit decodes one bit with the adaptive probability *p. It is written to
// the inliner's budget (80), which the hot loop depends on.
func (rc *rangeDecoder) bit(p *uint16) uint32 {
	if rc.rng < rcTopValue {
		rc.fill()
	}
	bound := (rc.rng >> rcModelBits) * uint32(*p)
	if rc.code < bound {
		rc.rng = bound
		*p += (1<<rcModelBits - *p) >> rcMoveBits
		return 0
	}
	rc.code -= bound
	rc.rng -= bound
	*p -= *p >> rcMoveBits
	return 1
}

// tree decodes n bits, most significant first, with the bit tree probs
// (len(probs) == 1<<n); it returns the symbol in [0, 1<<n).
func (rc *rangeDecoder) tree(probs []uint16, n uint) uint32 {
	in, pos, rng, code := rc.in, rc.pos, rc.rng, rc.code
	m := uint32(1)
	for range n {
		if rng < rcTopValue {
			rng <<= 8
			code = code<<8 | uint32(in[uint16(pos)])
			pos++
		}
		p := &probs[m&uint32(len(probs)-1)]
		bound := (rng >> rcModelBits) * uint32(*p)
		if code < bound {
			rng = bound
			*p += (1<<rcModelBits - *p) >> rcMoveBits
			m <<= 1
		} else {
			rng -= bound
			code -= bound
			*p -= *p >> rcMoveBits
			m = m<<1 | 1
		}
	}
	rc.pos, rc.rng, rc.code = pos, rng, code
	return m - 1<<n
}

// reverse decodes n bits, least significant first, with probs[1:].
func (rc *rangeDecoder) reverse(probs []uint16, n uint) uint32 {
	m, sym := uint32(1), uint32(0)
	for i := range n {
		b := rc.bit(&probs[m])
		m = m<<1 | b
		sym |= b << i
	}
	return sym
}

// direct decodes n bits of equal probability.
func (rc *rangeDecoder) direct(n uint) uint32 {
	in, pos, rng, code := rc.in, rc.pos, rc.rng, rc.code
	var v uint32
	for range n {
		if rng < rcTopValue {
			rng <<= 8
			code = code<<8 | uint32(in[uint16(pos)])
			pos++
		}
		rng >>= 1
		var b uint32
		if code >= rng {
			code -= rng
			b = 1
		}
		v = v<<1 | b
	}
	rc.pos, rc.rng, rc.code = pos, rng, code
	return v
}

// literal decodes a literal byte with the 0x300 probabilities probs; after
// a match (state >= lzmaLitOnly) the byte at rep0 steers the first bits.
func (rc *rangeDecoder) literal(probs *[lzmaLitSize]uint16, matched bool, match byte) byte {
	in, pos, rng, code := rc.in, rc.pos, rc.rng, rc.code
	sym := uint32(1)
	if matched {
		mb := uint32(match)
		for sym < 0x100 {
			if rng < rcTopValue {
				rng <<= 8
				code = code<<8 | uint32(in[uint16(pos)])
				pos++
			}
			matchBit := (mb >> 7) & 1
			mb <<= 1
			p := &probs[0x100+matchBit<<8+sym]
			bound := (rng >> rcModelBits) * uint32(*p)
			var b uint32
			if code >= bound {
				b = 1
			}
			mask := -b
			rng = bound ^ (bound^(rng-bound))&mask
			code -= bound & mask
			*p = adapt(*p, mask)
			sym = sym<<1 | b
			if b != matchBit {
				break
			}
		}
	}
	for sym < 0x100 {
		if rng < rcTopValue {
			rng <<= 8
			code = code<<8 | uint32(in[uint16(pos)])
			pos++
		}
		p := &probs[sym&0xff]
		bound := (rng >> rcModelBits) * uint32(*p)
		var b uint32
		if code >= bound {
			b = 1
		}
		mask := -b
		rng = bound ^ (bound^(rng-bound))&mask
		code -= bound & mask
		*p = adapt(*p, mask)
		sym = sym<<1 | b
	}
	rc.pos, rc.rng, rc.code = pos, rng, code
	return byte(sym)
}

// lenDecoder decodes a match length less lzmaMatchMin: 0-7 (low), 8-15
// (mid), 16-271 (high).
type lenDecoder struct {
	choice, choice2 uint16
	low, mid        [1 << lzmaPosBitsMax][1 << 3]uint16
	high            [1 << 8]uint16
}

func (ld *lenDecoder) decode(rc *rangeDecoder, posState uint32) uint32 {
	if rc.bit(&ld.choice) == 0 {
		return rc.tree(ld.low[posState&(1<<lzmaPosBitsMax-1)][:], 3)
	}
	if rc.bit(&ld.choice2) == 0 {
		return 8 + rc.tree(ld.mid[posState&(1<<lzmaPosBitsMax-1)][:], 3)
	}
	return 16 + rc.tree(ld.high[:], 8)
}

// lzmaState is the adaptive model: probabilities, state and the four
// repeated distances.
type lzmaState struct {
	lc, lp, pb uint32
	state      uint32
	rep        [4]uint32

	literal    [lzmaLitStates][lzmaLitSize]uint16
	isMatch    [lzmaStates][1 << lzmaPosBitsMax]uint16
	isRep      [lzmaStates]uint16
	isRepG0    [lzmaStates]uint16
	isRepG1    [lzmaStates]uint16
	isRepG2    [lzmaStates]uint16
	isRep0Long [lzmaStates][1 << lzmaPosBitsMax]uint16
	slot       [lzmaDistStates][1 << lzmaSlotBits]uint16
	special    [1 + lzmaFullDists - lzmaEndPosModel]uint16
	align      [1 << lzmaAlignBits]uint16
	matchLen   lenDecoder
	repLen     lenDecoder

	chunk [rcChunkMax]byte // the range decoder's input, see rangeDecoder
}

// lzmaStates are reused: one is 94 KiB and a tree has thousands of modules.
var lzmaStatePool = sync.Pool{New: func() any { return new(lzmaState) }}

// setProps takes LZMA2's properties byte (lc, lp, pb packed as
// (pb*5+lp)*9+lc, with lc+lp <= 4).
func (s *lzmaState) setProps(b byte) error {
	if b > (4*5+4)*9+8 {
		return fmt.Errorf("%w: properties byte %#x", errLZMA2, b)
	}
	lc, rest := uint32(b)%9, uint32(b)/9
	lp, pb := rest%5, rest/5
	if lc+lp > 4 {
		return fmt.Errorf("%w: lc %d + lp %d is over 4", errLZMA2, lc, lp)
	}
	s.lc, s.lp, s.pb = lc, lp, pb
	return nil
}

// reset sets every probability to one half and forgets state and distances.
func (s *lzmaState) reset() {
	s.state = 0
	s.rep = [4]uint32{}
	fill := func(p []uint16) {
		for i := range p {
			p[i] = lzmaProbInit
		}
	}
	for i := range s.literal[:1<<(s.lc+s.lp)] {
		fill(s.literal[i][:])
	}
	for i := range s.isMatch {
		fill(s.isMatch[i][:])
		fill(s.isRep0Long[i][:])
	}
	fill(s.isRep[:])
	fill(s.isRepG0[:])
	fill(s.isRepG1[:])
	fill(s.isRepG2[:])
	for i := range s.slot {
		fill(s.slot[i][:])
	}
	fill(s.special[:])
	fill(s.align[:])
	for _, ld := range []*lenDecoder{&s.matchLen, &s.repLen} {
		ld.choice, ld.choice2 = lzmaProbInit, lzmaProbInit
		for i := range ld.low {
			fill(ld.low[i][:])
			fill(ld.mid[i][:])
		}
		fill(ld.high[:])
	}
}

// decodeChunk decodes one LZMA chunk from rc into out[pos:end]. Bytes
// before dictStart belong to an earlier dictionary and cannot be matched;
// nor can any beyond dictSize back. A match may not run past end: the
// encoder never splits one across chunks, and the kernel's decoder refuses
// a chunk that ends inside one.
func (s *lzmaState) decodeChunk(rc *rangeDecoder, out []byte, pos, end, dictStart int, dictSize uint32) error {
	if end > len(out) || pos > end {
		return fmt.Errorf("%w: chunk overruns the declared size", errLZMA2)
	}
	out = out[:end]
	pbMask := uint32(1)<<s.pb - 1
	lpMask := uint32(1)<<s.lp - 1
	lc := s.lc
	state := s.state
	rep0, rep1, rep2, rep3 := s.rep[0], s.rep[1], s.rep[2], s.rep[3]
	for pos < end {
		posState := uint32(pos-dictStart) & pbMask
		if rc.bit(&s.isMatch[state][posState]) == 0 {
			var prev byte
			if pos > dictStart {
				prev = out[pos-1]
			}
			lit := (uint32(pos-dictStart)&lpMask)<<lc + uint32(prev)>>(8-lc)
			var match byte
			matched := state >= lzmaLitOnly
			if matched {
				// Only a match sets such a state, and the match's distance
				// was checked; this check keeps the index in range anyway.
				if !inDict(rep0, pos-dictStart, dictSize) {
					return fmt.Errorf("%w: distance %d before the dictionary", errLZMA2, rep0)
				}
				match = out[pos-int(rep0)-1]
			}
			out[pos] = rc.literal(&s.literal[lit&(lzmaLitStates-1)], matched, match)
			pos++
			switch {
			case state < 4:
				state = 0
			case state < 10:
				state -= 3
			default:
				state -= 6
			}
			continue
		}
		var n uint32
		if rc.bit(&s.isRep[state]) == 0 {
			// A match with a new distance.
			n = s.matchLen.decode(rc, posState)
			if state < lzmaLitOnly {
				state = 7
			} else {
				state = 10
			}
			rep3, rep2, rep1 = rep2, rep1, rep0
			rep0 = s.distance(rc, n)
			if rep0 == 0xffffffff {
				// The end marker: LZMA2 chunks have a known size and
				// never carry one.
				return fmt.Errorf("%w: end marker inside a chunk", errLZMA2)
			}
		} else {
			if rc.bit(&s.isRepG0[state]) == 0 {
				if rc.bit(&s.isRep0Long[state][posState]) == 0 {
					// A single byte at rep0.
					if state < lzmaLitOnly {
						state = 9
					} else {
						state = 11
					}
					if !inDict(rep0, pos-dictStart, dictSize) {
						return fmt.Errorf("%w: distance %d before the dictionary", errLZMA2, rep0)
					}
					out[pos] = out[pos-int(rep0)-1]
					pos++
					continue
				}
			} else {
				var dist uint32
				if rc.bit(&s.isRepG1[state]) == 0 {
					dist = rep1
				} else {
					if rc.bit(&s.isRepG2[state]) == 0 {
						dist = rep2
					} else {
						dist = rep3
						rep3 = rep2
					}
					rep2 = rep1
				}
				rep1 = rep0
				rep0 = dist
			}
			n = s.repLen.decode(rc, posState)
			if state < lzmaLitOnly {
				state = 8
			} else {
				state = 11
			}
		}
		// Copy n+lzmaMatchMin bytes from rep0+1 back.
		if !inDict(rep0, pos-dictStart, dictSize) {
			return fmt.Errorf("%w: distance %d before the dictionary", errLZMA2, rep0)
		}
		d := int(rep0) + 1
		length := int(n) + lzmaMatchMin
		if length > end-pos {
			return fmt.Errorf("%w: a match runs past the chunk", errLZMA2)
		}
		src := pos - d
		if d >= length {
			copy(out[pos:pos+length], out[src:src+length])
		} else {
			// Overlapping: the match repeats the last d bytes.
			for i := range length {
				out[pos+i] = out[src+i]
			}
		}
		pos += length
	}
	s.state = state
	s.rep = [4]uint32{rep0, rep1, rep2, rep3}
	return nil
}

// inDict says whether distance dist (0 is the previous byte) reaches a
// byte of the current dictionary: written since its reset (have bytes) and
// no further back than its size.
func inDict(dist uint32, have int, dictSize uint32) bool {
	return int64(dist) < int64(have) && dist < dictSize
}

// distance decodes the distance of a new match whose length less
// lzmaMatchMin is n.
func (s *lzmaState) distance(rc *rangeDecoder, n uint32) uint32 {
	slot := rc.tree(s.slot[min(n, lzmaDistStates-1)][:], lzmaSlotBits)
	if slot < 4 {
		return slot
	}
	bits := uint(slot>>1) - 1
	dist := (2 | slot&1) << bits
	if slot < lzmaEndPosModel {
		// The reverse tree of this slot starts at special[dist-slot].
		return dist + rc.reverse(s.special[dist-slot:], bits)
	}
	dist += rc.direct(bits-lzmaAlignBits) << lzmaAlignBits
	return dist + rc.reverse(s.align[:], lzmaAlignBits)
}

// decodeLZMA2 decodes the LZMA2 data of one xz block, in, into out, which
// must come out exactly full. dictSize is the block header's dictionary
// size.
func decodeLZMA2(out, in []byte, dictSize uint32) error {
	s := lzmaStatePool.Get().(*lzmaState)
	defer lzmaStatePool.Put(s)
	var rc rangeDecoder
	pos, dictStart := 0, 0
	needDictReset, needProps := true, true
	for p := 0; ; {
		if p >= len(in) {
			return fmt.Errorf("%w: no end of data", errLZMA2)
		}
		control := in[p]
		p++
		if control == 0 {
			if p != len(in) {
				return fmt.Errorf("%w: %d bytes after the end of data", errLZMA2, len(in)-p)
			}
			if pos != len(out) {
				return fmt.Errorf("%w: %d bytes decoded, the index declares %d", errLZMA2, pos, len(out))
			}
			return nil
		}
		if control == 1 || control >= 0xe0 {
			needDictReset, needProps = false, true
			dictStart = pos
		} else if needDictReset {
			return fmt.Errorf("%w: no dictionary reset at the start", errLZMA2)
		}
		if control < 0x80 {
			// Uncompressed: 1 with a dictionary reset, 2 without.
			if control > 2 || len(in)-p < 2 {
				return fmt.Errorf("%w: control byte %#x", errLZMA2, control)
			}
			n := int(binary.BigEndian.Uint16(in[p:])) + 1
			p += 2
			if n > len(in)-p || n > len(out)-pos {
				return fmt.Errorf("%w: uncompressed chunk overruns", errLZMA2)
			}
			copy(out[pos:], in[p:p+n])
			p += n
			pos += n
			continue
		}
		if len(in)-p < 4 {
			return fmt.Errorf("%w: truncated chunk header", errLZMA2)
		}
		unpacked := int(control&0x1f)<<16 + int(binary.BigEndian.Uint16(in[p:])) + 1
		packed := int(binary.BigEndian.Uint16(in[p+2:])) + 1
		p += 4
		switch reset := control >> 5 & 3; {
		case reset >= 2:
			if p >= len(in) {
				return fmt.Errorf("%w: truncated chunk header", errLZMA2)
			}
			if err := s.setProps(in[p]); err != nil {
				return err
			}
			p++
			needProps = false
			s.reset()
		case needProps:
			return fmt.Errorf("%w: chunk without the properties it needs", errLZMA2)
		case reset == 1:
			s.reset()
		}
		if packed > len(in)-p {
			return fmt.Errorf("%w: chunk of %d bytes overruns the block", errLZMA2, packed)
		}
		if err := rc.init(&s.chunk, in[p:p+packed]); err != nil {
			return err
		}
		if err := s.decodeChunk(&rc, out, pos, pos+unpacked, dictStart, dictSize); err != nil {
			return err
		}
		if !rc.finished() {
			return fmt.Errorf("%w: chunk does not end where its size says", errLZMA2)
		}
		p += packed
		pos += unpacked
	}
}
