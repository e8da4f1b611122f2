#!/usr/bin/env bash
# Installs what `make test` needs beyond Go, from Debian's packages.
# Idempotent, and quick when everything is already there.
set -o errexit -o nounset -o pipefail

need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v git >/dev/null || need+=(git)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing ${need[*]}: run this script as root, or install them" >&2
    exit 1
  fi
  echo "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v kubectl >/dev/null; then
  echo "kubectl not found: the kubectl walkthrough test will skip (and fail under REQUIRE_REAL=1)" >&2
fi
