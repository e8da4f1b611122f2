#!/usr/bin/env bash
# Prints the -ldflags that stamp checkpoint-apiserver with its version, as
# /version and `kubectl version` report it: v0.1.0-alpha.<commits>+<commit>
# (VERSION overrides), the commit, whether the tree was clean, and the
# commit's date (so a rebuild of one commit is the same binary).
set -o errexit -o nounset -o pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
count=$(git rev-list --count HEAD 2>/dev/null || echo 0)
state=clean
git diff --quiet HEAD -- 2>/dev/null || state=dirty
version=${VERSION:-v0.1.0-alpha.$count+${commit:0:12}}
[ "$state" = dirty ] && [ -z "${VERSION:-}" ] && version=$version.dirty
date=$(TZ=UTC git show -s --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ HEAD 2>/dev/null || echo 1970-01-01T00:00:00Z)
pkg=k8s.io/component-base/version
echo "-X $pkg.gitVersion=$version -X $pkg.gitCommit=$commit -X $pkg.gitTreeState=$state -X $pkg.buildDate=$date"
