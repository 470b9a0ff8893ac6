#!/usr/bin/env bash
# demo.sh: what `make demo` runs. It boots Debian's 6.1 kernel in QEMU with
# the kmodguard CLI and real modules, and shows, step by step: a module load
# seen by the sensor, the allowlist built from the loaded modules, an allowed
# module loading, an unlisted one detected, and the guard (BPF LSM) blocking
# it. The scenario is internal/demo/guest.sh; the harness is internal/vmtest.
# Needs root (for apt-get), Go, and what `scripts/deps.sh vm` installs.
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./internal/demo
