#!/usr/bin/env bash
# Builds the images the local cluster's Pods run, as OCI layout archives
# (what `ctr images import` and `hack/local-up.sh load-image` take), from
# Debian's packages on this machine: nothing is pulled.
#
#   hack/test-images.sh [OUT_DIR]     (default _output/images)
#
#   pause.tar    registry.k8s.io/pause:local      the pod sandbox (busybox sleep)
#   busybox.tar  docker.io/library/busybox:local  every busybox applet
#   python.tar   docker.io/library/python-sandbox:local
#                a Debian bookworm rootfs (debootstrap, minbase) with python3
#                and an IPython kernel (ipykernel, jupyter_client), running
#                test/images/python-sandbox.py: state in memory,
#                served on a listening TCP socket (E2B's code interpreter shape)
#
# Each archive is rebuilt only when missing or when its inputs changed; the
# debootstrapped rootfs is cached under /var/cache/checkpoint-apiserver (about
# 4 min to make with the IPython kernel's packages, from the Debian mirror of the machine's apt configuration).
# Needs busybox-static and debootstrap (hack/install-test-deps.sh).
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$ROOT/_output/images}
BUSYBOX=${BUSYBOX:-/bin/busybox}
mkdir -p "$OUT"

TAR=(tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner)

# oci_archive NAME ROOTFS CONFIG_JSON OUT: a one-layer image of ROOTFS (a
# directory, or a tar to use as the layer) named NAME, whose image config is
# CONFIG_JSON ("config" part), into OUT.
oci_archive() {
  local name=$1 rootfs=$2 config=$3 out=$4
  local w; w=$(mktemp -d)
  mkdir -p "$w/oci/blobs/sha256"
  blob() { # file -> "digest size", moved into the blob store
    local d; d=$(sha256sum "$1" | cut -d' ' -f1)
    mv "$1" "$w/oci/blobs/sha256/$d"
    echo "$d $(stat -c %s "$w/oci/blobs/sha256/$d")"
  }
  local ld ls cd cs md ms
  if [ -d "$rootfs" ]; then
    "${TAR[@]}" -C "$rootfs" -cf "$w/layer.tar" .
  else
    cp "$rootfs" "$w/layer.tar"
  fi
  read -r ld ls < <(blob "$w/layer.tar")
  printf '{"architecture":"amd64","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$config" "$ld" >"$w/config.json"
  read -r cd cs < <(blob "$w/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$cd" "$cs" "$ld" "$ls" >"$w/manifest.json"
  read -r md ms < <(blob "$w/manifest.json")
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"},"platform":{"architecture":"amd64","os":"linux"}}]}' \
    "$md" "$ms" "$name" "${name##*:}" >"$w/oci/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$w/oci/oci-layout"
  "${TAR[@]}" -C "$w/oci" -cf "$out.tmp" oci-layout index.json blobs
  mv "$out.tmp" "$out"
  rm -rf "$w"
}

# busybox_rootfs DIR [APPLET...]: busybox with the applets given (all when none).
busybox_rootfs() {
  local dir=$1; shift
  mkdir -p "$dir"/{bin,dev,etc,proc,sys,tmp,var/www,data}
  chmod 1777 "$dir/tmp"
  cp "$BUSYBOX" "$dir/bin/busybox"
  local applets=("$@")
  [ ${#applets[@]} -gt 0 ] || mapfile -t applets < <("$BUSYBOX" --list)
  for a in "${applets[@]}"; do
    [ "$a" = busybox ] || ln -sf busybox "$dir/bin/$a"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$dir/etc/passwd"
  echo 'root:x:0:' >"$dir/etc/group"
}

if [ ! -s "$OUT/pause.tar" ]; then
  r=$(mktemp -d)
  busybox_rootfs "$r/rootfs" sleep
  oci_archive registry.k8s.io/pause:local "$r/rootfs" '{"Entrypoint":["/bin/sleep","2147483647"]}' "$OUT/pause.tar"
  rm -rf "$r"
fi
if [ ! -s "$OUT/busybox.tar" ]; then
  r=$(mktemp -d)
  busybox_rootfs "$r/rootfs"
  oci_archive docker.io/library/busybox:local "$r/rootfs" '{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]}' "$OUT/busybox.tar"
  rm -rf "$r"
fi
# The Python sandbox: the rootfs is cached by suite and packages, the image
# rebuilt when the program changes.
PY_SUITE=bookworm
# python3-ipykernel and python3-jupyter-client: an IPython kernel driven over
# ZeroMQ on loopback, the kind of process E2B's code interpreter runs.
# debootstrap does not resolve virtual packages: python3-cffi-backend provides
# python3-zmq's python3-cffi-backend-api-*, libboost-regex1.74.0 gdb's
# libboost-regex1.74.0-icu72 (ipykernel -> debugpy -> pydevd -> gdb).
PY_PACKAGES=python3,python3-ipykernel,python3-jupyter-client,python3-cffi-backend,libboost-regex1.74.0
PY_CACHE=${TEST_IMAGES_CACHE:-/var/cache/checkpoint-apiserver}/rootfs-$PY_SUITE-minbase-$PY_PACKAGES.tar
PY_PROGRAM=$ROOT/test/images/python-sandbox.py
py_stamp=$OUT/.python-$( (cat "$PY_PROGRAM"; echo "$PY_PACKAGES") | sha256sum | cut -c1-16)
if [ ! -s "$OUT/python.tar" ] || [ ! -e "$py_stamp" ]; then
  if [ ! -s "$PY_CACHE" ]; then
    mirror=$(sed -n 's/^URIs: *\([^ ]*\/debian\/*\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
    if [ -z "$mirror" ]; then
      mirror=$(sed -n 's/^deb \(\[[^]]*\] \)\{0,1\}\([^ ]*\/debian\/*\) .*/\2/p' /etc/apt/sources.list 2>/dev/null | head -1)
    fi
    [ -n "$mirror" ] || { echo "test-images: no Debian mirror in the apt configuration" >&2; exit 1; }
    echo "test-images: debootstrap $PY_SUITE (minbase, $PY_PACKAGES) from $mirror" >&2
    r=$(mktemp -d)
    debootstrap --variant=minbase --include="$PY_PACKAGES" "$PY_SUITE" "$r/rootfs" "$mirror" >"$r/debootstrap.log" 2>&1 ||
      { tail -20 "$r/debootstrap.log" >&2; rm -rf "$r"; exit 1; }
    # What a sandbox never reads: package caches and lists, docs, locales.
    rm -rf "$r/rootfs"/var/cache/apt/* "$r/rootfs"/var/lib/apt/lists/* "$r/rootfs"/usr/share/doc/* \
      "$r/rootfs"/usr/share/locale/* "$r/rootfs"/usr/share/man/* "$r/rootfs"/var/log/*
    mkdir -p "$(dirname "$PY_CACHE")"
    "${TAR[@]}" -C "$r/rootfs" -cf "$PY_CACHE.tmp" .
    mv "$PY_CACHE.tmp" "$PY_CACHE"
    rm -rf "$r"
  fi
  r=$(mktemp -d)
  mkdir -p "$r/rootfs"
  tar -C "$r/rootfs" -xf "$PY_CACHE"
  install -m 0644 "$PY_PROGRAM" "$r/rootfs/sandbox.py"
  oci_archive docker.io/library/python-sandbox:local "$r/rootfs" \
    '{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","PYTHONUNBUFFERED=1"],"Cmd":["python3","/sandbox.py"]}' "$OUT/python.tar"
  rm -rf "$r" "$OUT"/.python-*
  touch "$py_stamp"
fi
echo "test-images: $(cd "$OUT" && ls ./*.tar | tr '\n' ' ')in $OUT"
