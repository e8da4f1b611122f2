#!/usr/bin/env bash
# Runs every fuzz target for FUZZ_TIME (default 10s) each. Their committed
# corpora (testdata/fuzz/<Target>/) also run as seeds in every `go test`.
#
# FUZZ_SAVE=1 copies what the fuzzer found interesting (kept in the Go build
# cache) into testdata/fuzz/<Target>/, to commit: the next run starts there.
set -o errexit -o nounset -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
FUZZ_TIME=${FUZZ_TIME:-10s}
MODULE=$(go list -m)
CACHE=$(go env GOCACHE)/fuzz

# package directory, target
targets=(
  "apis/agents FuzzParseTTL"
  "apis/agents/install FuzzDecodeCheckpoint"
  "e2b FuzzPageToken"
  "e2b FuzzDecodeBody"
  "e2b FuzzAPIKey"
)
for t in "${targets[@]}"; do
  read -r pkg name <<<"$t"
  echo "fuzz: $name in ./$pkg for $FUZZ_TIME"
  go test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZ_TIME" "./$pkg/"
  if [ "${FUZZ_SAVE:-}" = 1 ]; then
    mkdir -p "$pkg/testdata/fuzz/$name"
    found=$(find "$CACHE/$MODULE/$pkg/$name" -type f 2>/dev/null | head -200 || true)
    [ -n "$found" ] && cp $found "$pkg/testdata/fuzz/$name/"
    # keep the corpus small: the 60 smallest inputs
    ls -S "$pkg/testdata/fuzz/$name" | head -n -60 | sed "s#^#$pkg/testdata/fuzz/$name/#" | xargs -r rm -f
    echo "fuzz: $(ls "$pkg/testdata/fuzz/$name" | wc -l) corpus entries in $pkg/testdata/fuzz/$name"
  fi
done
