#!/usr/bin/env bash
# deps.sh GROUP... installs what a make target needs, and nothing when it is
# already there. Groups:
#   build    Go modules (through the Go module proxy)
#   bpf      clang, llvm, libbpf-dev, bpftool: to regenerate the BPF objects
#   vm       qemu-system-x86, busybox-static, cpio, xz-utils, zstd: the QEMU harness
#   proto    protobuf-compiler: to regenerate companion/proto (make proto)
# Debian packages are installed with apt-get as root; without root the script
# says what is missing and fails.
set -euo pipefail

declare -A pkgs=(
	[bpf]="clang llvm libbpf-dev bpftool"
	[vm]="qemu-system-x86 busybox-static cpio xz-utils zstd kmod"
	[proto]="protobuf-compiler"
)

missing=()
for group in "$@"; do
	case "$group" in
	build)
		go mod download
		;;
	bpf | vm | proto)
		for p in ${pkgs[$group]}; do
			dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
		done
		;;
	*)
		echo "deps.sh: unknown group $group" >&2
		exit 2
		;;
	esac
done

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: missing Debian packages: ${missing[*]}" >&2
	echo "deps.sh: run as root, or: sudo apt-get install ${missing[*]}" >&2
	exit 1
fi
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# The package lists may be absent on a fresh machine, or too old to find the
# current kernel packages: refresh them once per run of this script.
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
