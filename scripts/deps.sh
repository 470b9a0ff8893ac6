#!/usr/bin/env bash
# deps.sh GROUP... installs what a make target needs, and nothing when it is
# already there. Groups:
#   build    Go modules (through the Go module proxy)
#   bpf      clang, llvm, libbpf-dev, bpftool: to regenerate the BPF objects;
#            clang-format-14: make lint checks the BPF C against .clang-format
#   vm       qemu-system-x86, busybox-static, cpio, xz-utils, zstd, kmod: the QEMU
#            harness; mmdebstrap, e2fsprogs and systemd: its systemd guest (a
#            Debian 12 root file system on an ext4 image, units enabled in it
#            with systemctl --root); debian-archive-keyring: the keys that check
#            sid's and bullseye's package lists, fetched through the harness's
#            private apt configurations (internal/debkernel); make and gcc-12:
#            scan's guest test builds its self-hiding module against the
#            bookworm kernels' headers packages (built with gcc-12)
#   vm-arm64 qemu-system-arm, and arm64 added to dpkg's architectures so that
#            the harness can apt-get download arm64 kernels and busybox-static
#   proto    protobuf-compiler: to regenerate companion/proto (make proto)
#   package  gcc and gcc-aarch64-linux-gnu (with libc6-dev-arm64-cross): the
#            plugin's cgo builds for amd64 and arm64 (make package); rpm: to
#            list the built .rpm in deploy/package's test
# Debian packages are installed with apt-get as root; without root the script
# says what is missing and fails.
set -euo pipefail

declare -A pkgs=(
	[bpf]="clang llvm libbpf-dev bpftool clang-format-14"
	[vm]="qemu-system-x86 busybox-static cpio xz-utils zstd kmod mmdebstrap e2fsprogs systemd debian-archive-keyring make gcc-12"
	[vm-arm64]="qemu-system-arm"
	[proto]="protobuf-compiler"
	[package]="gcc gcc-aarch64-linux-gnu libc6-dev-arm64-cross rpm"
)

missing=()
foreign=()
for group in "$@"; do
	case "$group" in
	build)
		go mod download
		;;
	vm-arm64)
		dpkg --print-foreign-architectures | grep -qx arm64 || [ "$(dpkg --print-architecture)" = arm64 ] || foreign+=(arm64)
		;;&
	bpf | vm | vm-arm64 | proto | package)
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

[ ${#missing[@]} -eq 0 ] && [ ${#foreign[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	[ ${#missing[@]} -eq 0 ] || echo "deps.sh: missing Debian packages: ${missing[*]}" >&2
	[ ${#foreign[@]} -eq 0 ] || echo "deps.sh: dpkg lacks the foreign architecture: ${foreign[*]}" >&2
	echo "deps.sh: run as root, or:${foreign[*]:+ sudo dpkg --add-architecture ${foreign[*]} &&} sudo apt-get update && sudo apt-get install ${missing[*]}" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
for a in "${foreign[@]}"; do
	echo "deps.sh: adding the $a architecture to dpkg" >&2
	dpkg --add-architecture "$a"
done
# The package lists may be absent on a fresh machine, too old to find the
# current kernel packages, or lack a foreign architecture just added:
# refresh them once per run of this script.
apt-get update -qq
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps.sh: installing ${missing[*]}" >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
