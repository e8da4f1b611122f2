#!/usr/bin/env bash
# make run: checkpoint-apiserver --standalone on embedded defaults (embedded
# etcd, self-signed certificates, a kubeconfig), with something to capture.
# As root it first installs and starts what a capture needs, as make test
# does (runc and CRIU 4.2 from hack/install-test-deps.sh, containerd 2.4
# from hack/build-kube-tools.sh, all cached), then a private containerd under
# RUN_DIR, and in it the demo sandbox code-interpreter-28rvn (namespace
# default, container interpreter): a Python interpreter holding a counter
# and a secret in memory, serving them on 127.0.0.1:8000 in its own network
# namespace (test/images/python-sandbox.py). Ctrl-C (or SIGTERM) stops the
# server, every sandbox and clone, and containerd; checkpoints stay, with
# the etcd data, for the next run.
#
#   hack/run.sh [server flags...]   what make run ARGS=... runs: the flags come last and override the defaults
#   hack/run.sh sandbox NAME        what sandbox NAME's interpreter answers ("n=<counter> secret=<secret>");
#                                   a clone answers with its source's secret, its counter gone on from the capture
#
# With --containerd-address among the flags (a real node's containerd), or
# when not root, no private containerd starts.
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/_output/bin
RUN_DIR=${RUN_DIR:-$ROOT/_output/run}
CTRD_DIR=$RUN_DIR/containerd
# Sockets need short paths (108 bytes with a shim's 64-hex name).
RUNTIME=/run/cprun-$(echo "$RUN_DIR" | sha256sum | cut -c1-8)
SOCK=$RUNTIME/containerd.sock
NS=k8s.io
DEMO=code-interpreter-28rvn
DEMO_IMAGE=docker.io/library/python-sandbox:local

log() { echo "make run: $*" >&2; }
# (ctr repeats containerd's cgroup v1 deprecation warning on every call.)
ctr() { "$BIN/ctr" --address "$SOCK" -n "$NS" "$@" 2> >(grep -v 'msg="DEPRECATION' >&2); }

# lo_up PID: loopback up in PID's network namespace, as a CNI plugin would
# (there is none here: the demo sandbox starts with lo down; the server
# brings up the loopback of the clones it restores).
lo_up() { nsenter --net="/proc/$1/ns/net" ip link set lo up; }

# pid_of NAME: the pid of the task of sandbox NAME's first container.
pid_of() {
  local id
  id=$(ctr containers ls -q "labels.\"io.kubernetes.pod.name\"==$1" | head -1)
  [ -n "$id" ] || { log "no sandbox named $1"; return 1; }
  ctr tasks ls | awk -v id="$id" '$1 == id && $3 == "RUNNING" {print $2}'
}

if [ "${1:-}" = sandbox ]; then
  name=${2:?usage: $0 sandbox NAME}
  pid=$(pid_of "$name")
  [ -n "$pid" ] || { log "sandbox $name is not running"; exit 1; }
  lo_up "$pid"
  exec nsenter --net="/proc/$pid/ns/net" curl -sS --max-time 5 http://127.0.0.1:8000/
fi

private=1
for a in "$@"; do
  case $a in --containerd-address=* | --containerd-address) private=0 ;; esac
done
if [ "$(id -u)" != 0 ]; then
  [ $private = 1 ] && log "not root: no private containerd, so captures end Failed (DriverUnavailable)"
  private=0
fi

containerd_pid=
server_pid=
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ -n "$containerd_pid" ]; then
    local id
    for id in $(ctr containers ls -q 2>/dev/null); do
      ctr tasks kill -s KILL "$id" >/dev/null 2>&1 || true
      ctr tasks rm -f "$id" >/dev/null 2>&1 || true
      ctr containers rm "$id" >/dev/null 2>&1 || true
    done
    kill -TERM "$containerd_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$containerd_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$containerd_pid" 2>/dev/null || true
    local p m
    for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $SOCK" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    awk -v a="$CTRD_DIR/" -v b="$RUNTIME/" 'index($2, a) == 1 || index($2, b) == 1 {print $2}' /proc/self/mounts | sort -r |
      while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf "$RUNTIME"
    log "stopped the sandboxes and containerd"
  fi
  rm -f "$RUN_DIR/run.pid"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$RUN_DIR"
args=(--standalone --data-dir="$RUN_DIR" --bind-address=127.0.0.1 --secure-port=8443 --e2b-bind-address=127.0.0.1:3000)
if [ $private = 1 ]; then
  "$ROOT/hack/install-test-deps.sh" node
  "$ROOT/hack/build-kube-tools.sh" containerd
  "$ROOT/hack/test-images.sh" >/dev/null
  if [ -S "$SOCK" ] && ctr version >/dev/null 2>&1; then
    log "a containerd already serves $SOCK: is another make run using $RUN_DIR?"
    exit 1
  fi
  mkdir -p "$CTRD_DIR/tmp" "$RUNTIME/s"
  cat >"$CTRD_DIR/config.toml" <<TOML
# Written by hack/run.sh: make run's private containerd (no CRI: the
# standalone server finds sandboxes by their CRI labels and makes clones itself).
version = 3
root = "$CTRD_DIR/root"
state = "$RUNTIME/state"
temp = "$CTRD_DIR/tmp"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images", "io.containerd.nri.v1.nri"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.shim.v1.manager"]
  socket_dir = "$RUNTIME/s"
TOML
  # containerd -> shim -> runc -> criu: CRIU 4.2 (/usr/local/sbin) first on its PATH.
  env -u XDG_RUNTIME_DIR PATH="/usr/local/sbin:$BIN:$PATH" setsid "$BIN/containerd" --config "$CTRD_DIR/config.toml" \
    >>"$CTRD_DIR/containerd.log" 2>&1 &
  containerd_pid=$!
  for _ in $(seq 1 300); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
  ctr version >/dev/null 2>&1 || { log "containerd did not start: see $CTRD_DIR/containerd.log"; exit 1; }
  # Sandboxes of an earlier run that did not stop cleanly.
  for id in $(ctr containers ls -q); do
    ctr tasks rm -f "$id" >/dev/null 2>&1 || true
    ctr containers rm "$id" >/dev/null 2>&1 || true
  done
  ctr images import "$ROOT/_output/images/python.tar" >/dev/null
  mkdir -p "$RUN_DIR/sandboxes"
  ctr run -d --snapshotter overlayfs --hostname "$DEMO" \
    --label io.kubernetes.pod.namespace=default --label "io.kubernetes.pod.name=$DEMO" \
    --label io.kubernetes.container.name=interpreter --label io.cri-containerd.kind=container \
    --log-uri "file://$RUN_DIR/sandboxes/$DEMO.log" "$DEMO_IMAGE" "$DEMO-interpreter" >/dev/null
  # Its network namespace has lo down, as a CNI plugin would leave it up.
  pid=$(pid_of "$DEMO")
  lo_up "$pid"
  log "demo sandbox $DEMO (namespace default) runs in the private containerd at $SOCK"
  log "  what it holds: hack/run.sh sandbox $DEMO      its log: $RUN_DIR/sandboxes/$DEMO.log"
  args+=(--containerd-address="$SOCK" --containerd-namespace="$NS")
fi

echo $$ >"$RUN_DIR/run.pid"
"$BIN/checkpoint-apiserver" "${args[@]}" "$@" &
server_pid=$!
set +o errexit
wait "$server_pid"
rc=$?
server_pid=
exit $rc
