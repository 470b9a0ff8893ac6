package kmod

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/klauspost/compress/zstd"
	"github.com/smallstep/pkcs7"
	"github.com/ulikunitz/xz"

	"github.com/kmodguard/kmodguard/internal/debkernel"
)

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestInspectSynthetic(t *testing.T) {
	img := syntheticModule("my_mod", "my_mod")
	m, err := InspectBytes(img)
	if err != nil {
		t.Fatal(err)
	}
	want := &Module{
		Name:           "my_mod",
		ThisModuleName: "my_mod",
		Vermagic:       "6.1.0-test SMP mod_unload ",
		License:        "GPL",
		Depends:        []string{"a", "b-c"},
		Params:         []Param{{Name: "count", Type: "int", Description: "how many"}},
		Description:    "a synthetic module",
		Authors:        []string{"A <a@example.org>", "B"},
		InTree:         true,
		FileSHA256:     sha256Hex(img),
		ELFSHA256:      sha256Hex(img),
		FileSize:       int64(len(img)),
		ELFSize:        int64(len(img)),
	}
	if !reflect.DeepEqual(m, want) {
		t.Errorf("InspectBytes:\n got %+v\nwant %+v", m, want)
	}
	// One byte at a time, as a slow pipe delivers it.
	r, err := InspectReader(iotest.OneByteReader(bytes.NewReader(img)))
	if err != nil || !reflect.DeepEqual(r, want) {
		t.Errorf("InspectReader = %+v, %v; want %+v", r, err, want)
	}
}

// zeroReader is an endless stream of zeros.
type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func compressAll(t testing.TB, img []byte) map[Compression][]byte {
	t.Helper()
	out := map[Compression][]byte{}
	var xb bytes.Buffer
	xw, err := xz.WriterConfig{CheckSum: xz.CRC32}.NewWriter(&xb)
	if err != nil {
		t.Fatal(err)
	}
	xw.Write(img)
	if err := xw.Close(); err != nil {
		t.Fatal(err)
	}
	out[CompressionXZ] = xb.Bytes()

	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	out[CompressionZstd] = zw.EncodeAll(img, nil)
	zw.Close()

	var gb bytes.Buffer
	gw := gzip.NewWriter(&gb)
	gw.Write(img)
	if err := gw.Close(); err != nil {
		t.Fatal(err)
	}
	out[CompressionGzip] = gb.Bytes()
	return out
}

func TestInspectCompressed(t *testing.T) {
	img := syntheticModule("comp", "comp")
	plain, err := InspectBytes(img)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for c, z := range compressAll(t, img) {
		t.Run(string(c), func(t *testing.T) {
			// A misleading suffix: detection is by magic.
			p := filepath.Join(dir, "comp.ko")
			if err := os.WriteFile(p, z, 0o644); err != nil {
				t.Fatal(err)
			}
			m, err := Inspect(p)
			if err != nil {
				t.Fatal(err)
			}
			if m.Compression != c {
				t.Errorf("Compression = %q, want %q", m.Compression, c)
			}
			if m.Path != p || m.FileSHA256 != sha256Hex(z) || m.FileSize != int64(len(z)) {
				t.Errorf("file fields: path %q sha %s size %d", m.Path, m.FileSHA256, m.FileSize)
			}
			if m.ELFSHA256 != plain.ELFSHA256 || m.ELFSize != plain.ELFSize {
				t.Errorf("ELF digest %s (%d bytes), want %s (%d bytes)", m.ELFSHA256, m.ELFSize, plain.ELFSHA256, plain.ELFSize)
			}
			if m.Name != "comp" || m.ThisModuleName != "comp" {
				t.Errorf("names %q/%q", m.Name, m.ThisModuleName)
			}
			// Truncated streams are errors, never a partial image.
			for _, cut := range []int{1, len(z) / 2, len(z) - 1} {
				if _, err := InspectBytes(z[:cut]); err == nil {
					t.Errorf("%s truncated to %d bytes: no error", c, cut)
				}
			}
		})
	}
}

