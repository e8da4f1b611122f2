#!/usr/bin/env bash
# Installs what `make test` needs beyond Go: protoc (code generation),
# runc, iptables, busybox-static, debootstrap and the CNI plugins from Debian (containerd
# 2.3 is built by hack/build-kube-tools.sh),
# and CRIU 4.2.1 built from Debian unstable's source package (Debian 12's
# CRIU 3.17 fails on kernels >= 6.13, and CRIU < 4.2 cannot dump TCP or UDP
# sockets on kernels >= 6.16; unstable's binary package would pull a newer
# glibc).
# Idempotent: a second run takes seconds. Runs as root.
#
#   hack/install-test-deps.sh        everything make test needs
#   hack/install-test-deps.sh node   what a node needs to capture (runc, CRIU, the
#                                    image builders' tools): make run
set -o errexit -o nounset -o pipefail

WHAT=${1:-all}

CRIU_VERSION=4.2.1
CRIU_SUITE=unstable
# As Debian's signed Sources index lists it.
CRIU_ORIG_SHA256=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
CRIU_CACHE=${CRIU_CACHE:-/var/cache/checkpoint-apiserver/criu-$CRIU_VERSION}
CRIU_BIN=/usr/local/sbin/criu
export DEBIAN_FRONTEND=noninteractive

log() { echo "install-test-deps: $*"; }

if [ "$(id -u)" != 0 ]; then
  SUDO=sudo
else
  SUDO=
fi

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  log "installing $*"
  $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need=()
command -v runc >/dev/null || need+=(runc)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v ip >/dev/null || need+=(iproute2)
command -v nsenter >/dev/null || need+=(util-linux)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v curl >/dev/null || need+=(curl)
command -v git >/dev/null || need+=(git)
if [ "$WHAT" = all ]; then
  command -v protoc >/dev/null || need+=(protobuf-compiler)
  command -v iptables >/dev/null || need+=(iptables)
  [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
  command -v openssl >/dev/null || need+=(openssl)
  command -v npm >/dev/null || need+=(nodejs npm)
  # The checkpoint registry of the multi-node tests (Distribution 2.8), what
  # inspects it, and htpasswd for its users.
  command -v docker-registry >/dev/null || need+=(docker-registry)
  command -v skopeo >/dev/null || need+=(skopeo)
  command -v htpasswd >/dev/null || need+=(apache2-utils)
fi
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

criu_ok() { "$1" --version 2>/dev/null | grep -q "Version: $CRIU_VERSION"; }

if ! criu_ok "$CRIU_BIN"; then
  if ! criu_ok "$CRIU_CACHE/criu"; then
    log "building CRIU $CRIU_VERSION from Debian $CRIU_SUITE's source package (about a minute)"
    apt_install build-essential pkg-config libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler \
      protobuf-compiler python3-protobuf libnl-3-dev libnet1-dev libcap-dev libbsd-dev \
      libnftables-dev libgnutls28-dev uuid-dev libaio-dev libdrm-dev xz-utils
    src=$(mktemp -d)
    trap 'rm -rf "$src"' EXIT
    mkdir -p "$src/lists/partial" "$src/dl"
    # The mirror is the machine's own: read it from its apt configuration.
    mirror=$(sed -n 's/^URIs: *\([^ ]*\/debian\/*\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    if [ -z "$mirror" ]; then
      mirror=$(sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\/debian\/*\) .*/\2/p' /etc/apt/sources.list 2>/dev/null | head -1)
    fi
    [ -n "$mirror" ] || { log "no Debian mirror found in the apt configuration"; exit 1; }
    echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $CRIU_SUITE main" >"$src/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$src/sources.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$src/lists")
    $SUDO apt-get "${apt_opts[@]}" update -qq
    # Only the upstream tarball is needed; the .dsc may fail to verify and
    # the .debian.tar.xz may be missing from the mirror.
    (cd "$src/dl" && apt-get "${apt_opts[@]}" source --download-only "criu=$CRIU_VERSION-1" >/dev/null 2>&1 || true)
    echo "$CRIU_ORIG_SHA256  $src/dl/criu_$CRIU_VERSION.orig.tar.xz" | sha256sum -c --quiet -
    tar -C "$src" -xf "$src/dl/criu_$CRIU_VERSION.orig.tar.xz"
    if ! make -C "$src/criu-$CRIU_VERSION" -j"$(nproc)" criu >"$src/build.log" 2>&1; then
      tail -30 "$src/build.log"
      exit 1
    fi
    $SUDO mkdir -p "$CRIU_CACHE"
    $SUDO install -m 0755 -s "$src/criu-$CRIU_VERSION/criu/criu" "$CRIU_CACHE/criu"
  fi
  $SUDO install -m 0755 "$CRIU_CACHE/criu" "$CRIU_BIN"
fi

if ! out=$("$CRIU_BIN" check 2>&1); then
  log "criu check failed: $out"
  exit 1
fi
[ "$WHAT" = all ] || { log "ok: $(runc --version | head -1), criu $("$CRIU_BIN" --version | sed -n 's/Version: //p')"; exit 0; }
log "ok: $(protoc --version), $(runc --version | head -1), criu $("$CRIU_BIN" --version | sed -n 's/Version: //p')"

if ! command -v kubectl >/dev/null; then
  log "kubectl not found: kubectl tests will skip (and fail under REQUIRE_REAL=1)"
fi
