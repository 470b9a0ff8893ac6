package kmod

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// This file is the reference ELF walk that finds a module's two names. The
// guard's BPF parser (lsm/) mirrors it step by step and is tested against it
// on every module of a Debian kernel package, so it stays small, does
// nothing the BPF side cannot (fixed-offset reads, byte compares, bounded
// loops), and bounds every read by the buffer length.
//
// The kernel facts it follows (kernel/module/main.c):
//   - Sections are found by name through the section header string table
//     (e_shstrndx), skipping section 0.
//   - Linux 6.1 takes the first section of that name with SHF_ALLOC; 6.12
//     refuses an image with two .modinfo or two .gnu.linkonce.this_module
//     sections. To agree with both, a duplicate is an error here, and a
//     .modinfo or .gnu.linkonce.this_module without SHF_ALLOC is too.
//   - .modinfo is a run of NUL-terminated "key=value" strings, possibly
//     padded with NULs; the kernel's get_modinfo returns the first "name=".
//     A .modinfo whose last byte is not NUL is refused.
//   - struct module starts with enum module_state (4 bytes, padded to 8) and
//     struct list_head (16 bytes), so name[MODULE_NAME_LEN] is at offset 24;
//     MODULE_NAME_LEN is 64 - sizeof(unsigned long) = 56 on 64-bit.

// ELF64 layout facts.
const (
	elfHeaderSize  = 64 // sizeof(Elf64_Ehdr)
	elfSectionSize = 64 // sizeof(Elf64_Shdr)
	elfClass64     = 2  // e_ident[EI_CLASS]
	elfData2LSB    = 1  // e_ident[EI_DATA]
	elfTypeRel     = 1  // e_type ET_REL: a module is a relocatable object
	shtNoBits      = 8  // sh_type SHT_NOBITS: no bytes in the file
	shfAlloc       = 2  // sh_flags SHF_ALLOC
	offShoff       = 0x28
	offShentsize   = 0x3a
	offShnum       = 0x3c
	offShstrndx    = 0x3e
	shOffName      = 0
	shOffType      = 4
	shOffFlags     = 8
	shOffOffset    = 24
	shOffSize      = 32
	secModinfo     = ".modinfo"
	secThisModule  = ".gnu.linkonce.this_module"
	secBuildID     = ".note.gnu.build-id"
	thisModNameOff = 24 // offsetof(struct module, name) on 64-bit
	thisModNameLen = 56 // MODULE_NAME_LEN on 64-bit
	modinfoNameTag = "name="
)

// Errors of the ELF walk. They are wrapped with the detail, so callers test
// them with errors.Is.
var (
	ErrNotELF       = errors.New("not an ELF file")
	ErrUnsupported  = errors.New("unsupported ELF variant")
	ErrMalformedELF = errors.New("malformed ELF")
)

// section is one section header, reduced to what module inspection needs.
type section struct {
	found  bool // the section exists
	name   string
	typ    uint32
	flags  uint64
	offset uint64
	size   uint64
}

// data returns the section's bytes, bounds-checked against img.
func (s *section) data(img []byte) ([]byte, error) {
	if s.typ == shtNoBits {
		return nil, fmt.Errorf("%w: section %s has no file data (SHT_NOBITS)", ErrMalformedELF, s.name)
	}
	end := s.offset + s.size
	if end < s.offset || end > uint64(len(img)) {
		return nil, fmt.Errorf("%w: section %s [%#x, +%#x) is outside the %d-byte image", ErrMalformedELF, s.name, s.offset, s.size, len(img))
	}
	return img[s.offset:end], nil
}

// elfSections checks the ELF header and returns the .modinfo and
// .gnu.linkonce.this_module section headers; found is false when absent.
func elfSections(img []byte) (modinfo, thisModule section, err error) {
	modinfo, thisModule, _, err = elfSectionsWith(img, "")
	return modinfo, thisModule, err
}

