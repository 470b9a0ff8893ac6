#!/usr/bin/env bash
# package.sh ARCH... builds kmodguard's .deb and .rpm for each ARCH (amd64,
# arm64) into $DIST (default dist/), from deploy/package/nfpm.yaml: the
# CLI (static, CGO_ENABLED=0) and the Falco plugin (cgo, c-shared; arm64's
# with Debian's aarch64-linux-gnu-gcc cross compiler), both stamped with
# $LDFLAGS as `make build` stamps them. $FORMATS (default "deb rpm") picks
# the formats. The package's version is $PKG_VERSION, else internal/version's
# Release with the commit as build metadata, like an unstamped build's:
# 0.1.0+g0123456789ab (.dirty for a modified tree). nfpm is run through the
# Go module proxy at the version pinned here.
set -euo pipefail

NFPM=github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0

cd "$(dirname "$0")/.."
dist="${DIST:-dist}"
formats="${FORMATS:-deb rpm}"
ldflags="${LDFLAGS:-}"

version="${PKG_VERSION:-}"
if [ -z "$version" ]; then
	version="$(sed -n 's/^const Release = "\(.*\)"$/\1/p' internal/version/version.go)"
	if commit="$(git rev-parse HEAD 2>/dev/null)"; then
		version+="+g${commit:0:12}"
		[ -z "$(git status --porcelain 2>/dev/null)" ] || version+=".dirty"
	fi
fi

[ $# -gt 0 ] || set -- amd64 arm64
mkdir -p "$dist"
for arch in "$@"; do
	case "$arch" in
	amd64) cc="${CC_AMD64:-gcc}" ;;
	arm64) cc="${CC_ARM64:-aarch64-linux-gnu-gcc}" ;;
	*)
		echo "package.sh: unknown architecture $arch (amd64, arm64)" >&2
		exit 2
		;;
	esac
	if ! command -v "$cc" >/dev/null; then
		echo "package.sh: $cc is not installed (scripts/deps.sh package): it builds the $arch plugin" >&2
		exit 1
	fi
	stage="$dist/stage/$arch"
	rm -rf "$stage"
	mkdir -p "$stage"
	echo "package.sh: $arch: the CLI and the plugin, version $version" >&2
	CGO_ENABLED=0 GOOS=linux GOARCH="$arch" go build -ldflags "$ldflags" -o "$stage/kmodguard" ./cmd/kmodguard
	CGO_ENABLED=1 GOOS=linux GOARCH="$arch" CC="$cc" go build -buildmode=c-shared -ldflags "$ldflags" \
		-o "$stage/libkmodguard.so" ./cmd/plugin
	rm -f "$stage/libkmodguard.h"
	for format in $formats; do
		ARCH="$arch" VERSION="$version" STAGE="$stage" \
			go run "$NFPM" package --config deploy/package/nfpm.yaml --packager "$format" --target "$dist/"
	done
done
rm -rf "$dist/stage"
