package vmtest

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Crafted describes a fixture module made on the host by patching a real
// one, for tests of forged or unsigned modules. List it in Spec.Crafted; the
// guest finds it with Fixture(t, Name) like any other fixture.
//
// For example, the name-mismatch forgery of DESIGN.md (.modinfo says dumbo,
// the module registers as dummy, signature gone):
//
//	vmtest.Crafted{Name: "dumbo", From: "dummy", ModinfoName: "dumbo", StripSignature: true}
type Crafted struct {
	// Name is the fixture's name: the guest file is <Name>.ko.
	Name string
	// From is the real module it is made from; it is added to Spec.Modules.
	From string
	// ModinfoName, when set, replaces the value of .modinfo's name=. It may
	// not be longer than the original (the section is patched in place).
	ModinfoName string
	// ThisModuleName, when set, replaces struct module.name in
	// .gnu.linkonce.this_module: the name the module registers under.
	ThisModuleName string
	// StripSignature removes the appended module signature.
	StripSignature bool
}

// signatureMagic ends a signed module image.
const signatureMagic = "~Module signature appended~\n"

// moduleSignatureSize is sizeof(struct module_signature): algo, hash,
// id_type, signer_len, key_id_len, pad[3], then sig_len as a big-endian u32.
const moduleSignatureSize = 12

// thisModuleNameOffset is offsetof(struct module, name) on 64-bit kernels:
// after enum module_state (4 bytes, padded to 8) and struct list_head (16).
// It has held since 2.6 and is what the kernel's own modpost writes.
const thisModuleNameOffset = 24

// moduleNameLen is MODULE_NAME_LEN on 64-bit: 64 - sizeof(unsigned long).
const moduleNameLen = 56

// StripSignature returns the image without its appended signature, and
// whether there was one. A truncated or inconsistent trailer is an error.
func StripSignature(img []byte) ([]byte, bool, error) {
	if !bytes.HasSuffix(img, []byte(signatureMagic)) {
		return img, false, nil
	}
	end := len(img) - len(signatureMagic)
	if end < moduleSignatureSize {
		return nil, false, errors.New("signature trailer is truncated")
	}
	sigLen := int64(binary.BigEndian.Uint32(img[end-4 : end]))
	start := int64(end-moduleSignatureSize) - sigLen
	if start < 0 {
		return nil, false, fmt.Errorf("signature length %d exceeds the image", sigLen)
	}
	return img[:start:start], true, nil
}

// Craft applies c to the plain ELF module image img and returns the new
// image; img is not modified.
func Craft(img []byte, c Crafted) ([]byte, error) {
	out := bytes.Clone(img)
	if c.StripSignature {
		s, _, err := StripSignature(out)
		if err != nil {
			return nil, fmt.Errorf("craft %s: %w", c.Name, err)
		}
		out = s
	}
	if c.ModinfoName == "" && c.ThisModuleName == "" {
		return out, nil
	}
	f, err := elf.NewFile(bytes.NewReader(out))
	if err != nil {
		return nil, fmt.Errorf("craft %s: not an ELF module: %w", c.Name, err)
	}
	defer f.Close()
	if c.ModinfoName != "" {
		if err := patchModinfoName(f, out, c.ModinfoName); err != nil {
			return nil, fmt.Errorf("craft %s: %w", c.Name, err)
		}
	}
	if c.ThisModuleName != "" {
		if err := patchThisModuleName(f, out, c.ThisModuleName); err != nil {
			return nil, fmt.Errorf("craft %s: %w", c.Name, err)
		}
	}
	return out, nil
}

// sectionBytes returns the file range of a section, checked against img.
func sectionBytes(f *elf.File, img []byte, name string) ([]byte, error) {
	s := f.Section(name)
	if s == nil {
		return nil, fmt.Errorf("no %s section", name)
	}
	if s.Type == elf.SHT_NOBITS {
		return nil, fmt.Errorf("%s has no file contents", name)
	}
	if s.Offset > uint64(len(img)) || s.Size > uint64(len(img))-s.Offset {
		return nil, fmt.Errorf("%s lies outside the file", name)
	}
	return img[s.Offset : s.Offset+s.Size], nil
}

func patchModinfoName(f *elf.File, img []byte, name string) error {
	mi, err := sectionBytes(f, img, ".modinfo")
	if err != nil {
		return err
	}
	if bytes.IndexByte([]byte(name), 0) >= 0 {
		return errors.New("name contains NUL")
	}
	for off := 0; off < len(mi); {
		end := bytes.IndexByte(mi[off:], 0)
		if end < 0 {
			end = len(mi) - off
		}
		field := mi[off : off+end]
		if v, ok := bytes.CutPrefix(field, []byte("name=")); ok {
			if len(name) > len(v) {
				return fmt.Errorf(".modinfo name=%s: new name %q is longer (patching is in place)", v, name)
			}
			// Shorter names are padded with NULs, which the kernel's
			// .modinfo walk skips.
			copy(v, name)
			clear(v[len(name):])
			return nil
		}
		off += end + 1
	}
	return errors.New(".modinfo has no name= field")
}

func patchThisModuleName(f *elf.File, img []byte, name string) error {
	if f.Class != elf.ELFCLASS64 {
		return errors.New("struct module layout is known for 64-bit modules only")
	}
	tm, err := sectionBytes(f, img, ".gnu.linkonce.this_module")
	if err != nil {
		return err
	}
	if len(tm) < thisModuleNameOffset+moduleNameLen {
		return errors.New(".gnu.linkonce.this_module is too small for struct module")
	}
	if len(name) >= moduleNameLen || bytes.IndexByte([]byte(name), 0) >= 0 {
		return fmt.Errorf("this_module name %q must be under %d bytes, without NUL", name, moduleNameLen)
	}
	field := tm[thisModuleNameOffset : thisModuleNameOffset+moduleNameLen]
	clear(field)
	copy(field, name)
	return nil
}

// writeCrafted makes each crafted fixture from the plain images already
// staged in dir.
func writeCrafted(dir string, cs []Crafted) error {
	for _, c := range cs {
		if c.Name == "" || c.From == "" || filepath.Base(c.Name) != c.Name {
			return fmt.Errorf("crafted fixture needs a plain Name and a From: %+v", c)
		}
		img, err := readLimited(filepath.Join(dir, c.From+".ko"))
		if err != nil {
			return fmt.Errorf("crafted %s: %w", c.Name, err)
		}
		out, err := Craft(img, c)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, c.Name+".ko"), out, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func readLimited(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxModuleImage+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxModuleImage {
		return nil, fmt.Errorf("%s exceeds %d bytes", p, maxModuleImage)
	}
	return b, nil
}