// elfSectionsWith is elfSections that also returns the section named
// extra (none when extra is "").
func elfSectionsWith(img []byte, extra string) (modinfo, thisModule, ex section, err error) {
	var none section
	if len(img) < 4 || !bytes.Equal(img[:4], []byte("\x7fELF")) {
		return none, none, none, ErrNotELF
	}
	if len(img) < elfHeaderSize {
		return none, none, none, fmt.Errorf("%w: %d bytes is shorter than the ELF header", ErrMalformedELF, len(img))
	}
	if img[4] != elfClass64 {
		return none, none, none, fmt.Errorf("%w: ELF class %d (only ELF64 modules are supported)", ErrUnsupported, img[4])
	}
	if img[5] != elfData2LSB {
		return none, none, none, fmt.Errorf("%w: ELF data encoding %d (only little-endian modules are supported)", ErrUnsupported, img[5])
	}
	le := binary.LittleEndian
	if t := le.Uint16(img[16:]); t != elfTypeRel {
		return none, none, none, fmt.Errorf("%w: e_type %d is not ET_REL, so this is not a kernel module", ErrMalformedELF, t)
	}
	shoff := le.Uint64(img[offShoff:])
	shentsize := le.Uint16(img[offShentsize:])
	shnum := uint64(le.Uint16(img[offShnum:]))
	shstrndx := uint64(le.Uint16(img[offShstrndx:]))
	if shentsize != elfSectionSize {
		return none, none, none, fmt.Errorf("%w: e_shentsize %d, want %d", ErrMalformedELF, shentsize, elfSectionSize)
	}
	if shnum == 0 {
		return none, none, none, fmt.Errorf("%w: no section headers", ErrMalformedELF)
	}
	// shnum <= 0xffff, so shnum*64 cannot overflow; shoff+that can.
	tableEnd := shoff + shnum*elfSectionSize
	if tableEnd < shoff || tableEnd > uint64(len(img)) {
		return none, none, none, fmt.Errorf("%w: section header table [%#x, +%d*%d) is outside the %d-byte image", ErrMalformedELF, shoff, shnum, elfSectionSize, len(img))
	}
	if shstrndx == 0 || shstrndx >= shnum {
		return none, none, none, fmt.Errorf("%w: e_shstrndx %d out of range (e_shnum %d)", ErrMalformedELF, shstrndx, shnum)
	}
	header := func(i uint64) section {
		h := img[shoff+i*elfSectionSize:]
		return section{
			typ:    le.Uint32(h[shOffType:]),
			flags:  le.Uint64(h[shOffFlags:]),
			offset: le.Uint64(h[shOffOffset:]),
			size:   le.Uint64(h[shOffSize:]),
		}
	}
	strtab := header(shstrndx)
	strtab.name = "section name table"
	names, err := strtab.data(img)
	if err != nil {
		return none, none, none, err
	}
	for i := uint64(1); i < shnum; i++ {
		s := header(i)
		nameOff := uint64(le.Uint32(img[shoff+i*elfSectionSize+shOffName:]))
		if nameOff >= uint64(len(names)) {
			return none, none, none, fmt.Errorf("%w: section %d name offset %#x is outside the %d-byte name table", ErrMalformedELF, i, nameOff, len(names))
		}
		n := names[nameOff:]
		end := bytes.IndexByte(n, 0)
		if end < 0 {
			return none, none, none, fmt.Errorf("%w: section %d name is not NUL-terminated", ErrMalformedELF, i)
		}
		var slot *section
		switch name := string(n[:end]); {
		case name == secModinfo:
			slot, s.name = &modinfo, secModinfo
		case name == secThisModule:
			slot, s.name = &thisModule, secThisModule
		case extra != "" && name == extra:
			slot, s.name = &ex, extra
		default:
			continue
		}
		if slot.found {
			return none, none, none, fmt.Errorf("%w: more than one %s section", ErrMalformedELF, s.name)
		}
		if s.flags&shfAlloc == 0 {
			return none, none, none, fmt.Errorf("%w: section %s lacks SHF_ALLOC", ErrMalformedELF, s.name)
		}
		s.found = true
		*slot = s
	}
	return modinfo, thisModule, ex, nil
}

// ParseNames returns a module image's two names: .modinfo's name= (what the
// kernel checks against module_blacklist=) and struct module.name in
// .gnu.linkonce.this_module (what the module registers under). A name is
// empty when its section, or name= in .modinfo, is absent. img is the raw ELF
// (decompressed); an appended signature does no harm.
//
// ParseNames is the reference for the guard's in-kernel parser: it reads
// nothing outside img, allocates nothing but the two strings it returns,
// and runs in time linear in e_shnum (at most 65535) plus the size of
// .modinfo.
func ParseNames(img []byte) (modinfoName, thisModuleName string, err error) {
	mi, tm, err := elfSections(img)
	if err != nil {
		return "", "", err
	}
	return sectionNames(img, mi, tm)
}

// sectionNames reads the two names from the sections elfSections found.
func sectionNames(img []byte, mi, tm section) (modinfoName, thisModuleName string, err error) {
	if mi.found {
		info, err := mi.data(img)
		if err != nil {
			return "", "", err
		}
		// A trailing entry without its NUL would make the kernel read on
		// past the section; refuse it up front, whatever precedes it.
		if len(info) > 0 && info[len(info)-1] != 0 {
			return "", "", fmt.Errorf("%w: .modinfo does not end with a NUL byte", ErrMalformedELF)
		}
		v, _, err := modinfoValue(info, modinfoNameTag)
		if err != nil {
			return "", "", err
		}
		modinfoName = string(v)
	}
	if tm.found {
		b, err := tm.data(img)
		if err != nil {
			return "", "", err
		}
		if len(b) < thisModNameOff+thisModNameLen {
			return "", "", fmt.Errorf("%w: %s is %d bytes, too short for struct module", ErrMalformedELF, secThisModule, len(b))
		}
		name := b[thisModNameOff : thisModNameOff+thisModNameLen]
		end := bytes.IndexByte(name, 0)
		if end < 0 {
			return "", "", fmt.Errorf("%w: struct module.name is not NUL-terminated within %d bytes", ErrMalformedELF, thisModNameLen)
		}
		thisModuleName = string(name[:end])
	}
	return modinfoName, thisModuleName, nil
}

// modinfoValue returns the value of the first "tag" entry (tag includes the
// '='), like the kernel's get_modinfo. An entry that runs to the end of the
// section without a NUL is an error: the kernel would read on past it.
func modinfoValue(info []byte, tag string) (value []byte, found bool, err error) {
	for len(info) > 0 {
		if info[0] == 0 {
			info = info[1:]
			continue
		}
		end := bytes.IndexByte(info, 0)
		if end < 0 {
			return nil, false, fmt.Errorf("%w: the last .modinfo entry is not NUL-terminated", ErrMalformedELF)
		}
		if bytes.HasPrefix(info[:end], []byte(tag)) {
			return info[len(tag):end], true, nil
		}
		info = info[end+1:]
	}
	return nil, false, nil
}
