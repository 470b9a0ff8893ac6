package kmod

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os/exec"
	"strings"
	"testing"

	"github.com/ulikunitz/xz/lzma"
)

// lzma2Inputs are data of the kinds a decoder must get right: empty,
// incompressible, long repeats (overlapping matches), text-like data
// (literals after matches) and a module image.
func lzma2Inputs(t testing.TB) map[string][]byte {
	rnd := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 300<<10) // over one 64 KiB chunk
	for i := range random {
		random[i] = byte(rnd.Uint32())
	}
	var text bytes.Buffer
	words := strings.Fields("module init exit license param alias depends vermagic signer key")
	for text.Len() < 3<<20 { // over one 2 MiB chunk
		text.WriteString(words[rnd.IntN(len(words))])
		text.WriteByte(" \n\x00"[rnd.IntN(3)])
	}
	mixed := append(append(bytes.Clone(random[:50000]), text.Bytes()[:70000]...), random[:50000]...) // a far repeat
	return map[string][]byte{
		"empty":  nil,
		"byte":   {42},
		"zeros":  make([]byte, 1<<20),
		"random": random,
		"text":   text.Bytes(),
		"mixed":  mixed,
		"module": syntheticModule("lzma", "lzma"),
	}
}

// TestLZMA2Reference decodes LZMA2 streams made by two encoders, liblzma's
// (xz(1) in raw mode, with the literal and position settings varied) and
// a Go one, and compares the bytes.
func TestLZMA2Reference(t *testing.T) {
	for name, data := range lzma2Inputs(t) {
		streams := map[string][]byte{}
		var buf bytes.Buffer
		w, err := lzma.Writer2Config{DictCap: 1 << 20}.NewWriter2(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		streams["go"] = buf.Bytes()
		if _, err := exec.LookPath("xz"); err == nil {
			for _, opts := range []string{"preset=0", "preset=6,dict=1MiB", "lc=0,lp=4,pb=4", "lc=4,lp=0,pb=0", "lc=1,lp=3,pb=2,mode=fast"} {
				cmd := exec.Command("xz", "--format=raw", "--lzma2="+opts, "-c")
				cmd.Stdin = bytes.NewReader(data)
				out, err := cmd.Output()
				if err != nil {
					t.Fatalf("xz --lzma2=%s: %v", opts, err)
				}
				streams["xz "+opts] = out
			}
		}
		for enc, z := range streams {
			out := make([]byte, len(data))
			if err := decodeLZMA2(out, z, 64<<20); err != nil {
				t.Errorf("%s from %s: %v", name, enc, err)
				continue
			}
			if !bytes.Equal(out, data) {
				t.Errorf("%s from %s: decoded bytes differ", name, enc)
			}
			// Told the wrong size, it refuses rather than pads or cuts.
			for _, n := range []int{len(data) - 1, len(data) + 1} {
				if n < 0 {
					continue
				}
				if err := decodeLZMA2(make([]byte, n), z, 64<<20); err == nil {
					t.Errorf("%s from %s: decoded into %d bytes, the data has %d", name, enc, n, len(data))
				}
			}
		}
		if _, ok := streams["xz preset=0"]; !ok {
			t.Log("xz(1) not found: liblzma's encoder not compared")
		}
	}
}

// lzmaChunk builds an LZMA2 LZMA chunk with the given control byte from a
// raw LZMA body (range coder bytes) and sizes.
func lzmaChunk(control byte, unpacked int, body []byte, props ...byte) []byte {
	u, c := unpacked-1, len(body)-1
	h := []byte{control | byte(u>>16&0x1f), byte(u >> 8), byte(u), byte(c >> 8), byte(c)}
	return append(append(h, props...), body...)
}

// TestLZMA2Hostile feeds streams that break the format's rules, each of
// which the kernel's decoder refuses too.
func TestLZMA2Hostile(t *testing.T) {
	data := lzma2Inputs(t)["text"][:100000]
	cmd := exec.Command("xz", "--format=raw", "--lzma2=preset=6", "-c")
	cmd.Stdin = bytes.NewReader(data)
	good, err := cmd.Output()
	if err != nil {
		t.Skipf("needs xz(1) for a valid stream to break: %v", err)
	}
	if good[0]&0xe0 != 0xe0 {
		t.Fatalf("xz's first chunk starts %#x, want a full reset (0xe0 and the size's high bits)", good[0])
	}
	for name, tc := range map[string]struct {
		z    []byte
		size int
	}{
		"no end marker":           {good[:len(good)-1], len(data)},
		"trailing byte":           {append(bytes.Clone(good), 0), len(data)},
		"no dictionary reset":     {patch(good, func(b []byte) { b[0] = 0xc0 | b[0]&0x1f }), len(data)},
		"no properties":           {patch(good, func(b []byte) { b[0] = 0xa0 | b[0]&0x1f }), len(data)},
		"lc+lp over 4":            {patch(good, func(b []byte) { b[5] = (0*5+3)*9 + 2 }), len(data)},
		"properties out of range": {patch(good, func(b []byte) { b[5] = 225 }), len(data)},
		"range coder start":       {patch(good, func(b []byte) { b[6] = 1 }), len(data)},
		"packed size too big":     {patch(good, func(b []byte) { b[3], b[4] = 0xff, 0xff }), len(data)},
		"uncompressed first":      {append([]byte{2, 0, 0, 'x'}, good...), len(data) + 1},
		"bad control byte":        {append([]byte{3}, good...), len(data)},
		"empty":                   {nil, 0},
	} {
		if err := decodeLZMA2(make([]byte, tc.size), tc.z, 64<<20); err == nil {
			t.Errorf("%s: accepted", name)
		} else if !errors.Is(err, errLZMA2) {
			t.Errorf("%s: %v does not wrap errLZMA2", name, err)
		}
	}
	// The dictionary bounds matches: the same stream with a dictionary
	// smaller than its farthest match is refused.
	far := lzma2Inputs(t)["mixed"]
	cmd = exec.Command("xz", "--format=raw", "--lzma2=preset=6,dict=1MiB", "-c")
	cmd.Stdin = bytes.NewReader(far)
	z, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := decodeLZMA2(make([]byte, len(far)), z, 1<<20); err != nil {
		t.Fatalf("with its own dictionary: %v", err)
	}
	if err := decodeLZMA2(make([]byte, len(far)), z, 64<<10); err == nil || !strings.Contains(err.Error(), "before the dictionary") {
		t.Errorf("a 120 KB match distance in a 64 KiB dictionary: err = %v", err)
	}
}

// FuzzLZMA2 compares the decoder with an independent one: whatever it
// accepts, the reference must decode to the same bytes. (The reverse need
// not hold: this decoder is stricter, as the kernel's is.)
func FuzzLZMA2(f *testing.F) {
	for _, data := range lzma2Inputs(f) {
		if len(data) > 64<<10 {
			data = data[:64<<10]
		}
		var buf bytes.Buffer
		w, _ := lzma.Writer2Config{DictCap: 1 << 16}.NewWriter2(&buf)
		w.Write(data)
		w.Close()
		f.Add(buf.Bytes(), uint32(len(data)))
		if cmd := exec.Command("xz", "--format=raw", "--lzma2=preset=1", "-c"); cmd.Err == nil {
			cmd.Stdin = bytes.NewReader(data)
			if out, err := cmd.Output(); err == nil {
				f.Add(out, uint32(len(data)))
			}
		}
	}
	f.Fuzz(func(t *testing.T, z []byte, size uint32) {
		size %= 1 << 20
		out := make([]byte, size)
		err := decodeLZMA2(out, z, 1<<32-1)
		if err != nil {
			if !errors.Is(err, errLZMA2) {
				t.Fatalf("error %v does not wrap errLZMA2", err)
			}
			return
		}
		r, err := lzma.Reader2Config{DictCap: 1 << 20}.NewReader2(bytes.NewReader(z))
		if err != nil {
			t.Fatalf("accepted, the reference refuses: %v", err)
		}
		ref, err := io.ReadAll(io.LimitReader(r, int64(size)+1))
		if err != nil {
			t.Fatalf("accepted, the reference refuses: %v", err)
		}
		if !bytes.Equal(ref, out) {
			t.Fatalf("decoded %d bytes, the reference %d, and they differ", len(out), len(ref))
		}
	})
}
