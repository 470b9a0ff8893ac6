package bpftest

//go:generate go tool bpf2go -tags linux -target bpfel -type kg_test_result -type kg_elf_status -type kg_event bpftest bpftest.bpf.c -- -mcpu=v3 -Wall -Werror -I../../bpf/include
