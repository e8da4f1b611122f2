# checkpoint-apiserver: see README.md.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -o errexit -o pipefail -c

BIN_DIR   := $(CURDIR)/_output/bin
SERVER    := $(BIN_DIR)/checkpoint-apiserver
RUN_DIR   ?= $(CURDIR)/_output/run
ARGS      ?=
MODE      ?= aggregated
# Two nodes, the server and the agents as Pods from make image's images
# (artifacts/deploy; in crd mode artifacts/crd-mode), in either MODE.
NODES     ?= 2
DEPLOY    ?= pods
GO_TEST   ?= go test -v -count=1 -timeout 30m

.PHONY: all build image run up down test test-faults soak fuzz deps codegen verify verify-codegen vet fmt-check bench bench-capture bench-pause clean

all: build

build:
	hack/build.sh $(BIN_DIR) checkpoint-apiserver checkpoint-node-agent containerd-shim-checkpoint-v1

# OCI images of the server and the node agent (hack/image.sh): _output/images/.
# LOAD=1 imports them into the running make-up cluster's nodes, PUSH=1 pushes
# them to its registry.
image:
	LOAD=$(LOAD) PUSH=$(PUSH) hack/image.sh

# Standalone on embedded defaults, and (as root) a private containerd with
# the demo sandbox code-interpreter-28rvn (hack/run.sh); ARGS come last so
# they override the defaults.
run: build
	RUN_DIR=$(RUN_DIR) hack/run.sh $(ARGS)

deps:
	hack/install-test-deps.sh
	hack/build-kube-tools.sh
	hack/test-images.sh
	cd test/e2b && npm ci --no-audit --no-fund

# Each fuzz target for a fixed number of executions (about 10 s each here),
# from its committed corpus; FUZZ_SCALE=10 runs ten times as many, FUZZ_TIME=1m
# a time instead (FUZZ_SAVE=1 hack/fuzz.sh adds what it finds to the corpus).
FUZZ_TIME ?=
FUZZ_SCALE ?= 1
fuzz:
	FUZZ_TIME=$(FUZZ_TIME) FUZZ_SCALE=$(FUZZ_SCALE) hack/fuzz.sh

# The whole system: etcd, kube-apiserver (aggregation), kube-controller-manager,
# and this server behind an APIService. Prints the KUBECONFIG to use.
# MODE=crd: beside OpenKruise Agents' CRDs, capturing its Checkpoint custom resources.
# By default two nodes, a node agent on each, checkpoints through a TLS
# registry, and the server (two replicas) and the agents as Pods from make
# image's images, applied from artifacts/deploy. DEPLOY=processes runs them
# as host processes; NODES=1 DEPLOY=processes captures in the server itself.
up: build
	MODE=$(MODE) LOCAL_UP_NODES=$(NODES) DEPLOY=$(DEPLOY) hack/local-up.sh up

down:
	hack/local-up.sh down

# Everything but the fault suite, then the fault suite, then the fuzzers.
test: deps verify build
	PATH="$(BIN_DIR):$$PATH" CHECKPOINT_APISERVER_BIN=$(SERVER) $(GO_TEST) $$(go list ./... | grep -v /test/faults)
	$(MAKE) test-faults
	$(MAKE) fuzz

# Faults: etcd, containerd and the server killed mid-work, replicas handing
# over, 32 mixed clients for LOAD_DURATION (60s), the leak check. See RELIABILITY.md.
LOAD_DURATION ?= 60s
test-faults: build
	PATH="$(BIN_DIR):$$PATH" CHECKPOINT_APISERVER_BIN=$(SERVER) LOAD_DURATION=$(LOAD_DURATION) $(GO_TEST) ./test/faults/

# The mixed load for longer, then the leak check over more rounds (not in CI):
# make soak SOAK_DURATION=2h SOAK_ROUNDS=50
SOAK_DURATION ?= 30m
SOAK_ROUNDS ?= 20
soak: deps build
	PATH="$(BIN_DIR):$$PATH" CHECKPOINT_APISERVER_BIN=$(SERVER) LOAD_DURATION=$(SOAK_DURATION) LOAD_ROUNDS=$(SOAK_ROUNDS) \
		go test -v -count=1 -timeout 0 -run 'TestMixedLoad|TestNoLeakUnderLoad' ./test/faults/

codegen:
	hack/update-codegen.sh

# This server against the same Checkpoint as a CRD, then capture against bare
# containerd: writes _output/bench/{results.json,table.md,list.png,capture.png}.
bench: deps build
	hack/bench.sh

# The capture part alone.
bench-capture: deps build
	PATH="$(BIN_DIR):$$PATH" CHECKPOINT_APISERVER_BIN=$(SERVER) go test -run '^$$' -bench BenchmarkCapture -benchtime 5x -timeout 30m ./test/bench/

# E2B's pause and resume through the front, on two kubelet nodes.
bench-pause: deps build
	PATH="$(BIN_DIR):$$PATH" go test -v -run '^$$' -bench BenchmarkPauseResume -benchtime 3x -timeout 40m ./test/bench/

# CRIU's lazy restore (userfaultfd) against its eager one, CRIU alone: no
# Pod can restore lazily (containerd's CRI restore has no such option).
bench-lazy: deps
	go test -v -run '^$$' -bench BenchmarkLazyRestore -benchtime 3x -timeout 30m ./test/bench/

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
