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

echo "== everything else =="
go test -run '^$' -bench . -skip '^(BenchmarkInitVsSha256sum|BenchmarkMatch)$' -benchmem ./...
