#!/usr/bin/env bash
# Runs every fuzz target for a budget of executions sized to about 10 s of
# this machine each (FUZZ_SCALE multiplies them; FUZZ_TIME=<duration>
# replaces them by a time). Their committed corpora (testdata/fuzz/<Target>/)
# also run as seeds in every `go test`.
#
# Why counts, not a time: Go 1.26's coordinator can end a timed run with
# "context deadline exceeded" while a worker is still executing
# (golang/go#75804, fixed in Go 1.27), a failure with no finding. A count has
# no deadline to race. A run that fails all the same without writing a
# reproducer under testdata/fuzz/<Target>/ is run once more; a run that wrote
# one fails.
#
# FUZZ_SAVE=1 copies what the fuzzer found interesting (kept in the Go build
# cache) into testdata/fuzz/<Target>/, to commit: the next run starts there.
set -o errexit -o nounset -o pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
FUZZ_TIME=${FUZZ_TIME:-}
FUZZ_SCALE=${FUZZ_SCALE:-1}
MODULE=$(go list -m)
CACHE=$(go env GOCACHE)/fuzz

# package directory, target, executions (about 10 s here with 2 workers)
targets=(
  "apis/agents FuzzParseTTL 100000"
  "apis/agents/install FuzzDecodeCheckpoint 30000"
  "e2b FuzzPageToken 20000"
  "e2b FuzzDecodeBody 15000"
  "e2b FuzzAPIKey 12000"
)

# reproducers lists what the fuzzer wrote as failing inputs of a target.
reproducers() { find "$1/testdata/fuzz/$2" -type f -newer "$3" 2>/dev/null; }

for t in "${targets[@]}"; do
  read -r pkg name execs <<<"$t"
  budget=${FUZZ_TIME:-$((execs * FUZZ_SCALE))x}
  echo "fuzz: $name in ./$pkg for $budget"
  for attempt in 1 2; do
    mark=$(mktemp)
    if go test -run '^$' -fuzz "^$name\$" -fuzztime "$budget" "./$pkg/"; then
      rm -f "$mark"
      break
    fi
    found=$(reproducers "$pkg" "$name" "$mark")
    rm -f "$mark"
    if [ -n "$found" ]; then
      echo "fuzz: $name failed on an input, written to: $found"
      exit 1
    fi
    if [ "$attempt" = 2 ]; then
      echo "fuzz: $name failed twice without writing a failing input"
      exit 1
    fi
    echo "fuzz: $name failed without a finding (the coordinator's end-of-run race, golang/go#75804): once more"
  done
  if [ "${FUZZ_SAVE:-}" = 1 ]; then
    mkdir -p "$pkg/testdata/fuzz/$name"
    found=$(find "$CACHE/$MODULE/$pkg/$name" -type f 2>/dev/null | head -200 || true)
    [ -n "$found" ] && cp $found "$pkg/testdata/fuzz/$name/"
    # keep the corpus small: the 60 smallest inputs
    ls -S "$pkg/testdata/fuzz/$name" | head -n -60 | sed "s#^#$pkg/testdata/fuzz/$name/#" | xargs -r rm -f
    echo "fuzz: $(ls "$pkg/testdata/fuzz/$name" | wc -l) corpus entries in $pkg/testdata/fuzz/$name"
  fi
done
