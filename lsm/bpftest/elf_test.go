//go:build linux

package bpftest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kmodguard/kmodguard/internal/debkernel"
	"github.com/kmodguard/kmodguard/internal/elftest"
	"github.com/kmodguard/kmodguard/kmod"
	"github.com/ulikunitz/xz"
)

// Bounds of elf.h, mirrored for the checks.
const (
	kgELFMaxSections = 256     // KG_ELF_MAX_SECTIONS
	kgELFMaxModinfo  = 1 << 20 // KG_ELF_MAX_MODINFO
	kgELFNameMax     = 64      // KG_ELF_NAME_MAX
)

// elfResult is kg_elf_names' answer.
type elfResult struct {
	status     bpftestKgElfStatus
	modinfo    string
	thisModule string
	flags      uint32
	shnum      uint32
}

func (r elfResult) String() string {
	return fmt.Sprintf("status %d, modinfo %q, this_module %q, flags %#x", r.status, r.modinfo, r.thisModule, r.flags)
}

// cstring returns b up to its first NUL.
func cstring(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// elfNames runs kg_elf_names on img.
func (h *harness) elfNames(img []byte) (elfResult, error) {
	if err := h.setInput(img); err != nil {
		return elfResult{}, err
	}
	res, err := h.run(h.objs.TestElfNames, uint64(len(img)))
	if err != nil {
		return elfResult{}, err
	}
	mi := make([]byte, len(res.Names.ModinfoName))
	tm := make([]byte, len(res.Names.ThisModuleName))
	for i, c := range res.Names.ModinfoName {
		mi[i] = byte(c)
	}
	for i, c := range res.Names.ThisModuleName {
		tm[i] = byte(c)
	}
	return elfResult{
		status:     bpftestKgElfStatus(res.Ret),
		modinfo:    cstring(mi),
		thisModule: cstring(tm),
		flags:      res.Names.Flags,
		shnum:      res.Names.Shnum,
	}, nil
}

// Flags of struct kg_elf_names.
const (
	haveModinfoName = 1 << 0 // KG_ELF_HAVE_MODINFO_NAME
	haveThisModule  = 1 << 1 // KG_ELF_HAVE_THIS_MODULE
)

// agree reports how kg_elf_names' answer r on img disagrees with
// kmod.ParseNames, or nil. Where Go finds an error the BPF side must find
// one too (of the same class for "not ELF" and "unsupported"). Where Go
// succeeds the BPF side must return the same names, except that it may
// refuse an image beyond its documented bounds: more than
// KG_ELF_MAX_SECTIONS sections, a name= value of KG_ELF_NAME_MAX bytes or
// more, or tables larger than KG_ELF_MAX_MODINFO.
func agree(img []byte, r elfResult) error {
	mi, tm, err := kmod.ParseNames(img)
	if err != nil {
		switch {
		case r.status < bpftestKgElfStatusKG_ELF_NOT_ELF:
			return fmt.Errorf("kmod.ParseNames: %v; kg_elf_names: %v", err, r)
		case errors.Is(err, kmod.ErrNotELF) && r.status != bpftestKgElfStatusKG_ELF_NOT_ELF,
			errors.Is(err, kmod.ErrUnsupported) && r.status != bpftestKgElfStatusKG_ELF_UNSUPPORTED:
			return fmt.Errorf("kmod.ParseNames: %v; kg_elf_names: %v (wrong class)", err, r)
		}
		return nil
	}
	switch r.status {
	case bpftestKgElfStatusKG_ELF_TOO_MANY_SECTIONS:
		if r.shnum > kgELFMaxSections {
			return nil
		}
	case bpftestKgElfStatusKG_ELF_NAME_TOO_LONG:
		if len(mi) >= kgELFNameMax {
			return nil
		}
	case bpftestKgElfStatusKG_ELF_TOO_LARGE:
		if len(img) > kgELFMaxModinfo {
			return nil
		}
	case bpftestKgElfStatusKG_ELF_OK, bpftestKgElfStatusKG_ELF_NO_MODINFO,
		bpftestKgElfStatusKG_ELF_NO_MODINFO_NAME, bpftestKgElfStatusKG_ELF_NO_THIS_MODULE:
		if r.modinfo != mi || r.thisModule != tm {
			return fmt.Errorf("kmod.ParseNames: %q, %q; kg_elf_names: %v", mi, tm, r)
		}
		okStatus := r.status == bpftestKgElfStatusKG_ELF_OK
		if okStatus != (r.flags == haveModinfoName|haveThisModule) ||
			(mi != "" && r.flags&haveModinfoName == 0) || (tm != "" && r.flags&haveThisModule == 0) {
			return fmt.Errorf("kmod.ParseNames: %q, %q; kg_elf_names: %v (inconsistent status)", mi, tm, r)
		}
		return nil
	}
	return fmt.Errorf("kmod.ParseNames: %q, %q, no error; kg_elf_names: %v", mi, tm, r)
}

// checkAgree runs kg_elf_names on img and fails t on a disagreement.
func checkAgree(t *testing.T, h *harness, what string, img []byte) elfResult {
	t.Helper()
	r, err := h.elfNames(img)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if err := agree(img, r); err != nil {
		t.Errorf("%s: %v", what, err)
	}
	return r
}

// getKernel returns a cached Debian kernel package or skips t.
func getKernel(t *testing.T, s debkernel.Series) *debkernel.Kernel {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	k, err := debkernel.Get(ctx, s)
	if err != nil {
		t.Skipf("needs the Debian %s kernel package: %v", s, err)
	}
	return k
}

// readModule returns a module's ELF image, decompressing .ko.xz.
func readModule(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(path, ".xz") {
		return b, nil
	}
	r, err := xz.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	elf, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return elf, nil
}

// TestELFNamesDebian checks that kg_elf_names and kmod.ParseNames agree on
// every module of the Debian kernel packages, and that every real module
// parses to two names.
func TestELFNamesDebian(t *testing.T) {
	requireBPF(t)
	h := newHarness(t, 32<<20)
	for _, s := range debkernel.AllSeries {
		t.Run(string(s), func(t *testing.T) {
			k := getKernel(t, s)
			n := 0
			err := filepath.WalkDir(k.ModulesDir(), func(p string, d fs.DirEntry, err error) error {
				if err != nil || d.IsDir() || !(strings.HasSuffix(p, ".ko") || strings.HasSuffix(p, ".ko.xz")) {
					return err
				}
				img, err := readModule(p)
				if err != nil {
					return err
				}
				n++
				rel, _ := filepath.Rel(k.ModulesDir(), p)
				r := checkAgree(t, h, rel, img)
				if r.status != bpftestKgElfStatusKG_ELF_OK {
					t.Errorf("%s: %v, want both names", rel, r)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if n < 500 {
				t.Fatalf("only %d modules under %s", n, k.ModulesDir())
			}
			t.Logf("%d modules agree", n)
		})
	}
}

// elfSec is one section of a synthetic module image.
type elfSec struct {
	name  string
	typ   uint32
	flags uint64
	data  []byte
}

const (
	shtProgbits = 1
	shtStrtab   = 3
	shtNobits   = 8
	shfAlloc    = 2
)

// thisModule returns a .gnu.linkonce.this_module payload naming name.
func thisModule(name string) []byte { return elftest.ThisModule(name) }

// buildELF lays out a minimal ELF64 relocatable object (elftest.Build).
func buildELF(secs []elfSec) []byte {
	out := make([]elftest.Section, len(secs))
	for i, s := range secs {
		out[i] = elftest.Section{Name: s.name, Type: s.typ, Flags: s.flags, Data: s.data}
	}
	return elftest.Build(out)
}

// module builds a well-formed synthetic module with the given .modinfo.
func module(modinfo, name string, extra ...elfSec) []byte {
	secs := []elfSec{
		{name: ".text", typ: shtProgbits, flags: shfAlloc | 4, data: []byte{0xc3}},
		{name: ".modinfo", typ: shtProgbits, flags: shfAlloc, data: []byte(modinfo)},
		{name: ".gnu.linkonce.this_module", typ: shtProgbits, flags: shfAlloc | 1, data: thisModule(name)},
	}
	return buildELF(append(secs, extra...))
}

// patch returns a copy of img with f applied.
func patch(img []byte, f func(b []byte)) []byte {
	b := bytes.Clone(img)
	f(b)
	return b
}

// shdr returns the offset of section header i of img.
func shdr(img []byte, i int) int {
	return int(binary.LittleEndian.Uint64(img[0x28:])) + 64*i
}

const goodModinfo = "license=GPL\x00description=test\x00name=dummy\x00vermagic=6.1.0 SMP mod_unload \x00"

// craftedImages returns the synthetic images of the crafted tests, valid
// and hostile, by name.
func craftedImages() []struct {
	name string
	img  []byte
} {
	le := binary.LittleEndian
	good := module(goodModinfo, "dummy")
	// Section 1 .text, 2 .modinfo, 3 .gnu.linkonce.this_module, 4 .shstrtab.
	many := []elfSec{}
	for i := range 300 {
		many = append(many, elfSec{name: fmt.Sprintf(".text.%d", i), typ: shtProgbits, flags: shfAlloc, data: []byte{byte(i)}})
	}
	var padded strings.Builder
	for padded.Len() < 250 {
		padded.WriteString("alias=pci:v00008086d*\x00")
	}
	var big strings.Builder
	for big.Len() < 100_000 {
		big.WriteString("alias=usb:v1234p5678d*dc*dsc*dp*ic*isc*ip*in*\x00")
	}
	return []struct {
		name string
		img  []byte
	}{
		{"valid", good},
		{"names disagree", module("name=dumbo\x00", "dummy")},
		{"name first", module("name=dummy\x00license=GPL\x00", "dummy")},
		{"name after NUL padding", module("\x00\x00\x00name=dummy\x00", "dummy")},
		{"name not at entry start", module("xname=evil\x00", "dummy")},
		{"name inside a value", module("description=a name=evil\x00name=dummy\x00", "dummy")},
		{"first name wins", module("name=first\x00name=second\x00", "first")},
		{"prefix of name=", module("nam\x00name\x00names=x\x00name=ok\x00", "ok")},
		{"empty name", module("name=\x00", "dummy")},
		{"name 63 bytes", module("name="+strings.Repeat("a", 63)+"\x00", "dummy")},
		{"name 64 bytes", module("name="+strings.Repeat("a", 64)+"\x00", "dummy")},
		{"name 300 bytes", module("name="+strings.Repeat("b", 300)+"\x00", "dummy")},
		{"name across chunk boundary", module(padded.String()[:250]+"\x00name=straddle\x00", "straddle")},
		{"name after 100 KB", module(big.String()+"name=late\x00", "late")},
		{"entry 254 then name", module(strings.Repeat("x", 254)+"\x00name=ok\x00", "ok")},
		{"entry 255 then name", module(strings.Repeat("x", 255)+"\x00name=ok\x00", "ok")},
		{"entry 256 then name", module(strings.Repeat("x", 256)+"\x00name=ok\x00", "ok")},
		{"entry 1000 then name", module(strings.Repeat("x", 1000)+"\x00name=ok\x00", "ok")},
		{"long entry hides name=", module(strings.Repeat("x", 255)+"name=evil\x00name=ok\x00", "ok")},
		{"long entry hides name= at 510", module(strings.Repeat("x", 510)+"name=evil\x00\x00name=ok\x00", "ok")},
		{"name 250 bytes", module("name="+strings.Repeat("c", 250)+"\x00", "dummy")},
		{"name 251 bytes then more", module("name="+strings.Repeat("c", 251)+"\x00name=x\x00", "dummy")},
		{"no name entry", module("license=GPL\x00", "dummy")},
		{"empty modinfo", module("", "dummy")},
		{"modinfo without final NUL", module("name=dummy\x00license=GPL", "dummy")},
		{"modinfo name without NUL", module("name=dummy", "dummy")},
		{"no modinfo", buildELF([]elfSec{{name: ".gnu.linkonce.this_module", typ: shtProgbits, flags: shfAlloc, data: thisModule("dummy")}})},
		{"no this_module", buildELF([]elfSec{{name: ".modinfo", typ: shtProgbits, flags: shfAlloc, data: []byte("name=dummy\x00")}})},
		{"no sections", buildELF(nil)},
		{"duplicate modinfo", module(goodModinfo, "dummy", elfSec{name: ".modinfo", typ: shtProgbits, flags: shfAlloc, data: []byte("name=evil\x00")})},
		{"duplicate this_module", module(goodModinfo, "dummy", elfSec{name: ".gnu.linkonce.this_module", typ: shtProgbits, flags: shfAlloc, data: thisModule("evil")})},
		{"modinfo without SHF_ALLOC", patch(good, func(b []byte) { le.PutUint64(b[shdr(b, 2)+8:], 0) })},
		{"this_module without SHF_ALLOC", patch(good, func(b []byte) { le.PutUint64(b[shdr(b, 3)+8:], 0) })},
		{"modinfo NOBITS", patch(good, func(b []byte) { le.PutUint32(b[shdr(b, 2)+4:], shtNobits) })},
		{"this_module NOBITS", patch(good, func(b []byte) { le.PutUint32(b[shdr(b, 3)+4:], shtNobits) })},
		{"modinfo past end", patch(good, func(b []byte) { le.PutUint64(b[shdr(b, 2)+24:], uint64(len(b))) })},
		{"modinfo size overflows", patch(good, func(b []byte) { le.PutUint64(b[shdr(b, 2)+32:], ^uint64(0)) })},
		{"this_module short", patch(good, func(b []byte) { le.PutUint64(b[shdr(b, 3)+32:], 79) })},
		{"this_module 80 bytes", patch(good, func(b []byte) { le.PutUint64(b[shdr(b, 3)+32:], 80) })},
		{"this_module name unterminated", module(goodModinfo, strings.Repeat("x", 56))},
		{"this_module name 55 bytes", module("name="+strings.Repeat("y", 55)+"\x00", strings.Repeat("y", 55))},
		{"this_module past end", patch(good, func(b []byte) { le.PutUint64(b[shdr(b, 3)+24:], 1<<40) })},
		{"300 sections", module(goodModinfo, "dummy", many...)},
		{"e_shnum 0xffff", patch(good, func(b []byte) { le.PutUint16(b[0x3c:], 0xffff) })},
		{"e_shnum 0", patch(good, func(b []byte) { le.PutUint16(b[0x3c:], 0) })},
		{"shoff past end", patch(good, func(b []byte) { le.PutUint64(b[0x28:], uint64(len(b))) })},
		{"shoff overflows", patch(good, func(b []byte) { le.PutUint64(b[0x28:], ^uint64(0)-63) })},
		{"shentsize 40", patch(good, func(b []byte) { le.PutUint16(b[0x3a:], 40) })},
		{"shstrndx 0", patch(good, func(b []byte) { le.PutUint16(b[0x3e:], 0) })},
		{"shstrndx out of range", patch(good, func(b []byte) { le.PutUint16(b[0x3e:], 5) })},
		{"shstrndx points at modinfo", patch(good, func(b []byte) { le.PutUint16(b[0x3e:], 2) })},
		{"strtab past end", patch(good, func(b []byte) { le.PutUint64(b[shdr(b, 4)+24:], uint64(len(b))-4) })},
		{"strtab NOBITS", patch(good, func(b []byte) { le.PutUint32(b[shdr(b, 4)+4:], shtNobits) })},
		{"strtab empty", patch(good, func(b []byte) { le.PutUint64(b[shdr(b, 4)+32:], 0) })},
		{"strtab cut inside .shstrtab", patch(good, func(b []byte) {
			le.PutUint64(b[shdr(b, 4)+32:], le.Uint64(b[shdr(b, 4)+32:])-1)
		})},
		{"strtab cut before .shstrtab", patch(good, func(b []byte) {
			// The last name is outside the table; the rest stay terminated.
			le.PutUint64(b[shdr(b, 4)+32:], le.Uint64(b[shdr(b, 4)+32:])-10)
		})},
		{"strtab ends unterminated, unused", patch(good, func(b []byte) {
			// .shstrtab's own name moves to offset 0 (""), so no name
			// starts in the unterminated ".shs" the table now ends with.
			le.PutUint32(b[shdr(b, 4):], 0)
			le.PutUint64(b[shdr(b, 4)+32:], le.Uint64(b[shdr(b, 4)+32:])-6)
		})},
		{"section name offset past strtab", patch(good, func(b []byte) { le.PutUint32(b[shdr(b, 1):], 1<<20) })},
		{"section name offset at strtab end", patch(good, func(b []byte) {
			le.PutUint32(b[shdr(b, 1):], uint32(le.Uint64(b[shdr(b, 4)+32:])))
		})},
		{"ELF32", patch(good, func(b []byte) { b[4] = 1 })},
		{"big endian", patch(good, func(b []byte) { b[5] = 2 })},
		{"ET_EXEC", patch(good, func(b []byte) { le.PutUint16(b[16:], 2) })},
		{"not ELF", patch(good, func(b []byte) { b[1] = 'X' })},
		{"empty", nil},
		{"3 bytes", []byte("\x7fEL")},
		{"magic only", []byte("\x7fELF")},
		{"header cut", good[:40]},
		{"signature appended", append(bytes.Clone(good), "\x00\x01\x02~Module signature appended~\n"...)},
	}
}

// TestELFNamesCrafted checks agreement on synthetic images, well-formed and
// hostile, and pins the expected answer of the interesting ones.
func TestELFNamesCrafted(t *testing.T) {
	h := newHarness(t, 1<<20)
	want := map[string]elfResult{
		"valid":                            {status: bpftestKgElfStatusKG_ELF_OK, modinfo: "dummy", thisModule: "dummy"},
		"names disagree":                   {status: bpftestKgElfStatusKG_ELF_OK, modinfo: "dumbo", thisModule: "dummy"},
		"name not at entry start":          {status: bpftestKgElfStatusKG_ELF_NO_MODINFO_NAME, thisModule: "dummy"},
		"name inside a value":              {status: bpftestKgElfStatusKG_ELF_OK, modinfo: "dummy", thisModule: "dummy"},
		"first name wins":                  {status: bpftestKgElfStatusKG_ELF_OK, modinfo: "first", thisModule: "first"},
		"name across chunk boundary":       {status: bpftestKgElfStatusKG_ELF_OK, modinfo: "straddle", thisModule: "straddle"},
		"name after 100 KB":                {status: bpftestKgElfStatusKG_ELF_OK, modinfo: "late", thisModule: "late"},
		"name 64 bytes":                    {status: bpftestKgElfStatusKG_ELF_NAME_TOO_LONG},
		"no modinfo":                       {status: bpftestKgElfStatusKG_ELF_NO_MODINFO, thisModule: "dummy"},
		"no this_module":                   {status: bpftestKgElfStatusKG_ELF_NO_THIS_MODULE, modinfo: "dummy"},
		"300 sections":                     {status: bpftestKgElfStatusKG_ELF_TOO_MANY_SECTIONS},
		"e_shnum 0xffff":                   {status: bpftestKgElfStatusKG_ELF_TRUNCATED},
		"shoff past end":                   {status: bpftestKgElfStatusKG_ELF_TRUNCATED},
		"modinfo without final NUL":        {status: bpftestKgElfStatusKG_ELF_MALFORMED},
		"duplicate modinfo":                {status: bpftestKgElfStatusKG_ELF_MALFORMED},
		"this_module name unterminated":    {status: bpftestKgElfStatusKG_ELF_MALFORMED},
		"not ELF":                          {status: bpftestKgElfStatusKG_ELF_NOT_ELF},
		"strtab ends unterminated, unused": {status: bpftestKgElfStatusKG_ELF_OK, modinfo: "dummy", thisModule: "dummy"},
		"strtab cut inside .shstrtab":      {status: bpftestKgElfStatusKG_ELF_MALFORMED},
		"big endian":                       {status: bpftestKgElfStatusKG_ELF_UNSUPPORTED},
	}
	for _, tc := range craftedImages() {
		t.Run(tc.name, func(t *testing.T) {
			r := checkAgree(t, h, tc.name, tc.img)
			w, ok := want[tc.name]
			if !ok {
				return
			}
			if r.status != w.status || (r.status < bpftestKgElfStatusKG_ELF_NOT_ELF && (r.modinfo != w.modinfo || r.thisModule != w.thisModule)) {
				t.Errorf("kg_elf_names: %v, want %v", r, w)
			}
		})
	}
}

// TestELFNamesTruncated cuts images short at many offsets: every offset of
// a synthetic module, and a spread of offsets of Debian's dummy.ko
// (including every byte around its section table and .modinfo). The BPF
// side must fail wherever Go does.
func TestELFNamesTruncated(t *testing.T) {
	h := newHarness(t, 1<<20)
	good := module(goodModinfo, "dummy")
	for n := 0; n < len(good); n++ {
		checkAgree(t, h, fmt.Sprintf("synthetic[:%d]", n), good[:n])
	}

	k := getKernel(t, debkernel.Series61)
	path, err := k.Module("dummy")
	if err != nil {
		t.Fatal(err)
	}
	img, err := readModule(path)
	if err != nil {
		t.Fatal(err)
	}
	cuts := map[int]bool{}
	for n := 0; n < len(img); n += 97 {
		cuts[n] = true
	}
	shoff := int(binary.LittleEndian.Uint64(img[0x28:]))
	for n := shoff - 70; n < len(img); n++ {
		cuts[n] = true
	}
	for n := 0; n < 128; n++ {
		cuts[n] = true
	}
	for n := range cuts {
		if n >= 0 && n < len(img) {
			checkAgree(t, h, fmt.Sprintf("dummy.ko[:%d]", n), img[:n])
		}
	}
}

// FuzzELFNames feeds mutated images to both parsers and fails on any
// disagreement.
func FuzzELFNames(f *testing.F) {
	for _, tc := range craftedImages() {
		if len(tc.img) < 4096 {
			f.Add(tc.img)
		}
	}
	h := newHarness(f, 1<<20)
	f.Fuzz(func(t *testing.T, img []byte) {
		if len(img) > h.capacity {
			t.Skip("larger than the test buffer")
		}
		checkAgree(t, h, "fuzz", img)
	})
}

// TestELFNamesFault checks that a size larger than the readable buffer
// (which the kernel never passes, but a caller bug might) ends in
// KG_ELF_FAULT rather than in names read from elsewhere.
func TestELFNamesFault(t *testing.T) {
	h := newHarness(t, 1<<20)
	img := module(goodModinfo, "dummy")
	// The section headers move just past the end of the input map, into
	// the guard page that follows every vmalloc area (the map header puts
	// the end of the values less than a page before it), and size claims
	// 64 MiB, so every bounds check passes and the read fails.
	shoff := uint64(h.capacity) + 4096 - 64
	img = patch(img, func(b []byte) { binary.LittleEndian.PutUint64(b[0x28:], shoff) })
	if err := h.setInput(img); err != nil {
		t.Fatal(err)
	}
	res, err := h.run(h.objs.TestElfNames, 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	if st := bpftestKgElfStatus(res.Ret); st != bpftestKgElfStatusKG_ELF_FAULT {
		t.Errorf("kg_elf_names with unreadable section headers: status %d, want KG_ELF_FAULT", st)
	}
}
