# kmodguard. Run `make help` for the targets.

GO        ?= go
GOFLAGS   ?=
PLUGIN_SO := libkmodguard.so
BIN       := bin
FUZZTIME  ?= 10s
# The build's version, stamped into internal/version by the linker (see
# `kmodguard version`): VERSION is empty unless HEAD is at a release tag
# vX.Y.Z (the source tree's version and the commit then say which build),
# COMMIT the commit, MODIFIED whether tracked or untracked files differ from it.
VERSION   ?= $(shell git describe --tags --exact-match --match 'v[0-9]*' 2>/dev/null)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
MODIFIED  ?= $(shell test -z "$$(git status --porcelain 2>/dev/null)" && echo false || echo true)
VERSION_PKG := github.com/kmodguard/kmodguard/internal/version
LDFLAGS   := -X $(VERSION_PKG).version=$(VERSION) -X $(VERSION_PKG).commit=$(COMMIT) -X $(VERSION_PKG).modified=$(MODIFIED)
# The packages that boot kernels: those with a host-side TestVM.
VM_PKGS    = $(shell git grep -l '^func TestVM' -- '*_test.go' | xargs -n1 dirname | sort -u | sed 's|^|./|')

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: deps
deps: ## Install what building and testing need (Go modules, clang, QEMU, busybox, cross gcc, rpm)
	@scripts/deps.sh build bpf vm vm-arm64 proto package

.PHONY: build
build: ## Build the kmodguard CLI into bin/
	@scripts/deps.sh build
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/kmodguard ./cmd/kmodguard

.PHONY: generate
generate: ## Regenerate the BPF objects and Go bindings (bpf2go; needs clang)
	@scripts/deps.sh build bpf
	$(GO) generate ./...

.PHONY: proto
proto: ## Regenerate companion/proto/*.pb.go (protoc from Debian, pinned generators)
	@scripts/deps.sh build proto
	scripts/protoc.sh

.PHONY: check-generate
check-generate: generate proto ## Fail when the committed generated files differ from their sources
	git diff --exit-code -- '*_bpfel.go' '*_bpfel.o' '*.pb.go'

.PHONY: plugin
plugin: ## Build the Falco plugin libkmodguard.so
	@scripts/deps.sh build
	CGO_ENABLED=1 $(GO) build -buildmode=c-shared -ldflags '$(LDFLAGS)' -o $(PLUGIN_SO) ./cmd/plugin

.PHONY: package
package: ## Build the .deb (amd64, arm64) and .rpm (x86_64, aarch64) packages into dist/ (nfpm; deploy/package/)
	@scripts/deps.sh build package
	LDFLAGS='-s -w $(LDFLAGS)' scripts/package.sh amd64 arm64

.PHONY: release
release: ## Lay out a release in dist/release: CLI and plugin for amd64 and arm64, falcoctl artifacts, the image as an OCI layout, push.sh (docs/release.md)
	@scripts/deps.sh build package
	@scripts/release.sh

.PHONY: release-check
release-check: release ## Build a release and check it as a fleet takes it (internal/release/mkrelease TestBuiltRelease)
	KMODGUARD_RELEASE=$(CURDIR)/dist/release $(GO) test -count=1 -run '^TestBuiltRelease$$' -v ./internal/release/mkrelease/

.PHONY: readme
readme: plugin ## Regenerate plugin/README.md's fields table from the built libkmodguard.so
	$(GO) run ./plugin/internal/readme -plugin $(PLUGIN_SO) -readme plugin/README.md

.PHONY: lint
lint: ## gofmt, go vet, go.mod/go.sum as go mod tidy leaves them, and the BPF C as .clang-format has it
	@scripts/deps.sh bpf
	@clang-format-14 --dry-run --Werror $$(git ls-files '*.bpf.c' 'bpf/include/*.h' | grep -v vmlinux.h) || (echo "BPF C is not formatted: run make format"; exit 1)
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfel.go$$'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...
	@$(GO) mod tidy -diff || (echo "go.mod or go.sum is not tidy: run go mod tidy (diff above)"; exit 1)

.PHONY: format
format: ## Format the Go sources (gofmt) and the BPF C (clang-format-14, .clang-format)
	@scripts/deps.sh bpf
	gofmt -w $$(git ls-files '*.go' | grep -v '_bpfel.go$$')
	clang-format-14 -i $$(git ls-files '*.bpf.c' 'bpf/include/*.h' | grep -v vmlinux.h)

.PHONY: unit
unit: ## Run the Go tests on this host (root-only tests skip without root)
	$(GO) test -count=1 ./...

.PHONY: benchsmoke
benchsmoke: ## Run every benchmark once (-benchtime 1x), under the race detector: no timing claims, so that none rots
	$(GO) test -race -count=1 -run '^$$' -bench . -benchtime 1x ./...

.PHONY: fuzz
fuzz: ## Run each fuzz target for FUZZTIME (default 10s)
	@scripts/fuzz.sh $(FUZZTIME)

.PHONY: vmtest
vmtest: ## Run the real-kernel tests in QEMU on Debian 6.1, 6.12 and sid's newest (amd64; arm64 too where a TestVMArm64 is)
	@scripts/deps.sh build vm vm-arm64
	KMODGUARD_VMTEST=1 $(GO) test -count=1 -p 1 -timeout 60m -run '^TestVM' -v $(VM_PKGS)

.PHONY: matrix
matrix: ## Regenerate docs/support-matrix.md from the last vmtest run's records
	$(GO) run ./internal/supportmatrix -o docs/support-matrix.md

.PHONY: test
test: ## Everything CI runs: deps, lint, generated-file check, unit, every benchmark once, fuzz, packages, a release, vmtest
	@scripts/deps.sh build bpf vm vm-arm64 proto package
	$(MAKE) lint
	$(MAKE) check-generate
	$(MAKE) unit
	$(MAKE) benchsmoke
	$(MAKE) fuzz
	$(MAKE) package
	$(MAKE) release-check
	$(MAKE) vmtest

.PHONY: bench
bench: ## Run the benchmarks and print side-by-side ratios
	@scripts/deps.sh build bpf vm
	@scripts/bench.sh

.PHONY: demo
demo: ## Boot Debian 6.1 in QEMU and show detection and blocking
	@scripts/deps.sh build vm
	@scripts/demo.sh

.PHONY: clean
clean: ## Remove build outputs
	rm -rf $(BIN) $(PLUGIN_SO) libkmodguard.h dist
