//go:build linux && amd64

// Package ia32 issues 32-bit (ia32 emulation) syscalls from a 64-bit
// process, through int 0x80, so that tests can check how the sensor sees
// 32-bit callers. Arguments are truncated to 32 bits: pointers must come
// from memory mapped below 4 GiB (MAP_32BIT).
package ia32

// Syscall issues the ia32 syscall nr with three arguments and returns the
// kernel's result: a value, or -errno.
func Syscall(nr, a0, a1, a2 uintptr) int64 { return int64(int80(nr, a0, a1, a2)) }

func int80(nr, a0, a1, a2 uintptr) uintptr
