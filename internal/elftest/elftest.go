// Package elftest makes test images that pass the kernel's ELF header
// checks for a module (elf_validity_check in kernel/module/main.c) without
// being modules: the sensor sends such images in full, where it folds
// images that fail those checks (junk, which can load nothing). Tests that
// need every call to travel as an event, such as flood and loss tests, use
// it.
package elftest

import (
	"encoding/binary"
	"runtime"
)

// Machine is the ELF e_machine of this build's architecture.
var Machine = map[string]uint16{"amd64": 62, "arm64": 183}[runtime.GOARCH]

// Header writes, over the first 64 bytes of img, the header of a 64-bit
// little-endian relocatable object for this machine with one section
// header at offset 0 (inside any image of 64 bytes or more). It returns
// img; an image shorter than 64 bytes is left alone (the kernel refuses
// it before any other check).
func Header(img []byte) []byte {
	if len(img) < 64 {
		return img
	}
	h := img[:64]
	clear(h)
	copy(h, "\x7fELF\x02\x01\x01")
	le := binary.LittleEndian
	le.PutUint16(h[16:], 1) // e_type ET_REL
	le.PutUint16(h[18:], Machine)
	le.PutUint32(h[20:], 1)  // e_version
	le.PutUint64(h[40:], 0)  // e_shoff
	le.PutUint16(h[52:], 64) // e_ehsize
	le.PutUint16(h[58:], 64) // e_shentsize
	le.PutUint16(h[60:], 1)  // e_shnum
	return img
}
