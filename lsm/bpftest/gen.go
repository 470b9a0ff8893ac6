package bpftest

//go:generate go tool bpf2go -tags linux -target bpfel -type kg_test_result -type kg_elf_status -type kg_event -type kg_glob_str bpftest bpftest.bpf.c -- -I../../bpf/include @../../bpf/include/cflags
