// Package falcovm runs the Falco plugin's guest tests (plugin/vm_guest_test.go)
// on real Debian kernels under QEMU: Falco's view of the BPF LSM guard.
//
// It exists because the plugin's test binary needs cgo (the Falco plugin
// SDK), while internal/vmtest builds a package's own test binary without
// cgo. TestVM here builds the plugin's test binary with cgo, statically
// linked, ships it to the guest with the kmodguard binary, and its guest
// half runs it there. It has no code of its own.
package falcovm
