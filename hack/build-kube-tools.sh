#!/usr/bin/env bash
# Builds kube-apiserver and kube-controller-manager (k8s.io/kubernetes v1.37.2)
# and etcd (v3.7.3) from
# their tools modules under hack/tools into _output/bin, once per go.sum:
# a cold kube-apiserver build takes about 15 minutes on 2 cores, a rebuild
# with the same go.sum is skipped.
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/_output/bin
mkdir -p "$BIN"

KUBE_VERSION=v1.37.2
LDFLAGS="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37 -X k8s.io/client-go/pkg/version.gitVersion=$KUBE_VERSION"

# build <tools module dir> <package> <binary name> [ldflags]
build() {
  local mod=$ROOT/hack/tools/$1 pkg=$2 name=$3 ldflags=${4:-"-s -w"}
  local stamp
  stamp=$BIN/.$name-$(cat "$mod/go.mod" "$mod/go.sum" | sha256sum | cut -c1-16)
  if [ -x "$BIN/$name" ] && [ -e "$stamp" ]; then
    return
  fi
  echo "build-kube-tools: building $name from hack/tools/$1 (slow the first time)"
  local start=$SECONDS
  (cd "$mod" && go build -trimpath -ldflags "$ldflags" -o "$BIN/$name" "$pkg")
  rm -f "$BIN/.$name-"*
  touch "$stamp"
  echo "build-kube-tools: $name built in $((SECONDS - start))s"
}

build etcd go.etcd.io/etcd/server/v3 etcd

# kubectl: the one on PATH when recent enough (1.30 or later), else built here
# (make test puts _output/bin first on PATH).
minor=$(kubectl version --client -o json 2>/dev/null | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -1)
if [ -z "$minor" ] || [ "$minor" -lt 30 ]; then
  build kube k8s.io/kubernetes/cmd/kubectl kubectl "$LDFLAGS"
fi
build kube k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$LDFLAGS"
build kube k8s.io/kubernetes/cmd/kube-controller-manager kube-controller-manager "$LDFLAGS"
