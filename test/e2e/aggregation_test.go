package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

func TestAggregation(t *testing.T) {
	c := framework.LocalUp(t, "--declarative-capture-delay=24h")
	example := filepath.Join(framework.RepoRoot(), "artifacts", "examples", "checkpoint.yaml")

	t.Run("KubectlThroughTheAggregator", func(t *testing.T) {
		out := c.Must("api-resources", "--api-group=agents.kruise.io")
		assert.Regexp(t, `checkpoints\s+cp\s+agents.kruise.io/v1alpha1\s+true\s+Checkpoint`, out)

		assert.Contains(t, c.Must("apply", "-f", example), "checkpoint-code-demo-01 created")
		assert.Regexp(t, `(?m)^checkpoint-code-demo-01\s+Pending\s+\S+$`, c.Must("get", "cp"))
		assert.Regexp(t, `(?m)^checkpoint-code-demo-01\s+Pending\s+\S+\s+code-interpreter-28rvn\s+memory,filesystem\s+<none>\s+<none>\s+<none>\s+<none>\s+30h$`,
			c.Must("get", "cp", "-o", "wide"))
		// The kube-apiserver aggregates this server's OpenAPI on its own
		// schedule after the APIService is available: explain may come first.
		var explain string
		c.Eventually("kubectl explain finds the Checkpoint's schema", func() bool {
			var err error
			explain, err = c.Kubectl("explain", "cp.spec")
			return err == nil
		})
		assert.Contains(t, explain, "ttlAfterFinished")
		assert.Contains(t, explain, "persistentContents")
		assert.Contains(t, c.Must("apply", "--server-side", "--force-conflicts", "-f", example), "serverside-applied")
		assert.Contains(t, c.Must("get", "cp", "checkpoint-code-demo-01", "-o", "jsonpath={.metadata.annotations.agents\\.kruise\\.io/owner}"),
			"local-up-admin", "the owner is the user the kube-apiserver authenticated")

		// get -w through the aggregator sees a status change.
		watch := exec.Command("kubectl", "get", "cp", "-w", "--no-headers")
		watch.Env = c.Env
		var buf framework.SafeBuffer
		watch.Stdout, watch.Stderr = &buf, &buf
		require.NoError(t, watch.Start())
		defer func() { _ = watch.Process.Kill(); _ = watch.Wait() }()
		c.Eventually("watch lists the checkpoint", func() bool { return strings.Contains(buf.String(), "Pending") })
		c.Must("patch", "cp", "checkpoint-code-demo-01", "--subresource=status", "--type=merge", "-p", `{"status":{"phase":"Failed"}}`)
		c.Eventually("watch shows Failed", func() bool { return strings.Contains(buf.String(), "Failed") })

		assert.Contains(t, c.Must("delete", "cp", "checkpoint-code-demo-01"), "deleted")
		assert.Contains(t, c.Must("get", "cp"), "No resources found")
	})

	t.Run("RBAC", func(t *testing.T) {
		c.Must("create", "namespace", "rbac")
		c.Must("create", "rolebinding", "viewer", "--clusterrole=view", "--user=viewer", "-n", "rbac")
		c.Must("create", "rolebinding", "editor", "--clusterrole=edit", "--user=editor", "-n", "rbac")
		cp := `{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"%s","namespace":"rbac"},"spec":{"podName":"p"}}`
		create := func(user, name string) (string, error) {
			cmd := exec.Command("kubectl", "--as", user, "create", "-f", "-")
			cmd.Env = c.Env
			cmd.Stdin = strings.NewReader(fmt.Sprintf(cp, name))
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		capture := func(user, name string) (string, error) {
			return c.Kubectl("--as", user, "create", "--raw",
				"/apis/agents.kruise.io/v1alpha1/namespaces/rbac/checkpoints/"+name+"/capture", "-f", filepath.Join(c.Dir, "capture.json"))
		}
		require.NoError(t, os.WriteFile(filepath.Join(c.Dir, "capture.json"), []byte(`{"timeoutSeconds": 5}`), 0o600))

		// The aggregated roles take a moment to be folded into view/edit.
		c.Eventually("editor can create", func() bool { _, err := create("editor", "by-editor"); return err == nil })
		out, err := capture("editor", "by-editor")
		assert.NoError(t, err, "editor may capture: %s", out)
		assert.Contains(t, out, `"phase":"Failed"`, "authorized; fails for want of a pod (no containerd here)")

		c.Eventually("viewer can list", func() bool { _, err := c.Kubectl("--as", "viewer", "get", "cp", "-n", "rbac"); return err == nil })
		assert.Contains(t, c.Must("--as", "viewer", "get", "cp", "by-editor", "-n", "rbac"), "by-editor")
		out, err = create("viewer", "by-viewer")
		assert.Error(t, err)
		assert.Contains(t, out, "Forbidden")
		out, err = capture("viewer", "by-editor")
		assert.Error(t, err)
		assert.Contains(t, out, "Forbidden")

		for _, args := range [][]string{{"get", "cp", "-n", "rbac"}, {"get", "cp", "by-editor", "-n", "rbac"}, {"delete", "cp", "by-editor", "-n", "rbac"}} {
			out, err := c.Kubectl(append([]string{"--as", "nobody"}, args...)...)
			assert.Error(t, err, "nobody: %v", args)
			assert.Contains(t, out, "Forbidden", "nobody: %v", args)
		}
		_, err = create("nobody", "by-nobody")
		assert.Error(t, err)
	})

	t.Run("CheckpointIDIsTheServers", func(t *testing.T) {
		// A namespace admin (whose role may write checkpoints/status) cannot
		// make their Checkpoint name another object's captured state, nor
		// set its own, nor forge the capture marker.
		c.Must("create", "namespace", "forgers")
		c.Must("create", "rolebinding", "ns-admin", "--clusterrole=admin", "--user=ns-admin", "-n", "forgers")
		cp := `{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"mine","namespace":"forgers"},"spec":{"podName":"p"}}`
		c.Eventually("the namespace admin may create Checkpoints", func() bool {
			_, err := c.KubectlStdin(cp, "--as=ns-admin", "create", "-f", "-")
			return err == nil
		})
		uid := c.Must("get", "cp", "mine", "-n", "forgers", "-o", "jsonpath={.metadata.uid}")
		for id, says := range map[string]string{
			agents.CheckpointID("the-uid-of-another-namespaces-checkpoint"): "derived from the Checkpoint's own UID",
			agents.CheckpointID(types.UID(uid)):                             "written by the server only",
		} {
			c.Eventually("refused: "+says, func() bool { // (once the admin role's aggregation is seen)
				out, err := c.Kubectl("--as=ns-admin", "patch", "cp", "mine", "-n", "forgers", "--subresource=status", "--type=merge",
					"-p", `{"status":{"phase":"Succeeded","checkpointId":"`+id+`"}}`)
				require.Error(t, err, "a status write naming %s", id)
				return strings.Contains(out, says)
			})
		}
		assert.Empty(t, c.Must("get", "cp", "mine", "-n", "forgers", "-o", "jsonpath={.status.checkpointId}"))
		// Creating a Checkpoint needs the rights a capture needs on its Pod.
		c.Apply(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"cp-only","namespace":"forgers"},"rules":[
{"apiGroups":["agents.kruise.io"],"resources":["checkpoints"],"verbs":["create","get"]}]}`)
		c.Must("create", "rolebinding", "cp-only", "-n", "forgers", "--role=cp-only", "--user=no-pod-rights")
		c.Eventually("refused for want of rights on Pods (once the Role is seen)", func() bool {
			out, err := c.KubectlStdin(strings.Replace(cp, `"mine"`, `"theirs"`, 1), "--as=no-pod-rights", "create", "-f", "-")
			require.Error(t, err, "a Checkpoint of a user with no right on Pods")
			return strings.Contains(out, `user "no-pod-rights" may not get pods`)
		})
		c.Must("--as=ns-admin", "annotate", "cp", "mine", "-n", "forgers", "agents.kruise.io/captured-by=replica-x/1")
		assert.Empty(t, c.Must("get", "cp", "mine", "-n", "forgers", "-o", `jsonpath={.metadata.annotations.agents\.kruise\.io/captured-by}`),
			"the capture marker is the server's")
	})

	t.Run("ResourceQuotaCountsCheckpoints", func(t *testing.T) {
		// The kube-apiserver's quota admission does not see an aggregated
		// API's creates: the server enforces the count itself.
		quotaCount(t, c, "quota", `{"podName":"p"}`) // (captures wait 24 h here)
	})

	t.Run("OwnerScopedSnapshots", func(t *testing.T) {
		c.Must("create", "namespace", "owners")
		for _, u := range []string{"alice", "bob"} {
			c.Must("create", "rolebinding", u, "--clusterrole=edit", "--user="+u, "-n", "owners")
		}
		as := func(user string, stdin string, args ...string) (string, error) {
			cmd := exec.Command("kubectl", append([]string{"--as", user, "-n", "owners"}, args...)...)
			cmd.Env = c.Env
			if stdin != "" {
				cmd.Stdin = strings.NewReader(stdin)
			}
			out, err := cmd.CombinedOutput()
			return string(out), err
		}
		manifest := func(name, forgedOwner string) string {
			ann := ""
			if forgedOwner != "" {
				ann = fmt.Sprintf(`,"annotations":{"agents.kruise.io/owner":%q}`, forgedOwner)
			}
			return fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":%q%s},"spec":{"podName":"p"}}`, name, ann)
		}
		c.Eventually("alice can create", func() bool { _, err := as("alice", manifest("alice-1", ""), "create", "-f", "-"); return err == nil })
		_, err := as("alice", manifest("alice-2", "bob"), "create", "-f", "-")
		require.NoError(t, err)
		_, err = as("bob", manifest("bob-1", ""), "apply", "--server-side", "-f", "-")
		require.NoError(t, err)
		owner := func(name string) string {
			return c.Must("get", "cp", name, "-n", "owners", "-o", "jsonpath={.metadata.annotations.agents\\.kruise\\.io/owner}")
		}
		assert.Equal(t, "alice", owner("alice-1"))
		assert.Equal(t, "alice", owner("alice-2"), "a non-admin cannot name another owner on create")
		assert.Equal(t, "bob", owner("bob-1"))
		_, err = as("alice", "", "annotate", "cp", "alice-1", "agents.kruise.io/owner=bob", "--overwrite")
		assert.NoError(t, err)
		assert.Equal(t, "alice", owner("alice-1"), "nor change it on update")
		_, err = as("bob", manifest("bob-1", "alice"), "apply", "--server-side", "-f", "-")
		assert.NoError(t, err)
		assert.Equal(t, "bob", owner("bob-1"), "nor through server-side apply")

		names := func(user string, args ...string) string {
			out, err := as(user, "", append([]string{"get", "snapshots", "-o", "jsonpath={.items[*].metadata.name}"}, args...)...)
			require.NoError(t, err, out)
			return out
		}
		assert.Equal(t, "alice-1 alice-2", names("alice"))
		assert.Equal(t, "bob-1", names("bob"))
		assert.Equal(t, "", names("alice", "--field-selector=owner=bob"), "a selector narrows, never widens")
		assert.Equal(t, "alice-1 alice-2 bob-1", c.Must("get", "snapshots", "-n", "owners", "-o", "jsonpath={.items[*].metadata.name}"), "admins see all")

		out, err := as("alice", "", "get", "snapshot", "bob-1")
		assert.Error(t, err)
		assert.Contains(t, out, "NotFound")
		out, err = as("alice", "", "delete", "snapshot", "bob-1")
		assert.Error(t, err)
		assert.Contains(t, out, "NotFound")
		c.Must("get", "cp", "bob-1", "-n", "owners")

		// A watch through snapshots carries only the watcher's own changes.
		watch := exec.Command("kubectl", "--as", "alice", "-n", "owners", "get", "snapshots", "-w", "--no-headers", "-o", "custom-columns=NAME:.metadata.name")
		watch.Env = c.Env
		var seen framework.SafeBuffer
		watch.Stdout, watch.Stderr = &seen, &seen
		require.NoError(t, watch.Start())
		c.Eventually("the watch lists alice's", func() bool { return strings.Contains(seen.String(), "alice-2") })
		_, err = as("bob", manifest("bob-2", ""), "create", "-f", "-")
		require.NoError(t, err)
		_, err = as("alice", manifest("alice-3", ""), "create", "-f", "-")
		require.NoError(t, err)
		c.Eventually("the watch shows alice-3", func() bool { return strings.Contains(seen.String(), "alice-3") })
		_ = watch.Process.Kill()
		_ = watch.Wait()
		assert.NotContains(t, seen.String(), "bob", "alice's watch shows nothing of bob's")

		out, err = as("bob", "", "delete", "snapshot", "bob-1")
		require.NoError(t, err, out)
		c.Eventually("bob-1 is gone", func() bool {
			out, err := c.Kubectl("get", "cp", "bob-1", "-n", "owners")
			return err != nil && strings.Contains(out, "NotFound")
		})
	})

	t.Run("DirectRequestsNeedTheFrontProxy", func(t *testing.T) {
		ca, err := os.ReadFile(filepath.Join(c.Dir, "pki", "ca.crt"))
		require.NoError(t, err)
		pool := x509.NewCertPool()
		require.True(t, pool.AppendCertsFromPEM(ca))
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		url := fmt.Sprintf("https://127.0.0.1:%d/apis/agents.kruise.io/v1alpha1/namespaces/rbac/checkpoints", c.CPPort)
		for name, headers := range map[string]map[string]string{
			"no credentials":             {},
			"forged front-proxy headers": {"X-Remote-User": "local-up-admin", "X-Remote-Group": "system:masters"},
		} {
			req, err := http.NewRequest(http.MethodGet, url, nil)
			require.NoError(t, err)
			for k, v := range headers {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Contains(t, []int{401, 403}, resp.StatusCode, name)
		}
	})

	t.Run("NamespaceDeletion", func(t *testing.T) {
		c.Must("create", "namespace", "doomed")
		for i := 0; i < 3; i++ {
			c.Apply(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"cp-%d","namespace":"doomed"},"spec":{"podName":"p"}}`, i))
		}
		c.Must("delete", "namespace", "doomed", "--wait=false")
		c.Eventually("namespace doomed is gone", func() bool {
			out, err := c.Kubectl("get", "namespace", "doomed")
			return err != nil && strings.Contains(out, "NotFound")
		})
		out, err := c.Kubectl("get", "cp", "-n", "doomed")
		assert.NoError(t, err)
		assert.Contains(t, out, "No resources found")
	})

	t.Run("ArtifactsApply", func(t *testing.T) {
		// What an operator applies, checked by the real API server (server-side dry run).
		artifacts := filepath.Join(t.TempDir(), "artifacts")
		require.NoError(t, exec.Command("cp", "-r", filepath.Join(framework.RepoRoot(), "artifacts"), artifacts).Run())
		dir := filepath.Join(artifacts, "deploy")
		_ = os.RemoveAll(filepath.Join(dir, "certs"))
		out, err := exec.Command(filepath.Join(framework.RepoRoot(), "hack", "gen-deploy-certs.sh"), filepath.Join(dir, "certs")).CombinedOutput()
		require.NoError(t, err, "%s", out)
		applied := c.Must("apply", "-k", dir, "--dry-run=server")
		for _, want := range []string{"deployment.apps/checkpoint-apiserver",
			"clusterrole.rbac.authorization.k8s.io/checkpoint-edit", "rolebinding.rbac.authorization.k8s.io/checkpoint-apiserver-auth-reader",
			"role.rbac.authorization.k8s.io/checkpoint-apiserver-leases"} {
			assert.Contains(t, applied, want)
		}
		rendered := c.Must("kustomize", dir)
		assert.NotContains(t, rendered, "insecureSkipTLSVerify")
		// No APIService is applied blindly: the server registers its own,
		// with the serving Secret's CA, only when no CRD serves the group.
		assert.NotContains(t, rendered, "kind: APIService")
		assert.Contains(t, rendered, "--apiservice-ca-file=/etc/checkpoint-apiserver/serving/ca.crt")
		assert.Regexp(t, `ca\.crt: \|?\s*LS0t`, rendered, "the serving Secret carries the CA")

		// The node agents: a DaemonSet serving only the server's client
		// certificate (no token, and no right to review one); the server calls
		// them and pushes to a TLS-verified registry.
		assert.Contains(t, applied, "daemonset.apps/checkpoint-node-agent")
		assert.Contains(t, applied, "clusterrole.rbac.authorization.k8s.io/checkpoint-node-agent")
		assert.Contains(t, rendered, "--server-user=checkpoint-apiserver")
		assert.Contains(t, rendered, "--client-ca-file=/etc/checkpoint-node-agent/client-ca/ca.crt")
		assert.Contains(t, rendered, "--agent-client-cert-file=/etc/checkpoint-apiserver/agent-client/tls.crt")
		assert.NotContains(t, rendered, "tokenreviews", "nobody in artifacts/ reviews tokens: agents take none")
		// Each agent's serving certificate is its own node's, signed by the
		// server, which checks each agent for its node: no shared name.
		assert.Contains(t, rendered, "--request-serving-certificate")
		assert.Contains(t, rendered, "--agent-signer-cert-file=/etc/checkpoint-node-agent/signer/tls.crt")
		assert.NotContains(t, rendered, "--agent-server-name")
		assert.Regexp(t, `resourceNames:\s+- agents.kruise.io/node-agent-serving\s+resources:\s+- signers\s+verbs:\s+- approve\s+- sign`, rendered,
			"the server signs its own signer's CSRs only")
		assert.Contains(t, rendered, "--node-agents")
		assert.Contains(t, rendered, "--webhook-port=8444", "the review of marked Pods is served")
		assert.Regexp(t, `name: webhook\s+port: 8444`, rendered, "behind the Service's webhook port")
		assert.Contains(t, rendered, "--checkpoint-registry-ca-file=")
		assert.Contains(t, rendered, "--encryption-key-file=/etc/checkpoint-encryption/keys.yaml", "checkpoints leave the nodes encrypted")
		assert.Contains(t, rendered, "secretName: checkpoint-encryption-key")
		for _, insecure := range []string{"insecure", "skip-tls", "skipTLS", "plain-http", "plainHTTP"} {
			assert.NotContains(t, strings.ToLower(rendered), strings.ToLower(insecure), "no insecure registry or TLS setting in artifacts/")
		}

		// The crd-mode overlay: the executor of OpenKruise's Checkpoint CRD.
		crd := c.Must("kustomize", filepath.Join(artifacts, "crd-mode"))
		assert.Contains(t, crd, "--mode=crd")
		assert.Contains(t, crd, "--webhook-ca-file=")
		assert.Contains(t, crd, "--encryption-key-file=/etc/checkpoint-encryption/keys.yaml")
		assert.NotContains(t, crd, "--etcd-servers")
		assert.NotContains(t, crd, "--agent-server-name")
		assert.Contains(t, crd, "--agent-signer-cert-file=")
		assert.NotContains(t, crd, "kind: APIService")
		assert.Contains(t, c.Must("apply", "-k", filepath.Join(artifacts, "crd-mode"), "--dry-run=server"),
			"clusterrole.rbac.authorization.k8s.io/checkpoint-apiserver-crd-mode")
	})

	t.Run("OneLeaderAmongReplicas", func(t *testing.T) {
		replica := append(append([]string(nil), c.Env...), "CP_INSTANCE=-2", fmt.Sprintf("CP_PORT=%d", framework.FreePort(t)))
		run := func(cmd string) {
			sh := exec.Command(filepath.Join(framework.RepoRoot(), "hack", "local-up.sh"), cmd)
			sh.Env = replica
			out, err := sh.CombinedOutput()
			require.NoError(t, err, "%s", out)
		}
		run("start-server")
		defer run("stop-server")
		holder := c.Must("get", "lease", "-n", "checkpoint-system", "checkpoint-apiserver-lifecycle", "-o", "jsonpath={.spec.holderIdentity}")
		assert.NotEmpty(t, holder)
		time.Sleep(5 * time.Second) // a few retry periods of the elector
		leaders := 0
		for _, name := range []string{"checkpoint-apiserver", "checkpoint-apiserver-2"} {
			log, err := os.ReadFile(filepath.Join(c.Dir, name+".log"))
			require.NoError(t, err)
			if strings.Contains(string(log), "Leading the checkpoint lifecycle controller") {
				leaders++
				assert.Contains(t, string(log), holder, "%s leads under the Lease's identity", name)
			}
		}
		assert.Equal(t, 1, leaders, "exactly one replica runs the lifecycle controller")
		assert.Equal(t, holder, c.Must("get", "lease", "-n", "checkpoint-system", "checkpoint-apiserver-lifecycle", "-o", "jsonpath={.spec.holderIdentity}"))
		// Each replica renews a Lease of its own, held by its process.
		c.Eventually("both replicas hold their Lease", func() bool {
			out, _ := c.Kubectl("get", "lease", "-n", "checkpoint-system", "-l", "agents.kruise.io/replica-lease=true",
				"-o", `jsonpath={range .items[*]}{.metadata.name}={.spec.holderIdentity}{"\n"}{end}`)
			return strings.Contains(out, "checkpoint-apiserver-replica-checkpoint-apiserver=") &&
				strings.Contains(out, "checkpoint-apiserver-replica-checkpoint-apiserver-2=")
		})
	})

	t.Run("APIServiceAcrossRestart", func(t *testing.T) {
		c.Must("create", "namespace", "durable")
		c.Apply(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"keeper","namespace":"durable"},"spec":{"podName":"p"}}`)
		available := func() string {
			out, _ := c.Kubectl("get", "apiservice", "v1alpha1.agents.kruise.io", "-o", "jsonpath={.status.conditions[?(@.type==\"Available\")].status}")
			return out
		}
		assert.Equal(t, "True", available())
		require.NoError(t, c.Script("stop-server"))
		c.Eventually("APIService unavailable while the server is down", func() bool { return available() == "False" })
		_, err := c.Kubectl("get", "cp", "-n", "durable")
		assert.Error(t, err, "no checkpoints served while down")
		require.NoError(t, c.Script("start-server"))
		assert.Equal(t, "True", available())
		assert.Contains(t, c.Must("get", "cp", "keeper", "-n", "durable"), "keeper", "nothing lost across the restart")
	})
}

// quotaCount: in namespace ns, a ResourceQuota of one Checkpoint admits
// the first and refuses the second (both of spec).
func quotaCount(t *testing.T, c *framework.Cluster, ns, spec string) {
	t.Helper()
	c.Must("create", "namespace", ns)
	c.Must("create", "quota", "one-checkpoint", "-n", ns, "--hard=count/checkpoints.agents.kruise.io=1")
	cp := func(name string) string {
		return fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":%q,"namespace":%q},"spec":%s}`, name, ns, spec)
	}
	var out string
	admitted := assert.Eventually(t, func() bool {
		var err error
		out, err = c.KubectlStdin(cp("first"), "create", "-f", "-")
		return err == nil
	}, 90*time.Second, time.Second, "the first Checkpoint is admitted (once the quota is counted)")
	require.True(t, admitted, "the last answer: %s", out)
	out, err := c.KubectlStdin(cp("second"), "create", "-f", "-")
	require.Error(t, err, "a second Checkpoint over a quota of one")
	assert.Contains(t, out, "exceeded quota: one-checkpoint")
	_, err = c.Kubectl("get", "cp", "second", "-n", ns)
	assert.Error(t, err, "nothing was created")
}
