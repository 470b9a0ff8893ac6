#!/usr/bin/env bash
# demo.sh: the scripted scenario that `make demo` runs in a Debian 6.1 guest.
set -euo pipefail
cat <<'MSG'
The kmodguard demo is being built. It will boot Debian's 6.1 kernel in QEMU and:
  1. load a module and show the event the sensor saw;
  2. build an allowlist from the guest's modules;
  3. load an allowed module;
  4. load a module that is not on the allowlist, and show it detected;
  5. with the guard on, show the same module blocked.
MSG