func TestDecompressionBomb(t *testing.T) {
	old := MaxImageSize
	MaxImageSize = 1 << 20
	t.Cleanup(func() { MaxImageSize = old })
	big := make([]byte, MaxImageSize+4096)
	copy(big, syntheticModule("bomb", "bomb"))
	for c, z := range compressAll(t, big) {
		_, err := InspectBytes(z)
		if !errors.Is(err, ErrTooLarge) {
			t.Errorf("%s bomb of %d bytes: err = %v, want ErrTooLarge", c, len(big), err)
		}
	}
	if _, err := InspectBytes(big); !errors.Is(err, ErrTooLarge) {
		t.Errorf("plain input over the limit: err = %v, want ErrTooLarge", err)
	}
	// A stream without a size: reading stops at the limit.
	if _, err := InspectReader(io.MultiReader(bytes.NewReader(big), zeroReader{})); !errors.Is(err, ErrTooLarge) {
		t.Errorf("endless stream: err = %v, want ErrTooLarge", err)
	}
	p := filepath.Join(t.TempDir(), "big.ko")
	if err := os.WriteFile(p, big, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Inspect(p); !errors.Is(err, ErrTooLarge) {
		t.Errorf("Inspect of a file over the limit: err = %v, want ErrTooLarge", err)
	}
}

// patch returns a copy of img with fn applied.
func patch(img []byte, fn func(b []byte)) []byte {
	b := bytes.Clone(img)
	fn(b)
	return b
}

func TestParseNamesHostile(t *testing.T) {
	le := binary.LittleEndian
	good := syntheticModule("good", "good")
	shoff := le.Uint64(good[offShoff:])
	shnum := uint64(le.Uint16(good[offShnum:]))
	// sectionField points at a field of section header i of good.
	sectionField := func(i, field uint64) uint64 { return shoff + i*elfSectionSize + field }

	tests := []struct {
		name     string
		img      []byte
		wantErr  error // nil: must succeed with the names below
		modinfo  string
		thisName string
	}{
		{name: "good", img: good, modinfo: "good", thisName: "good"},
		{name: "empty", img: nil, wantErr: ErrNotELF},
		{name: "not ELF", img: []byte("MZ\x90\x00 this is not a module"), wantErr: ErrNotELF},
		{name: "magic only", img: []byte("\x7fELF"), wantErr: ErrMalformedELF},
		{name: "ELF32", img: patch(good, func(b []byte) { b[4] = 1 }), wantErr: ErrUnsupported},
		{name: "big endian", img: patch(good, func(b []byte) { b[5] = 2 }), wantErr: ErrUnsupported},
		{name: "ET_EXEC", img: patch(good, func(b []byte) { le.PutUint16(b[16:], 2) }), wantErr: ErrMalformedELF},
		{name: "no sections", img: patch(good, func(b []byte) { le.PutUint16(b[offShnum:], 0) }), wantErr: ErrMalformedELF},
		{name: "huge e_shnum", img: patch(good, func(b []byte) { le.PutUint16(b[offShnum:], 0xffff) }), wantErr: ErrMalformedELF},
		{name: "shoff past end", img: patch(good, func(b []byte) { le.PutUint64(b[offShoff:], uint64(len(good))) }), wantErr: ErrMalformedELF},
		{name: "shoff overflows", img: patch(good, func(b []byte) { le.PutUint64(b[offShoff:], ^uint64(0)-63) }), wantErr: ErrMalformedELF},
		{name: "bad shentsize", img: patch(good, func(b []byte) { le.PutUint16(b[offShentsize:], 40) }), wantErr: ErrMalformedELF},
		{name: "shstrndx out of range", img: patch(good, func(b []byte) { le.PutUint16(b[offShstrndx:], uint16(shnum)) }), wantErr: ErrMalformedELF},
		{name: "shstrndx zero", img: patch(good, func(b []byte) { le.PutUint16(b[offShstrndx:], 0) }), wantErr: ErrMalformedELF},
		{name: "name table past end", img: patch(good, func(b []byte) {
			le.PutUint64(b[sectionField(shnum-1, shOffOffset):], uint64(len(good)))
		}), wantErr: ErrMalformedELF},
		{name: "section size overflows", img: patch(good, func(b []byte) {
			le.PutUint64(b[sectionField(2, shOffSize):], ^uint64(0))
		}), wantErr: ErrMalformedELF},
		{name: "section name offset out of range", img: patch(good, func(b []byte) {
			le.PutUint32(b[sectionField(1, shOffName):], 1<<31)
		}), wantErr: ErrMalformedELF},
		{name: "this_module NOBITS", img: patch(good, func(b []byte) {
			le.PutUint32(b[sectionField(3, shOffType):], shtNoBits)
		}), wantErr: ErrMalformedELF},
		{name: "modinfo without SHF_ALLOC", img: patch(good, func(b []byte) {
			le.PutUint64(b[sectionField(2, shOffFlags):], 0)
		}), wantErr: ErrMalformedELF},
		{name: "missing modinfo", img: buildELF(
			testSection{name: secThisModule, data: thisModule("x")}), thisName: "x"},
		{name: "missing this_module", img: buildELF(
			testSection{name: secModinfo, data: modinfoSec("name=x")}), modinfo: "x"},
		{name: "modinfo without name", img: buildELF(
			testSection{name: secModinfo, data: modinfoSec("license=GPL")},
			testSection{name: secThisModule, data: thisModule("x")}), thisName: "x"},
		{name: "modinfo without NULs", img: buildELF(
			testSection{name: secModinfo, data: []byte("license=GPLname=x")},
			testSection{name: secThisModule, data: thisModule("x")}), wantErr: ErrMalformedELF},
		{name: "modinfo name before unterminated tail", img: buildELF(
			testSection{name: secModinfo, data: []byte("\x00\x00name=x\x00junk")},
			testSection{name: secThisModule, data: thisModule("x")}), wantErr: ErrMalformedELF},
		{name: "modinfo padded with NULs", img: buildELF(
			testSection{name: secModinfo, data: []byte("\x00\x00name=x\x00\x00\x00")},
			testSection{name: secThisModule, data: thisModule("x")}), modinfo: "x", thisName: "x"},
		{name: "empty modinfo", img: buildELF(
			testSection{name: secModinfo},
			testSection{name: secThisModule, data: thisModule("x")}), thisName: "x"},
		{name: "first name= wins", img: buildELF(
			testSection{name: secModinfo, data: modinfoSec("name=first", "name=second")},
			testSection{name: secThisModule, data: thisModule("x")}), modinfo: "first", thisName: "x"},
		{name: "names= is not name=", img: buildELF(
			testSection{name: secModinfo, data: modinfoSec("names=no", "name=yes")},
			testSection{name: secThisModule, data: thisModule("yes")}), modinfo: "yes", thisName: "yes"},
		{name: "duplicate modinfo", img: buildELF(
			testSection{name: secModinfo, data: modinfoSec("name=x")},
			testSection{name: secModinfo, data: modinfoSec("name=y")},
			testSection{name: secThisModule, data: thisModule("x")}), wantErr: ErrMalformedELF},
		{name: "duplicate this_module", img: buildELF(
			testSection{name: secThisModule, data: thisModule("x")},
			testSection{name: secThisModule, data: thisModule("y")}), wantErr: ErrMalformedELF},
		{name: "this_module too short", img: buildELF(
			testSection{name: secThisModule, data: make([]byte, thisModNameOff+thisModNameLen-1)}), wantErr: ErrMalformedELF},
		{name: "this_module name unterminated", img: buildELF(
			testSection{name: secThisModule, data: bytes.Repeat([]byte{'A'}, 0x380)}), wantErr: ErrMalformedELF},
		{name: "this_module name of 55 bytes", img: buildELF(
			testSection{name: secThisModule, data: thisModule(strings.Repeat("n", 55))}), thisName: strings.Repeat("n", 55)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mi, tm, err := ParseNames(tt.img)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ParseNames: err = %v, want %v", err, tt.wantErr)
				}
				if _, err := InspectBytes(tt.img); err == nil {
					t.Errorf("InspectBytes accepted what ParseNames refused")
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseNames: %v", err)
			}
			if mi != tt.modinfo || tm != tt.thisName {
				t.Errorf("ParseNames = %q, %q; want %q, %q", mi, tm, tt.modinfo, tt.thisName)
			}
			m, err := InspectBytes(tt.img)
			if err != nil {
				t.Fatalf("InspectBytes: %v", err)
			}
			if m.Name != mi || m.ThisModuleName != tm {
				t.Errorf("InspectBytes names %q/%q, ParseNames %q/%q", m.Name, m.ThisModuleName, mi, tm)
			}
		})
	}
}

