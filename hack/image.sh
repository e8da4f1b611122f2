#!/usr/bin/env bash
# make image: the OCI images of checkpoint-apiserver (runs as 65532, no
# host access) and checkpoint-node-agent (runs as root: containerd's socket
# is root's; runc runs CRIU, not the agent), from static binaries
# (CGO_ENABLED=0, the version stamped by hack/version.sh), with no base
# image, by hack/tools/image (go-containerregistry). Writes
# _output/images/oci (an OCI layout with both) and
# _output/images/<name>.tar (archives for ctr and skopeo).
#
# LOAD=1  also imports them into every node of the running local-up cluster
# PUSH=1  also pushes them to local-up's checkpoint registry (TLS, its credentials)
set -o errexit -o nounset -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/_output/bin
OUT=${IMAGE_OUT:-$ROOT/_output/images}
cd "$ROOT"
ldflags=$(hack/version.sh)
version=$(sed -n 's/.*gitVersion=\([^ ]*\).*/\1/p' <<<"$ldflags")
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
created=$(sed -n 's/.*buildDate=\([^ ]*\).*/\1/p' <<<"$ldflags")
mkdir -p "$BIN/static" "$OUT"
hack/build.sh -s "$BIN/static" checkpoint-apiserver checkpoint-node-agent
(cd hack/tools/image && go build -o "$BIN/mkimage" .)
"$BIN/mkimage" -out "$OUT" -version "$version" -revision "$revision" -created "$created" \
  checkpoint-apiserver="$BIN/static/checkpoint-apiserver:65532:65532" \
  checkpoint-node-agent="$BIN/static/checkpoint-node-agent:0:0" | tee "$OUT/images.txt"
if [ "${LOAD:-}" = 1 ]; then
  for f in "$OUT/checkpoint-apiserver.tar" "$OUT/checkpoint-node-agent.tar"; do
    "$ROOT/hack/local-up.sh" load-image "$f"
  done
fi
if [ "${PUSH:-}" = 1 ]; then
  W=${LOCAL_UP_DIR:-$ROOT/_output/local-up}
  host=198.18.0.1:${REGISTRY_PORT:-5443}
  while read -r ref _ archive; do
    skopeo copy -q --dest-cert-dir "$W/certs.d/$host" --dest-creds "checkpoints:$(cat "$W/registry/password")" \
      "docker-archive:$archive" "docker://$host/${ref#*/}"
    echo "pushed $host/${ref#*/}"
  done <"$OUT/images.txt"
fi
