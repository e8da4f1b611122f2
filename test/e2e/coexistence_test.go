package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// serverGet GETs path from the server directly, as the cluster admin.
func serverGet(t *testing.T, c *framework.Cluster, path string) string {
	t.Helper()
	pki := filepath.Join(c.Dir, "pki")
	out, _ := exec.Command("curl", "-s", "--cacert", filepath.Join(pki, "ca.crt"), "--cert", filepath.Join(pki, "admin.crt"),
		"--key", filepath.Join(pki, "admin.key"), fmt.Sprintf("https://127.0.0.1:%d%s", c.CPPort, path)).CombinedOutput()
	return string(out)
}

// TestCoexistence: the server never takes agents.kruise.io/v1alpha1 from
// CRDs (OpenKruise Agents ships eleven there). It registers its APIService
// itself when no CRD serves the group-version; it does not when some do,
// and says so; CRDs that appear after it registered are reported, and its
// own Checkpoints stay served.
func TestCoexistence(t *testing.T) {
	c := framework.LocalUp(t)
	apiService := func(path string) string {
		out, _ := c.Kubectl("get", "apiservice", "v1alpha1.agents.kruise.io", "-o", "jsonpath="+path)
		return out
	}
	events := func(reason string) string {
		out, _ := c.Kubectl("get", "events", "-A", "--field-selector", "reason="+reason, "-o", "jsonpath={.items[*].message}")
		return out
	}
	serverLog := func() string {
		b, _ := os.ReadFile(filepath.Join(c.Dir, "checkpoint-apiserver.log"))
		return string(b)
	}

	t.Run("RegistersWithoutCRDs", func(t *testing.T) {
		assert.Equal(t, "checkpoint-apiserver", apiService("{.metadata.labels.app\\.kubernetes\\.io/managed-by}"), "the server registered it")
		assert.NotEmpty(t, apiService("{.spec.caBundle}"))
		assert.Empty(t, apiService("{.spec.insecureSkipTLSVerify}"))
		assert.Equal(t, "True", apiService(`{.status.conditions[?(@.type=="Available")].status}`))
		c.Must("create", "namespace", "kept")
		c.Apply(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"mine","namespace":"kept"},"spec":{"podName":"p"}}`)
		assert.Contains(t, serverGet(t, c, "/metrics"), "checkpoint_apiserver_conflicting_crds 0")
	})

	t.Run("CRDsAfterRegistering", func(t *testing.T) {
		c.Must("apply", "-f", framework.OpenKruiseCRDs())
		c.Eventually("the server reports the CRDs its APIService shadows", func() bool {
			return strings.Contains(events("ShadowsCRDs"), "sandboxes.agents.kruise.io") &&
				apiService(`{.status.conditions[?(@.type=="CRDConflict")].status}`) == "True"
		})
		assert.Contains(t, apiService(`{.status.conditions[?(@.type=="CRDConflict")].message}`), "sandboxtemplates.agents.kruise.io")
		assert.Contains(t, serverGet(t, c, "/metrics"), "checkpoint_apiserver_conflicting_crds 11", "OpenKruise Agents' eleven CRDs")
		assert.Contains(t, serverLog(), "shadows CRDs of agents.kruise.io/v1alpha1")
		// It keeps serving its own Checkpoints, and moves nothing.
		assert.Contains(t, c.Must("get", "cp", "mine", "-n", "kept"), "mine")
		assert.Equal(t, "checkpoint-apiserver", apiService("{.spec.service.name}"))
	})

	t.Run("CRDsBeforeStarting", func(t *testing.T) {
		// As in a cluster running OpenKruise Agents: its CRDs are served.
		require.NoError(t, c.Script("stop-server"))
		c.Must("delete", "apiservice", "v1alpha1.agents.kruise.io")
		c.Eventually("the aggregator serves the CRDs", func() bool {
			_, err := c.Kubectl("get", "sandboxes", "-A")
			return err == nil
		})
		c.Apply(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Sandbox","metadata":{"name":"sb","namespace":"kept"},"spec":{"paused":false}}`)

		require.NoError(t, c.ScriptWith([]string{"CP_WAIT=livez"}, "start-server"))
		c.Eventually("the server says it does not register, and why", func() bool {
			return strings.Contains(serverLog(), "not registering APIService v1alpha1.agents.kruise.io") &&
				strings.Contains(events("GroupVersionServedByCRDs"), "--mode=crd")
		})
		ready := serverGet(t, c, "/readyz/apiservice-registration")
		assert.Contains(t, ready, "checkpoints.agents.kruise.io, commits.agents.kruise.io")
		assert.Contains(t, ready, "sandboxes.agents.kruise.io, sandboxsets.agents.kruise.io, sandboxtemplates.agents.kruise.io")
		assert.Contains(t, ready, "--mode=crd")
		assert.Contains(t, serverGet(t, c, "/readyz?verbose"), "[-]apiservice-registration failed")
		// The CRDs stay served: OpenKruise keeps working.
		assert.Contains(t, c.Must("get", "sandboxes", "-n", "kept"), "sb")
		assert.Contains(t, c.Must("get", "checkpoints.agents.kruise.io", "-A"), "No resources found", "its Checkpoint CRD is the one served")
		assert.NotEmpty(t, apiService("{.metadata.labels.kube-aggregator\\.kubernetes\\.io/automanaged}"), "the APIService is the aggregator's, for the CRDs")
		assert.Equal(t, "", apiService("{.spec.service.name}"))
	})

	t.Run("RegistersOnceTheCRDsGo", func(t *testing.T) {
		c.Must("delete", "-f", framework.OpenKruiseCRDs(), "--wait=true")
		c.Eventually("the server registers", func() bool {
			return apiService("{.spec.service.name}") == "checkpoint-apiserver" &&
				apiService(`{.status.conditions[?(@.type=="Available")].status}`) == "True"
		})
		c.Eventually("its Checkpoints are served again, as they were", func() bool {
			out, err := c.Kubectl("get", "cp", "mine", "-n", "kept")
			return err == nil && strings.Contains(out, "mine")
		})
		assert.Empty(t, apiService(`{.status.conditions[?(@.type=="CRDConflict")].status}`))
		assert.Contains(t, serverGet(t, c, "/readyz/apiservice-registration"), "ok")
	})
}