func TestNameMismatch(t *testing.T) {
	for _, tt := range []struct {
		modinfo, this string
		mismatch      bool
	}{
		{"dummy", "dummy", false},
		{"snd-hda", "snd_hda", true}, // kbuild writes "snd_hda" in both; the kernel does not fold
		{"dumbo", "dummy", true},
		{"", "dummy", false}, // unknown: not a mismatch, but no allowlist name matches ""
	} {
		var secs []testSection
		if tt.modinfo != "" {
			secs = append(secs, testSection{name: secModinfo, data: modinfoSec("name=" + tt.modinfo)})
		}
		secs = append(secs, testSection{name: secThisModule, data: thisModule(tt.this)})
		m, err := InspectBytes(buildELF(secs...))
		if err != nil {
			t.Fatal(err)
		}
		if m.NameMismatch != tt.mismatch {
			t.Errorf("%q vs %q: NameMismatch = %v, want %v", tt.modinfo, tt.this, m.NameMismatch, tt.mismatch)
		}
	}
}

// checkTruncations cuts img at the given lengths: each cut either fails
// cleanly or, if the ELF structure survived, yields the same names.
func checkTruncations(t *testing.T, img []byte, cuts []int) {
	t.Helper()
	mi, tm, err := ParseNames(img)
	if err != nil {
		t.Fatal(err)
	}
	var ok, failed int
	for _, n := range cuts {
		m, err := InspectBytes(img[:n])
		if err != nil {
			failed++
			continue
		}
		ok++
		if m.Name != mi || m.ThisModuleName != tm {
			t.Errorf("cut at %d: names %q/%q, want %q/%q", n, m.Name, m.ThisModuleName, mi, tm)
		}
		if m.Signature.Present && n < len(img) {
			t.Errorf("cut at %d: a cut signature still reads as present", n)
		}
	}
	if failed == 0 {
		t.Errorf("no truncation of %d cuts failed", len(cuts))
	}
	t.Logf("%d cuts: %d parsed, %d refused", len(cuts), ok, failed)
}

