# berth build, run and test entry points. `make help` lists them.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

GO        ?= go
TOOLS_BIN := $(CURDIR)/.tools/bin
BIN       := $(CURDIR)/bin/berth
# Debian's own Go is too old; install-deps puts the right one in /usr/local/go.
export PATH := $(TOOLS_BIN):/usr/local/go/bin:$(PATH)

# `make run` flags for `berth serve`; BERTH_ADMIN_USER and BERTH_ADMIN_PASSWORD
# in the environment create a superuser on start.
RUN_FLAGS ?= --listen :8080 --data-dir $(CURDIR)/data

E2E_TIMEOUT  ?= 15m
FUZZ_TIME    ?= 10s
BENCH_TIME   ?= 3x

# Unit packages are everything but test/, whose end-to-end packages need a
# built binary and real tools and run in the e2e step.
# (A failing `go list` stops the recipe: .SHELLFLAGS has -e.)
set_unit_pkgs = all="$$($(GO) list ./...)"; mod="$$($(GO) list -m)"; \
	pkgs="$$(grep -v "^$$mod/test/" <<<"$$all" || true)"

.PHONY: help
help:
	@echo 'make build   build bin/berth (CGO_ENABLED=0)'
	@echo 'make run     install what serve needs, build, run bin/berth serve $(RUN_FLAGS)'
	@echo 'make test    install test deps, vet (go vet, tidy, staticcheck), unit tests, race, then end-to-end tests'
	@echo 'make unit    unit tests only'
	@echo 'make race    unit tests under the race detector, -short'
	@echo 'make e2e     end-to-end tests only (builds bin/berth first)'
	@echo 'make e2e-kubernetes  a real single-node Kubernetes (binaries built once, cached) and its tests'
	@echo 'make bench   Go benchmarks, then registry throughput: berth vs distribution'
	@echo 'make fuzz    every Fuzz* target for $(FUZZ_TIME)'
	@echo 'make tools   install packages and build every test tool into .tools/bin'
	@echo 'make worker-image WORKER_IMAGE=REGISTRY/NS/REPO:TAG'
	@echo '             berth builds its worker image on the berth at REGISTRY (worker-image/README.md)'

# test-deps and tools build the same tools today, distribution's registry
# included: the build engine's suites push to it.
.PHONY: test-deps
test-deps:
	@scripts/install-deps.sh --test

.PHONY: tools
tools:
	@scripts/install-deps.sh

.PHONY: build
build:
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN) ./cmd/berth

.PHONY: run
run:
	@scripts/install-deps.sh --run
	@$(MAKE) --no-print-directory build
	$(BIN) serve $(RUN_FLAGS)

.PHONY: test
test: test-deps vet unit race e2e e2e-kubernetes

# vet: go vet, a tidy go.mod and go.sum, staticcheck (pinned, built into
# .tools/bin by `make test-deps`), the import-direction rule, and generated
# code that matches its .proto.
.PHONY: vet
vet:
	$(GO) vet ./...
	$(GO) mod tidy -diff
	@[[ -x $(TOOLS_BIN)/staticcheck ]] || { echo 'vet: no $(TOOLS_BIN)/staticcheck; `make test-deps` builds it' >&2; exit 1; }
	$(TOOLS_BIN)/staticcheck ./...
	$(GO) test -count=1 ./internal/archtest
	@scripts/gen-proto.sh --check

.PHONY: unit
unit:
	@$(set_unit_pkgs); \
	if [[ -z $$pkgs ]]; then echo 'unit: no packages outside test/'; exit 0; fi; \
	echo "go test $${GO_TEST_FLAGS:-} <$$(wc -w <<<"$$pkgs") packages>"; \
	$(GO) test $${GO_TEST_FLAGS:-} $$pkgs

# The unit packages under the race detector. -short skips the tests that run
# real buildah builds or push 100 MB of log: the race detector slows them
# several times over and `make unit` runs them.
.PHONY: race
race:
	@$(set_unit_pkgs); \
	if [[ -z $$pkgs ]]; then echo 'race: no packages outside test/'; exit 0; fi; \
	echo "go test -race -short <$$(wc -w <<<"$$pkgs") packages>"; \
	$(GO) test -race -short $$pkgs

# End-to-end tests run the real binary (built first) and real tools.
.PHONY: e2e
e2e: build
	$(GO) test -count=1 -v -timeout $(E2E_TIMEOUT) $$($(GO) list ./test/... | grep -v -e '/test/tenancy$$' -e '/test/kubernetes$$')
	@$(MAKE) --no-print-directory e2e-tenancy

# test/tenancy runs once per metadata database (its TestMain reads
# BERTH_E2E_DB; postgres gets a fresh, uniquely named database in the local
# PostgreSQL, dropped at the end). Both runs happen even when the first fails.
TENANCY_TIMEOUT ?= 5m
.PHONY: e2e-tenancy
e2e-tenancy:
	@rc=0; for db in sqlite postgres; do \
		echo "== test/tenancy on $$db =="; \
		BERTH_E2E_DB=$$db $(GO) test -count=1 -v -timeout $(TENANCY_TIMEOUT) ./test/tenancy || rc=1; \
	done; exit $$rc

# test/kubernetes brings up a real single-node cluster (test/kubernetes/cluster)
# and takes it down after its tests, whatever their outcome. build.sh compiles
# the cluster's binaries once into /var/cache/berth (15 to 50 minutes on 2
# cores, depending on load) and returns at once after that. Nothing in it
# skips (BERTH_E2E_REQUIRE).
KUBERNETES_TIMEOUT ?= 30m
.PHONY: e2e-kubernetes
e2e-kubernetes: build
	@test/kubernetes/cluster/build.sh
	BERTH_E2E_REQUIRE=1 $(GO) test -count=1 -v -timeout $(KUBERNETES_TIMEOUT) ./test/kubernetes

.PHONY: bench
bench: tools build
	@$(set_unit_pkgs); \
	if [[ -n $$pkgs ]]; then $(GO) test -run '^$$' -bench . -benchmem $$pkgs; fi
	@echo '== registry: berth vs distribution v3.1.2, side by side =='
	$(GO) run ./test/bench/regbench $(REGBENCH_FLAGS)
	@echo '== builds: berth vs buildah bud+push as the worker user =='
	$(GO) run ./test/builds/bench -bin $(BIN)
	@echo '== triggers: git push → pullable vs git clone + buildah bud + push by hand =='
	$(GO) run ./test/triggers/bench $(TRIGGERBENCH_FLAGS)

.PHONY: fuzz
fuzz:
	@FUZZ_TIME=$(FUZZ_TIME) scripts/fuzz.sh

# berth builds its own worker image: a Debian base made with mmdebstrap
# (cached in /var/cache/berth/worker-base) and pushed to the berth at
# WORKER_IMAGE's registry, then `berth build` of worker-image/Containerfile
# there. WORKER_IMAGE_SERVE=1 starts that berth on loopback for the build.
.PHONY: worker-image
worker-image:
	@[[ -n "$(WORKER_IMAGE)" ]] || { echo 'worker-image: set WORKER_IMAGE=REGISTRY/NAMESPACE/REPOSITORY:TAG' >&2; exit 2; }
	worker-image/build.sh '$(WORKER_IMAGE)'

.PHONY: clean
clean:
	rm -rf $(CURDIR)/bin
