package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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

// TestDeployedAsPods brings the system up as an operator runs it
// (local-up DEPLOY=pods): the server's two replicas and an agent per node
// as Pods from make image's images, applied from artifacts/deploy. A
// sandbox is captured and cloned onto the other node through them, and a
// killed server Pod is replaced without losing a Checkpoint.
func TestDeployedAsPods(t *testing.T) {
	framework.RequireTool(t, "skopeo")
	framework.RequireTool(t, "docker-registry")
	const ns = "deployed"
	c := framework.LocalUpNodesEnv(t, 2, []string{"DEPLOY=pods"})
	images, err := os.ReadFile(filepath.Join(c.Dir, "images", "images.txt"))
	require.NoError(t, err)

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
	})

	c.SandboxNamespace(ns)
	t.Run("CaptureAndCloneThroughThem", func(t *testing.T) {
		startWeb(c, ns, "node-1")
		captureByApply(t, c, ns, "cp-web", "web", true)
		assert.Contains(t, c.Must("get", "cp", "cp-web", "-n", ns, "-o", "jsonpath={.status.image}"), framework.RegistryHost+"/checkpoints@sha256:")
		out, err := restoreOn(c, ns, "cp-web", "web-b", "node-2")
		require.NoError(t, err, out)
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/web-b", "--timeout=60s")
		assert.Contains(t, c.Must("exec", "-n", ns, "web-b", "--", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/"), "web-sandbox")
		describe := c.Must("describe", "cp", "cp-web", "-n", ns)
		assert.Contains(t, describe, "Captured")
		assert.Contains(t, describe, "Restored")
	})

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
		assert.Equal(t, "Succeeded", c.Must("get", "cp", "cp-web", "-n", ns, "-o", "jsonpath={.status.phase}"))
		captureByApply(t, c, ns, "cp-after", "web", true)
	})
}
