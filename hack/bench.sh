#!/usr/bin/env bash
# make bench: this server against the same Checkpoint as a CRD, side by side
# on this machine, then capture against a bare containerd checkpoint.
#
# 1. hack/local-up.sh brings up etcd, kube-apiserver (+ controller manager)
#    and this server behind its APIService, on ports of its own;
# 2. checkpoint-bench installs the CRD (group crd.bench.local) and drives
#    both sides with one load generator: creates, lists, watches, memory;
# 3. the system goes down, and BenchmarkCapture times capture and restore
#    with containerd + runc + CRIU for several container memory sizes;
#    BenchmarkEncryption times a capture into the registry and a node's
#    fetch of it, in clear and encrypted, side by side (encryption.log);
#    BenchmarkCaptureAcrossNodes then brings up one kubelet node, then two
#    with node agents and the registry, and times capture and clones there;
#    BenchmarkPauseResume times E2B's pause and resume through the front on
#    two such nodes, beside E2B's published figures and a fresh Pod (pause.log);
# 4. checkpoint-bench report writes results.json, table.md, list.png and
#    capture.png, nodes.png, restore.png under BENCH_OUT (default _output/bench) and prints the ratios.
#
# BENCH_RUN_ARGS      extra flags for `checkpoint-bench run` (e.g. -steps 500,1000)
# BENCH_CAPTURE_RUNS  captures per memory size (default 5)
# BENCH_CAPTURE_SIZES container memory sizes in MiB (default 0,64,256,1024)
# BENCH_NODES_RUNS    captures per size on kubelet nodes (default 3); BENCH_NODES_SIZES (default 0,64,256,1024)
# BENCH_ENCRYPTION_RUNS captures per size, clear and encrypted (default 3); BENCH_ENCRYPTION_SIZES (default 0,64,256,1024)
# BENCH_PAUSE_RUNS    E2B pauses and resumes per size (default 3); BENCH_PAUSE_SIZES (default 0,64,256,1024)
# BENCH_PUBLISH=1     also copy the table and plots into BENCHMARKS.md and docs/benchmarks/
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/_output/bin
OUT=${BENCH_OUT:-$ROOT/_output/bench}
export LOCAL_UP_DIR=$OUT/cluster
# The API figures need no kubelet: no node, as in the published runs.
export LOCAL_UP_NODES=${LOCAL_UP_NODES:-0}
export ETCD_PORT=${ETCD_PORT:-33790} KAS_PORT=${KAS_PORT:-36443} CP_PORT=${CP_PORT:-38443}
# Objects stay Pending on both sides: the CRD has no controller, so neither
# side's figures include declarative captures.
export CHECKPOINT_APISERVER_ARGS="--declarative-capture-delay=24h --containerd-address=$OUT/no-containerd.sock"
export KUBECONFIG=$LOCAL_UP_DIR/admin.kubeconfig

log() { echo "bench: $*" >&2; }

rm -rf "$OUT"
mkdir -p "$OUT"
start=$SECONDS
(cd "$ROOT" && go build -o "$BIN/checkpoint-bench" ./test/bench/cmd/checkpoint-bench)

trap '"$ROOT/hack/local-up.sh" down' EXIT
"$ROOT/hack/local-up.sh" up >/dev/null
log "system up in $((SECONDS - start))s; driving both sides"
# shellcheck disable=SC2086
"$BIN/checkpoint-bench" run -kubeconfig "$KUBECONFIG" -server "https://127.0.0.1:$CP_PORT" \
  -server-pid "$(cat "$LOCAL_UP_DIR/checkpoint-apiserver.pid")" -kas-pid "$(cat "$LOCAL_UP_DIR/kube-apiserver.pid")" \
  -out "$OUT/results.json" ${BENCH_RUN_ARGS:-}
"$ROOT/hack/local-up.sh" down
trap - EXIT

log "API figures done at $((SECONDS - start))s; timing capture"
(cd "$ROOT" && PATH="$BIN:$PATH" CHECKPOINT_APISERVER_BIN=$BIN/checkpoint-apiserver BENCH_CAPTURE_OUT=$OUT/capture.json \
  go test -run '^$' -bench '^BenchmarkCapture$' -benchtime "${BENCH_CAPTURE_RUNS:-5}x" -timeout 30m ./test/bench/) >"$OUT/capture.log" 2>&1 ||
  { tail -50 "$OUT/capture.log"; exit 1; }
grep -E 'MiB: capture' "$OUT/capture.log" >&2 || true

log "capture done at $((SECONDS - start))s; timing encryption at rest (capture into the registry, fetch), clear against encrypted"
(cd "$ROOT" && PATH="$BIN:$PATH" go test -v -run '^$' -bench '^BenchmarkEncryption$' -benchtime "${BENCH_ENCRYPTION_RUNS:-3}x" -timeout 30m ./test/bench/) \
  >"$OUT/encryption.log" 2>&1 || { tail -50 "$OUT/encryption.log"; exit 1; }
grep -E 'MiB: capture into the registry' "$OUT/encryption.log" >&2 || true

log "encryption done at $((SECONDS - start))s; timing capture across kubelet nodes (agents, registry)"
(cd "$ROOT" && unset LOCAL_UP_DIR LOCAL_UP_NODES ETCD_PORT KAS_PORT CP_PORT CHECKPOINT_APISERVER_ARGS &&
  PATH="$BIN:$PATH" BENCH_NODES_OUT=$OUT/nodes.json \
  go test -run '^$' -bench '^BenchmarkCaptureAcrossNodes$' -benchtime "${BENCH_NODES_RUNS:-3}x" -timeout 40m ./test/bench/) >"$OUT/nodes.log" 2>&1 ||
  { tail -50 "$OUT/nodes.log"; exit 1; }

log "nodes done at $((SECONDS - start))s; timing E2B pause and resume across kubelet nodes"
(cd "$ROOT" && unset LOCAL_UP_DIR LOCAL_UP_NODES ETCD_PORT KAS_PORT CP_PORT CHECKPOINT_APISERVER_ARGS &&
  PATH="$BIN:$PATH" BENCH_PAUSE_OUT=$OUT/pause.json \
  go test -v -run '^$' -bench '^BenchmarkPauseResume$' -benchtime "${BENCH_PAUSE_RUNS:-3}x" -timeout 40m ./test/bench/) >"$OUT/pause.log" 2>&1 ||
  { tail -50 "$OUT/pause.log"; exit 1; }
grep -E 'MiB: pause' "$OUT/pause.log" >&2 || true

"$BIN/checkpoint-bench" report -dir "$OUT"
log "done in $((SECONDS - start))s: $OUT/{results.json,table.md,list.png,capture.png,nodes.png,restore.png}"

if [ "${BENCH_PUBLISH:-}" = 1 ]; then
  mkdir -p "$ROOT/docs/benchmarks"
  cp "$OUT/results.json" "$OUT/list.png" "$OUT/capture.png" "$OUT/nodes.png" "$OUT/restore.png" "$ROOT/docs/benchmarks/"
  # the table goes between the markers in BENCHMARKS.md
  awk -v table="$OUT/table.md" '
    /<!-- bench:begin -->/ { print; while ((getline line < table) > 0) print line; skip = 1; next }
    /<!-- bench:end -->/ { skip = 0 }
    !skip { print }' "$ROOT/BENCHMARKS.md" >"$OUT/BENCHMARKS.md"
  mv "$OUT/BENCHMARKS.md" "$ROOT/BENCHMARKS.md"
  log "published into BENCHMARKS.md and docs/benchmarks/"
fi
