package elftest

import (
	"bytes"
	"encoding/binary"
)

// Section is one section of an image built by Build.
type Section struct {
	Name  string
	Type  uint32 // SHT_*
	Flags uint64 // SHF_*
	Data  []byte // not written for SHT_NOBITS, whose size it still gives
}

// Section types and flags the tests use.
const (
	SHTProgbits = 1
	SHTStrtab   = 3
	SHTNobits   = 8
	SHFWrite    = 1
	SHFAlloc    = 2
	SHFExec     = 4
)

// Build lays out a minimal ELF64 little-endian relocatable object for
// x86-64: the header, the sections' contents (8-byte aligned), the
// section name table, then the section headers (index 0 is the null
// section, the name table is last).
func Build(secs []Section) []byte {
	le := binary.LittleEndian
	var strtab bytes.Buffer
	strtab.WriteByte(0)
	nameOff := make([]uint32, len(secs)+1)
	for i, s := range secs {
		nameOff[i] = uint32(strtab.Len())
		strtab.WriteString(s.Name)
		strtab.WriteByte(0)
	}
	nameOff[len(secs)] = uint32(strtab.Len())
	strtab.WriteString(".shstrtab\x00")
	all := append(append([]Section(nil), secs...), Section{Name: ".shstrtab", Type: SHTStrtab, Data: strtab.Bytes()})

	img := make([]byte, 64)
	offs := make([]uint64, len(all))
	for i, s := range all {
		for len(img)%8 != 0 {
			img = append(img, 0)
		}
		offs[i] = uint64(len(img))
		if s.Type != SHTNobits {
			img = append(img, s.Data...)
		}
	}
	for len(img)%8 != 0 {
		img = append(img, 0)
	}
	shoff := len(img)
	img = append(img, make([]byte, 64*(len(all)+1))...)
	for i, s := range all {
		h := img[shoff+64*(i+1):]
		le.PutUint32(h[0:], nameOff[i])
		le.PutUint32(h[4:], s.Type)
		le.PutUint64(h[8:], s.Flags)
		le.PutUint64(h[24:], offs[i])
		le.PutUint64(h[32:], uint64(len(s.Data)))
	}
	copy(img, "\x7fELF")
	img[4], img[5], img[6] = 2, 1, 1 // ELFCLASS64, ELFDATA2LSB, EV_CURRENT
	le.PutUint16(img[16:], 1)        // ET_REL
	le.PutUint16(img[18:], 62)       // EM_X86_64
	le.PutUint32(img[20:], 1)
	le.PutUint64(img[0x28:], uint64(shoff))
	le.PutUint16(img[0x34:], 64)
	le.PutUint16(img[0x3a:], 64)
	le.PutUint16(img[0x3c:], uint16(len(all)+1))
	le.PutUint16(img[0x3e:], uint16(len(all)))
	return img
}

// ThisModule returns a .gnu.linkonce.this_module payload naming name (at
// struct module's name offset on x86-64).
func ThisModule(name string) []byte {
	b := make([]byte, 0x380)
	copy(b[24:24+56], name)
	return b
}

// Module builds a well-formed synthetic module: a .text, the .modinfo
// given (NUL-separated key=value strings), a struct module naming name,
// then extra.
func Module(modinfo, name string, extra ...Section) []byte {
	secs := []Section{
		{Name: ".text", Type: SHTProgbits, Flags: SHFAlloc | SHFExec, Data: []byte{0xc3}},
		{Name: ".modinfo", Type: SHTProgbits, Flags: SHFAlloc, Data: []byte(modinfo)},
		{Name: ".gnu.linkonce.this_module", Type: SHTProgbits, Flags: SHFAlloc | SHFWrite, Data: ThisModule(name)},
	}
	return Build(append(secs, extra...))
}
