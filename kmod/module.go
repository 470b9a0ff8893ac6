// Package kmod inspects Linux kernel module images: ELF .ko files, plain or
// compressed (.ko.xz, .ko.zst, .ko.gz). It reports both of a module's names,
// its metadata, its appended signature and its digests, and it treats every
// input as hostile: no input makes it panic or hang.
package kmod

import (
	"encoding/binary"
	"encoding/hex"
)

// Compression is the container around the ELF image.
type Compression string

const (
	CompressionNone Compression = ""
	CompressionXZ   Compression = "xz"
	CompressionZstd Compression = "zstd"
	CompressionGzip Compression = "gzip"
)

// Module is what Inspect learns about one module image.
type Module struct {
	// Path is the file inspected, empty for InspectBytes.
	Path string `json:"path,omitempty"`

	// Name is .modinfo's name=, the name the kernel checks against
	// module_blacklist= and friends.
	Name string `json:"name"`
	// ThisModuleName is struct module.name in .gnu.linkonce.this_module, the
	// name the module actually registers under.
	ThisModuleName string `json:"this_module_name"`
	// NameMismatch is set when both names are known and differ. kbuild
	// writes the same name into both, with '-' already turned into '_', so
	// any difference, '-' against '_' included, is a forgery signal.
	NameMismatch bool `json:"name_mismatch"`

	Vermagic   string `json:"vermagic,omitempty"`
	Srcversion string `json:"srcversion,omitempty"`
	// BuildID is the hex GNU build ID of the module's link
	// (.note.gnu.build-id): it tells builds apart where srcversion, a
	// digest of the sources, does not. The kernel shows a loaded module's
	// in /sys/module/NAME/notes/.note.gnu.build-id.
	BuildID string   `json:"build_id,omitempty"`
	License string   `json:"license,omitempty"`
	Depends []string `json:"depends,omitempty"`
	Params  []Param  `json:"params,omitempty"`
	// Description and Authors are .modinfo's description= and author=
	// (which repeats).
	Description string   `json:"description,omitempty"`
	Authors     []string `json:"authors,omitempty"`
	// InTree is .modinfo's intree=Y, set by the kernel build for modules
	// built from its own tree; loading one without it taints the kernel (O).
	InTree bool `json:"in_tree"`

	Signature Signature `json:"signature"`

	Compression Compression `json:"compression,omitempty"`
	// FileSHA256 is the hex SHA-256 of the bytes as given (compressed or not).
	FileSHA256 string `json:"sha256"`
	// ELFSHA256 is the hex SHA-256 of the ELF image after decompression. It
	// equals FileSHA256 for an uncompressed module, and it is what the kernel
	// sees through init_module after kmod or busybox decompress.
	ELFSHA256 string `json:"elf_sha256"`
	FileSize  int64  `json:"size"`
	ELFSize   int64  `json:"elf_size"`
}

// Param is one parm= entry of .modinfo, joined with its parmtype=.
type Param struct {
	Name        string `json:"name"`
	Type        string `json:"type,omitempty"`
	Description string `json:"description,omitempty"`
}

// Signature describes the appended module signature, if any.
type Signature struct {
	// Present is set when the image ends with "~Module signature appended~\n".
	Present bool `json:"present"`
	// Signer, KeyID (hex) and HashAlgo come from the PKCS#7 blob when it can
	// be parsed; they are empty otherwise.
	Signer   string `json:"signer,omitempty"`
	KeyID    string `json:"key_id,omitempty"`
	HashAlgo string `json:"hash_algo,omitempty"`
	// Err says why a present signature could not be parsed.
	Err string `json:"error,omitempty"`
}

// NormalizeName folds a module name the way modprobe and kbuild do: '-'
// becomes '_'. It is for names people write (allowlist entries, modprobe
// arguments); the kernel registers and compares the names in an image as
// they are, and kbuild never leaves a '-' in them.
func NormalizeName(name string) string {
	b := []byte(name)
	for i, c := range b {
		if c == '-' {
			b[i] = '_'
		}
	}
	return string(b)
}

// BuildIDNote returns the build ID (hex) held in the contents of a
// .note.gnu.build-id section, as a module file or
// /sys/module/NAME/notes/.note.gnu.build-id has it: notes of a 4-byte
// name size, description size and type, then the name and the description,
// each padded to 4 bytes. It looks for the GNU note of type
// NT_GNU_BUILD_ID (3) and reports false when there is none.
func BuildIDNote(b []byte) (string, bool) {
	const ntGNUBuildID = 3
	for len(b) >= 12 {
		namesz := uint64(binary.LittleEndian.Uint32(b[0:]))
		descsz := uint64(binary.LittleEndian.Uint32(b[4:]))
		typ := binary.LittleEndian.Uint32(b[8:])
		name := (namesz + 3) &^ 3
		desc := (descsz + 3) &^ 3
		if name > uint64(len(b)-12) || desc > uint64(len(b)-12)-name {
			return "", false
		}
		if typ == ntGNUBuildID && namesz == 4 && string(b[12:16]) == "GNU\x00" && descsz > 0 {
			return hex.EncodeToString(b[12+name : 12+name+descsz]), true
		}
		b = b[12+name+desc:]
	}
	return "", false
}
