#!/usr/bin/env bash
# The whole system on this machine: etcd, kube-apiserver with the aggregation
# layer (front-proxy certificates, requestheader flags), kube-controller-manager
# (namespace deletion, garbage collection), and
# checkpoint-apiserver behind it with delegated authentication and
# authorization, registered by an APIService that carries a caBundle.
#
#   hack/local-up.sh up             start everything, wait for the APIService, print the KUBECONFIG line
#   hack/local-up.sh down           stop everything it started
#   hack/local-up.sh stop-server    stop checkpoint-apiserver only
#   hack/local-up.sh start-server   start checkpoint-apiserver again (same etcd, same data)
#
# CP_INSTANCE=-2 CP_PORT=<port> with start-server/stop-server runs another
# replica beside the first (same etcd, same kube-apiserver), not behind the APIService.
#
# LOCAL_UP_DIR (default _output/local-up) holds certificates, data, logs and pids.
# CONTAINERD_ADDRESS, when set, is the containerd the server captures through.
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/_output/bin
WORK=${LOCAL_UP_DIR:-$ROOT/_output/local-up}
ETCD_PORT=${ETCD_PORT:-23790}
KAS_PORT=${KAS_PORT:-26443}
CP_PORT=${CP_PORT:-28443}
KCM_PORT=${KCM_PORT:-20257}
CP_NAMESPACE=checkpoint-system
CP_SERVICE=checkpoint-apiserver
CP_NAME=checkpoint-apiserver${CP_INSTANCE:-}
PKI=$WORK/pki
export KUBECONFIG=$WORK/admin.kubeconfig
export KUBECACHEDIR=$WORK/kubecache

log() { echo "local-up: $*" >&2; }

start() { # name command...
  local name=$1; shift
  nohup "$@" >"$WORK/$name.log" 2>&1 &
  echo $! >"$WORK/$name.pid"
}

