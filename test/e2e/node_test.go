package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// podYAML is a Pod running script in the local busybox image.
func podYAML(ns, name, script string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: docker.io/library/busybox:local
    imagePullPolicy: Never
    command: ["sh", "-c", %q]
`, name, ns, script)
}

// lastCount is the last number a counting Pod printed.
func lastCount(t *testing.T, c *framework.Cluster, ns, pod string) int {
	t.Helper()
	out := c.Must("logs", "-n", ns, pod)
	last := -1
	for _, l := range strings.Split(out, "\n") {
		if n, err := strconv.Atoi(strings.TrimSpace(l)); err == nil {
			last = n
		}
	}
	return last
}

// captureByApply applies a Checkpoint of pod (with keepRunning) and
// requires it to end Succeeded.
func captureByApply(t *testing.T, c *framework.Cluster, ns, name, pod string, keepRunning bool) {
	t.Helper()
	c.Apply(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":%q,"namespace":%q},"spec":{"podName":%q,"keepRunning":%t}}`,
		name, ns, pod, keepRunning))
	var phase string
	c.Eventually("the Checkpoint ends", func() bool {
		phase, _ = c.Kubectl("get", "cp", name, "-n", ns, "-o", "jsonpath={.status.phase}")
		return phase == "Succeeded" || phase == "Failed"
	})
	require.Equal(t, "Succeeded", phase, c.Must("get", "cp", name, "-n", ns, "-o", "jsonpath={.status.message}"))
}

// TestRealNode runs Pods on a real kubelet (containerd 2.3, CRIU 4.2) and
// captures them through Checkpoints applied with kubectl.
func TestRealNode(t *testing.T) {
	c := framework.LocalUpNodes(t, 1, "--declarative-capture-delay=1s")
	const ns = "sandboxes"
	c.Must("create", "namespace", ns)
	c.Eventually("the namespace's default ServiceAccount", func() bool {
		_, err := c.Kubectl("get", "serviceaccount", "default", "-n", ns)
		return err == nil
	})

	t.Run("PodsRun", func(t *testing.T) {
		c.Must("run", "x", "-n", ns, "--image=docker.io/library/busybox:local", "--image-pull-policy=Never",
			"--", "sh", "-c", "echo started; sleep 100000")
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/x", "--timeout=120s")
		assert.Contains(t, c.Must("get", "pod", "x", "-n", ns, "-o", "jsonpath={.spec.nodeName}"), "node-1", "scheduled onto the node")
		assert.Contains(t, c.Must("exec", "-n", ns, "x", "--", "sh", "-c", "echo exec-$(hostname)"), "exec-x")
		assert.Contains(t, c.Must("logs", "-n", ns, "x"), "started")
		// load-image imports an OCI archive into every node.
		require.NoError(t, c.Script("load-image", filepath.Join(framework.RepoRoot(), "_output", "images", "busybox.tar")))
	})

	t.Run("CaptureACounter", func(t *testing.T) {
		c.Apply(podYAML(ns, "counter", framework.CounterScript))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/counter", "--timeout=120s")
		c.Eventually("the counter counts", func() bool { return lastCount(t, c, ns, "counter") >= 3 })

		watch := exec.Command("kubectl", "get", "cp", "-n", ns, "-w", "--no-headers")
		watch.Env = c.Env
		var buf framework.SafeBuffer
		watch.Stdout, watch.Stderr = &buf, &buf
		require.NoError(t, watch.Start())
		defer func() { _ = watch.Process.Kill(); _ = watch.Wait() }()

		c.Apply(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"cp-counter","namespace":"%s"},"spec":{"podName":"counter"}}`, ns))
		c.Eventually("the Checkpoint Succeeded", func() bool {
			out, _ := c.Kubectl("get", "cp", "cp-counter", "-n", ns, "-o", "jsonpath={.status.phase}")
			return out == "Succeeded"
		})
		c.Eventually("kubectl get cp -w showed Pending, Creating, Succeeded", func() bool {
			out := buf.String()
			p, cr, s := strings.Index(out, "Pending"), strings.Index(out, "Creating"), strings.Index(out, "Succeeded")
			return p >= 0 && cr > p && s > cr
		})
		assert.NotEmpty(t, c.Must("get", "cp", "cp-counter", "-n", ns, "-o", "jsonpath={.status.checkpointId}"))
		// keepRunning (the default): the source Pod goes on, its process the same.
		after := lastCount(t, c, ns, "counter")
		c.Eventually("the source keeps counting", func() bool { return lastCount(t, c, ns, "counter") > after+2 })
		assert.Equal(t, "0", c.Must("get", "pod", "counter", "-n", ns, "-o", "jsonpath={.status.containerStatuses[0].restartCount}"))
	})

	t.Run("CaptureAWebSandbox", func(t *testing.T) {
		// An HTTP server and an established connection inside the Pod: CRIU 4.2
		// dumps both (4.1 fails on this kernel).
		c.Apply(podYAML(ns, "web", framework.WebScript))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/web", "--timeout=120s")
		c.Eventually("the web sandbox serves and holds its connection", func() bool {
			out, _ := c.Kubectl("logs", "-n", ns, "web")
			return strings.Contains(out, "web-ready")
		})
		captureByApply(t, c, ns, "cp-web", "web", true)
		assert.Contains(t, c.Must("exec", "-n", ns, "web", "--", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/"), "web-sandbox",
			"the source still serves")
		assert.Contains(t, c.Must("exec", "-n", ns, "web", "--", "netstat", "-tn"), "ESTABLISHED",
			"the source keeps its established connection")
		assert.NotContains(t, c.Must("logs", "-n", ns, "web"), "conn-closed")
	})

	t.Run("CaptureAPythonSandbox", func(t *testing.T) {
		c.Apply(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: py, namespace: %s}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: %s, imagePullPolicy: Never}
`, ns, framework.PythonImage))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/py", "--timeout=120s")
		c.Eventually("the interpreter counts", func() bool { return lastCount(t, c, ns, "py") >= 3 })
		get := []string{"exec", "-n", ns, "py", "--", "python3", "-c",
			"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/', timeout=5).read().decode())"}
		before := c.Must(get...)
		require.Contains(t, before, "secret=")
		captureByApply(t, c, ns, "cp-py", "py", true)
		after := c.Must(get...)
		assert.Equal(t, strings.Fields(before)[1], strings.Fields(after)[1], "the source's interpreter is the same process, its secret unchanged")
	})

	t.Run("KeepRunningFalseEndsThePod", func(t *testing.T) {
		// restartPolicy Always (the default): killing the container would only
		// make the kubelet start it afresh, so the server deletes the Pod.
		c.Apply(podYAML(ns, "once", framework.CounterScript))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/once", "--timeout=120s")
		c.Eventually("the counter counts", func() bool { return lastCount(t, c, ns, "once") >= 3 })
		captureByApply(t, c, ns, "cp-once", "once", false)
		assert.Contains(t, c.Must("get", "cp", "cp-once", "-n", ns, "-o", "jsonpath={.status.message}"), "the source was stopped")
		c.Eventually("the source Pod is deleted", func() bool {
			out, err := c.Kubectl("get", "pod", "once", "-n", ns)
			return err != nil && strings.Contains(out, "NotFound")
		})
	})
}
