#!/usr/bin/env bash
# package.sh ARCH... builds kmodguard's .deb and .rpm for each ARCH (amd64,
# arm64) into $DIST (default dist/), from deploy/package/nfpm.yaml: the
# CLI and the Falco plugin as scripts/build-arch.sh builds them, stamped
# with $LDFLAGS as `make build` stamps them. $FORMATS (default "deb rpm") picks
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
	stage="$dist/stage/$arch"
	rm -rf "$stage"
	echo "package.sh: $arch: the CLI and the plugin, version $version" >&2
	LDFLAGS="$ldflags" scripts/build-arch.sh "$arch" "$stage"
	for format in $formats; do
		ARCH="$arch" VERSION="$version" STAGE="$stage" \
			go run "$NFPM" package --config deploy/package/nfpm.yaml --packager "$format" --target "$dist/"
	done
done
rm -rf "$dist/stage"
