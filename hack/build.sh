#!/usr/bin/env bash
# Builds this project's binaries the one way make build, make up and make
# image all use: static (CGO_ENABLED=0, so they run in an image with no
# libc), -trimpath, the version stamped by hack/version.sh. One way means
# Go's build cache compiles each package once for all three (on a cold
# machine the images' build used to compile everything a second time).
#
#   hack/build.sh [-s] OUTDIR CMD...   ./cmd/CMD into OUTDIR/CMD; -s strips the symbols (the images)
set -o errexit -o nounset -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
strip=
if [ "${1:-}" = -s ]; then
  strip="-s -w "
  shift
fi
out=${1:?usage: $0 [-s] OUTDIR CMD...}
shift
cd "$ROOT"
ldflags=$(hack/version.sh)
for cmd in "$@"; do
  CGO_ENABLED=0 go build -trimpath -ldflags "$strip$ldflags" -o "$out/$cmd" "./cmd/$cmd"
done
