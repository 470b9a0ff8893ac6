#!/usr/bin/env bash
# bench.sh runs the project's benchmarks. Each benchmark reports ratios taken
# side by side in one run, because these machines are noisy.
set -euo pipefail
go test -run '^$' -bench . -benchmem ./...
