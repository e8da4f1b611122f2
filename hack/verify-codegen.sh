#!/usr/bin/env bash
# Fails when the generated code in this checkout differs from what
# hack/update-codegen.sh makes of its sources. Generates into a scratch copy,
# so the checkout is never touched.
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT

# The sources as git sees them (tracked and new, not ignored), nothing else.
(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"
done | tar --null -T - -cf -) | tar -C "$SCRATCH" -xf -

"$ROOT/hack/update-codegen.sh" "$SCRATCH" >/dev/null

status=0
for path in apis generated hack/api-rules-violations.list; do
  if ! diff -ruN "$ROOT/$path" "$SCRATCH/$path"; then
    status=1
  fi
done
if [ "$status" != 0 ]; then
  echo "Generated code is stale: run hack/update-codegen.sh and commit the result." >&2
  exit 1
fi
echo "Generated code is up to date."