func TestTruncatedSynthetic(t *testing.T) {
	img := syntheticModule("trunc", "trunc")
	cuts := make([]int, len(img))
	for i := range cuts {
		cuts[i] = i
	}
	checkTruncations(t, img, cuts)
}

func TestCorruptSignatureIsNotAnError(t *testing.T) {
	img := append(syntheticModule("s", "s"), []byte("\x30\x82garbage")...)
	ms := make([]byte, moduleSignatureSize)
	ms[2] = idPKCS7
	binary.BigEndian.PutUint32(ms[8:], 9)
	img = append(append(img, ms...), SignatureMagic...)
	m, err := InspectBytes(img)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Signature.Present || m.Signature.Err == "" {
		t.Errorf("Signature = %+v, want present with an error", m.Signature)
	}
	// A signature length larger than the file.
	binary.BigEndian.PutUint32(img[len(img)-len(SignatureMagic)-4:], 1<<31)
	m, err = InspectBytes(img)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Signature.Present || !strings.Contains(m.Signature.Err, "exceeds") {
		t.Errorf("Signature = %+v, want present with a length error", m.Signature)
	}
}

// --- real Debian modules ---

func xzDecompress(t *testing.T, path string) []byte {
	t.Helper()
	if _, err := exec.LookPath("xz"); err != nil {
		t.Skip("needs xz(1) to cross-check the ELF digest")
	}
	out, err := exec.Command("xz", "-dc", path).Output()
	if err != nil {
		t.Fatalf("xz -dc %s: %v", path, err)
	}
	return out
}

func TestInspectDebianModules(t *testing.T) {
	for _, s := range debkernel.AllSeries {
		for _, name := range []string{"dummy", "veth"} {
			t.Run(string(s)+"/"+name, func(t *testing.T) {
				k := realKernel(t, s)
				p, raw := realModule(t, s, name)
				m, err := Inspect(p)
				if err != nil {
					t.Fatal(err)
				}
				elf := raw
				if strings.HasSuffix(p, ".xz") {
					if m.Compression != CompressionXZ {
						t.Errorf("Compression = %q, want xz", m.Compression)
					}
					elf = xzDecompress(t, p)
				}
				if m.FileSHA256 != sha256Hex(raw) || m.FileSize != int64(len(raw)) {
					t.Errorf("file digest %s (%d bytes), want %s (%d bytes)", m.FileSHA256, m.FileSize, sha256Hex(raw), len(raw))
				}
				if m.ELFSHA256 != sha256Hex(elf) || m.ELFSize != int64(len(elf)) {
					t.Errorf("ELF digest %s (%d bytes), want %s (%d bytes)", m.ELFSHA256, m.ELFSize, sha256Hex(elf), len(elf))
				}
				if m.Name != name || m.ThisModuleName != name || m.NameMismatch {
					t.Errorf("names %q/%q mismatch=%v, want %q", m.Name, m.ThisModuleName, m.NameMismatch, name)
				}
				if !strings.HasPrefix(m.Vermagic, k.Release+" ") {
					t.Errorf("vermagic %q does not start with %q", m.Vermagic, k.Release)
				}
				if !strings.HasPrefix(m.License, "GPL") || (name == "veth" && m.Description == "") || !m.InTree {
					t.Errorf("license %q, description %q, in-tree %v", m.License, m.Description, m.InTree)
				}
				sig := m.Signature
				if !sig.Present || sig.Err != "" || sig.Signer == "" || len(sig.KeyID) < 16 || sig.HashAlgo == "" {
					t.Errorf("signature %+v, want a parsed PKCS#7 signer", sig)
				}
				if name == "dummy" {
					want := []Param{{Name: "numdummies", Type: "int", Description: "Number of dummy pseudo devices"}}
					if !reflect.DeepEqual(m.Params, want) {
						t.Errorf("params %+v, want %+v", m.Params, want)
					}
				}
				if got, err := InspectBytes(raw); err != nil || got.ELFSHA256 != m.ELFSHA256 {
					t.Errorf("InspectBytes disagrees with Inspect: %v", err)
				}
			})
		}
	}
}

