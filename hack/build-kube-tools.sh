#!/usr/bin/env bash
# Builds the cluster's parts from their tools modules under hack/tools into
# _output/bin, once per go.mod+go.sum: etcd v3.7.3; kube-apiserver,
# kube-controller-manager, kube-scheduler and the kubelet (k8s.io/kubernetes
# v1.37.2); and for the nodes containerd, its runc shim and ctr (v2.4.x,
# CGO_ENABLED=0, -tags no_btrfs); checkpointctl (a test tool). A cold kube-apiserver build takes about
# 15 minutes on 2 cores; a rebuild with the same go.sum is skipped.
#
#   hack/build-kube-tools.sh              everything
#   hack/build-kube-tools.sh containerd   containerd, its shim and ctr only (make run)
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/_output/bin
mkdir -p "$BIN"

KUBE_VERSION=v1.37.2
LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"

# build <tools module dir> <package> <binary name> [ldflags [tags]]
build() {
  local mod=$ROOT/hack/tools/$1 pkg=$2 name=$3 ldflags=${4:-"-s -w"} tags=${5:-}
  local stamp
  stamp=$BIN/.$name-$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -c1-16)
  if [ -x "$BIN/$name" ] && [ -e "$stamp" ]; then
    return
  fi
  echo "build-kube-tools: building $name from hack/tools/$1 (slow the first time)"
  local start=$SECONDS
  (cd "$mod" && go build -trimpath ${tags:+-tags "$tags"} -ldflags "$ldflags" -o "$BIN/$name" "$pkg")
  rm -f "$BIN/.$name-"*
  touch "$stamp"
  echo "build-kube-tools: $name built in $((SECONDS - start))s"
}

WHAT=${1:-all}

if [ "$WHAT" = all ]; then
  build etcd go.etcd.io/etcd/server/v3 etcd

  # kubectl: the one on PATH when recent enough (1.30 or later), else built here
  # (make test puts _output/bin first on PATH).
  minor=$(kubectl version --client -o json 2>/dev/null | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -1)
  if [ -z "$minor" ] || [ "$minor" -lt 30 ]; then
    build kube k8s.io/kubernetes/cmd/kubectl kubectl "$LDFLAGS"
  fi
  build kube k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$LDFLAGS"
  build kube k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$LDFLAGS"
  build kube k8s.io/kubernetes/cmd/kube-scheduler kube-scheduler "$LDFLAGS"
  build kube k8s.io/kubernetes/cmd/kubelet kubelet "$LDFLAGS"
fi

# containerd for the nodes: static, so its shim runs in any mount namespace.
CONTAINERD_VERSION=$(sed -n 's#^require github.com/containerd/containerd/v2 \(v[^ ]*\)$#\1#p' "$ROOT/hack/tools/containerd/go.mod")
CTRD_LDFLAGS="-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION"
for cmd in containerd containerd-shim-runc-v2 ctr; do
  CGO_ENABLED=0 build containerd "github.com/containerd/containerd/v2/cmd/$cmd" "$cmd" "$CTRD_LDFLAGS" no_btrfs
done

# checkpointctl, a test tool: reads the checkpoint images made here.
[ "$WHAT" = all ] || exit 0
build checkpointctl github.com/checkpoint-restore/checkpointctl checkpointctl
