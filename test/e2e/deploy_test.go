package e2e

import (
	"encoding/json"
	"fmt"
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

	"github.com/agents-kruise/checkpoint-apiserver/test/bench"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// sysPod is one of checkpoint-system's Pods.
type sysPod struct{ phase, node, image string }

// systemPods are checkpoint-system's Pods by app label.
func systemPods(t *testing.T, c *framework.Cluster) map[string][]sysPod {
	t.Helper()
	var list struct {
		Items []struct {
			Metadata struct {
				Labels map[string]string `json:"labels"`
			} `json:"metadata"`
			Spec struct {
				NodeName   string `json:"nodeName"`
				Containers []struct {
					Image string `json:"image"`
				} `json:"containers"`
			} `json:"spec"`
			Status struct {
				Phase string `json:"phase"`
			} `json:"status"`
		} `json:"items"`
	}
	require.NoError(t, json.Unmarshal([]byte(c.Must("-n", "checkpoint-system", "get", "pods", "-o", "json")), &list))
	out := map[string][]sysPod{}
	for _, p := range list.Items {
		app := p.Metadata.Labels["app"]
		out[app] = append(out[app], sysPod{phase: p.Status.Phase, node: p.Spec.NodeName, image: p.Spec.Containers[0].Image})
	}
	return out
}

// TestDeployedAsPods runs the system as an operator does and make up brings
// it up (local-up DEPLOY=pods): two kubelet nodes, the server's two
// replicas and a node agent per node as Pods from make image's images,
// applied from artifacts/deploy, and the TLS registry with htpasswd.
// Sandboxes captured on one node are cloned onto the other and onto
// whichever node the scheduler picks; the agents serve only the server and
// only their node's Pods; Checkpoints carry Events; a killed server Pod is
// replaced without losing a Checkpoint.
func TestDeployedAsPods(t *testing.T) {
	framework.RequireTool(t, "skopeo")
	framework.RequireTool(t, "docker-registry")
	checkpointctl := filepath.Join(framework.RepoRoot(), "_output", "bin", "checkpointctl")
	if _, err := os.Stat(checkpointctl); err != nil {
		framework.Missing(t, "_output/bin/checkpointctl not built (run hack/build-kube-tools.sh)")
	}
	const ns, sandboxes = "deployed", "sandboxes"
	c := framework.LocalUpNodesEnv(t, 2, []string{"DEPLOY=pods", "E2B_API_KEYS_FILE=" + e2bKeys(t, sandboxes)}, "--declarative-capture-delay=1s")
	images, err := os.ReadFile(filepath.Join(c.Dir, "images", "images.txt"))
	require.NoError(t, err)
	reg := c.Registry()

	nodeOf := func(pod string) string {
		return c.Must("get", "pod", pod, "-n", ns, "-o", "jsonpath={.spec.nodeName}")
	}
	running := func(app string, want int) bool {
		pods := systemPods(t, c)[app]
		nodes := map[string]bool{}
		for _, p := range pods {
			if p.phase != "Running" {
				return false
			}
			nodes[p.node] = true
		}
		return len(pods) == want && len(nodes) == want
	}
	t.Run("ServerAndAgentsRunAsPods", func(t *testing.T) {
		c.Eventually("two server replicas and an agent per node run", func() bool {
			return running("checkpoint-apiserver", 2) && running("checkpoint-node-agent", 2)
		})
		for app, pods := range systemPods(t, c) {
			for _, p := range pods {
				assert.Contains(t, string(images), p.image+" ", "%s runs the image make image built", app)
			}
		}
		// The server's own /version, through its Service.
		v := c.Must("get", "--raw", "/api/v1/namespaces/checkpoint-system/services/https:checkpoint-apiserver:443/proxy/version")
		assert.Contains(t, v, `"gitVersion": "v0.1.0-alpha.`)
		// The nodes run containerd 2.4 as shipped, with the restore runtime
		// the agents installed and no CRI restore from checkpoint images.
		for _, v := range strings.Fields(c.Must("get", "nodes", "-o", "jsonpath={.items[*].status.nodeInfo.containerRuntimeVersion}")) {
			assert.Regexp(t, `^containerd://2\.4\.\d+$`, v)
		}
		assert.Equal(t, "checkpoint", c.Must("get", "runtimeclass", "checkpoint", "-o", "jsonpath={.handler}"))
		for i := 1; i <= 2; i++ {
			cfg, err := os.ReadFile(filepath.Join(c.Dir, "nodes", fmt.Sprintf("node-%d", i), "containerd.toml"))
			require.NoError(t, err)
			assert.NotContains(t, string(cfg), "restore_via_create")
			assert.NotContains(t, string(cfg), "org.criu.config")
			assert.FileExists(t, filepath.Join(c.Dir, "node-runtime", fmt.Sprintf("node-%d", i), "bin", "containerd-shim-checkpoint-v1"),
				"the agent's init container installed the shim")
		}
	})

	// The E2B front of either replica, over TLS with the server's certificate.
	front := e2bFront{url: "https://198.18.0.11:3000", ca: filepath.Join(c.Dir, "deploy", "base", "certs", "ca.crt")}
	t.Run("SandboxesOnTheNodes", func(t *testing.T) { sandboxesOnTheNodes(t, c, sandboxes, front) })

	c.SandboxNamespace(ns)

	t.Run("WebSandboxClonedOntoTheOtherNode", func(t *testing.T) {
		startWeb(c, ns, "node-1")
		captureByApply(t, c, ns, "cp-web", "web", true)
		image := c.Must("get", "cp", "cp-web", "-n", ns, "-o", "jsonpath={.status.image}")
		digest := c.Must("get", "cp", "cp-web", "-n", ns, "-o", "jsonpath={.status.imageDigest}")
		require.Equal(t, framework.RegistryHost+"/checkpoints/"+ns+"@"+digest, image, "each namespace has its own repository")
		assert.Contains(t, c.Must("get", "cp", "cp-web", "-n", ns, "-o", "jsonpath={.status.message}"), "web")
		// The agent reports how long CRIU froze the sandbox.
		pauseAtMostCapture(t, c.Must("get", "cp", "cp-web", "-n", ns, "-o", "jsonpath={.status.pauseDuration} {.status.captureDuration}"))

		// The registry holds it: skopeo, with the test credentials, reads the
		// digest status records, under the checkpoint ID's tag too.
		id := c.Must("get", "cp", "cp-web", "-n", ns, "-o", "jsonpath={.status.checkpointId}")
		out, err := reg.Inspect(framework.RegistryHost+"/checkpoints/"+ns+":"+id, true)
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

		// The container's checkpoint image holds its archive encrypted:
		// checkpointctl cannot read it as it is; decrypted with its data key
		// (which the operator's key-encryption key opens), it reads it as it
		// reads the kubelet's archives.
		oci := filepath.Join(t.TempDir(), "oci")
		out, err = reg.Skopeo("copy", "-q", "--src-cert-dir", reg.CertDir(), "--src-creds", reg.Creds(),
			"docker://"+framework.RegistryHost+"/checkpoints/"+ns+"@"+index.Manifests[0].Digest, "oci:"+oci+":web")
		require.NoError(t, err, out)
		layer, desc := ociLayer(t, oci)
		assert.Equal(t, "application/vnd.oci.image.layer.v1.tar+encrypted", desc.MediaType)
		show, err := exec.Command(checkpointctl, "show", layer).CombinedOutput()
		require.Error(t, err, "checkpointctl read the encrypted layer: %s", show)
		show, err = exec.Command(checkpointctl, "show", decryptLayer(t, layer, desc, dataKey(t, c, ns, "cp-web"), id, "main")).CombinedOutput()
		require.NoError(t, err, "%s", show)
		assert.Contains(t, string(show), "docker.io/library/busybox:local", "checkpointctl shows the base image")
		assert.Contains(t, string(show), "containerd", "checkpointctl shows the engine")

		// A clone on node-2, restored by node-2's restore runtime from what
		// its agent pulled by digest, serves; its established connection
		// comes back closed.
		out, err = restoreOn(c, ns, "cp-web", "web-b", "node-2")
		require.NoError(t, err, out)
		assert.Contains(t, out, `"node":"node-2"`)
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/web-b", "--timeout=60s")
		assert.Equal(t, "node-2", nodeOf("web-b"))
		assert.Equal(t, c.Must("get", "pod", "web", "-n", ns, "-o", "jsonpath={.spec.containers[0].image}"),
			c.Must("get", "pod", "web-b", "-n", ns, "-o", "jsonpath={.spec.containers[0].image}"), "the clone runs its source's image")
		assert.Equal(t, "checkpoint", c.Must("get", "pod", "web-b", "-n", ns, "-o", "jsonpath={.spec.runtimeClassName}"))
		unpacked := c.RestoreImage(2, ns, id, "main")
		require.NotEmpty(t, unpacked, "node-2's agent unpacked the checkpoint for its runtime")
		assert.FileExists(t, filepath.Join(unpacked, "checkpoint", "inventory.img"))
		assert.True(t, strings.HasPrefix(unpacked, "/dev/shm/"), "in memory, since it fits the agent's bound there: %s", unpacked)
		assert.Equal(t, "0", c.Must("get", "pod", "web-b", "-n", ns, "-o", "jsonpath={.status.containerStatuses[0].restartCount}"))
		assert.Contains(t, c.Must("exec", "-n", ns, "web-b", "--", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/"), "web-sandbox")
		assert.Equal(t, "captured", strings.TrimSpace(c.MustStdout("exec", "-n", ns, "web-b", "--", "cat", "/data/marker")))
		c.Eventually("the clone's established connection is closed", func() bool {
			out, _ := c.Kubectl("logs", "-n", ns, "web-b")
			return strings.Contains(out, "conn-closed")
		})

		// Deleting the Checkpoint removes it from the registry and from
		// both nodes (node-1's capture and prefetch, node-2's pull).
		c.Must("delete", "pod", "web-b", "-n", ns, "--wait=true", "--timeout=60s")
		c.Must("delete", "cp", "cp-web", "-n", ns, "--wait=true", "--timeout=60s")
		out, err = reg.Inspect(image, true)
		require.Error(t, err, "the index is gone from the registry")
		assert.Contains(t, out, "manifest unknown")
		out, err = reg.Inspect(framework.RegistryHost+"/checkpoints/"+ns+"@"+index.Manifests[0].Digest, true)
		require.Error(t, err, "the container's image is gone from the registry")
		for i := 1; i <= 2; i++ {
			imgs, err := c.NodeCtr(i, "images", "ls")
			require.NoError(t, err)
			assert.NotContains(t, imgs, id, "node-%d holds nothing of the checkpoint", i)
			for _, root := range c.RestoreImages(i) {
				assert.NoDirExists(t, filepath.Join(root, ns, id), "node-%d holds no unpacked copy", i)
			}
		}
	})

	t.Run("MemoryIsEncryptedAtRest", func(t *testing.T) { memoryEncryptedAtRest(t, c, reg, ns) })

	t.Run("PythonSandboxClonesSpreadOverBothNodes", func(t *testing.T) {
		get, secret := startPython(t, c, ns, "node-1")
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

	t.Run("MarkedPodsAreAdmittedByTheDeployedWebhook", func(t *testing.T) {
		// The Deployment's replicas serve and register the webhook for
		// marked Pods: a user who may create Pods, but not restore, is
		// refused; so is a Pod naming another namespace's checkpoint.
		id := c.Must("get", "cp", "cp-py", "-n", ns, "-o", "jsonpath={.status.checkpointId}")
		require.NotEmpty(t, id)
		c.Apply(fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"pod-maker","namespace":%q},"rules":[
{"apiGroups":[""],"resources":["pods"],"verbs":["get","create"]}]}`, ns))
		c.Must("create", "rolebinding", "pod-makers", "-n", ns, "--role=pod-maker", "--user=mallory")
		out, err := c.KubectlStdin(framework.MarkForRestore(podYAML(ns, "by-mallory", framework.CounterScript), id), "create", "-f", "-", "--as=mallory")
		require.Error(t, err, "a marked Pod of a user who may not restore is refused")
		assert.Regexp(t, `may not create checkpoints\S*/restore`, out)
		c.Must("create", "namespace", "elsewhere")
		out, err = c.KubectlStdin(framework.MarkForRestore(podYAML("elsewhere", "stolen", framework.CounterScript), id), "create", "-f", "-")
		require.Error(t, err, "a Checkpoint of another namespace is not restored")
		assert.Contains(t, out, "namespace elsewhere has no Checkpoint")
	})

	t.Run("ClonesAreCreatedAsTheirCaller", func(t *testing.T) {
		// An admission policy that refuses every Pod the server's own
		// service account creates in a namespace: a namespace admin's clone
		// is still admitted, so it was created as that admin, and policies
		// see who asked (the control: the server's account is refused).
		const where = "as-caller"
		c.Must("create", "namespace", where)
		c.Must("label", "namespace", where, "as-caller=yes")
		c.Must("create", "rolebinding", "clone-maker-admin", "-n", where, "--clusterrole=admin", "--user=clone-maker")
		c.Apply(`{"apiVersion":"admissionregistration.k8s.io/v1","kind":"ValidatingAdmissionPolicy","metadata":{"name":"no-pods-by-the-server"},
"spec":{"failurePolicy":"Fail","matchConstraints":{"resourceRules":[{"apiGroups":[""],"apiVersions":["v1"],"operations":["CREATE"],"resources":["pods"]}]},
"validations":[{"expression":"request.userInfo.username != 'system:serviceaccount:checkpoint-system:checkpoint-apiserver'","message":"the server creates no Pod here"}]}}`)
		c.Apply(`{"apiVersion":"admissionregistration.k8s.io/v1","kind":"ValidatingAdmissionPolicyBinding","metadata":{"name":"no-pods-by-the-server"},
"spec":{"policyName":"no-pods-by-the-server","validationActions":["Deny"],"matchResources":{"namespaceSelector":{"matchLabels":{"as-caller":"yes"}}}}}`)
		defer c.Must("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", "no-pods-by-the-server")
		c.Eventually("the policy refuses the server's Pods", func() bool {
			out, err := c.KubectlStdin(podYAML(where, "by-the-server", framework.CounterScript), "create", "-f", "-",
				"--as=system:serviceaccount:checkpoint-system:checkpoint-apiserver")
			if err == nil {
				c.Must("delete", "pod", "by-the-server", "-n", where, "--wait=false")
			}
			return err != nil && strings.Contains(out, "the server creates no Pod here")
		})

		c.Apply(framework.OnNode(podYAML(where, "src", framework.CounterScript), "node-1"))
		c.Must("wait", "-n", where, "--for=condition=Ready", "pod/src", "--timeout=120s")
		c.MustStdin(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"mine","namespace":%q},"spec":{"podName":"src"}}`, where),
			"create", "-f", "-", "--as=clone-maker")
		c.Eventually("clone-maker's capture ends", func() bool {
			phase, _ := c.Kubectl("get", "cp", "mine", "-n", where, "-o", "jsonpath={.status.phase}")
			return phase == "Succeeded" || phase == "Failed"
		})
		require.Equal(t, "Succeeded", c.Must("get", "cp", "mine", "-n", where, "-o", "jsonpath={.status.phase}"))
		body := `{"apiVersion":"agents.kruise.io/v1alpha1","kind":"CheckpointRestore","spec":{"sandboxName":"clone","nodeName":"node-2"}}`
		out, err := c.KubectlStdin(body, "--as=clone-maker", "create", "--raw", "/apis/agents.kruise.io/v1alpha1/namespaces/"+where+"/checkpoints/mine/restore", "-f", "-")
		require.NoError(t, err, "the clone is created as clone-maker, whom the policy lets through: %s", out)
		c.Must("wait", "-n", where, "--for=condition=Ready", "pod/clone", "--timeout=60s")
		assert.Equal(t, "clone-maker", c.Must("get", "pod", "clone", "-n", where, "-o", `jsonpath={.metadata.annotations.agents\.kruise\.io/owner}`))
	})

	t.Run("NativeSidecarClonedOnBothNodes", func(t *testing.T) {
		// A sandbox with a plain init container and a native sidecar that
		// keeps its own state (a count in its shell's memory, a file): both
		// running containers come back in each clone, the init container
		// does not run again.
		c.Apply(framework.OnNode(sidecarPodYAML(ns, "side"), "node-1"))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/side", "--timeout=120s")
		c.Must("exec", "-n", ns, "side", "-c", "proxy", "--", "sh", "-c", "echo kept by the sidecar > /tmp/note")
		c.Eventually("both count", func() bool {
			return countIn(c, ns, "side", "proxy", true) >= 3 && countIn(c, ns, "side", "main", true) >= 3
		})
		captureByApply(t, c, ns, "cp-side", "side", true)
		for clone, node := range map[string]string{"side-a": "node-1", "side-b": "node-2"} {
			out, err := restoreOn(c, ns, "cp-side", clone, node)
			require.NoError(t, err, out)
			c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/"+clone, "--timeout=60s")
			assert.Equal(t, node, nodeOf(clone))
			for _, ctr := range []string{"proxy", "main"} {
				c.Eventually(clone+"/"+ctr+" logs", func() bool { return countIn(c, ns, clone, ctr, false) >= 0 })
				assert.Greater(t, countIn(c, ns, clone, ctr, false), 3, "%s on %s: container %s counts on from the capture", clone, node, ctr)
			}
			assert.Equal(t, "kept by the sidecar", strings.TrimSpace(c.MustStdout("exec", "-n", ns, clone, "-c", "proxy", "--", "cat", "/tmp/note")))
			assert.Equal(t, "proxy", c.Must("get", "pod", clone, "-n", ns, "-o", "jsonpath={.status.initContainerStatuses[*].name}"),
				"the clone runs the sidecar, not the finished init container")
		}
	})

	t.Run("IPythonKernelClonedOnBothNodes", func(t *testing.T) {
		// An IPython kernel (Debian's python3-ipykernel), its state set
		// through jupyter_client over ZeroMQ on loopback, as E2B's code
		// interpreter drives one: each clone's kernel answers a new client
		// on its listening sockets with the state the source had.
		c.Apply(framework.OnNode(framework.PodYAML(ns, "kernel", framework.PythonImage, "{}",
			"python3", "-m", "ipykernel_launcher", "--ip=127.0.0.1", "-f", "/tmp/kernel.json"), "node-1"))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/kernel", "--timeout=120s")
		c.Eventually("the kernel wrote its connection file", func() bool {
			_, err := c.Kubectl("exec", "-n", ns, "kernel", "--", "test", "-s", "/tmp/kernel.json")
			return err == nil
		})
		const state = "f'{secret} {n}'"
		run := func(pod, code string) (string, error) {
			stdout, stderr, err := c.KubectlOutputs("exec", "-n", ns, pod, "--", "python3", "-c", kernelClient, code, state)
			if stderr != "" {
				t.Logf("%s's kernel said on stderr: %s", pod, stderr)
			}
			if err != nil {
				return stdout + stderr, err
			}
			return stdout, nil
		}
		out, err := run("kernel", "secret = 'kept in the kernel'; n = 41 + 1")
		require.NoError(t, err, out)
		require.Equal(t, "kept in the kernel 42", strings.TrimSpace(out))
		captureByApply(t, c, ns, "cp-kernel", "kernel", true)
		for clone, node := range map[string]string{"kernel-a": "node-1", "kernel-b": "node-2"} {
			out, err := restoreOn(c, ns, "cp-kernel", clone, node)
			require.NoError(t, err, out)
			c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/"+clone, "--timeout=60s")
			out, err = run(clone, "n += 1")
			require.NoError(t, err, out)
			assert.Equal(t, "kept in the kernel 43", strings.TrimSpace(out), "the kernel on %s has the source's state", node)
		}
		out, err = run("kernel", "pass")
		require.NoError(t, err, out)
		assert.Equal(t, "kept in the kernel 42", strings.TrimSpace(out), "the source's kernel goes on, untouched by its clones")
	})

	t.Run("KeepRunningFalseThroughNode2sAgent", func(t *testing.T) {
		// node-2's agent ends the source's processes; its kubelet ends the
		// Pod Succeeded; the checkpoint is in the registry and clones onto node-1.
		captureEndingPod(t, c, ns, "node-2")
		out, err := restoreOn(c, ns, "cp-done", "done-a", "node-1")
		require.NoError(t, err, out)
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/done-a", "--timeout=60s")
		assert.Greater(t, firstCount(t, c, ns, "done-a"), 3, "the clone on node-1 counts on from the capture")
	})

	t.Run("EventsOnCheckpoints", func(t *testing.T) {
		// cp-py was captured on node-1 and cloned onto both nodes.
		checkEvents(t, c, ns, "cp-py", "py", map[string]string{"py-a": "node-1", "py-b": "node-2"}, "cp-done")
	})

	t.Run("AgentsServeOnlyTheServerAndOnlyTheirNode", func(t *testing.T) {
		c.Apply(framework.OnNode(podYAML(ns, "victim", framework.CounterScript), "node-1"))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/victim", "--timeout=120s")
		body := fmt.Sprintf(`{"pod":{"namespace":%q,"name":"victim"},"id":"ckpt-intruder"}`, ns)
		anonymous := agentClient(t, c, "", "")

		// The server's client certificate (the deployment's) is served, but
		// only for its node's Pods.
		certs := filepath.Join(c.Dir, "deploy", "base", "certs")
		server := agentClient(t, c, filepath.Join(certs, "agent-client.crt"), filepath.Join(certs, "agent-client.key"))
		code, out, err := agentCall(server, 2, "/v1/capture", body, "")
		require.NoError(t, err)
		assert.Equal(t, http.StatusForbidden, code, out)
		assert.Contains(t, out, "bound to node-1", "node-2's agent refuses a Pod on node-1")

		code, out, err = agentCall(anonymous, 1, "/v1/capture", body, "")
		require.NoError(t, err)
		assert.Equal(t, http.StatusUnauthorized, code, "no credentials: %s", out)

		// A client certificate of another CA, even the cluster admin's, is
		// refused in the handshake or answered 401.
		pki := filepath.Join(c.Dir, "pki")
		code, out, err = agentCall(agentClient(t, c, filepath.Join(pki, "admin.crt"), filepath.Join(pki, "admin.key")), 1, "/v1/capture", body, "")
		if err == nil {
			assert.Equal(t, http.StatusUnauthorized, code, out)
		}

		// Every bearer token is refused, valid or not, alone or beside the
		// server's own certificate: the server's service account's (which
		// can create Pods cluster-wide), another one's, the agents' own.
		for _, sa := range []string{"checkpoint-apiserver -n checkpoint-system", "default -n " + ns, "checkpoint-node-agent -n checkpoint-system"} {
			f := strings.Fields(sa)
			token := c.Must("create", "token", f[0], "-n", f[2])
			for _, client := range []*http.Client{anonymous, server} {
				code, out, err = agentCall(client, 1, "/v1/capture", body, token)
				require.NoError(t, err)
				assert.Equal(t, http.StatusUnauthorized, code, out)
				assert.Contains(t, out, "bearer tokens are refused", sa)
			}
		}

		// Nothing was captured by any of these.
		for i := 1; i <= 2; i++ {
			imgs, err := c.NodeCtr(i, "images", "ls")
			require.NoError(t, err)
			assert.NotContains(t, imgs, "ckpt-intruder")
		}

		agentsHaveTheirOwnNodesCertificates(t, c)
	})

	t.Run("BenchmarkAcrossNodesSmoke", func(t *testing.T) {
		// Every step of make bench's node benchmark, once, so it cannot rot:
		// each figure recorded, never how fast (nodeCaptures checks each
		// capture's pauseDuration is set and no larger than captureDuration).
		n := bench.SmokeAcrossNodes(t, c)
		for what, v := range map[string]float64{"capture through the agent": n.AgentMs, "clone on node-1": n.RestoreLocalMs,
			"clone on node-2": n.RestoreOtherMs, "the kubelet's checkpoint API": n.KubeletMs, "push": n.PushMs, "pull": n.PullMs,
			"eager clone on node-1": n.EagerLocalMs, "eager clone on node-2": n.EagerOtherMs,
			"fresh Pod on node-1": n.FreshLocalMs, "fresh Pod on node-2": n.FreshOtherMs} {
			assert.Positive(t, v, what)
		}
		assert.GreaterOrEqual(t, n.RestoreLocalPagesMs, n.RestoreLocalMs, "every page in comes no sooner than Ready")
		assert.GreaterOrEqual(t, n.RestoreOtherPagesMs, n.RestoreOtherMs, "every page in comes no sooner than Ready")
		assert.Positive(t, n.ImageBytes)
		r := bench.Results{Nodes: []bench.NodesResult{n}}
		table := r.Markdown()
		for _, want := range []string{"durable in the registry, 0 MiB", "the kubelet's checkpoint API", "pull, 0 MiB checkpoint",
			"clone, 0 MiB random, other node: lazy, to Ready", "clone, 0 MiB random, capturing node: lazy, to every page in",
			"clone, 0 MiB random, capturing node: eager"} {
			assert.Contains(t, table, want)
		}
		dir := t.TempDir()
		require.NoError(t, r.Plot(dir))
		for _, png := range []string{"nodes.png", "restore.png"} {
			st, err := os.Stat(filepath.Join(dir, png))
			require.NoError(t, err)
			assert.Positive(t, st.Size(), png)
		}
	})

	// restartServers replaces both server replicas (their host ports allow
	// no surge) and waits for the new ones.
	restartServers := func() {
		old := c.Must("-n", "checkpoint-system", "get", "pods", "-l", "app=checkpoint-apiserver", "-o", "jsonpath={.items[*].metadata.name}")
		c.Must("-n", "checkpoint-system", "delete", "pods", "-l", "app=checkpoint-apiserver", "--wait=false")
		c.Eventually("two new server replicas run", func() bool {
			names := c.Must("-n", "checkpoint-system", "get", "pods", "-l", "app=checkpoint-apiserver", "-o", "jsonpath={.items[*].metadata.name}")
			for _, n := range strings.Fields(old) {
				if strings.Contains(names, n) {
					return false
				}
			}
			return running("checkpoint-apiserver", 2)
		})
		c.Must("-n", "checkpoint-system", "rollout", "status", "deploy/checkpoint-apiserver", "--timeout=120s")
	}

	t.Run("AKilledServerPodIsReplaced", func(t *testing.T) {
		before := systemPods(t, c)["checkpoint-apiserver"]
		require.Len(t, before, 2)
		victim := c.Must("-n", "checkpoint-system", "get", "pods", "-l", "app=checkpoint-apiserver", "-o", "jsonpath={.items[0].metadata.name}")
		c.Must("-n", "checkpoint-system", "delete", "pod", victim, "--grace-period=0", "--force")
		c.Eventually("a replacement replica runs", func() bool {
			names := c.Must("-n", "checkpoint-system", "get", "pods", "-l", "app=checkpoint-apiserver", "-o", "jsonpath={.items[*].metadata.name}")
			return !strings.Contains(names, victim) && running("checkpoint-apiserver", 2)
		})
		c.Must("-n", "checkpoint-system", "rollout", "status", "deploy/checkpoint-apiserver", "--timeout=120s")
		// Nothing was lost, and captures go on.
		assert.Equal(t, "Succeeded", c.Must("get", "cp", "cp-py", "-n", ns, "-o", "jsonpath={.status.phase}"))
		captureByApply(t, c, ns, "cp-after", "py", true)
	})

	// Last: it restarts the server with another key-encryption key.
	t.Run("AWrongKeyEncryptionKeyFailsClearly", func(t *testing.T) { wrongKeyEncryptionKey(t, c, ns, restartServers) })
}
