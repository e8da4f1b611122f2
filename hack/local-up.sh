#!/usr/bin/env bash
# The whole system on this machine: etcd, kube-apiserver with the aggregation
# layer (front-proxy certificates, requestheader flags), kube-controller-manager
# (namespaces, garbage collection, service accounts, workloads), kube-scheduler,
# LOCAL_UP_NODES (1) real nodes, each a containerd 2.4 with CRI, CRIU and the restore runtime, and a
# kubelet, and checkpoint-apiserver behind an APIService that carries a
# caBundle, with delegated authentication and authorization, capturing
# through the first node's containerd.
#
#   hack/local-up.sh up               start everything, wait for the APIService and the nodes, print the KUBECONFIG line
#   hack/local-up.sh down             stop everything it started and clean the host (processes, mounts,
#                                     cgroups, network namespaces, links, sysctls, the kubelet's fixed paths)
#   hack/local-up.sh stop-server      stop checkpoint-apiserver only
#   hack/local-up.sh start-server     start checkpoint-apiserver again (same etcd, same data)
#   hack/local-up.sh load-image FILE  import an OCI image archive into every node's containerd
#   hack/local-up.sh stop-agent I     stop node I's agent; start-agent I starts it again
#   hack/local-up.sh stop-registry    stop the checkpoint registry; start-registry starts it again
#
# Nodes get addresses no other host has: a veth pair holds 198.18.0.1
# (reserved for tests) and 198.18.0.1<i> for node i; each node's Pods are on
# a bridge of its own (10.88.<i>.0/24). No traffic leaves the machine.
#
# CP_INSTANCE=-2 CP_PORT=<port> with start-server/stop-server runs another
# replica beside the first (same etcd, same kube-apiserver), not behind the APIService.
#
# LOCAL_UP_DIR (default _output/local-up) holds certificates, data, logs and pids.
# CONTAINERD_ADDRESS, when set, is the containerd the server captures through.
# CHECKPOINT_APISERVER_ARGS and AGENT_ARGS are extra flags of the server and the agents.
# E2B_API_KEYS_FILE (DEPLOY=pods) is the E2B front's keys file; else one key is made.
set -o errexit -o nounset -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/_output/bin
WORK=${LOCAL_UP_DIR:-$ROOT/_output/local-up}
ETCD_PORT=${ETCD_PORT:-23790}
KAS_PORT=${KAS_PORT:-26443}
CP_PORT=${CP_PORT:-28443}
# The controller manager and the scheduler serve nothing anyone here reads
# (port 0: no listener, so no port of theirs can collide with another
# cluster's); KCM_PORT and KSCHED_PORT give them one.
KCM_PORT=${KCM_PORT:-0}
CP_NAMESPACE=checkpoint-system
CP_SERVICE=checkpoint-apiserver
CP_NAME=checkpoint-apiserver${CP_INSTANCE:-}
# MODE=crd: OpenKruise Agents' own CRDs (third_party/openkruise-agents) are
# installed and the server captures their Checkpoint custom resources
# (--mode=crd), with no APIService of agents.kruise.io. Each mode keeps its
# cluster's data (etcd) apart, so switching MODE between down and up works.
MODE=${MODE:-aggregated}
KSCHED_PORT=${KSCHED_PORT:-0}
IMAGES=$ROOT/_output/images
NODES=${LOCAL_UP_NODES:-1}
# What up started is what down stops.
if [ -z "${LOCAL_UP_NODES:-}" ] && [ -f "$WORK/topology" ]; then read -r NODES AGENTS DEPLOY <"$WORK/topology"; fi
# AGENTS=1 (the default with more than one node): a node agent on every
# node captures its Pods, and checkpoints travel through a TLS registry
# with basic auth (Debian's docker-registry) at $HOST_IP:$REGISTRY_PORT.
AGENTS=${AGENTS:-$([ "$NODES" -gt 1 ] && echo 1 || echo 0)}
AGENT_PORT=${AGENT_PORT:-10370}
# DEPLOY=pods: the server (two replicas, one per node) and the agents run as
# Pods from the images make image builds, applied from artifacts/deploy with
# a local overlay (host network: no kube-proxy here; the aggregator reaches
# the Service's endpoints). Otherwise they run as host processes.
DEPLOY=${DEPLOY:-processes}
if [ "$DEPLOY" = pods ]; then
  AGENTS=1
fi
REGISTRY_PORT=${REGISTRY_PORT:-5443}
PKI=$WORK/pki
# Sockets need short paths (108 bytes with a shim's 64-hex name).
RUNDIR=/run/cpup-$(echo "$WORK" | sha256sum | cut -c1-8)
# CRIU's memory dumps on the nodes' agents: in memory (a tmpfs), this cluster's own.
DUMPDIR=/dev/shm/$(basename "$RUNDIR")-dumps
# Checkpoints unpacked for the restore runtime go here first (a tmpfs), one
# directory per node, while they fit; then to disk under $WORK/agent-data.
MEMDIR=/dev/shm/$(basename "$RUNDIR")-restore
NET_LINK=cpup0
HOST_IP=198.18.0.1
SYSCTLS="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes"
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

# sign NAME SUBJECT CA EXTENSIONS: a key and a certificate signed by CA.
sign() { # name subject ca extensions
  openssl req -newkey rsa:2048 -nodes -keyout "$PKI/$1.key" -out "$PKI/$1.csr" -subj "$2" 2>/dev/null
  printf '%b\n' "$4" >"$PKI/$1.ext"
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/$3.crt" -CAkey "$PKI/$3.key" -CAcreateserial -days 365 \
    -out "$PKI/$1.crt" -extfile "$PKI/$1.ext" 2>/dev/null
}

