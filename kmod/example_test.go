package kmod_test

import (
	"fmt"
	"log"

	"github.com/kmodguard/kmodguard/kmod"
)

// Inspect a module file, plain or compressed, and refuse a forged one.
func ExampleInspect() {
	m, err := kmod.Inspect("/lib/modules/6.1.0-56-amd64/kernel/drivers/net/dummy.ko")
	if err != nil {
		log.Fatal(err)
	}
	if m.NameMismatch {
		log.Fatalf("%s: .modinfo says %q but the module registers as %q", m.Path, m.Name, m.ThisModuleName)
	}
	fmt.Println(m.Name, m.ELFSHA256, m.Signature.Signer)
}

// ParseNames is the cheap check on an image already in memory, such as the
// buffer init_module was given.
func ExampleParseNames() {
	var img []byte // the raw ELF image
	modinfoName, thisModuleName, err := kmod.ParseNames(img)
	if err != nil {
		fmt.Println("refused:", err)
		return
	}
	fmt.Println(modinfoName, thisModuleName)
	// Output: refused: not an ELF file
}
