#!/usr/bin/env bash
# Builds the images the local cluster's Pods run, as OCI layout archives
# (what `ctr images import` and `hack/local-up.sh load-image` take), from
# Debian's packages on this machine: nothing is pulled.
#
#   hack/test-images.sh [OUT_DIR]     (default _output/images)
#
#   pause.tar    registry.k8s.io/pause:local      the pod sandbox (busybox sleep)
#   busybox.tar  docker.io/library/busybox:local  every busybox applet
#
# Each archive is rebuilt only when missing. Needs busybox-static
# (hack/install-test-deps.sh).
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${1:-$ROOT/_output/images}
BUSYBOX=${BUSYBOX:-/bin/busybox}
mkdir -p "$OUT"

TAR=(tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner)

# oci_archive NAME ROOTFS CONFIG_JSON OUT: a one-layer image of ROOTFS
# named NAME, whose image config is CONFIG_JSON ("config" part), into OUT.
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
  "${TAR[@]}" -C "$rootfs" -cf "$w/layer.tar" .
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
echo "test-images: $(cd "$OUT" && ls ./*.tar | tr '\n' ' ')in $OUT"