certs() {
  [ -f "$PKI/done" ] && return
  mkdir -p "$PKI"
  local o="openssl"
  $o req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 365 -subj /CN=local-up-ca 2>/dev/null
  $o req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/front-proxy-ca.key" -out "$PKI/front-proxy-ca.crt" -days 365 -subj /CN=front-proxy-ca 2>/dev/null
  sign kube-apiserver /CN=kube-apiserver ca "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"
  sign admin "/O=system:masters/CN=local-up-admin" ca "extendedKeyUsage=clientAuth"
  sign front-proxy-client /CN=front-proxy-client front-proxy-ca "extendedKeyUsage=clientAuth"
  sign checkpoint-apiserver /CN=$CP_SERVICE.$CP_NAMESPACE.svc ca \
    "subjectAltName=DNS:$CP_SERVICE.$CP_NAMESPACE.svc,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth"
  sign apiserver-kubelet-client /CN=kube-apiserver-kubelet-client ca "extendedKeyUsage=clientAuth"
  # The server's identity towards the node agents, and the registry's serving certificate.
  sign checkpoint-apiserver-client /CN=checkpoint-apiserver ca "extendedKeyUsage=clientAuth"
  sign registry /CN=checkpoint-registry ca "subjectAltName=IP:$HOST_IP\nextendedKeyUsage=serverAuth"
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

node_name() { echo "node-$1"; }
node_ip() { echo "198.18.0.$((10 + $1))"; }
node_dir() { echo "$WORK/nodes/$(node_name "$1")"; }
node_sock() { echo "$RUNDIR/$(node_name "$1")/containerd.sock"; }
ctr_node() { local i=$1; shift; "$BIN/ctr" --address "$(node_sock "$i")" -n k8s.io "$@"; }
# The restore runtime of node I: where it is installed (its shim and its
# configuration), where the node's checkpoints are unpacked for it, and the
# socket of the agent (or, with no agents, the server) that unpacks them.
node_runtime() { echo "$WORK/node-runtime/$(node_name "$1")"; }
node_restore_images() { echo "$WORK/agent-data/$(node_name "$1")/restore-images"; }
node_restore_mem() { echo "$MEMDIR/$(node_name "$1")"; }
node_restore_sock() { echo "$RUNDIR/$(node_name "$1")/restore.sock"; }
# install_runtime I: what the agent DaemonSet's init container does on a
# node, for nodes whose agents are host processes (or absent).
install_runtime() {
  local i=$1
  "$BIN/checkpoint-node-agent" install-runtime --bin-dir="$(node_runtime "$i")/bin" \
    --config="$(node_runtime "$i")/restore-runtime.json" --images-dir="$(node_restore_images "$i")" \
    --mem-images-dir="$(node_restore_mem "$i")" --agent-socket="$(node_restore_sock "$i")" ${RUNTIME_INSTALL_ARGS:-} >/dev/null
}

# node_certs I: the kubelet's client identity (system:node:<name>, which the
# Node authorizer limits to its own Pods) and its serving certificate.
node_certs() {
  local i=$1 n; n=$(node_name "$1")
  [ -f "$PKI/kubelet-$n.done" ] && return
  sign "kubelet-$n" "/O=system:nodes/CN=system:node:$n" ca "extendedKeyUsage=clientAuth"
  sign "kubelet-serving-$n" "/CN=$n" ca "subjectAltName=IP:$(node_ip "$i"),DNS:$n\nextendedKeyUsage=serverAuth"
  # The node agent: its serving certificate, and its own identity (the
  # checkpoint:node-agents group may read Pods and review tokens, nothing more).
  sign "agent-serving-$n" "/CN=checkpoint-node-agent-$n" ca "subjectAltName=IP:$(node_ip "$i"),DNS:$n\nextendedKeyUsage=serverAuth"
  sign "agent-$n" "/O=checkpoint:node-agents/CN=checkpoint:node-agent:$n" ca "extendedKeyUsage=clientAuth"
  cat >"$WORK/agent-$n.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: local-up, cluster: {server: "https://127.0.0.1:$KAS_PORT", certificate-authority: $PKI/ca.crt}}]
users: [{name: agent, user: {client-certificate: $PKI/agent-$n.crt, client-key: $PKI/agent-$n.key}}]
contexts: [{name: local-up, context: {cluster: local-up, user: agent}}]
current-context: local-up
KC
  cat >"$WORK/kubelet-$n.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: local-up, cluster: {server: "https://127.0.0.1:$KAS_PORT", certificate-authority: $PKI/ca.crt}}]
users: [{name: $n, user: {client-certificate: $PKI/kubelet-$n.crt, client-key: $PKI/kubelet-$n.key}}]
contexts: [{name: local-up, context: {cluster: local-up, user: $n}}]
current-context: local-up
KC
  touch "$PKI/kubelet-$n.done"
}

net_up() {
  # No dummy interfaces on this kernel: a veth pair, both ends up, holds the addresses.
  ip link show "$NET_LINK" >/dev/null 2>&1 || ip link add "$NET_LINK" type veth peer name "${NET_LINK}p"
  ip link set "${NET_LINK}p" up
  ip link set "$NET_LINK" up
  local a
  for a in "$HOST_IP" $(for i in $(seq 1 "$NODES"); do node_ip "$i"; done); do
    ip addr show dev "$NET_LINK" | grep -q "inet $a/" || ip addr add "$a/32" dev "$NET_LINK"
  done
}

cgroup_dirs() { for h in /sys/fs/cgroup/*/; do [ -f "$h/cgroup.procs" ] && echo "${h%/}"; done; }

# node_config I: containerd 2.4 (CRI with CRIU, runc, and the restore
# runtime as the handler "checkpoint", its own sockets, state, shim socket
# dir and runc root), the CNI network (a bridge of its own) and the kubelet.
node_config() {
  local i=$1 n d r
  n=$(node_name "$i"); d=$(node_dir "$i"); r=$RUNDIR/$n
  mkdir -p "$d/cni" "$d/kubelet" "$d/pod-logs" "$r/s"
  cat >"$d/containerd.toml" <<TOML
# version 3: with version 4 the [grpc] address below is ignored.
version = 3
root = "$d/root"
state = "$r/state"
temp = "$d/tmp"

[grpc]
  address = "$r/containerd.sock"
[ttrpc]
  address = "$r/containerd.sock.ttrpc"

# NRI would take the machine-wide /var/run/nri/nri.sock.
[plugins."io.containerd.nri.v1.nri"]
  disable = true
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/opt"
[plugins."io.containerd.shim.v1.manager"]
  env = ["PATH=$BIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "CHECKPOINT_RESTORE_RUNTIME_CONFIG=$(node_runtime "$i")/restore-runtime.json"]
  socket_dir = "$r/s"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "registry.k8s.io/pause:local"
  # The checkpoint registry's CA (hosts.toml); Pods pull with their imagePullSecrets.
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "$WORK/certs.d"

[plugins."io.containerd.cri.v1.runtime"]
  enable_criu = true
  netns_mounts_under_state_dir = true
  # root here lacks CAP_SYS_RESOURCE: a sandbox's oom_score_adj of -998 would fail runc.
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      runtime_path = "$BIN/containerd-shim-runc-v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$r/runc"
        SystemdCgroup = false
    # The restore runtime (RuntimeClass checkpoint): runc's shim, which
    # restores a Pod marked agents.kruise.io/restore-from, the one Pod
    # annotation it is passed. Installed by the node agent.
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.checkpoint]
      runtime_type = "io.containerd.runc.v2"
      runtime_path = "$(node_runtime "$i")/bin/containerd-shim-checkpoint-v1"
      pod_annotations = ["agents.kruise.io/restore-from"]
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.checkpoint.options]
        BinaryName = "$(command -v runc)"
        Root = "$r/runc"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$d/cni"
    max_conf_num = 1

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
TOML
  cat >"$d/cni/10-$n.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "cpup-$n",
  "plugins": [
    {"type": "bridge", "bridge": "cpupbr$i", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.$i.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": "$d/cni-ipam"}},
    {"type": "loopback"}
  ]
}
JSON
  cat >"$d/kubelet-config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# No systemd, cgroup v1 (hybrid) on these machines.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
cgroupRoot: /cpup-$n
cgroupsPerQOS: true
containerRuntimeEndpoint: unix://$r/containerd.sock
imageServiceEndpoint: unix://$r/containerd.sock
address: $(node_ip "$i")
port: $((20250 + 10 * i))
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $((20248 + 10 * i))
tlsCertFile: $PKI/kubelet-serving-$n.crt
tlsPrivateKeyFile: $PKI/kubelet-serving-$n.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
podLogsDir: $d/pod-logs
staticPodPath: ""
enforceNodeAllocatable: []
localStorageCapacityIsolation: false
evictionHard: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Images are imported, never pulled: don't ask for pull credentials again.
imagePullCredentialsVerificationPolicy: NeverVerify
resolvConf: /etc/resolv.conf
serializeImagePulls: false
maxPods: 30
YAML
}

start_node() {
  local i=$1 n d
  n=$(node_name "$i"); d=$(node_dir "$i")
  node_certs "$i"
  node_config "$i"
  # containerd must serve its own socket, never the machine's.
  "$BIN/containerd" --config "$d/containerd.toml" config dump 2>/dev/null | grep -q "address = '$(node_sock "$i")'" ||
    { log "$n: containerd.toml does not set its own gRPC address"; return 1; }
  # criu on the shim's PATH: containerd -> shim -> runc -> criu.
  start "containerd-$n" env PATH="/usr/local/sbin:$BIN:$PATH" "$BIN/containerd" --config "$d/containerd.toml"
  wait_for "containerd of $n" 60 ctr_node "$i" version
  local img
  for img in pause busybox python; do
    ctr_node "$i" images import "$IMAGES/$img.tar" >/dev/null
  done
  # The kubelet's cgroupRoot must exist in every hierarchy (cpusets filled in).
  local h
  for h in $(cgroup_dirs); do
    mkdir -p "$h/cpup-$n"
    if [ -f "$h/cpuset.cpus" ]; then
      cat "$h/cpuset.cpus" >"$h/cpup-$n/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h/cpup-$n/cpuset.mems"
    fi
  done
  # Without iptables on its PATH the kubelet adds no KUBE-* chains to the host.
  start "kubelet-$n" env PATH="$BIN:/usr/local/bin:/usr/bin:/bin" "$BIN/kubelet" --config="$d/kubelet-config.yaml" \
    --kubeconfig="$WORK/kubelet-$n.kubeconfig" --hostname-override="$n" --node-ip="$(node_ip "$i")" \
    --root-dir="$d/kubelet" --cert-dir="$d/kubelet/pki" --v=2
}

# registry_up: the checkpoint registry (Distribution 2.8, Debian's
# docker-registry) on $HOST_IP, TLS from the local CA, one htpasswd user;
# deleting manifests is allowed (a Checkpoint's delete removes its image).
registry_up() {
  local d=$WORK/registry
  mkdir -p "$d/data" "$WORK/certs.d/$HOST_IP:$REGISTRY_PORT"
  if [ ! -f "$d/password" ]; then
    openssl rand -hex 16 >"$d/password"
    htpasswd -Bbn checkpoints "$(cat "$d/password")" >"$d/htpasswd"
  fi
  # Who reads the CA: containerd (hosts.toml) and skopeo (--cert-dir).
  cp "$PKI/ca.crt" "$WORK/certs.d/$HOST_IP:$REGISTRY_PORT/ca.crt"
  cat >"$WORK/certs.d/$HOST_IP:$REGISTRY_PORT/hosts.toml" <<TOML
server = "https://$HOST_IP:$REGISTRY_PORT"
[host."https://$HOST_IP:$REGISTRY_PORT"]
  capabilities = ["pull", "resolve"]
  ca = "$PKI/ca.crt"
TOML
  printf '{"auths":{"%s":{"auth":"%s"}}}\n' "$HOST_IP:$REGISTRY_PORT" \
    "$(printf 'checkpoints:%s' "$(cat "$d/password")" | base64 -w0)" >"$d/auth.json"
  chmod 600 "$d/auth.json" "$d/password"
  cat >"$d/config.yml" <<YAML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $d/data}
  delete: {enabled: true}
http:
  addr: $HOST_IP:$REGISTRY_PORT
  tls: {certificate: $PKI/registry.crt, key: $PKI/registry.key}
auth:
  htpasswd: {realm: checkpoint-registry, path: $d/htpasswd}
YAML
  start registry docker-registry serve "$d/config.yml"
  wait_for registry 30 curl -s -o /dev/null --cacert "$PKI/ca.crt" "https://$HOST_IP:$REGISTRY_PORT/v2/"
  log "checkpoint registry at $HOST_IP:$REGISTRY_PORT/checkpoints (user checkpoints, password in $d/password)"
}

# encryption_keys: the key-encryption key that wraps each checkpoint's data
# key (made once per cluster; ENCRYPTION_KEY_FILE: yours), its path printed.
encryption_keys() {
  local f=${ENCRYPTION_KEY_FILE:-$WORK/encryption-keys.yaml}
  if [ ! -f "$f" ]; then
    (umask 077 && printf 'keys:\n- name: local-up\n  secret: %s\n' "$(head -c 32 /dev/urandom | base64 -w0)" >"$f")
  fi
  echo "$f"
}

# start_agent I: the node agent of node I, on the node's address.
start_agent() {
  local i=$1 n; n=$(node_name "$i")
  start "agent-$n" "$BIN/checkpoint-node-agent" --node-name="$n" --kubeconfig="$WORK/agent-$n.kubeconfig" \
    --containerd-address="$(node_sock "$i")" --data-dir="$(node_dir "$i")/agent" --criu-config-dir="$WORK/agent-criu" \
    --restore-socket="$(node_restore_sock "$i")" --restore-images-dir="$(node_restore_images "$i")" \
    --restore-images-mem-dir="$(node_restore_mem "$i")" \
    --dump-dir="$DUMPDIR" --bind-address="$(node_ip "$i")" --port="$AGENT_PORT" \
    --tls-cert-file="$PKI/agent-serving-$n.crt" --tls-private-key-file="$PKI/agent-serving-$n.key" \
    --client-ca-file="$PKI/ca.crt" --server-user=checkpoint-apiserver \
    --checkpoint-registry="$HOST_IP:$REGISTRY_PORT/checkpoints" --checkpoint-registry-ca-file="$PKI/ca.crt" \
    --checkpoint-registry-auth-file="$WORK/registry/auth.json" ${AGENT_ARGS:-}
  wait_for "agent of $n" 30 sh -c "curl -s --cacert '$PKI/ca.crt' https://$(node_ip "$i"):$AGENT_PORT/v1/states -X POST -o /dev/null -w '%{http_code}' | grep -q 401"
}

node_ready() {
  kubectl get node "$1" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -q True
}

# stop_node I: its Pods deleted (the kubelet tears down their networks),
# then the kubelet, containerd and its shims stopped.
stop_node() {
  local i=$1 n d
  n=$(node_name "$i"); d=$(node_dir "$i")
  if [ -f "$WORK/kubelet-$n.pid" ] && kubectl get --raw /readyz >/dev/null 2>&1; then
    kubectl delete pods -A --field-selector "spec.nodeName=$n" --grace-period=1 --wait=false >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 60))
    while [ $SECONDS -lt $deadline ] && [ -n "$(ctr_node "$i" tasks ls -q 2>/dev/null)" ]; do sleep 0.5; done
  fi
  stop "kubelet-$n"
  if [ -f "$WORK/containerd-$n.pid" ]; then
    local t
    for t in $(ctr_node "$i" tasks ls -q 2>/dev/null); do ctr_node "$i" tasks kill -s KILL "$t" >/dev/null 2>&1 || true; done
  fi
  stop "containerd-$n"
  local p
  for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $RUNDIR/$n/" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
}

# clean_host: what containerd, the CNI plugins and the kubelet leave on the
# host once stopped.
# kill_tree PID: PID and everything it started, children first.
kill_tree() { local c; for c in $(pgrep -P "$1"); do kill_tree "$c"; done; kill -9 "$1" 2>/dev/null || true; }

clean_host() {
  local m i n h p
  # Shims outlive their containerd, and so does what they started (a CRIU
  # dump or restore, a lazy-pages daemon): every process naming this
  # cluster's run directory or installed runtime, with its descendants.
  for p in /proc/[0-9]*; do
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -e "$RUNDIR/" -e "$WORK/node-runtime/" && kill_tree "${p#/proc/}"
  done
  # Pod processes whose shim is gone still hold their cgroups.
  for i in $(seq 1 "$NODES"); do
    n=$(node_name "$i")
    for h in $(cgroup_dirs); do
      [ -d "$h/cpup-$n" ] || continue
      find "$h/cpup-$n" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    done
  done
  sleep 0.2
  awk -v a="$WORK/" -v b="$RUNDIR/" 'index($2, a) == 1 || index($2, b) == 1 {print $2}' /proc/self/mounts | sort -r |
    while read -r m; do umount -l "$m" 2>/dev/null || true; done
  for i in $(seq 1 "$NODES"); do
    n=$(node_name "$i")
    ip link del "cpupbr$i" 2>/dev/null || true
    for h in $(cgroup_dirs); do
      [ -d "$h/cpup-$n" ] && find "$h/cpup-$n" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    rm -f /var/lib/cni/results/cpup-"$n"-*
  done
  ip link del "$NET_LINK" 2>/dev/null || true
  rm -rf "$RUNDIR" "$DUMPDIR" "$MEMDIR"
  # Paths the kubelet and libcni fix, whatever their configuration says.
  find /var/log/containers -maxdepth 1 -lname "$WORK/*" -delete 2>/dev/null || true
  rmdir /var/log/containers 2>/dev/null || true
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock /var/lib/kubelet/device-plugins/kubelet_internal_checkpoint
  rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet 2>/dev/null || true
  for m in /var/lib/cni/results/cni-loopback-*; do
    [ -e "$m" ] && grep -q "cpup-\|$WORK" "$m" 2>/dev/null && rm -f "$m"
  done
  rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true
  # The kubelet sets these for itself.
  if [ -f "$WORK/sysctl.orig" ]; then
    sed 's/ = /=/' "$WORK/sysctl.orig" | xargs sysctl -q -w && rm -f "$WORK/sysctl.orig"
  fi
}

load_image() { # FILE
  local f=$1 i
  [ -f "$f" ] || { log "load-image: no such file: $f"; exit 1; }
  for i in $(seq 1 "$NODES"); do
    ctr_node "$i" images import "$f" | sed "s/^/local-up: $(node_name "$i"): /" >&2
  done
}

start_server() {
  local args=(
    --etcd-servers="http://127.0.0.1:$ETCD_PORT"
    --bind-address=127.0.0.1 --secure-port="$CP_PORT"
    --tls-cert-file="$PKI/checkpoint-apiserver.crt" --tls-private-key-file="$PKI/checkpoint-apiserver.key"
    --kubeconfig="$KUBECONFIG" --authentication-kubeconfig="$KUBECONFIG" --authorization-kubeconfig="$KUBECONFIG"
    --data-dir="$WORK/$CP_NAME" --replica-name="$CP_NAME"
  )
  # It captures through the first node's containerd, finding Pods by their
  # status (the kube-apiserver's), or through CONTAINERD_ADDRESS by labels.
  if [ "$AGENTS" = 1 ]; then
    args+=(--node-agents --agent-port="$AGENT_PORT" --agent-ca-file="$PKI/ca.crt"
      --agent-client-cert-file="$PKI/checkpoint-apiserver-client.crt" --agent-client-key-file="$PKI/checkpoint-apiserver-client.key"
      --checkpoint-registry="$HOST_IP:$REGISTRY_PORT/checkpoints" --checkpoint-registry-ca-file="$PKI/ca.crt"
      --checkpoint-registry-auth-file="$WORK/registry/auth.json" --resolver=pod
      --encryption-key-file="$(encryption_keys)")
  elif [ -n "${CONTAINERD_ADDRESS:-}" ]; then
    args+=(--containerd-address="$CONTAINERD_ADDRESS" --resolver=labels)
  elif [ "$NODES" -gt 0 ]; then
    # No agents: the server unpacks the node's checkpoints for its restore runtime.
    args+=(--containerd-address="$(node_sock 1)" --containerd-namespace=k8s.io --resolver=pod --node-name="$(node_name 1)"
      --restore-socket="$(node_restore_sock 1)" --restore-images-dir="$(node_restore_images 1)")
  else
    args+=(--resolver=labels)
  fi
  # It registers its own APIService (unless CRDs serve its group-version),
  # pointing at the Service every replica shares: the first replica's port.
  # In crd mode the APIService is the subresources group's, and the
  # admission webhook for the Checkpoint CRs sits behind the same Service.
  args+=(--apiservice-service="$CP_NAMESPACE/$CP_SERVICE" --apiservice-port="$(cat "$WORK/service-port")"
    --apiservice-ca-file="$PKI/ca.crt")
  # With nodes, the same webhook admits a Pod marked for restore only when
  # its creator may restore that Checkpoint (one replica serves it here).
  if [ "$MODE" = crd ] || { [ "$NODES" -gt 0 ] && [ -z "${CP_INSTANCE:-}" ]; }; then
    args+=(--webhook-port="${CP_WEBHOOK_PORT:-$((CP_PORT + 1))}" --webhook-service="$CP_NAMESPACE/$CP_SERVICE"
      --webhook-ca-file="$PKI/ca.crt")
  fi
  [ "$MODE" = crd ] && args+=(--mode=crd)
  start "$CP_NAME" "$BIN/checkpoint-apiserver" "${args[@]}" ${CHECKPOINT_APISERVER_ARGS:-}
  # CP_WAIT=livez when the server is expected not to register (CRDs serve
  # its group-version, so it is not ready, and says why on /readyz).
  wait_for "$CP_NAME" 90 curl -sf --cacert "$PKI/ca.crt" "https://127.0.0.1:$CP_PORT/${CP_WAIT:-readyz}" || { why_not_ready; return 1; }
}

# why_not_ready [ADDRESS...]: what the server at each address (default this
# machine's replica) says of its readiness, and the end of its log: why up
# failed, not only that it timed out.
why_not_ready() {
  local a addrs=("$@") ca=$PKI/ca.crt
  [ ${#addrs[@]} -gt 0 ] || addrs=("127.0.0.1:$CP_PORT")
  [ "$DEPLOY" = pods ] && ca=$WORK/deploy/base/certs/ca.crt
  for a in "${addrs[@]}"; do
    log "checkpoint-apiserver at $a is not ready; it says:"
    curl -s --max-time 5 --cacert "$ca" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "https://$a/readyz?verbose" 2>&1 |
      grep -v '^\[+\]' | sed 's/^/  /' >&2 || true
    curl -s --max-time 5 --cacert "$ca" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "https://$a/readyz/apiservice-registration" 2>&1 |
      sed 's/^/  /' >&2 || true
    echo >&2
  done
  if [ "$DEPLOY" = pods ]; then
    kubectl -n "$CP_NAMESPACE" get pods -o wide >&2 || true
    kubectl -n "$CP_NAMESPACE" logs -l app=checkpoint-apiserver --tail=5 --prefix >&2 2>&1 || true
  elif [ -f "$WORK/$CP_NAME.log" ]; then
    log "the end of $WORK/$CP_NAME.log:"
    tail -5 "$WORK/$CP_NAME.log" | sed 's/^/  /' >&2
  fi
}

# yaml_args WORDS...: each word as an item of a container's args list.
yaml_args() { local a; for a in "$@"; do printf '        - %s\n' "$a"; done; }

# deploy_pods: make image, the images into every node, and artifacts/deploy
# applied through an overlay for this machine: host network for the server
# (bound to its Pod's, that is its node's, address; one replica per node)
# and the agents, the kube-apiserver and etcd on loopback, the registry's
# credentials and CA, each agent's node's containerd socket.
deploy_pods() {
  local d=$WORK/deploy replicas=$((NODES < 2 ? NODES : 2)) server agent f
  rm -rf "$d"
  mkdir -p "$d/dev" "$WORK/agent-data"
  cp -r "$ROOT/artifacts/deploy" "$d/base"
  rm -rf "$d/base/certs"
  # MODE=crd: artifacts/crd-mode, an overlay of artifacts/deploy.
  local top=../base
  if [ "$MODE" = crd ]; then
    cp -r "$ROOT/artifacts/crd-mode" "$d/crd-mode"
    sed -i 's|^- \.\./deploy$|- ../base|' "$d/crd-mode/kustomization.yaml"
    top=../crd-mode
  fi
  # The server binds its node's address (host network): that address is in its certificate too.
  local sans i
  sans=$(for i in $(seq 1 "$NODES"); do printf 'IP:%s,' "$(node_ip "$i")"; done)
  EXTRA_SANS=${sans%,} "$ROOT/hack/gen-deploy-certs.sh" "$d/base/certs" >/dev/null
  IMAGE_OUT=$WORK/images "$ROOT/hack/image.sh" >/dev/null
  for f in checkpoint-apiserver checkpoint-node-agent; do load_image "$WORK/images/$f.tar" 2>/dev/null; done
  server=$(awk '$1 ~ /^checkpoint-apiserver:/ {print $1}' "$WORK/images/images.txt")
  agent=$(awk '$1 ~ /^checkpoint-node-agent:/ {print $1}' "$WORK/images/images.txt")
  kubectl -n "$CP_NAMESPACE" create secret docker-registry checkpoint-registry --docker-server="$HOST_IP:$REGISTRY_PORT" \
    --docker-username=checkpoints --docker-password="$(cat "$WORK/registry/password")" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl -n "$CP_NAMESPACE" create configmap checkpoint-registry-ca --from-file=ca.crt="$PKI/ca.crt" --dry-run=client -o yaml |
    kubectl apply -f - >/dev/null
  kubectl -n "$CP_NAMESPACE" create secret generic checkpoint-encryption-key --from-file=keys.yaml="$(encryption_keys)" \
    --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  # The E2B front's API keys: E2B_API_KEYS_FILE, or one key of team default
  # (whose group may edit namespace default).
  local keys=${E2B_API_KEYS_FILE:-$WORK/e2b-keys.yaml}
  if [ -z "${E2B_API_KEYS_FILE:-}" ] && [ ! -f "$keys" ]; then
    printf 'keys:\n- {key: e2b_%s, user: local-up-admin, team: default}\n' "$(openssl rand -hex 20)" >"$keys"
    chmod 600 "$keys"
    kubectl -n default create rolebinding e2b-team --clusterrole=edit --group=agents.kruise.io:e2b-team:default \
      --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  fi
  kubectl -n "$CP_NAMESPACE" create secret generic checkpoint-e2b-api-keys --from-file=keys.yaml="$keys" --dry-run=client -o yaml |
    kubectl apply -f - >/dev/null
  local registry="--checkpoint-registry=$HOST_IP:$REGISTRY_PORT/checkpoints"
  cat >"$d/dev/kustomization.yaml" <<YAML
# Written by hack/local-up.sh (DEPLOY=pods): artifacts/deploy on this machine.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [$top]
images:
- {name: checkpoint-apiserver, newName: ${server%:*}, newTag: ${server##*:}}
- {name: checkpoint-node-agent, newName: ${agent%:*}, newTag: ${agent##*:}}
patches: [{path: server.yaml}, {path: agent.yaml}]
YAML
  cat >"$d/dev/server.yaml" <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: checkpoint-apiserver, namespace: $CP_NAMESPACE}
spec:
  replicas: $replicas
  template:
    spec:
      hostNetwork: true
      dnsPolicy: ClusterFirstWithHostNet
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {labelSelector: {matchLabels: {app: checkpoint-apiserver}}, topologyKey: kubernetes.io/hostname}
      containers:
      - name: checkpoint-apiserver
        imagePullPolicy: Never
        env:
        - {name: KUBERNETES_SERVICE_HOST, value: "127.0.0.1"}
        - {name: KUBERNETES_SERVICE_PORT, value: "$KAS_PORT"}
        - name: POD_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
        args:
$(if [ "$MODE" = crd ]; then yaml_args --mode=crd --checkpoint-id-annotation-key=agents.kruise.io/checkpoint-id; else yaml_args "--etcd-servers=http://127.0.0.1:$ETCD_PORT"; fi)
        - --bind-address=\$(POD_IP)
        - --secure-port=6443
        - --tls-cert-file=/etc/checkpoint-apiserver/serving/tls.crt
        - --tls-private-key-file=/etc/checkpoint-apiserver/serving/tls.key
        - --apiservice-service=$CP_NAMESPACE/$CP_SERVICE
        - --apiservice-port=443
        - --apiservice-ca-file=/etc/checkpoint-apiserver/serving/ca.crt
        - --leader-elect=true
        - --leader-elect-namespace=$CP_NAMESPACE
        - --replica-name=\$(POD_NAME)
        - --node-agents
        - --agent-port=$AGENT_PORT
        - --agent-signer-cert-file=/etc/checkpoint-node-agent/signer/tls.crt
        - --agent-signer-key-file=/etc/checkpoint-node-agent/signer/tls.key
        - --agent-client-cert-file=/etc/checkpoint-apiserver/agent-client/tls.crt
        - --agent-client-key-file=/etc/checkpoint-apiserver/agent-client/tls.key
        - $registry
        - --checkpoint-registry-auth-file=/etc/checkpoint-registry/.dockerconfigjson
        - --checkpoint-registry-ca-file=/etc/checkpoint-registry-ca/ca.crt
        - --encryption-key-file=/etc/checkpoint-encryption/keys.yaml
        - --data-dir=/var/lib/checkpoint-apiserver
        - --e2b-bind-address=\$(POD_IP):3000
        - --e2b-tls-cert-file=/etc/checkpoint-apiserver/serving/tls.crt
        - --e2b-tls-private-key-file=/etc/checkpoint-apiserver/serving/tls.key
        - --e2b-api-keys-file=/etc/checkpoint-e2b/keys.yaml
        - --webhook-port=8444
        - --webhook-service=$CP_NAMESPACE/$CP_SERVICE
        - --webhook-ca-file=/etc/checkpoint-apiserver/serving/ca.crt
$(yaml_args ${CHECKPOINT_APISERVER_ARGS:-})
YAML
  cat >"$d/dev/agent.yaml" <<YAML
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: checkpoint-node-agent, namespace: $CP_NAMESPACE}
spec:
  template:
    spec:
      initContainers:
      - name: install-restore-runtime
        imagePullPolicy: Never
        args:
        - install-runtime
        - --bin-dir=$WORK/node-runtime/\$(NODE_NAME)/bin
        - --config=$WORK/node-runtime/\$(NODE_NAME)/restore-runtime.json
        - --images-dir=$WORK/agent-data/\$(NODE_NAME)/restore-images
        - --mem-images-dir=$MEMDIR/\$(NODE_NAME)
        - --agent-socket=$RUNDIR/\$(NODE_NAME)/restore.sock
$(yaml_args ${RUNTIME_INSTALL_ARGS:-})
        volumeMounts:
        - \$patch: replace
        - {name: runtime, mountPath: $WORK/node-runtime}
        - {name: data, mountPath: $WORK/agent-data}
        - {name: restore-mem, mountPath: $MEMDIR}
      containers:
      - name: checkpoint-node-agent
        imagePullPolicy: Never
        env:
        - {name: KUBERNETES_SERVICE_HOST, value: "127.0.0.1"}
        - {name: KUBERNETES_SERVICE_PORT, value: "$KAS_PORT"}
        - name: NODE_IP
          valueFrom: {fieldRef: {fieldPath: status.hostIP}}
        args:
        - --bind-address=\$(NODE_IP)
        - --port=$AGENT_PORT
        - --request-serving-certificate
        - --client-ca-file=/etc/checkpoint-node-agent/client-ca/ca.crt
        - --server-user=checkpoint-apiserver
        - --containerd-address=$RUNDIR/\$(NODE_NAME)/containerd.sock
        - --containerd-namespace=k8s.io
        - --data-dir=$WORK/agent-data/\$(NODE_NAME)
        - --criu-config-dir=$WORK/agent-data/criu
        - --dump-dir=$DUMPDIR
        - --restore-socket=$RUNDIR/\$(NODE_NAME)/restore.sock
        - --restore-images-dir=$WORK/agent-data/\$(NODE_NAME)/restore-images
        - --restore-images-mem-dir=$MEMDIR/\$(NODE_NAME)
        - $registry
        - --checkpoint-registry-auth-file=/etc/checkpoint-registry/.dockerconfigjson
        - --checkpoint-registry-ca-file=/etc/checkpoint-registry-ca/ca.crt
$(yaml_args ${AGENT_ARGS:-})
        volumeMounts:
        - \$patch: replace
        - {name: client-ca, mountPath: /etc/checkpoint-node-agent/client-ca, readOnly: true}
        - {name: registry-auth, mountPath: /etc/checkpoint-registry, readOnly: true}
        - {name: registry-ca, mountPath: /etc/checkpoint-registry-ca, readOnly: true}
        - {name: containerd, mountPath: $RUNDIR}
        - {name: data, mountPath: $WORK/agent-data}
        - {name: dumps, mountPath: $DUMPDIR}
        - {name: restore-mem, mountPath: $MEMDIR}
      volumes:
      - {name: containerd, hostPath: {path: $RUNDIR, type: Directory}}
      - {name: data, hostPath: {path: $WORK/agent-data, type: DirectoryOrCreate}}
      - {name: dumps, hostPath: {path: $DUMPDIR, type: DirectoryOrCreate}}
      - {name: restore-mem, hostPath: {path: $MEMDIR, type: DirectoryOrCreate}}
      - {name: runtime, hostPath: {path: $WORK/node-runtime, type: DirectoryOrCreate}}
      # This machine's nodes keep their runtime and socket under $WORK and $RUNDIR.
      - {name: runtime-bin, \$patch: delete}
      - {name: runtime-config, \$patch: delete}
      - {name: restore-socket, \$patch: delete}
YAML
  kubectl apply -k "$d/dev" >/dev/null
  kubectl -n "$CP_NAMESPACE" rollout status ds/checkpoint-node-agent --timeout=180s >/dev/null
  if ! kubectl -n "$CP_NAMESPACE" rollout status deploy/checkpoint-apiserver --timeout=180s >/dev/null; then
    why_not_ready $(for i in $(seq 1 "$replicas"); do echo "$(node_ip "$i"):6443"; done)
    return 1
  fi
}

APISERVICE=v1alpha1.agents.kruise.io
[ "$MODE" = crd ] && APISERVICE=v1alpha1.subresources.agents.kruise.io

wait_available() {
  [ "${CP_WAIT:-readyz}" = readyz ] || return 0
  if ! wait_for "APIService $APISERVICE" 90 kubectl get apiservice "$APISERVICE" ||
    ! kubectl wait --for=condition=Available "apiservice/$APISERVICE" --timeout=90s >/dev/null; then
    kubectl get apiservice "$APISERVICE" -o jsonpath='{range .status.conditions[*]}{.type}={.status}: {.message}{"\n"}{end}' >&2 || true
    if [ "$DEPLOY" = pods ]; then
      why_not_ready $(for i in $(seq 1 $((NODES < 2 ? NODES : 2))); do echo "$(node_ip "$i"):6443"; done)
    else
      why_not_ready
    fi
    return 1
  fi
}

up() {
  mkdir -p "$WORK"
  # A second up over a running cluster would lose track of its processes.
  if [ -f "$WORK/etcd.pid" ] && kill -0 "$(cat "$WORK/etcd.pid")" 2>/dev/null; then
    log "already up in $WORK: run down first"
    exit 1
  fi
  "$ROOT/hack/build-kube-tools.sh"
  # The node agent's binary is also the restore runtime's shim.
  "$ROOT/hack/build.sh" "$BIN" checkpoint-apiserver checkpoint-node-agent
  command -v kubectl >/dev/null || { log "kubectl not found"; exit 1; }
  certs
  echo "$NODES $AGENTS $DEPLOY" >"$WORK/topology"
  if [ "$NODES" -gt 0 ]; then
    "$ROOT/hack/test-images.sh" "$IMAGES" >/dev/null
    net_up
  fi

  local other
  for other in aggregated crd; do
    [ "$other" != "$MODE" ] && [ -d "$WORK/etcd-$other" ] &&
      log "MODE=$MODE: a cluster of its own (etcd $WORK/etcd-$MODE); MODE=$other's data stays in $WORK/etcd-$other"
  done
  start etcd "$BIN/etcd" --data-dir "$WORK/etcd-$MODE" --name local-up \
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
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" --kubelet-preferred-address-types=InternalIP \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --enable-aggregator-routing="$([ "$DEPLOY" = pods ] && echo true || echo false)"
  wait_for kube-apiserver 90 kubectl get --raw /readyz
  log "kube-apiserver ready"

  # Its namespace controller finishes namespace deletion (with our
  # Checkpoints inside), its garbage collector follows owner references, its
  # aggregation controller folds checkpoint-view/edit/admin into
  # view/edit/admin; the others make service accounts and run workloads.
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG" \
    --authentication-kubeconfig="$KUBECONFIG" --authorization-kubeconfig="$KUBECONFIG" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --leader-elect=false \
    --controllers=namespace-controller,garbage-collector-controller,resourcequota-controller,endpoints-controller,endpointslice-controller,clusterrole-aggregation-controller,serviceaccount-controller,root-ca-certificate-publisher-controller,replicaset-controller,deployment-controller,daemonset-controller,pod-garbage-collector-controller,node-lifecycle-controller \
    --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" --use-service-account-credentials=false
  # Its service-account controller's first work shows it runs: a controller
  # manager that died (its log says why) would leave every Pod unadmitted.
  wait_for "kube-controller-manager (log $WORK/kube-controller-manager.log)" 90 kubectl -n default get serviceaccount default

  if [ "$NODES" -gt 0 ]; then
    start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$KUBECONFIG" \
      --authentication-kubeconfig="$KUBECONFIG" --authorization-kubeconfig="$KUBECONFIG" \
      --bind-address=127.0.0.1 --secure-port="$KSCHED_PORT" --leader-elect=false
    # The kube-apiserver's kubelet client: exec, logs, port-forward
    # (system:kubelet-api-admin), and the kubelet's checkpoint API
    # (nodes/checkpoint, which that role lacks; the benchmark compares with it).
    kubectl apply -f - >/dev/null <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: local-up:kube-apiserver-kubelet-client}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:kubelet-api-admin}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: kube-apiserver-kubelet-client}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: local-up:kubelet-checkpoint}
rules: [{apiGroups: [""], resources: [nodes/checkpoint], verbs: [create]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: local-up:kubelet-checkpoint}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: local-up:kubelet-checkpoint}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: kube-apiserver-kubelet-client}]
YAML
    [ -f "$WORK/sysctl.orig" ] || sysctl $SYSCTLS >"$WORK/sysctl.orig"
    [ "$AGENTS" = 1 ] && registry_up
    local i
    for i in $(seq 1 "$NODES"); do start_node "$i"; done
    # Agents as Pods install the restore runtime themselves (an init container).
    if [ "$DEPLOY" != pods ]; then
      for i in $(seq 1 "$NODES"); do install_runtime "$i"; done
    fi
    kubectl apply -f "$ROOT/artifacts/deploy/runtimeclass.yaml" >/dev/null
    for i in $(seq 1 "$NODES"); do
      wait_for "$(node_name "$i")" 120 node_ready "$(node_name "$i")"
      log "$(node_name "$i") Ready ($(node_ip "$i"), containerd at $(node_sock "$i"))"
    done
    if [ "$AGENTS" = 1 ]; then
      kubectl apply -f - >/dev/null <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: local-up:checkpoint-node-agent}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get]}
- {apiGroups: [agents.kruise.io], resources: [checkpoints], verbs: [list]}
- {apiGroups: [""], resources: [events], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: local-up:checkpoint-node-agent}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: local-up:checkpoint-node-agent}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: Group, name: "checkpoint:node-agents"}]
YAML
      # No namespace gets the registry's credentials: clone Pods run their
      # source's images, and only the agents fetch checkpoints.
      if [ "$DEPLOY" != pods ]; then
        for i in $(seq 1 "$NODES"); do start_agent "$i"; done
        log "node agents serving on :$AGENT_PORT of every node"
      fi
    fi
  fi

  kubectl apply -f "$ROOT/artifacts/deploy/namespace.yaml" -f "$ROOT/artifacts/deploy/rbac-users.yaml" >/dev/null
  if [ "$MODE" = crd ]; then
    kubectl apply -f "$ROOT/third_party/openkruise-agents/crds" >/dev/null
    kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
    log "OpenKruise Agents' CRDs installed (third_party/openkruise-agents)"
  fi
  if [ "$DEPLOY" = pods ]; then
    deploy_pods
    log "checkpoint-apiserver and the node agents run as Pods (kubectl -n $CP_NAMESPACE get pods)"
    log "E2B API: E2B_API_URL=https://$(node_ip 1):3000 (any node's address; CA $WORK/deploy/base/certs/ca.crt for NODE_EXTRA_CA_CERTS; keys in ${E2B_API_KEYS_FILE:-$WORK/e2b-keys.yaml})"
    wait_available
    log "APIService $APISERVICE is Available"
    echo "export KUBECONFIG=$KUBECONFIG"
    return
  fi
  echo "$CP_PORT" >"$WORK/service-port"
  kubectl apply -f - >/dev/null <<YAML
# The server runs on this machine: its APIService reaches it through an
# ExternalName Service pointing at localhost.
apiVersion: v1
kind: Service
metadata: {name: $CP_SERVICE, namespace: $CP_NAMESPACE}
spec: {type: ExternalName, externalName: localhost, ports: [{port: $CP_PORT}]}
YAML
  start_server
  log "checkpoint-apiserver ready (mode $MODE)"
  wait_available
  log "APIService $APISERVICE is Available"
  echo "export KUBECONFIG=$KUBECONFIG"
}

down() {
  # Deployed objects would come back with the cluster's etcd: remove them first.
  if [ "$DEPLOY" = pods ] && [ -d "$WORK/deploy/dev" ] && kubectl get --raw /readyz >/dev/null 2>&1; then
    kubectl -n "$CP_NAMESPACE" delete deploy/checkpoint-apiserver ds/checkpoint-node-agent --wait=false --ignore-not-found >/dev/null 2>&1 || true
  fi
  for pidfile in "$WORK"/checkpoint-apiserver*.pid; do
    [ -e "$pidfile" ] && stop "$(basename "$pidfile" .pid)"
  done
  local i
  for i in $(seq 1 "$NODES"); do stop "agent-$(node_name "$i")"; done
  for i in $(seq 1 "$NODES"); do stop_node "$i"; done
  stop registry
  stop kube-scheduler
  stop kube-controller-manager
  stop kube-apiserver
  stop etcd
  [ "$NODES" -gt 0 ] && clean_host
  rm -f "$WORK/topology"
  return 0
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  stop-server) stop "$CP_NAME" ;;
  start-server) start_server; wait_available ;;
  load-image) load_image "${2:?usage: $0 load-image FILE}" ;;
  stop-agent) stop "agent-$(node_name "${2:?usage: $0 stop-agent I}")" ;;
  start-agent) start_agent "${2:?usage: $0 start-agent I}" ;;
  stop-registry) stop registry ;;
  start-registry) registry_up ;;
  *) echo "usage: $0 [up|down|stop-server|start-server|load-image FILE|stop-agent I|start-agent I]" >&2; exit 2 ;;
esac
