package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/agents-kruise/checkpoint-apiserver/agentcert"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// startWeb runs the web sandbox as Pod web on node and waits until it
// serves and holds its connection.
func startWeb(c *framework.Cluster, ns, node string) {
	c.Apply(framework.OnNode(podYAML(ns, "web", framework.WebScript), node))
	c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/web", "--timeout=120s")
	c.Eventually("the web sandbox serves and holds its connection", func() bool {
		out, _ := c.Kubectl("logs", "-n", ns, "web")
		return strings.Contains(out, "web-ready")
	})
}

// restoreOn POSTs a restore onto node ("": the scheduler's choice).
func restoreOn(c *framework.Cluster, ns, cp, sandbox, node string) (string, error) {
	body := fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"CheckpointRestore","spec":{"sandboxName":%q,"nodeName":%q}}`, sandbox, node)
	return c.KubectlStdin(body, "create", "--raw", "/apis/agents.kruise.io/v1alpha1/namespaces/"+ns+"/checkpoints/"+cp+"/restore", "-f", "-")
}

// agentClient calls a node agent with a client certificate pair (none
// when cert is empty), verifying the agent's certificate against the
// deployment's agent CA, for the agent's own node's name (each agent's
// certificate is its node's, from the server's signer).
func agentClient(t *testing.T, c *framework.Cluster, cert, key string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(c.Dir, "deploy", "base", "certs", "agent-ca.crt"))
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pem))
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		require.NoError(t, err)
		// Sent whatever CAs the agent asks for (Go would send none).
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc, Proxy: nil, DialContext: dialNodes}}
}

// dialNodes dials node-N (a URL's host, which TLS checks the certificate
// for) at node N's address.
func dialNodes(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if n, ok := strings.CutPrefix(host, "node-"); ok {
		i, err := strconv.Atoi(n)
		if err != nil {
			return nil, err
		}
		host = fmt.Sprintf("198.18.0.%d", 10+i)
	}
	return (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, network, net.JoinHostPort(host, port))
}

// agentCall POSTs body to path on node i's agent, with token as a bearer
// token when set; it returns the status code and body.
func agentCall(client *http.Client, node int, path, body, token string) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, fmt.Sprintf("https://node-%d:10370%s", node, path), strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

func blobPath(dir, digest string) string {
	return filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(digest, "sha256:"))
}

func readBlobJSON(t *testing.T, path string, v interface{}) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, v), "%s", b)
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// agentsHaveTheirOwnNodesCertificates: each agent serves a certificate for
// its own node only, which the server signed; node-1's agent's own token
// (what root on node-1 holds) gets node-1's certificate and is denied
// node-2's, so root on node-1 cannot pose as node-2's agent, which the
// server hands node-2's clones' data keys.
func agentsHaveTheirOwnNodesCertificates(t *testing.T, c *framework.Cluster) {
	pem, err := os.ReadFile(filepath.Join(c.Dir, "deploy", "base", "certs", "agent-ca.crt"))
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pem))
	for i := 1; i <= 2; i++ {
		addr := fmt.Sprintf("198.18.0.%d:10370", 10+i)
		own, other := fmt.Sprintf("node-%d", i), fmt.Sprintf("node-%d", 3-i)
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: own, MinVersion: tls.VersionTLS12})
		require.NoError(t, err, "%s's agent serves a certificate for %s", own, own)
		leaf := conn.ConnectionState().PeerCertificates[0]
		conn.Close()
		assert.Equal(t, []string{own}, leaf.DNSNames, "%s's agent's certificate names its node only", own)
		assert.Empty(t, leaf.IPAddresses)
		assert.Equal(t, agentcert.CommonNamePrefix+own, leaf.Subject.CommonName)
		_, err = tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: other, MinVersion: tls.VersionTLS12})
		require.Error(t, err, "%s's agent is not %s's", own, other)
		assert.Contains(t, err.Error(), "not "+other)
	}

	// node-1's agent's Pod token, bound to that Pod.
	pod := c.Must("-n", "checkpoint-system", "get", "pods", "-l", "app=checkpoint-node-agent", "--field-selector", "spec.nodeName=node-1",
		"-o", "jsonpath={.items[0].metadata.name}")
	token := strings.TrimSpace(c.Must("-n", "checkpoint-system", "create", "token", "checkpoint-node-agent", "--bound-object-kind=Pod",
		"--bound-object-name="+pod))
	admin := c.RESTConfig()
	asAgent := rest.AnonymousClientConfig(admin)
	asAgent.BearerToken = token
	client, err := kubernetes.NewForConfig(asAgent)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err = (&agentcert.Requester{Client: client, Node: "node-1", Timeout: time.Minute}).Obtain(ctx)
	require.NoError(t, err, "node-1's agent's token gets node-1's certificate")
	_, err = (&agentcert.Requester{Client: client, Node: "node-2", Timeout: time.Minute}).Obtain(ctx)
	require.Error(t, err, "node-1's agent's token is refused node-2's certificate")
	assert.Contains(t, err.Error(), "Denied")
	assert.Contains(t, err.Error(), "node-1")
}
