//go:build linux && amd64

// Package ia32 issues 32-bit (ia32 emulation) syscalls from a 64-bit
// process, through int 0x80, so that tests can check how the sensor sees
// 32-bit callers. Arguments are truncated to 32 bits: pointers must come
// from memory mapped below 4 GiB (MAP_32BIT).
//
// On some machines int 0x80 raises a general protection fault (IA32
// emulation compiled in but unusable, as under some hypervisors), and the
// fault kills the whole process: call Syscall only where a child process
// has shown that it works.
package ia32

// Syscall issues the ia32 syscall nr with three arguments and returns the
// kernel's result: a value, or -errno.
func Syscall(nr, a0, a1, a2 uintptr) int64 { return int64(int80(nr, a0, a1, a2)) }

// Fault raises a software interrupt through a gate that user space may not
// use (vector 0x81), which is a general protection fault, as int 0x80 is
// where IA32 emulation is unusable: the process dies of SIGSEGV. It lets
// tests check that a probe's child process really takes the fault for its
// parent.
func Fault() { int81() }

func int80(nr, a0, a1, a2 uintptr) uintptr

func int81()
