#!/usr/bin/env bash
# release.sh lays out a kmodguard release in $DIST/release (default
# dist/release): the CLI for amd64 and arm64, the Falco plugin and the rules
# as falcoctl artifacts (tarballs, and OCI layouts tagged with the version
# and, for a release, its floating tags), the enforcer's container image as
# an OCI layout, push.sh, release.json and SHA256SUMS. No Docker: the
# layouts are written by internal/release/mkrelease.
#
# The version is $RELEASE_VERSION, else the release tag at HEAD (vX.Y.Z),
# else internal/version's Release as a pre-release of this commit
# (0.1.0-dev.g0123456789ab), which gets no floating tag. Every timestamp is
# the commit's time ($SOURCE_DATE_EPOCH), so one commit gives one set of
# digests.
set -euo pipefail

cd "$(dirname "$0")/.."
dist="${DIST:-dist}"
commit="$(git rev-parse HEAD)"
version="${RELEASE_VERSION:-}"
if [ -z "$version" ]; then
	version="$(git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null || true)"
	version="${version#v}"
fi
if [ -z "$version" ]; then
	version="$(sed -n 's/^const Release = "\(.*\)"$/\1/p' internal/version/version.go)-dev.g${commit:0:12}"
fi
modified=false
if [ -n "$(git status --porcelain)" ]; then
	modified=true
	echo "release.sh: the work tree has uncommitted changes: this release is for checking, not for publishing" >&2
fi
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"

# The version stamped into the binaries is the release's, so the plugin
# tells Falco the version its artifact is published under.
pkg=github.com/kmodguard/kmodguard/internal/version
ldflags="-s -w -X $pkg.version=$version -X $pkg.commit=$commit -X $pkg.modified=$modified"
rm -rf "$dist/bin"
for arch in amd64 arm64; do
	echo "release.sh: linux/$arch: the CLI and the plugin, version $version" >&2
	LDFLAGS="$ldflags" scripts/build-arch.sh "$arch" "$dist/bin/linux-$arch"
done
CGO_ENABLED=1 go run ./internal/release/mkrelease -version "$version" -bin "$dist/bin" \
	-rules rules/kmodguard_rules.yaml -out "$dist/release"
