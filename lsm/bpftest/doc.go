// Package bpftest runs kmodguard's shared BPF building blocks, the SHA-256
// in bpf/include/sha256.h and the module ELF name parser in
// bpf/include/elf.h, on the host through BPF_PROG_TEST_RUN.
//
// The guard calls these helpers from BPF LSM hooks, which refuse to load on
// the development machines. bpftest.bpf.c wraps them in raw_tp programs,
// which BPF_PROG_TEST_RUN accepts, and reads its input from a large array map
// through bpf_probe_read_kernel, exactly as the guard reads the kernel's copy
// of a module image. The tests compare the results with crypto/sha256 and
// with kmod.ParseNames; the benchmarks compare throughput with Go.
//
// Everything here needs root (CAP_BPF and CAP_PERFMON); without it the tests
// skip and say so.
package bpftest
