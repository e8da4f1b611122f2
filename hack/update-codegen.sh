#!/usr/bin/env bash
# Regenerates everything under generated/ and every zz_generated.* and
# generated.{proto,pb.go} file, with k8s.io/code-generator v0.37.2 (pinned in
# hack/tools/go.mod) driven through its kube_codegen.sh.
#
# Usage: hack/update-codegen.sh [ROOT]   (ROOT defaults to this checkout;
# hack/verify-codegen.sh passes a scratch copy)
set -o errexit -o nounset -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "${1:-$HERE/..}" && pwd)
MODULE=$(cd "$ROOT" && go list -m)
BOILERPLATE=$ROOT/hack/boilerplate.go.txt
TOOLS_MOD=$ROOT/hack/tools

# Generators are built once per hack/tools/go.sum into _output/tools.
export GOBIN=$HERE/../_output/tools
mkdir -p "$GOBIN"
GOBIN=$(cd "$GOBIN" && pwd)
export PATH=$GOBIN:$PATH

command -v protoc >/dev/null || { echo "protoc not found: run hack/install-codegen-deps.sh" >&2; exit 1; }

(cd "$TOOLS_MOD" && go mod download k8s.io/code-generator github.com/gogo/protobuf)
CODEGEN_PKG=$(cd "$TOOLS_MOD" && go list -m -f '{{.Dir}}' k8s.io/code-generator)
GOGO_DIR=$(cd "$TOOLS_MOD" && go list -m -f '{{.Dir}}' github.com/gogo/protobuf)
APIMACHINERY_DIR=$(cd "$ROOT" && go list -m -f '{{.Dir}}' k8s.io/apimachinery)

stamp=$GOBIN/.tools-$(sha256sum "$TOOLS_MOD/go.sum" | cut -c1-16)
if [ ! -e "$stamp" ]; then
  (cd "$TOOLS_MOD" && go build -o "$GOBIN/" \
    k8s.io/code-generator/cmd/go-to-protobuf \
    k8s.io/code-generator/cmd/go-to-protobuf/protoc-gen-gogo \
    golang.org/x/tools/cmd/goimports)
  touch "$stamp"
fi

# shellcheck source=/dev/null
source "$CODEGEN_PKG/kube_codegen.sh"

cd "$ROOT"

kube::codegen::gen_helpers \
  --boilerplate "$BOILERPLATE" \
  "$ROOT/apis"

kube::codegen::gen_openapi \
  --output-dir "$ROOT/generated/openapi" \
  --output-pkg "$MODULE/generated/openapi" \
  --report-filename "$ROOT/hack/api-rules-violations.list" \
  --update-report \
  --output-model-name-file zz_generated.model_name.go \
  --boilerplate "$BOILERPLATE" \
  "$ROOT/apis"

kube::codegen::gen_client \
  --with-watch \
  --with-applyconfig \
  --prefers-protobuf \
  --output-dir "$ROOT/generated" \
  --output-pkg "$MODULE/generated" \
  --boilerplate "$BOILERPLATE" \
  "$ROOT/apis"

# go-to-protobuf wants a GOPATH-shaped tree: it writes generated.proto into
# <output-dir>/<import path> and runs protoc there, so that path must be the
# package itself, and the protos it imports must sit at their import paths.
PROTO_ROOT=$(mktemp -d)
trap 'rm -rf "$PROTO_ROOT"' EXIT
mkdir -p "$PROTO_ROOT/$(dirname "$MODULE")" "$PROTO_ROOT/k8s.io" "$PROTO_ROOT/github.com/gogo"
ln -s "$ROOT" "$PROTO_ROOT/$MODULE"
ln -s "$APIMACHINERY_DIR" "$PROTO_ROOT/k8s.io/apimachinery"
ln -s "$GOGO_DIR" "$PROTO_ROOT/github.com/gogo/protobuf"

# Every apimachinery package is listed with a leading "-": referenced, never
# regenerated. Without it go-to-protobuf rewrites apimachinery's own files in
# the module cache.
APIMACHINERY_PKGS=-k8s.io/apimachinery/pkg/util/intstr,-k8s.io/apimachinery/pkg/api/resource,-k8s.io/apimachinery/pkg/runtime/schema,-k8s.io/apimachinery/pkg/runtime,-k8s.io/apimachinery/pkg/apis/meta/v1

go-to-protobuf \
  --go-header-file="$BOILERPLATE" \
  --packages="$MODULE/apis/agents/v1alpha1" \
  --apimachinery-packages="$APIMACHINERY_PKGS" \
  --output-dir="$PROTO_ROOT" \
  --proto-import="$GOGO_DIR/protobuf" \
  --drop-embedded-fields=k8s.io/apimachinery/pkg/apis/meta/v1.TypeMeta
