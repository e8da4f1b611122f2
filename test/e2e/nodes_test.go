package e2e

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

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
// deployment's agent CA and the agents' one name.
func agentClient(t *testing.T, c *framework.Cluster, cert, key string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(c.Dir, "deploy", "base", "certs", "agent-ca.crt"))
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(pem))
	tc := &tls.Config{RootCAs: pool, ServerName: "checkpoint-node-agent.checkpoint-system.svc", MinVersion: tls.VersionTLS12}
	if cert != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		require.NoError(t, err)
		// Sent whatever CAs the agent asks for (Go would send none).
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &pair, nil }
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc, Proxy: nil}}
}

// agentCall POSTs body to path on node i's agent, with token as a bearer
// token when set; it returns the status code and body.
func agentCall(client *http.Client, node int, path, body, token string) (int, string, error) {
	req, err := http.NewRequest(http.MethodPost, fmt.Sprintf("https://198.18.0.1%d:10370%s", node, path), strings.NewReader(body))
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