stop() { # name
  local pidfile=$WORK/$1.pid
  [ -f "$pidfile" ] || return 0
  local pid; pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

wait_for() { # what seconds command...
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      log "$what not ready after ${secs}s"
      return 1
    fi
    sleep 0.2
  done
}

certs() {
  [ -f "$PKI/done" ] && return
  mkdir -p "$PKI"
  local o="openssl"
  $o req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 365 -subj /CN=local-up-ca 2>/dev/null
  $o req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/front-proxy-ca.key" -out "$PKI/front-proxy-ca.crt" -days 365 -subj /CN=front-proxy-ca 2>/dev/null
  sign() { # name subject ca extensions
    $o req -newkey rsa:2048 -nodes -keyout "$PKI/$1.key" -out "$PKI/$1.csr" -subj "$2" 2>/dev/null
    printf '%b\n' "$4" >"$PKI/$1.ext"
    $o x509 -req -in "$PKI/$1.csr" -CA "$PKI/$3.crt" -CAkey "$PKI/$3.key" -CAcreateserial -days 365 \
      -out "$PKI/$1.crt" -extfile "$PKI/$1.ext" 2>/dev/null
  }
  sign kube-apiserver /CN=kube-apiserver ca "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"
  sign admin "/O=system:masters/CN=local-up-admin" ca "extendedKeyUsage=clientAuth"
  sign front-proxy-client /CN=front-proxy-client front-proxy-ca "extendedKeyUsage=clientAuth"
  sign checkpoint-apiserver /CN=$CP_SERVICE.$CP_NAMESPACE.svc ca \
    "subjectAltName=DNS:$CP_SERVICE.$CP_NAMESPACE.svc,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"
  $o genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  $o rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  cat >"$KUBECONFIG" <<KC
apiVersion: v1
kind: Config
clusters: [{name: local-up, cluster: {server: "https://127.0.0.1:$KAS_PORT", certificate-authority: $PKI/ca.crt}}]
users: [{name: admin, user: {client-certificate: $PKI/admin.crt, client-key: $PKI/admin.key}}]
contexts: [{name: local-up, context: {cluster: local-up, user: admin}}]
current-context: local-up
KC
  touch "$PKI/done"
}

start_server() {
  local args=(
    --etcd-servers="http://127.0.0.1:$ETCD_PORT"
    --bind-address=127.0.0.1 --secure-port="$CP_PORT"
    --tls-cert-file="$PKI/checkpoint-apiserver.crt" --tls-private-key-file="$PKI/checkpoint-apiserver.key"
    --kubeconfig="$KUBECONFIG" --authentication-kubeconfig="$KUBECONFIG" --authorization-kubeconfig="$KUBECONFIG"
    --data-dir="$WORK/$CP_NAME" --resolver=labels --replica-name="$CP_NAME"
  )
  if [ -n "${CONTAINERD_ADDRESS:-}" ]; then
    args+=(--containerd-address="$CONTAINERD_ADDRESS")
  fi
  start "$CP_NAME" "$BIN/checkpoint-apiserver" "${args[@]}" ${CHECKPOINT_APISERVER_ARGS:-}
  wait_for "$CP_NAME" 90 curl -sf --cacert "$PKI/ca.crt" "https://127.0.0.1:$CP_PORT/readyz"
}

wait_available() {
  kubectl wait --for=condition=Available apiservice/v1alpha1.agents.kruise.io --timeout=90s >/dev/null
}

up() {
  mkdir -p "$WORK"
  "$ROOT/hack/build-kube-tools.sh"
  (cd "$ROOT" && go build -o "$BIN/checkpoint-apiserver" ./cmd/checkpoint-apiserver)
  command -v kubectl >/dev/null || { log "kubectl not found"; exit 1; }
  certs

  start etcd "$BIN/etcd" --data-dir "$WORK/etcd" --name local-up \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "local-up=http://127.0.0.1:$((ETCD_PORT + 1))" --log-level warn
  wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"
  log "etcd ready"

  start kube-apiserver "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --secure-port="$KAS_PORT" --advertise-address=127.0.0.1 --endpoint-reconciler-type=none \
    --tls-cert-file="$PKI/kube-apiserver.crt" --tls-private-key-file="$PKI/kube-apiserver.key" --client-ca-file="$PKI/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" --service-cluster-ip-range=10.0.0.0/24 \
    --authorization-mode=RBAC \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key"
  wait_for kube-apiserver 90 kubectl get --raw /readyz
  log "kube-apiserver ready"

  # Its namespace controller finishes namespace deletion (with our
  # Checkpoints inside), its garbage collector follows owner references, and
  # its aggregation controller folds checkpoint-view/edit/admin into view/edit/admin.
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG" \
    --authentication-kubeconfig="$KUBECONFIG" --authorization-kubeconfig="$KUBECONFIG" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --leader-elect=false \
    --controllers=namespace-controller,garbage-collector-controller,clusterrole-aggregation-controller \
    --service-account-private-key-file="$PKI/sa.key" --use-service-account-credentials=false

  start_server
  log "checkpoint-apiserver ready"

  kubectl apply -f "$ROOT/artifacts/deploy/namespace.yaml" -f "$ROOT/artifacts/deploy/rbac-users.yaml" >/dev/null
  kubectl apply -f - >/dev/null <<YAML
# The server runs on this machine: the APIService reaches it through an
# ExternalName Service pointing at localhost.
apiVersion: v1
kind: Service
metadata: {name: $CP_SERVICE, namespace: $CP_NAMESPACE}
spec: {type: ExternalName, externalName: localhost, ports: [{port: $CP_PORT}]}
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1alpha1.agents.kruise.io}
spec:
  group: agents.kruise.io
  version: v1alpha1
  groupPriorityMinimum: 1000
  versionPriority: 15
  caBundle: $(base64 -w0 "$PKI/ca.crt")
  service: {name: $CP_SERVICE, namespace: $CP_NAMESPACE, port: $CP_PORT}
YAML
  wait_available
  log "APIService v1alpha1.agents.kruise.io is Available"
  echo "export KUBECONFIG=$KUBECONFIG"
}

down() {
  for pidfile in "$WORK"/checkpoint-apiserver*.pid; do
    [ -e "$pidfile" ] && stop "$(basename "$pidfile" .pid)"
  done
  stop kube-controller-manager
  stop kube-apiserver
  stop etcd
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  stop-server) stop "$CP_NAME" ;;
  start-server) start_server; wait_available ;;
  *) echo "usage: $0 [up|down|stop-server|start-server]" >&2; exit 2 ;;
esac
