#!/usr/bin/env bash
# bench.sh runs the project's benchmarks. Each benchmark reports ratios taken
# side by side in one run, because these machines are noisy.
#
# Every section runs even when one before it failed; the failed ones are
# named at the end, and the script then exits 1.
set -uo pipefail

failed=()
# Every section's output is kept in $log too; at the end, internal/benchtable
# turns it into the table of figures beside their goals (the README's).
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# step NAME CMD...: runs one section's command (a pipeline's status is its
# first failing command's, through pipefail) and records a failure.
step() {
	local name=$1
	shift
	if ! "$@" | tee -a "$log"; then
		echo "   FAILED: $name"
		failed+=("$name")
	fi
}
# only PATTERN: keeps the benchmark result lines and go test's verdicts;
# when the output shows a failure (a FAIL, a panic, a fatal error), also its
# last 40 lines, so that the reason is not filtered away with the rest.
only() {
	local all rc
	all=$(mktemp)
	tee "$all" | grep -E "${1:-^(Benchmark|ok|FAIL|---)}"
	rc=$?
	if grep -qE '^\s*(FAIL|--- FAIL|panic:|fatal error)' "$all"; then
		echo "   the failing output, last 40 lines:"
		tail -n 40 "$all" | sed 's/^/   | /'
	fi
	rm -f "$all"
	return "$rc"
}

# ---- allowlist (issue 2): `kmodguard allowlist init` vs sha256sum ----
# Over the whole Debian 6.1 modules tree (~4000 .ko), warm page cache, five
# alternating rounds. Ours parses every ELF as well as hashing it; target:
# ours/sha256sum <= 1.0.
echo "== allowlist init over the Debian 6.1 tree vs find | xargs sha256sum =="
step "allowlist init" go test -run '^$' -bench '^BenchmarkInitVsSha256sum$' -benchtime 5x ./cmd/kmodguard
echo "== kmod.Inspect over the Debian 6.1 (.ko), 6.12 and 7.2 (.ko.xz) trees and 6.1 recompressed with zstd, vs sha256sum, xz -dc, zstd -dc =="
echo "   (rounds interleaved; CPU time, one goroutine vs one process and its digest, then wall time on every core vs as many; target <= 1.0 each)"
inspect_tree() { go test -run '^$' -bench '^(BenchmarkInspectTree|BenchmarkDecompressTree)$' -benchtime 3x ./kmod | only; }
step "kmod.Inspect trees" inspect_tree
echo "== allowlist Match (O(1): same cost for 4 and 4000 entries) =="
step "allowlist Match" go test -run '^$' -bench '^BenchmarkMatch$' -benchmem ./allowlist

# ---- guard building blocks (issue 6): BPF SHA-256 vs Go crypto/sha256 ----
# kg_sha256 (bpf/include/sha256.h, run with BPF_PROG_TEST_RUN) and Go hash the
# same buffer in alternation; bpf/go is the throughput ratio. Go's code path
# is picked by GODEBUG at process start, so one run per path: SHA-NI (the
# default here), AVX2, and the portable Go code. Target: bpf/go >= 0.25
# against the portable Go code. Needs root.
for godebug in "" "cpu.sha=off" "cpu.sha=off,cpu.avx2=off"; do
	echo "== BPF SHA-256 vs Go crypto/sha256 (GODEBUG=${godebug:-default}) =="
	step "BPF SHA-256 (GODEBUG=${godebug:-default})" env GODEBUG="$godebug" go test -run '^$' -bench '^BenchmarkBPFSHA256$' -benchtime 2s ./lsm/bpftest
done

# ---- Falco plugin (issue 5): binary events vs the JSON approach ----
# The same 2,000 events replayed from a file through NextBatch, with ten
# common fields extracted per event: the plugin's binary codec (decoded once
# per event) against JSON lines decoded with encoding/json per extraction,
# and decoded once per event, in 50 alternating rounds. json-*/binary is
# the ratio of ns per event. Then 100,000 events replayed, with the peak heap
# sampled after every 16 batches, for the binary and JSON recordings.
echo "== Falco plugin: NextBatch + 10 fields, binary vs JSON =="
step "plugin pipeline" go test -run '^$' -bench '^BenchmarkPipeline$' -benchtime 50x ./plugin
echo "== Falco plugin: peak heap replaying 100,000 events, binary vs JSON =="
step "plugin replay memory" go test -run '^$' -bench '^BenchmarkReplayMemory$' -benchtime 2x ./plugin