// TestCraftedDebianModules patches copies of the real dummy.ko of 6.1, the
// variants an attacker or a broken build would produce.
func TestCraftedDebianModules(t *testing.T) {
	_, raw := realModule(t, debkernel.Series61, "dummy")
	orig, err := InspectBytes(raw)
	if err != nil {
		t.Fatal(err)
	}
	unsigned := stripSignature(t, raw)
	le := binary.LittleEndian

	t.Run("name mismatch", func(t *testing.T) {
		// DESIGN.md: this image loads as "dummy" on 6.1 even with
		// module_blacklist=dummy, because the kernel checks "dumbo".
		img := replaceOnce(t, unsigned, "\x00name=dummy\x00", "\x00name=dumbo\x00")
		m, err := InspectBytes(img)
		if err != nil {
			t.Fatal(err)
		}
		if m.Name != "dumbo" || m.ThisModuleName != "dummy" || !m.NameMismatch {
			t.Errorf("names %q/%q mismatch=%v, want dumbo/dummy flagged", m.Name, m.ThisModuleName, m.NameMismatch)
		}
		if m.Signature.Present {
			t.Errorf("stripped module still signed: %+v", m.Signature)
		}
	})
	t.Run("unsigned", func(t *testing.T) {
		m, err := InspectBytes(unsigned)
		if err != nil {
			t.Fatal(err)
		}
		if m.Signature != (Signature{}) {
			t.Errorf("Signature = %+v, want none", m.Signature)
		}
		if m.Name != "dummy" || m.NameMismatch || m.ELFSHA256 == orig.ELFSHA256 || m.Vermagic != orig.Vermagic {
			t.Errorf("unsigned dummy: %+v", m)
		}
	})
	t.Run("corrupt signature", func(t *testing.T) {
		img := bytes.Clone(raw)
		blob := len(unsigned) + 4 // inside the PKCS#7 DER
		for i := blob; i < blob+32; i++ {
			img[i] ^= 0xff
		}
		m, err := InspectBytes(img)
		if err != nil {
			t.Fatal(err)
		}
		if !m.Signature.Present || m.Signature.Err == "" || m.Name != "dummy" {
			t.Errorf("Signature = %+v, want present with an error", m.Signature)
		}
	})
	t.Run("huge e_shnum", func(t *testing.T) {
		img := patch(raw, func(b []byte) { le.PutUint16(b[offShnum:], 0xffff) })
		if _, err := InspectBytes(img); !errors.Is(err, ErrMalformedELF) {
			t.Errorf("err = %v, want ErrMalformedELF", err)
		}
	})
	t.Run("shoff past end", func(t *testing.T) {
		img := patch(raw, func(b []byte) { le.PutUint64(b[offShoff:], uint64(len(raw))+1) })
		if _, err := InspectBytes(img); !errors.Is(err, ErrMalformedELF) {
			t.Errorf("err = %v, want ErrMalformedELF", err)
		}
	})
	t.Run("truncations", func(t *testing.T) {
		var cuts []int
		for n := 0; n < len(raw); n += 97 {
			cuts = append(cuts, n)
		}
		for n := len(raw) - 600; n < len(raw); n++ { // through the signature and trailer
			cuts = append(cuts, n)
		}
		checkTruncations(t, raw, cuts)
	})
}

