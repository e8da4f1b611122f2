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
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
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

// agentClient calls node i's agent with a client certificate pair (none
// when cert is empty), verifying it with the cluster's CA.
func agentClient(t *testing.T, c *framework.Cluster, cert, key string) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(c.Dir, "pki", "ca.crt"))
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

// TestTwoNodes runs two kubelet nodes, a node agent on each and the TLS
// registry with htpasswd (local-up LOCAL_UP_NODES=2): sandboxes captured on
// node-1 are cloned onto node-2 and onto whichever node the scheduler picks.
func TestTwoNodes(t *testing.T) {
	framework.RequireTool(t, "skopeo")
	framework.RequireTool(t, "docker-registry")
	checkpointctl := filepath.Join(framework.RepoRoot(), "_output", "bin", "checkpointctl")
	if _, err := os.Stat(checkpointctl); err != nil {
		framework.Missing(t, "_output/bin/checkpointctl not built (run hack/build-kube-tools.sh)")
	}
	const ns = "spread"
	c := framework.LocalUpNodes(t, 2, "--declarative-capture-delay=1s")
	reg := c.Registry()
	// Clones pull from the registry with the namespace's pull secret.
	c.SandboxNamespace(ns)

	nodeOf := func(pod string) string {
		return c.Must("get", "pod", pod, "-n", ns, "-o", "jsonpath={.spec.nodeName}")
	}

	t.Run("WebSandboxClonedOntoTheOtherNode", func(t *testing.T) {
		startWeb(c, ns, "node-1")
		captureByApply(t, c, ns, "cp-web", "web", true)
		image := c.Must("get", "cp", "cp-web", "-n", ns, "-o", "jsonpath={.status.image}")
		digest := c.Must("get", "cp", "cp-web", "-n", ns, "-o", "jsonpath={.status.imageDigest}")
		require.Equal(t, framework.RegistryHost+"/checkpoints@"+digest, image)
		assert.Contains(t, c.Must("get", "cp", "cp-web", "-n", ns, "-o", "jsonpath={.status.message}"), "web")

		// The registry holds it: skopeo, with the test credentials, reads the
		// digest status records, under the checkpoint ID's tag too.
		id := c.Must("get", "cp", "cp-web", "-n", ns, "-o", "jsonpath={.status.checkpointId}")
		out, err := reg.Inspect(framework.RegistryHost+"/checkpoints:"+id, true)
		require.NoError(t, err, out)
		var index struct {
			MediaType string `json:"mediaType"`
			Manifests []struct {
				Digest      string            `json:"digest"`
				Annotations map[string]string `json:"annotations"`
			} `json:"manifests"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &index), out)
		assert.Equal(t, "application/vnd.oci.image.index.v1+json", index.MediaType)
		require.Len(t, index.Manifests, 1)
		assert.Equal(t, "main", index.Manifests[0].Annotations["org.criu.checkpoint.container.name"])
		out, err = reg.Skopeo("inspect", "--raw", "--cert-dir", reg.CertDir(), "--creds", reg.Creds(), "docker://"+image)
		require.NoError(t, err, out)
		assert.Equal(t, digest, "sha256:"+sha256Hex(out), "the digest in status is the index's")
		// The registry refuses anonymous pulls.
		out, err = reg.Skopeo("inspect", "--cert-dir", reg.CertDir(), "--no-creds", "docker://"+image)
		require.Error(t, err)
		assert.Contains(t, out, "unauthorized")

		// checkpointctl reads the container's checkpoint image as it reads
		// the kubelet's archives.
		oci := filepath.Join(t.TempDir(), "oci")
		out, err = reg.Skopeo("copy", "-q", "--src-cert-dir", reg.CertDir(), "--src-creds", reg.Creds(),
			"docker://"+framework.RegistryHost+"/checkpoints@"+index.Manifests[0].Digest, "oci:"+oci+":web")
		require.NoError(t, err, out)
		layer := checkpointLayer(t, oci)
		show, err := exec.Command(checkpointctl, "show", layer).CombinedOutput()
		require.NoError(t, err, "%s", show)
		assert.Contains(t, string(show), "docker.io/library/busybox:local", "checkpointctl shows the base image")
		assert.Contains(t, string(show), "containerd", "checkpointctl shows the engine")

		// A clone on node-2 pulls it by digest and serves; its established
		// connection comes back closed.
		out, err = restoreOn(c, ns, "cp-web", "web-b", "node-2")
		require.NoError(t, err, out)
		assert.Contains(t, out, `"node":"node-2"`)
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/web-b", "--timeout=60s")
		assert.Equal(t, "node-2", nodeOf("web-b"))
		assert.Equal(t, framework.RegistryHost+"/checkpoints@"+index.Manifests[0].Digest,
			c.Must("get", "pod", "web-b", "-n", ns, "-o", "jsonpath={.spec.containers[0].image}"))
		assert.Equal(t, "0", c.Must("get", "pod", "web-b", "-n", ns, "-o", "jsonpath={.status.containerStatuses[0].restartCount}"))
		assert.Contains(t, c.Must("exec", "-n", ns, "web-b", "--", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/"), "web-sandbox")
		assert.Equal(t, "captured", strings.TrimSpace(c.MustStdout("exec", "-n", ns, "web-b", "--", "cat", "/data/marker")))
		c.Eventually("the clone's established connection is closed", func() bool {
			out, _ := c.Kubectl("logs", "-n", ns, "web-b")
			return strings.Contains(out, "conn-closed")
		})

		// Deleting the Checkpoint removes it from the registry and from
		// both nodes (node-1's capture, node-2's pull).
		c.Must("delete", "pod", "web-b", "-n", ns, "--wait=true", "--timeout=60s")
		c.Must("delete", "cp", "cp-web", "-n", ns, "--wait=true", "--timeout=60s")
		out, err = reg.Inspect(image, true)
		require.Error(t, err, "the index is gone from the registry")
		assert.Contains(t, out, "manifest unknown")
		out, err = reg.Inspect(framework.RegistryHost+"/checkpoints@"+index.Manifests[0].Digest, true)
		require.Error(t, err, "the container's image is gone from the registry")
		for i := 1; i <= 2; i++ {
			imgs, err := c.NodeCtr(i, "images", "ls")
			require.NoError(t, err)
			assert.NotContains(t, imgs, id, "node-%d holds nothing of the checkpoint", i)
			assert.NotContains(t, imgs, strings.TrimPrefix(index.Manifests[0].Digest, "sha256:"), "node-%d holds no pulled copy", i)
		}
	})

	t.Run("PythonSandboxClonesSpreadOverBothNodes", func(t *testing.T) {
		c.Apply(framework.OnNode(pythonPodYAML(ns, "py"), "node-1"))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/py", "--timeout=120s")
		c.Eventually("the interpreter counts", func() bool { return lastCount(t, c, ns, "py") >= 3 })
		get := []string{"exec", "-n", ns, "py", "--", "python3", "-c",
			"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/', timeout=5).read().decode())"}
		before := c.MustStdout(get...)
		require.Contains(t, before, "secret=")
		secret := strings.Fields(before)[1]
		c.Must("exec", "-n", ns, "py", "--", "python3", "-c", "open('/root/note', 'w').write('written before the capture')")
		captureByApply(t, c, ns, "cp-py", "py", true)
		captured, err := strconv.Atoi(strings.TrimPrefix(strings.Fields(c.MustStdout(get...))[0], "n="))
		require.NoError(t, err)

		// Three clones at once: one on each node by name, one where the
		// scheduler puts it.
		targets := map[string]string{"py-a": "node-1", "py-b": "node-2", "py-c": ""}
		var wg sync.WaitGroup
		var mu sync.Mutex
		outs, errs := map[string]string{}, map[string]error{}
		for clone, node := range targets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := restoreOn(c, ns, "cp-py", clone, node)
				mu.Lock()
				outs[clone], errs[clone] = out, err
				mu.Unlock()
			}()
		}
		wg.Wait()
		nodes := map[string]bool{}
		for clone, node := range targets {
			require.NoError(t, errs[clone], outs[clone])
			c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/"+clone, "--timeout=60s")
			on := nodeOf(clone)
			if node != "" {
				assert.Equal(t, node, on)
			}
			nodes[on] = true
			get[3] = clone
			fields := strings.Fields(c.MustStdout(get...))
			require.Len(t, fields, 2)
			assert.Equal(t, secret, fields[1], "the clone on %s has the source's interpreter state", on)
			n, err := strconv.Atoi(strings.TrimPrefix(fields[0], "n="))
			require.NoError(t, err)
			assert.GreaterOrEqual(t, n, captured-20, "the clone on %s counts on from about the captured value (%d)", on, captured)
			assert.Equal(t, "written before the capture", c.MustStdout("exec", "-n", ns, clone, "--", "cat", "/root/note"))
		}
		assert.Len(t, nodes, 2, "the clones run on both nodes")
	})

	t.Run("KeepRunningFalseThroughNode2sAgent", func(t *testing.T) {
		// node-2's agent ends the source's processes; its kubelet ends the
		// Pod Succeeded; the checkpoint is in the registry and clones onto node-1.
		c.Apply(framework.OnNode(neverPodYAML(ns, "done"), "node-2"))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/done", "--timeout=120s")
		c.Eventually("the counter counts", func() bool { return lastCount(t, c, ns, "done") >= 3 })
		captureByApply(t, c, ns, "cp-done", "done", false)
		c.Eventually("the source Pod ends Succeeded", func() bool {
			out, _ := c.Kubectl("get", "pod", "done", "-n", ns, "-o", "jsonpath={.status.phase}")
			return out == "Succeeded"
		})
		out, err := restoreOn(c, ns, "cp-done", "done-a", "node-1")
		require.NoError(t, err, out)
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/done-a", "--timeout=60s")
		assert.Greater(t, firstCount(t, c, ns, "done-a"), 3, "the clone on node-1 counts on from the capture")
	})

	t.Run("AgentsServeOnlyTheServerAndOnlyTheirNode", func(t *testing.T) {
		pki := filepath.Join(c.Dir, "pki")
		c.Apply(framework.OnNode(podYAML(ns, "victim", framework.CounterScript), "node-1"))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/victim", "--timeout=120s")
		body := fmt.Sprintf(`{"pod":{"namespace":%q,"name":"victim"},"id":"ckpt-intruder"}`, ns)

		server := agentClient(t, c, filepath.Join(pki, "checkpoint-apiserver-client.crt"), filepath.Join(pki, "checkpoint-apiserver-client.key"))
		code, out, err := agentCall(server, 2, "/v1/capture", body, "")
		require.NoError(t, err)
		assert.Equal(t, http.StatusForbidden, code, out)
		assert.Contains(t, out, "bound to node-1", "node-2's agent refuses a Pod on node-1")

		code, out, err = agentCall(agentClient(t, c, "", ""), 1, "/v1/capture", body, "")
		require.NoError(t, err)
		assert.Equal(t, http.StatusUnauthorized, code, "no client certificate: %s", out)

		// A certificate of another CA fails the TLS handshake.
		dir := t.TempDir()
		key, crt := filepath.Join(dir, "other.key"), filepath.Join(dir, "other.crt")
		b, err := exec.Command("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
			"-days", "1", "-subj", "/CN=checkpoint-apiserver").CombinedOutput()
		require.NoError(t, err, "%s", b)
		_, _, err = agentCall(agentClient(t, c, crt, key), 1, "/v1/capture", body, "")
		require.Error(t, err, "a certificate from another CA is refused")

		// Valid Kubernetes users who are not the server: the admin's
		// certificate, and a service account's token.
		code, out, err = agentCall(agentClient(t, c, filepath.Join(pki, "admin.crt"), filepath.Join(pki, "admin.key")), 1, "/v1/capture", body, "")
		require.NoError(t, err)
		assert.Equal(t, http.StatusForbidden, code, out)
		assert.Contains(t, out, "local-up-admin")
		token := c.Must("create", "token", "default", "-n", ns)
		code, out, err = agentCall(agentClient(t, c, "", ""), 1, "/v1/capture", body, token)
		require.NoError(t, err)
		assert.Equal(t, http.StatusForbidden, code, out)
		assert.Contains(t, out, "system:serviceaccount:"+ns+":default")

		// Nothing was captured by any of these.
		for i := 1; i <= 2; i++ {
			imgs, err := c.NodeCtr(i, "images", "ls")
			require.NoError(t, err)
			assert.NotContains(t, imgs, "ckpt-intruder")
		}
	})
}

// checkpointLayer is the path of the one layer of the image in OCI layout dir.
func checkpointLayer(t *testing.T, dir string) string {
	t.Helper()
	var idx struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	readBlobJSON(t, filepath.Join(dir, "index.json"), &idx)
	require.Len(t, idx.Manifests, 1)
	var m struct {
		Layers []struct{ Digest string } `json:"layers"`
	}
	readBlobJSON(t, blobPath(dir, idx.Manifests[0].Digest), &m)
	require.Len(t, m.Layers, 1)
	return blobPath(dir, m.Layers[0].Digest)
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
