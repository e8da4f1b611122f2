package e2e

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// TestCRDModeDeployedAsPods is make up MODE=crd: OpenKruise Agents' real
// CRDs, and the server (artifacts/crd-mode) and the node agents as Pods on
// two kubelet nodes with the TLS registry. A sandbox captured through
// OpenKruise's flow (its fake) on node-2 is cloned by OpenKruise's own
// path onto node-1, restored; keepRunning false pauses a Sandbox.
func TestCRDModeDeployedAsPods(t *testing.T) {
	framework.RequireTool(t, "docker-registry")
	const ns = "kruise"
	c := framework.LocalUpNodesEnv(t, 2, []string{"MODE=crd", "DEPLOY=pods"}, "--declarative-capture-delay=1s")
	running := func(app string, want int) bool {
		pods := systemPods(t, c)[app]
		for _, p := range pods {
			if p.phase != "Running" {
				return false
			}
		}
		return len(pods) == want
	}
	c.Eventually("two server replicas and an agent per node run as Pods", func() bool {
		return running("checkpoint-apiserver", 2) && running("checkpoint-node-agent", 2)
	})
	args := c.Must("get", "deploy", "checkpoint-apiserver", "-n", "checkpoint-system", "-o", "jsonpath={.spec.template.spec.containers[0].args}")
	assert.Contains(t, args, "--mode=crd")
	assert.NotContains(t, args, "--etcd-servers", "crd mode keeps no etcd of its own")
	for _, crd := range []string{"sandboxes", "sandboxsets", "sandboxclaims", "sandboxtemplates", "checkpoints", "commits"} {
		c.Must("get", "crd", crd+".agents.kruise.io")
	}
	c.Must("get", "apiservice", "v1alpha1.subresources.agents.kruise.io")

	c.SandboxNamespace(ns)
	c.Apply(framework.OnNode(podYAML(ns, "src", framework.CounterScript), "node-2"))
	c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/src", "--timeout=120s")
	c.Eventually("the source counts", func() bool { return lastCount(t, c, ns, "src") >= 3 })
	kruise := fakeOpenKruise{c: c, ns: ns}
	kruise.install()
	_, id := kruise.snapshot(t, "src", "key-alice")

	// OpenKruise's clone, pinned to node-1 through its template: the Pod
	// its controller creates is restored from node-2's capture.
	clone, out, err := kruise.cloneOn(t, ns, id, "key-alice", "node-1")
	require.NoError(t, err, out)
	c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/"+clone, "--timeout=120s")
	assert.Equal(t, "node-1", c.Must("get", "pod", clone, "-n", ns, "-o", "jsonpath={.spec.nodeName}"))
	assert.Greater(t, firstCount(t, c, ns, clone), 3, "the clone counts on from the capture")

	// keepRunning false on the clone's Pod pauses its Sandbox.
	c.Apply(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"pause","namespace":"` + ns + `"},
"spec":{"podName":"` + clone + `","keepRunning":false}}`)
	c.Eventually("the capture Succeeded", func() bool {
		out, _ := c.Kubectl("get", "cp", "pause", "-n", ns, "-o", "jsonpath={.status.phase}")
		return out == "Succeeded"
	})
	c.Eventually("the Sandbox is paused", func() bool {
		out, _ := c.Kubectl("get", "sandbox", clone, "-n", ns, "-o", "jsonpath={.spec.paused}")
		return out == "true"
	})
	assert.Equal(t, "Paused", kruise.reconcile(t, clone), "its Pod was left to OpenKruise's controller, which ends the Sandbox Paused")

	// A Hibernate Sandbox on node-2 keeps its memory through OpenKruise's
	// pause, and resumes on node-1, through the registry.
	hibernateAndResume(t, kruise, "hib", framework.OnNode(podYAML(ns, "hib", framework.SecretCounterScript), "node-2"), "node-1")

	// OpenKruise's CheckpointRestore upgrade, with the key artifacts/crd-mode
	// gives the server: the filesystem capture goes through the registry,
	// and the new Pod gets its writable layers back wherever it lands.
	uid := kruise.plainSandbox(t, "upg", "key-alice", sidecarPodYAML(ns, "upg"))
	c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/upg", "--timeout=120s")
	c.Must("exec", "-n", ns, "upg", "-c", "proxy", "--", "sh", "-c", "echo kept through the upgrade > /tmp/kept")
	_, out, err = kruise.upgrade(t, "upg", uid, upgradeKey)
	require.NoError(t, err, out)
	c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/upg", "--timeout=120s")
	assert.Equal(t, "kept through the upgrade", strings.TrimSpace(c.MustStdout("exec", "-n", ns, "upg", "-c", "proxy", "--", "cat", "/tmp/kept")))
}
