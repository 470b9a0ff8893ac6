package lsm

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type kg_event -type kg_policy_key -type kg_policy_val -type kg_config -type kg_protect_key guard guard.bpf.c -- -I../bpf/include @../bpf/include/cflags
