#!/usr/bin/env bash
# protoc.sh regenerates companion/proto/*.pb.go from companion.proto with
# pinned generators, so that the output is the same on every machine:
# protoc from Debian 12 (protobuf-compiler 3.21.12), protoc-gen-go at the
# google.golang.org/protobuf version of go.mod, protoc-gen-go-grpc v1.3.0
# (the newest whose output builds against the google.golang.org/grpc of
# go.mod).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v protoc >/dev/null; then
	echo "protoc.sh: protoc is missing: apt-get install protobuf-compiler" >&2
	exit 1
fi
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
pbver="$(go list -m -f '{{.Version}}' google.golang.org/protobuf)"
GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$pbver"
GOBIN="$bin" go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.3.0

PATH="$bin:$PATH" protoc -I companion/proto \
	--go_out=companion/proto --go_opt=paths=source_relative \
	--go-grpc_out=companion/proto --go-grpc_opt=paths=source_relative \
	companion/proto/companion.proto
