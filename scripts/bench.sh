#!/usr/bin/env bash
# bench.sh runs the project's benchmarks. Each benchmark reports ratios taken
# side by side in one run, because these machines are noisy.
set -euo pipefail

# ---- allowlist (issue 2): `kmodguard allowlist init` vs sha256sum ----
# Over the whole Debian 6.1 modules tree (~4000 .ko), warm page cache, five
# alternating rounds. Ours parses every ELF as well as hashing it; target:
# ours/sha256sum <= 1.0.
echo "== allowlist init over the Debian 6.1 tree vs find | xargs sha256sum =="
go test -run '^$' -bench '^BenchmarkInitVsSha256sum$' -benchtime 5x ./cmd/kmodguard
echo "== allowlist Match (O(1): same cost for 4 and 4000 entries) =="
go test -run '^$' -bench '^BenchmarkMatch$' -benchmem ./allowlist

# ---- guard building blocks (issue 6): BPF SHA-256 vs Go crypto/sha256 ----
# kg_sha256 (bpf/include/sha256.h, run with BPF_PROG_TEST_RUN) and Go hash the
# same buffer in alternation; bpf/go is the throughput ratio. Go's code path
# is picked by GODEBUG at process start, so one run per path: SHA-NI (the
# default here), AVX2, and the portable Go code. Target: bpf/go >= 0.25
# against the portable Go code. Needs root.
for godebug in "" "cpu.sha=off" "cpu.sha=off,cpu.avx2=off"; do
	echo "== BPF SHA-256 vs Go crypto/sha256 (GODEBUG=${godebug:-default}) =="
	GODEBUG=$godebug go test -run '^$' -bench '^BenchmarkBPFSHA256$' -benchtime 2s ./lsm/bpftest
done

# ---- Falco plugin (issue 5): binary events vs the JSON approach ----
# The same 10,000 events replayed from a file through NextBatch, with ten
# common fields extracted per event: the plugin's binary codec (decoded once
# per event) against JSON lines decoded with encoding/json per extraction,
# and decoded once per event, in alternation in one run. json-*/binary is
# the ratio of ns per event. Then 100,000 events replayed, with the peak heap
# sampled after every 16 batches, for the binary and JSON recordings.
echo "== Falco plugin: NextBatch + 10 fields, binary vs JSON =="
go test -run '^$' -bench '^BenchmarkPipeline$' -benchtime 5x ./plugin
echo "== Falco plugin: peak heap replaying 100,000 events, binary vs JSON =="
go test -run '^$' -bench '^BenchmarkReplayMemory$' -benchtime 2x ./plugin

echo "== everything else =="
go test -run '^$' -bench . -skip '^(BenchmarkInitVsSha256sum|BenchmarkMatch|BenchmarkBPFSHA256|BenchmarkPipeline|BenchmarkReplayMemory)$' -benchmem ./...
