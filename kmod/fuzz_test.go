package kmod

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kmodguard/kmodguard/internal/debkernel"
)

// fuzzSeeds are small crafted images plus, when the Debian kernels are
// cached or can be fetched, real modules read at run time (no Debian binary
// is committed).
func fuzzSeeds(f *testing.F) [][]byte {
	f.Helper()
	signed := syntheticModule("signed", "signed")
	ms := make([]byte, moduleSignatureSize)
	ms[2] = idPKCS7
	binary.BigEndian.PutUint32(ms[8:], 4)
	signed = append(append(append(signed, 0x30, 0x02, 0x05, 0x00), ms...), SignatureMagic...)
	seeds := [][]byte{
		nil,
		[]byte("\x7fELF"),
		syntheticModule("a", "a"),
		syntheticModule("dumbo", "dummy"),
		signed,
		signModule(f, syntheticModule("pkcs7", "pkcs7")),
		buildELF(testSection{name: secThisModule, data: thisModule("only")}),
		buildELF(testSection{name: secModinfo, data: []byte("name=unterminated")}),
	}
	for _, z := range compressAll(f, syntheticModule("z", "z")) {
		seeds = append(seeds, z)
	}
	// Real modules come from kernels already in the debkernel cache: each
	// fuzz worker process builds its seeds, and resolving a kernel through
	// apt-cache costs seconds per process.
	real, _ := filepath.Glob(filepath.Join(debkernel.CacheDir(), "kernels", "*", "lib", "modules", "*", "kernel", "drivers", "net", "dummy.ko*"))
	for _, p := range real {
		if b, err := os.ReadFile(p); err == nil {
			seeds = append(seeds, b)
		}
	}
	return seeds
}

func FuzzInspectBytes(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	// Keep each input cheap: a few MiB of output is plenty to find bugs.
	old := MaxImageSize
	MaxImageSize = 4 << 20
	f.Cleanup(func() { MaxImageSize = old })
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := InspectBytes(b)
		mi, tm, nerr := ParseNames(b)
		if detectCompression(b) == CompressionNone && (err == nil) != (nerr == nil) {
			t.Fatalf("InspectBytes err %v but ParseNames err %v", err, nerr)
		}
		if err != nil {
			return
		}
		sum := sha256.Sum256(b)
		if m.FileSHA256 != hex.EncodeToString(sum[:]) || m.FileSize != int64(len(b)) {
			t.Fatalf("file digest or size wrong")
		}
		if m.ELFSize > MaxImageSize {
			t.Fatalf("ELF of %d bytes passed the %d limit", m.ELFSize, MaxImageSize)
		}
		if m.Compression == CompressionNone {
			if m.ELFSHA256 != m.FileSHA256 || m.Name != mi || m.ThisModuleName != tm {
				t.Fatalf("InspectBytes %q/%q, ParseNames %q/%q", m.Name, m.ThisModuleName, mi, tm)
			}
		}
		want := m.Name != "" && m.ThisModuleName != "" && NormalizeName(m.Name) != NormalizeName(m.ThisModuleName)
		if m.NameMismatch != want {
			t.Fatalf("NameMismatch %v for %q/%q", m.NameMismatch, m.Name, m.ThisModuleName)
		}
	})
}

func FuzzParseNames(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		if detectCompression(s) == CompressionNone {
			f.Add(s)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		mi, tm, err := ParseNames(b)
		if err != nil {
			if mi != "" || tm != "" {
				t.Fatalf("names %q/%q returned with error %v", mi, tm, err)
			}
			return
		}
		if len(tm) >= thisModNameLen || strings.IndexByte(tm, 0) >= 0 || strings.IndexByte(mi, 0) >= 0 {
			t.Fatalf("names %q/%q break the NUL or length rules", mi, tm)
		}
		if mi != "" && !bytes.Contains(b, []byte("name="+mi+"\x00")) {
			t.Fatalf(".modinfo name %q is not in the image", mi)
		}
	})
}
