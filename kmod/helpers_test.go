package kmod

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"math/big"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/kmodguard/kmodguard/internal/debkernel"
)

// testSection is one section of a synthetic module built by buildELF.
type testSection struct {
	name  string
	typ   uint32 // 0 means SHT_PROGBITS
	flags uint64 // 0 means SHF_ALLOC
	data  []byte
}

// buildELF writes a minimal ELF64 little-endian ET_REL image with the given
// sections, a section name table, and the section header table at the end.
func buildELF(secs ...testSection) []byte {
	var names bytes.Buffer
	names.WriteByte(0)
	nameOff := make([]uint32, len(secs))
	for i, s := range secs {
		nameOff[i] = uint32(names.Len())
		names.WriteString(s.name)
		names.WriteByte(0)
	}
	shstrName := uint32(names.Len())
	names.WriteString(".shstrtab\x00")

	img := make([]byte, elfHeaderSize)
	copy(img, "\x7fELF")
	img[4], img[5], img[6] = elfClass64, elfData2LSB, 1
	le := binary.LittleEndian
	le.PutUint16(img[16:], elfTypeRel)
	le.PutUint16(img[18:], 62) // EM_X86_64
	le.PutUint32(img[20:], 1)
	le.PutUint16(img[52:], elfHeaderSize)

	offs := make([]uint64, len(secs))
	for i, s := range secs {
		offs[i] = uint64(len(img))
		img = append(img, s.data...)
	}
	strOff := uint64(len(img))
	img = append(img, names.Bytes()...)
	for len(img)%8 != 0 {
		img = append(img, 0)
	}
	shoff := uint64(len(img))
	sh := func(name, typ uint32, flags, off, size uint64) {
		h := make([]byte, elfSectionSize)
		le.PutUint32(h[shOffName:], name)
		le.PutUint32(h[shOffType:], typ)
		le.PutUint64(h[shOffFlags:], flags)
		le.PutUint64(h[shOffOffset:], off)
		le.PutUint64(h[shOffSize:], size)
		img = append(img, h...)
	}
	sh(0, 0, 0, 0, 0) // SHN_UNDEF
	for i, s := range secs {
		typ, flags := s.typ, s.flags
		if typ == 0 {
			typ = 1
		}
		if flags == 0 {
			flags = shfAlloc
		}
		sh(nameOff[i], typ, flags, offs[i], uint64(len(s.data)))
	}
	sh(shstrName, 3, 0, strOff, uint64(names.Len()))
	le.PutUint64(img[offShoff:], shoff)
	le.PutUint16(img[offShentsize:], elfSectionSize)
	le.PutUint16(img[offShnum:], uint16(len(secs)+2))
	le.PutUint16(img[offShstrndx:], uint16(len(secs)+1))
	return img
}

// thisModule returns a .gnu.linkonce.this_module body with name at offset 24.
func thisModule(name string) []byte {
	b := make([]byte, 0x380) // about sizeof(struct module); only the name matters
	copy(b[thisModNameOff:thisModNameOff+thisModNameLen-1], name)
	return b
}

// modinfoSec joins key=value entries the way modpost does.
func modinfoSec(entries ...string) []byte {
	var b bytes.Buffer
	for _, e := range entries {
		b.WriteString(e)
		b.WriteByte(0)
	}
	return b.Bytes()
}

// syntheticModule is a small, well-formed, unsigned module.
func syntheticModule(modinfoName, thisName string) []byte {
	return buildELF(
		testSection{name: ".text", data: []byte{0xc3}},
		testSection{name: secModinfo, data: modinfoSec(
			"license=GPL", "author=A <a@example.org>", "parmtype=count:int", "parm=count:how many",
			"description=a synthetic module", "author=B", "intree=Y",
			"depends=a,b-c", "vermagic=6.1.0-test SMP mod_unload ", "name="+modinfoName)},
		testSection{name: secThisModule, flags: shfAlloc | 1, data: thisModule(thisName)},
	)
}

var kernels sync.Map // debkernel.Series -> *kernelResult

type kernelResult struct {
	once sync.Once
	k    *debkernel.Kernel
	err  error
}

// getKernel fetches (once per process) a Debian kernel package.
func getKernel(s debkernel.Series) (*debkernel.Kernel, error) {
	v, _ := kernels.LoadOrStore(s, &kernelResult{})
	r := v.(*kernelResult)
	r.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		r.k, r.err = debkernel.Get(ctx, s)
	})
	return r.k, r.err
}

// realKernel returns an unpacked Debian kernel or skips the test (or
// benchmark) with the reason.
func realKernel(tb testing.TB, s debkernel.Series) *debkernel.Kernel {
	tb.Helper()
	if testing.Short() {
		tb.Skip("needs a Debian kernel package: skipped in -short mode")
	}
	k, err := getKernel(s)
	if err != nil {
		tb.Skipf("needs the Debian %s kernel package: %v", s, err)
	}
	return k
}

// realModule returns the path and bytes of a module of a Debian kernel.
func realModule(tb testing.TB, s debkernel.Series, name string) (string, []byte) {
	tb.Helper()
	k := realKernel(tb, s)
	p, err := k.Module(name)
	if err != nil {
		tb.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		tb.Fatal(err)
	}
	return p, b
}

// stripSignature removes an appended signature, as `strip`-ing tools and
// attackers do, or fails the test when there is none.
func stripSignature(tb testing.TB, img []byte) []byte {
	tb.Helper()
	elf, sig := splitSignature(img)
	if !sig.Present || sig.Err != "" {
		tb.Fatalf("module has no well-formed signature to strip: %+v", sig)
	}
	return bytes.Clone(elf)
}

// replaceOnce returns a copy of b with the single occurrence of old replaced
// by new (same length), or fails the test.
func replaceOnce(tb testing.TB, b []byte, old, new string) []byte {
	tb.Helper()
	if len(old) != len(new) {
		tb.Fatalf("replaceOnce: %q and %q differ in length", old, new)
	}
	if n := bytes.Count(b, []byte(old)); n != 1 {
		tb.Fatalf("replaceOnce: %q occurs %d times", old, n)
	}
	return bytes.Replace(b, []byte(old), []byte(new), 1)
}

func errIs(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// testSigner is a throwaway key and certificate, made once per process.
var testSigner = sync.OnceValues(func() (*x509.Certificate, crypto.Signer) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(0x1234abcd),
		Subject:      pkix.Name{CommonName: "kmodguard test signer"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		SubjectKeyId: []byte{0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		panic(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	return cert, key
})

// signModule appends a module signature the way scripts/sign-file does:
// a detached PKCS#7 without signed attributes, struct module_signature with
// id_type PKCS#7, and the magic. Unlike sign-file it includes the signer's
// certificate, so the parser's certificate path is exercised.
func signModule(tb testing.TB, img []byte) []byte {
	tb.Helper()
	cert, key := testSigner()
	sd, err := pkcs7.NewSignedData(img)
	if err != nil {
		tb.Fatal(err)
	}
	sd.SetDigestAlgorithm(pkcs7.OIDDigestAlgorithmSHA256)
	if err := sd.SignWithoutAttr(cert, key, pkcs7.SignerInfoConfig{}); err != nil {
		tb.Fatal(err)
	}
	sd.Detach()
	blob, err := sd.Finish()
	if err != nil {
		tb.Fatal(err)
	}
	ms := make([]byte, moduleSignatureSize)
	ms[2] = idPKCS7
	binary.BigEndian.PutUint32(ms[8:], uint32(len(blob)))
	out := append(bytes.Clone(img), blob...)
	out = append(out, ms...)
	return append(out, SignatureMagic...)
}
