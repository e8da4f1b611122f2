#!/usr/bin/env bash
# Writes artifacts/deploy/certs/{ca.crt,tls.crt,tls.key}: a CA and the serving
# certificate of checkpoint-apiserver.checkpoint-system.svc, and
# agent-ca.{crt,key}: the CA the server signs each node agent's certificate with, and
# agent-client{-ca.crt,.crt,.key}: the CA the agents trust for clients and the
# server's client certificate (CN checkpoint-apiserver, the agents' only caller), for
# `kubectl apply -k artifacts/deploy`. Keeps existing files. EXTRA_SANS (such as
# "IP:198.18.0.11,DNS:cp.example.com") adds names to the server's certificate.
set -o errexit -o nounset -o pipefail
DIR=${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/artifacts/deploy/certs}
SVC=checkpoint-apiserver.checkpoint-system.svc
mkdir -p "$DIR"
# The server's client certificate for the agents, from a CA of its own: the
# agents take no other credential.
if [ ! -f "$DIR/agent-client.crt" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$DIR/agent-client-ca.key" -out "$DIR/agent-client-ca.crt" -days 825 \
    -subj /CN=checkpoint-node-agent-client-ca 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout "$DIR/agent-client.key" -out "$DIR/agent-client.csr" -subj /CN=checkpoint-apiserver 2>/dev/null
  printf 'extendedKeyUsage=clientAuth\n' >"$DIR/agent-client.ext"
  openssl x509 -req -in "$DIR/agent-client.csr" -CA "$DIR/agent-client-ca.crt" -CAkey "$DIR/agent-client-ca.key" -CAcreateserial \
    -days 825 -out "$DIR/agent-client.crt" -extfile "$DIR/agent-client.ext" 2>/dev/null
  rm -f "$DIR/agent-client.csr" "$DIR/agent-client.ext"
fi
# The CA the server signs each node agent's serving certificate with, for
# that agent's node only (the agents' CSRs): the server holds its key.
if [ ! -f "$DIR/agent-ca.key" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$DIR/agent-ca.key" -out "$DIR/agent-ca.crt" -days 825 \
    -subj /CN=checkpoint-node-agent-ca -addext keyUsage=critical,keyCertSign,cRLSign -addext basicConstraints=critical,CA:TRUE 2>/dev/null
fi
rm -f "$DIR/agent-tls.crt" "$DIR/agent-tls.key"
[ -f "$DIR/tls.crt" ] && { echo "certificates already in $DIR"; exit 0; }
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$DIR/ca.key" -out "$DIR/ca.crt" -days 825 -subj /CN=checkpoint-apiserver-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout "$DIR/tls.key" -out "$DIR/tls.csr" -subj "/CN=$SVC" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:checkpoint-apiserver.checkpoint-system.svc.cluster.local%s\nextendedKeyUsage=serverAuth\n' "$SVC" "${EXTRA_SANS:+,$EXTRA_SANS}" >"$DIR/tls.ext"
openssl x509 -req -in "$DIR/tls.csr" -CA "$DIR/ca.crt" -CAkey "$DIR/ca.key" -CAcreateserial -days 825 -out "$DIR/tls.crt" -extfile "$DIR/tls.ext" 2>/dev/null
rm -f "$DIR/tls.csr" "$DIR/tls.ext"
echo "wrote $DIR (keep ca.key and agent-client-ca.key safe or delete them; agent-ca.key goes to the server)"
