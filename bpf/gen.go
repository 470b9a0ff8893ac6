package bpf

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type kg_event -type kg_chunk -type kg_exit -type kg_counter -type kg_flag -type kg_record -type kg_syscall sensor sensor.bpf.c -- -I./include @include/cflags