// TestInspectDebianTree inspects every module of the 6.1 package (about
// 4000 plain .ko) and of the 6.12 package (.ko.xz).
func TestInspectDebianTree(t *testing.T) {
	for _, s := range debkernel.AllSeries {
		t.Run(string(s), func(t *testing.T) {
			k := realKernel(t, s)
			var paths []string
			err := filepath.WalkDir(k.ModulesDir(), func(p string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() && strings.Contains(d.Name(), ".ko") {
					paths = append(paths, p)
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(paths) < 500 {
				t.Fatalf("only %d modules under %s", len(paths), k.ModulesDir())
			}
			signers := map[string]int{}
			// Compressed trees: the images, concatenated in order, must
			// hash as xz(1)'s output does, so every module is decoded to
			// the bytes liblzma gives.
			compressed := strings.HasSuffix(paths[0], ".xz")
			images := sha256.New()
			for _, p := range paths {
				m, err := Inspect(p)
				if err != nil {
					t.Errorf("%v", err)
					continue
				}
				if compressed {
					b, err := os.ReadFile(p)
					if err != nil {
						t.Fatal(err)
					}
					img, err := decompress(nil, b, m.Compression)
					if err != nil {
						t.Fatal(err)
					}
					images.Write(img)
				}
				base := strings.SplitN(filepath.Base(p), ".ko", 2)[0]
				if m.Name == "" || m.ThisModuleName == "" || m.NameMismatch || NormalizeName(m.Name) != NormalizeName(base) {
					t.Errorf("%s: names %q/%q mismatch=%v", p, m.Name, m.ThisModuleName, m.NameMismatch)
				}
				if !strings.HasPrefix(m.Vermagic, k.Release+" ") || !m.InTree {
					t.Errorf("%s: vermagic %q, in-tree %v", p, m.Vermagic, m.InTree)
				}
				if !m.Signature.Present || m.Signature.Signer == "" || m.Signature.Err != "" {
					t.Errorf("%s: signature %+v", p, m.Signature)
				}
				signers[m.Signature.Signer+" "+m.Signature.KeyID]++
			}
			t.Logf("%d modules, signers %v", len(paths), signers)
			if !compressed {
				return
			}
			if _, err := exec.LookPath("xz"); err != nil {
				t.Skip("needs xz(1) to cross-check the decoded images")
			}
			want := sha256.New()
			for i := 0; i < len(paths); i += 500 {
				cmd := exec.Command("xz", append([]string{"-dc", "--"}, paths[i:min(i+500, len(paths))]...)...)
				cmd.Stdout = want
				if err := cmd.Run(); err != nil {
					t.Fatalf("xz -dc: %v", err)
				}
			}
			if !bytes.Equal(images.Sum(nil), want.Sum(nil)) {
				t.Errorf("the %d decoded images differ from xz -dc's", len(paths))
			}
		})
	}
}

func TestXZContainerLimits(t *testing.T) {
	img := syntheticModule("x", "x")
	z := compressAll(t, img)[CompressionXZ]
	info, err := checkXZ(z)
	if err != nil || info.size != uint64(len(img)) || len(info.blocks) != 1 || info.blocks[0].dictOff <= xzHeaderSize || info.blocks[0].dictSize == 0 {
		t.Fatalf("checkXZ = %+v, %v; want size %d", info, err, len(img))
	}
	// withDict rewrites the LZMA2 dictionary byte of the first block and
	// fixes the block header's CRC32, as a hostile encoder would.
	withDict := func(bits byte) []byte {
		b := bytes.Clone(z)
		hsize := (int(b[12]) + 1) * 4
		h := b[12 : 12+hsize]
		i := bytes.Index(h, []byte{xzFilterLZMA2, 1})
		if i < 0 {
			t.Fatal("no LZMA2 filter in the block header")
		}
		h[i+2] = bits
		binary.LittleEndian.PutUint32(h[hsize-4:], crc32.ChecksumIEEE(h[:hsize-4]))
		return b
	}
	if _, err := InspectBytes(withDict(16)); err != nil { // 1 MiB, like the kernel's
		t.Errorf("1 MiB dictionary: %v", err)
	}
	for _, bits := range []byte{36, 40} { // 1 GiB, 4 GiB
		if _, err := InspectBytes(withDict(bits)); !errors.Is(err, ErrTooLarge) {
			t.Errorf("dictionary bits %d: err = %v, want ErrTooLarge", bits, err)
		}
	}
	if _, err := InspectBytes(withDict(41)); err == nil {
		t.Errorf("invalid dictionary bits 41 accepted")
	}
	for name, b := range map[string][]byte{
		"trailing data":   append(bytes.Clone(z), 0, 0, 0, 0),
		"two streams":     append(bytes.Clone(z), z...),
		"bad index size":  patch(z, func(b []byte) { binary.LittleEndian.PutUint32(b[len(b)-8:], 1<<30) }),
		"header only":     z[:12],
		"flags mismatch":  patch(z, func(b []byte) { b[len(b)-3] ^= 1 }),
		"index count big": patch(z, func(b []byte) { b[len(b)-12-int(binary.LittleEndian.Uint32(b[len(b)-8:])+1)*4+1] = 0x7f }),
	} {
		if _, err := InspectBytes(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestSignatureSynthetic(t *testing.T) {
	img := syntheticModule("signed", "signed")
	signed := signModule(t, img)
	m, err := InspectBytes(signed)
	if err != nil {
		t.Fatal(err)
	}
	want := Signature{Present: true, Signer: "kmodguard test signer", KeyID: "deadbeef01020304", HashAlgo: "sha256"}
	if m.Signature != want {
		t.Errorf("Signature = %+v, want %+v", m.Signature, want)
	}
	if m.Name != "signed" || m.ELFSHA256 != sha256Hex(signed) {
		t.Errorf("signed module: %+v", m)
	}
	// The split gives back exactly the signed bytes.
	elf, _ := splitSignature(signed)
	if !bytes.Equal(elf, img) {
		t.Errorf("splitSignature returned %d bytes, want the %d signed ones", len(elf), len(img))
	}
	// Not PKCS#7: reported, not fatal.
	other := bytes.Clone(signed)
	other[len(other)-len(SignatureMagic)-moduleSignatureSize+2] = 1
	m, err = InspectBytes(other)
	if err != nil {
		t.Fatal(err)
	}
	if !m.Signature.Present || !strings.Contains(m.Signature.Err, "id_type") {
		t.Errorf("id_type 1: Signature = %+v", m.Signature)
	}
}

// TestSignatureKeyID covers sign-file -k: CMS version 3 with the signer
// named by SubjectKeyIdentifier instead of issuer and serial.
func TestSignatureKeyID(t *testing.T) {
	type signerInfo struct {
		Version         int
		KeyID           []byte `asn1:"tag:0"`
		DigestAlgorithm pkix.AlgorithmIdentifier
		SigAlgorithm    pkix.AlgorithmIdentifier
		Signature       []byte
	}
	type encap struct{ ContentType asn1.ObjectIdentifier }
	type signedData struct {
		Version          int
		DigestAlgorithms []pkix.AlgorithmIdentifier `asn1:"set"`
		Encap            encap
		SignerInfos      []signerInfo `asn1:"set"`
	}
	type contentInfo struct {
		ContentType asn1.ObjectIdentifier
		Content     signedData `asn1:"explicit,tag:0"`
	}
	sha384 := pkix.AlgorithmIdentifier{Algorithm: pkcs7.OIDDigestAlgorithmSHA384}
	blob, err := asn1.Marshal(contentInfo{
		ContentType: pkcs7.OIDSignedData,
		Content: signedData{
			Version:          3,
			DigestAlgorithms: []pkix.AlgorithmIdentifier{sha384},
			Encap:            encap{pkcs7.OIDData},
			SignerInfos: []signerInfo{{
				Version:         3,
				KeyID:           []byte{0xca, 0xfe, 0xf0, 0x0d},
				DigestAlgorithm: sha384,
				SigAlgorithm:    pkix.AlgorithmIdentifier{Algorithm: pkcs7.OIDEncryptionAlgorithmRSA},
				Signature:       bytes.Repeat([]byte{1}, 64),
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ms := make([]byte, moduleSignatureSize)
	ms[2] = idPKCS7
	binary.BigEndian.PutUint32(ms[8:], uint32(len(blob)))
	img := append(append(append(syntheticModule("k", "k"), blob...), ms...), SignatureMagic...)
	m, err := InspectBytes(img)
	if err != nil {
		t.Fatal(err)
	}
	want := Signature{Present: true, Signer: "key cafef00d", KeyID: "cafef00d", HashAlgo: "sha384"}
	if m.Signature != want {
		t.Errorf("Signature = %+v, want %+v", m.Signature, want)
	}
}

// TestParseNamesAllocs holds ParseNames to its promise: nothing but the two
// strings it returns.
func TestParseNamesAllocs(t *testing.T) {
	img := syntheticModule("allocs", "allocs")
	if n := testing.AllocsPerRun(100, func() {
		if _, _, err := ParseNames(img); err != nil {
			t.Fatal(err)
		}
	}); n > 2 {
		t.Errorf("ParseNames makes %v allocations, want at most 2", n)
	}
}

// TestInspectConcurrent runs Inspect from several goroutines over every
// format, as `allowlist init -j N` does; run it with -race.
func TestInspectConcurrent(t *testing.T) {
	img := syntheticModule("conc", "conc")
	inputs := [][]byte{img, signModule(t, img)}
	for _, z := range compressAll(t, img) {
		inputs = append(inputs, z)
	}
	want, err := InspectBytes(img)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func() {
			for i := 0; i < 50; i++ {
				m, err := InspectBytes(inputs[(g+i)%len(inputs)])
				if err == nil && m.Name != want.Name {
					err = fmt.Errorf("name %q", m.Name)
				}
				if err == nil && m.Compression != CompressionNone && m.ELFSHA256 != want.ELFSHA256 {
					err = fmt.Errorf("%s: ELF digest %s, want %s", m.Compression, m.ELFSHA256, want.ELFSHA256)
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for g := 0; g < 8; g++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestInspectToolCompressed compresses a real module with the command-line
// tools and the flags of the kernel's scripts/Makefile.modinst, so that the
// decoders meet the framing that real .ko.xz, .ko.zst and .ko.gz files have.
func TestInspectToolCompressed(t *testing.T) {
	p, raw := realModule(t, debkernel.Series61, "dummy")
	plain, err := InspectBytes(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		c       Compression
		tool    string
		args    []string
		wantErr string
	}{
		{"xz", CompressionXZ, "xz", []string{"--check=crc32", "--lzma2=dict=1MiB", "-c"}, ""},
		{"xz-blocks-sha256", CompressionXZ, "xz", []string{"--check=sha256", "--block-size=4096", "-c"}, ""},
		{"xz-crc64", CompressionXZ, "xz", []string{"--check=crc64", "-c"}, ""},
		{"xz-nocheck", CompressionXZ, "xz", []string{"--check=none", "--lzma2=lc=0,lp=2,pb=0", "-c"}, ""},
		{"xz-x86", CompressionXZ, "xz", []string{"--x86", "--lzma2=preset=6", "-c"}, "xz filter 0x4"},
		{"zstd", CompressionZstd, "zstd", []string{"-T0", "-q", "-c"}, ""},
		{"gzip", CompressionGzip, "gzip", []string{"-n", "-9", "-c"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := exec.LookPath(tc.tool); err != nil {
				t.Skipf("needs %s(1)", tc.tool)
			}
			z, err := exec.Command(tc.tool, append(tc.args, p)...).Output()
			if err != nil {
				t.Fatalf("%s: %v", tc.tool, err)
			}
			f := filepath.Join(t.TempDir(), "dummy.ko."+tc.name)
			if err := os.WriteFile(f, z, 0o644); err != nil {
				t.Fatal(err)
			}
			m, err := Inspect(f)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Compression != tc.c || m.FileSHA256 != sha256Hex(z) || m.ELFSHA256 != plain.ELFSHA256 ||
				m.Name != "dummy" || m.Signature != plain.Signature {
				t.Errorf("%s: %+v", tc.tool, m)
			}
		})
	}
}

// TestModinfoBounds: repeated entries cannot make Inspect hold more than
// the documented bounds, and the first of a unique key wins.
func TestModinfoBounds(t *testing.T) {
	var entries []string
	for i := 0; i < 2*maxParams; i++ {
		entries = append(entries, fmt.Sprintf("parm=p%d:d", i), fmt.Sprintf("parmtype=p%d:int", i))
	}
	for i := 0; i < 2*maxAuthors; i++ {
		entries = append(entries, "author=x")
	}
	entries = append(entries, "depends="+strings.Repeat("a,", 2*maxDepends), "depends=second",
		"license=first", "license=second", "intree=N", "name=b")
	m, err := InspectBytes(buildELF(
		testSection{name: secModinfo, data: modinfoSec(entries...)},
		testSection{name: secThisModule, data: thisModule("b")}))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Params) != maxParams || len(m.Authors) != maxAuthors || len(m.Depends) != maxDepends {
		t.Errorf("kept %d params, %d authors, %d depends; want %d, %d, %d",
			len(m.Params), len(m.Authors), len(m.Depends), maxParams, maxAuthors, maxDepends)
	}
	if last := m.Params[maxParams-1]; last != (Param{Name: fmt.Sprintf("p%d", maxParams-1), Type: "int", Description: "d"}) {
		t.Errorf("last kept param %+v", last)
	}
	if m.License != "first" || m.InTree || m.Depends[0] != "a" {
		t.Errorf("license %q, in-tree %v, depends[0] %q", m.License, m.InTree, m.Depends[0])
	}
}

// TestBuildIDNote reads the GNU build ID out of note sections, skipping
// other notes, and refuses notes whose sizes run past the bytes.
func TestBuildIDNote(t *testing.T) {
	gnu := func(typ byte, desc string) []byte {
		n := []byte{4, 0, 0, 0, byte(len(desc)), 0, 0, 0, typ, 0, 0, 0, 'G', 'N', 'U', 0}
		n = append(n, desc...)
		for len(n)%4 != 0 {
			n = append(n, 0)
		}
		return n
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"build ID", gnu(3, "\xde\xad\xbe\xef\x01"), "deadbeef01"},
		{"after another note", append(gnu(1, "xyz"), gnu(3, "\xab")...), "ab"},
		{"no build ID note", gnu(1, "\x01\x02"), ""},
		{"empty", nil, ""},
		{"name size past the end", []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 3, 0, 0, 0}, ""},
		{"description size past the end", []byte{4, 0, 0, 0, 0xf0, 0xff, 0xff, 0xff, 3, 0, 0, 0, 'G', 'N', 'U', 0}, ""},
	} {
		got, ok := BuildIDNote(tc.b)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("%s: %q %v, want %q", tc.name, got, ok, tc.want)
		}
	}
}
