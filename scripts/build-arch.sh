#!/usr/bin/env bash
# build-arch.sh ARCH DIR builds, for linux/ARCH (amd64, arm64), the two
# binaries kmodguard ships into DIR: the CLI (static, CGO_ENABLED=0) and the
# Falco plugin libkmodguard.so (cgo, c-shared; arm64's with Debian's
# aarch64-linux-gnu-gcc cross compiler, which scripts/deps.sh package
# installs). $LDFLAGS stamps both as `make build` does. make package and
# make release share it, so a package and a release carry the same bits.
set -euo pipefail

if [ $# -ne 2 ]; then
	echo "usage: build-arch.sh ARCH DIR" >&2
	exit 2
fi
arch="$1" dir="$2"
case "$arch" in
amd64) cc="${CC_AMD64:-gcc}" ;;
arm64) cc="${CC_ARM64:-aarch64-linux-gnu-gcc}" ;;
*)
	echo "build-arch.sh: unknown architecture $arch (amd64, arm64)" >&2
	exit 2
	;;
esac
if ! command -v "$cc" >/dev/null; then
	echo "build-arch.sh: $cc is not installed (scripts/deps.sh package): it builds the $arch plugin" >&2
	exit 1
fi
cd "$(dirname "$0")/.."
mkdir -p "$dir"
ldflags="${LDFLAGS:-}"
CGO_ENABLED=0 GOOS=linux GOARCH="$arch" go build -ldflags "$ldflags" -o "$dir/kmodguard" ./cmd/kmodguard
CGO_ENABLED=1 GOOS=linux GOARCH="$arch" CC="$cc" go build -buildmode=c-shared -ldflags "$ldflags" \
	-o "$dir/libkmodguard.so" ./cmd/plugin
rm -f "$dir/libkmodguard.h"
