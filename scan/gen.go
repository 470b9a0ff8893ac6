package scan

//go:generate go tool bpf2go -tags linux -target amd64,arm64 -type kg_mod_seen modtree modtree.bpf.c -- -I../bpf/include @../bpf/include/cflags
