# checkpoint-apiserver: see README.md.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -o errexit -o pipefail -c

BIN_DIR   := $(CURDIR)/_output/bin
SERVER    := $(BIN_DIR)/checkpoint-apiserver
RUN_DIR   ?= $(CURDIR)/_output/run
ARGS      ?=
GO_TEST   ?= go test -v -count=1 -timeout 30m

.PHONY: all build run up down test fuzz deps codegen verify verify-codegen vet fmt-check bench bench-capture clean

all: build

build:
	go build -o $(SERVER) ./cmd/checkpoint-apiserver

# Standalone on embedded defaults; ARGS come last so they override them.
run: build
	$(SERVER) --standalone --data-dir=$(RUN_DIR) --bind-address=127.0.0.1 --secure-port=8443 --e2b-bind-address=127.0.0.1:3000 $(ARGS)

deps:
	hack/install-test-deps.sh
	hack/build-kube-tools.sh
	cd test/e2b && npm ci --no-audit --no-fund

# Each fuzz target for a bounded time (their seeds also run in every go test).
FUZZ_TIME ?= 10s
fuzz:
	go test -run '^$$' -fuzz '^FuzzParseTTL$$' -fuzztime $(FUZZ_TIME) ./apis/agents/
	go test -run '^$$' -fuzz '^FuzzDecodeCheckpoint$$' -fuzztime $(FUZZ_TIME) ./apis/agents/install/
	go test -run '^$$' -fuzz '^FuzzPageToken$$' -fuzztime $(FUZZ_TIME) ./e2b/
	go test -run '^$$' -fuzz '^FuzzDecodeBody$$' -fuzztime $(FUZZ_TIME) ./e2b/

# The whole system: etcd, kube-apiserver (aggregation), kube-controller-manager,
# and this server behind an APIService. Prints the KUBECONFIG to use.
up: build
	hack/local-up.sh up

down:
	hack/local-up.sh down

test: deps verify build
	PATH="$(BIN_DIR):$$PATH" CHECKPOINT_APISERVER_BIN=$(SERVER) $(GO_TEST) ./...
	$(MAKE) fuzz

codegen:
	hack/update-codegen.sh

# This server against the same Checkpoint as a CRD, then capture against bare
# containerd: writes _output/bench/{results.json,table.md,list.png,capture.png}.
bench: deps build
	hack/bench.sh

# The capture part alone.
bench-capture: deps build
	CHECKPOINT_APISERVER_BIN=$(SERVER) go test -run '^$$' -bench BenchmarkCapture -benchtime 5x -timeout 30m ./test/bench/

verify: verify-codegen fmt-check vet

verify-codegen:
	hack/verify-codegen.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files --cached --others --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	go vet ./...

clean:
	rm -rf _output