# ---- sensor (issue 4): what the hooks cost every other syscall, and event
# and image throughput. Needs root; the benchmarks skip without it.
echo "== sensor: getppid() per call under no program / empty sys_enter / empty enter+exit / the sensor =="
echo "   (rounds interleaved; target sensor/empty <= 1.05; the sensor needs both hooks, so also vs the pair)"
getppid() {
	go test -run '^$' -bench '^BenchmarkGetppidInterleaved$' -benchtime 20x ./bpf | awk '
	/^BenchmarkGetppidInterleaved/ {
		print
		for (i = 3; i < NF; i++) v[$(i+1)] = $i
		printf "   ns/call: none %s, empty %s, empty pair %s, sensor %s\n", v["none-ns/call"], v["empty-ns/call"], v["empty_pair-ns/call"], v["sensor-ns/call"]
		printf "   ratio sensor/empty      = %s\n", v["sensor/empty"]
		printf "   ratio sensor/empty_pair = %s\n", v["sensor/empty_pair"]
		printf "   ratio sensor/none       = %s\n", v["sensor/none"]
	}
	/^(ok|FAIL|---)/ { print "   " $0 }'
}
step "sensor getppid" getppid
echo "== sensor: init_module events (4 KiB images): flat out from one thread, and the highest paced rate with no drop =="
events() { go test -run '^$' -bench '^BenchmarkInitModuleEvents$' -benchtime 100000x ./bpf | only; }
paced() { go test -run '^$' -bench '^BenchmarkInitModulePaced$' -benchtime 1x ./bpf | only; }
step "sensor init_module events" events
step "sensor paced rate" paced
echo "== sensor: a junk init_module flood from every CPU, one real load every 10 ms (target: loads-delivered/made = 1) =="
flood() { go test -run '^$' -bench '^BenchmarkJunkFlood$' -benchtime 3x ./bpf | only; }
step "sensor junk flood" flood
echo "== sensor: 1 MiB image capture, syscall to enriched event =="
capture() { go test -run '^$' -bench '^BenchmarkImageCapture$' -benchtime 3s ./bpf | only; }
step "sensor image capture" capture
echo "== sensor: getppid() in QEMU on Debian 6.1 and 6.12, where fentry on the syscall functions loads =="
vm_sensor() {
	KMODGUARD_VMTEST=1 KMODGUARD_VMBENCH=1 go test -count=1 -run '^TestVMBench$' -v -timeout 30m ./bpf |
		only 'bench_test.go:.*Benchmark|^(ok|FAIL|---)' | sed -E 's/^ +bench_test.go:[0-9]+: /   /'
}
step "sensor in QEMU" vm_sensor

# ---- guard (issue 6): module load latency with the BPF LSM guard vs without,
# in QEMU on Debian 6.1, 6.12 and 7.2 (one boot each). 100 init_module +
# delete_module cycles per side in alternating blocks of 10, each block after
# the enforcer's start-up work and one untimed cycle; medians, plus the guard
# hook's own run time from kernel.bpf_stats_enabled. Target: ratio <= 1.10
# for modules under 100 KiB (dummy 17-28 KiB, veth 70-97 KiB).
echo "== guard: module load latency with/without the guard (QEMU) =="
vm_guard() {
	KMODGUARD_VMTEST=1 KMODGUARD_VMBENCH=1 go test -count=1 -run '^TestVMBench$' -v -timeout 40m ./enforcer |
		only 'bench_test.go:.*ratio|^(ok|FAIL|---)' | sed -E 's/^ +bench_test.go:[0-9]+: /   /'
}
step "guard in QEMU" vm_guard

echo "== everything else =="
step "everything else" go test -run '^$' -bench . -skip '^(BenchmarkInspectTree|BenchmarkInitVsSha256sum|BenchmarkMatch|BenchmarkBPFSHA256|BenchmarkPipeline|BenchmarkReplayMemory|BenchmarkGetppid.*|BenchmarkInitModule.*|BenchmarkImageCapture|BenchmarkJunkFlood|BenchmarkDecompressTree)$' -benchmem ./...

echo
echo "== the figures beside their goals (the README's performance table) =="
go run ./internal/benchtable < "$log"
echo

if [ ${#failed[@]} -gt 0 ]; then
	printf 'bench: %d section(s) failed:\n' "${#failed[@]}"
	printf '  %s\n' "${failed[@]}"
	exit 1
fi
echo "bench: every section ran"
