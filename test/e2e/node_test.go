package e2e

import (
	"encoding/json"
	"fmt"
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

// podYAML is a Pod running script in the local busybox image.
func podYAML(ns, name, script string) string { return podYAMLWith(ns, name, script, "{}") }

// neverPodYAML is a counting Pod with restartPolicy Never whose process
// exits 0 on SIGTERM.
func neverPodYAML(ns, name string) string {
	return strings.Replace(podYAML(ns, name, "trap 'exit 0' TERM; "+framework.CounterScript),
		"  terminationGracePeriodSeconds: 1\n", "  terminationGracePeriodSeconds: 1\n  restartPolicy: Never\n", 1)
}

// restoreRuntimePodYAML is a counting Pod with restartPolicy Never under
// the restore runtime's RuntimeClass, whose process (a plain busybox loop
// as PID 1) ignores SIGTERM: only the runtime makes its end after a
// keepRunning=false capture an exit 0.
func restoreRuntimePodYAML(ns, name string) string {
	return strings.Replace(podYAML(ns, name, framework.CounterScript),
		"  terminationGracePeriodSeconds: 1\n", "  terminationGracePeriodSeconds: 1\n  restartPolicy: Never\n  runtimeClassName: checkpoint\n", 1)
}

// sidecarPodYAML is a counting Pod (main) with a plain init container
// (setup) and a native sidecar (proxy) that counts too.
func sidecarPodYAML(ns, name string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %[1]s, namespace: %[2]s}
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - {name: setup, image: %[3]s, imagePullPolicy: Never, command: [sh, -c, "echo set up"]}
  - {name: proxy, image: %[3]s, imagePullPolicy: Never, restartPolicy: Always, command: [sh, -c, %[4]q]}
  containers:
  - {name: main, image: %[3]s, imagePullPolicy: Never, command: [sh, -c, %[4]q]}
`, name, ns, framework.BusyboxImage, framework.CounterScript)
}

// countIn is the last (or first) count container ctr of pod printed, or -1.
func countIn(c *framework.Cluster, ns, pod, ctr string, last bool) int {
	return c.Count(ns, pod, ctr, last)
}

// kernelClient runs code in the IPython kernel whose connection file is
// /tmp/kernel.json (python3 -c kernelClient CODE EXPR) through
// jupyter_client, and prints the value of EXPR after it (a user expression
// of the same request: what the code prints, and anything the kernel's
// threads print meanwhile, goes to stderr); it fails if either fails.
const kernelClient = `import ast, sys
from jupyter_client import BlockingKernelClient
c = BlockingKernelClient(connection_file="/tmp/kernel.json")
c.load_connection_file()
c.start_channels()
c.wait_for_ready(timeout=30)
def hook(msg):
    if msg["msg_type"] == "stream":
        sys.stderr.write(msg["content"]["text"])
    elif msg["msg_type"] == "error":
        sys.stderr.write("error: %s: %s\n" % (msg["content"]["ename"], msg["content"]["evalue"]))
reply = c.execute_interactive(sys.argv[1], timeout=30, output_hook=hook, user_expressions={"v": sys.argv[2]})
c.stop_channels()
value = reply["content"].get("user_expressions", {}).get("v", {})
if reply["content"]["status"] != "ok" or value.get("status") != "ok":
    sys.exit("the kernel said: %s" % reply["content"])
print(ast.literal_eval(value["data"]["text/plain"]))
`

// pythonPodYAML is a Pod of the Python sandbox image (test/images).
func pythonPodYAML(ns, name string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: main, image: %s, imagePullPolicy: Never}
`, name, ns, framework.PythonImage)
}

// podYAMLWith is podYAML with the container's resources.
func podYAMLWith(ns, name, script, resources string) string {
	return framework.BusyboxPodYAML(ns, name, script, resources)
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

// Keys of the E2B test on Pods.
const (
	keyAlice = "e2b_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	keyBob   = "e2b_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	keyCarol = "e2b_cccccccccccccccccccccccccccccccccccccccc"
)

// e2bFront is where the E2B SDK reaches the E2B front: its URL and, for
// https, the file of the CA that signed its certificate.
type e2bFront struct{ url, ca string }

// e2bStep runs one STEP of test/e2b/pods.mjs with the SDK pkg and key, and
// decodes the JSON line it prints into out.
func e2bStep(t *testing.T, front e2bFront, pkg, key, step, sandbox string, out interface{}) {
	t.Helper()
	cmd := exec.Command("node", "pods.mjs")
	cmd.Dir = framework.E2BSDK(t)
	cmd.Env = append(os.Environ(), "E2B_API_URL="+front.url, "E2B_API_KEY="+key, "E2B_PACKAGE="+pkg, "STEP="+step, "SANDBOX_ID="+sandbox)
	if front.ca != "" {
		cmd.Env = append(cmd.Env, "NODE_EXTRA_CA_CERTS="+front.ca)
	}
	b, err := cmd.CombinedOutput()
	require.NoError(t, err, "node pods.mjs STEP=%s with %s:\n%s", step, pkg, b)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), out), "%s", b)
}

// restoreByKubectl restores Checkpoint cp into Pod sandbox through the
// restore subresource and requires the clone to be a Ready Pod on the node,
// annotated with where it came from.
func restoreByKubectl(t *testing.T, c *framework.Cluster, ns, cp, sandbox string) {
	t.Helper()
	out, err := requestRestore(c, ns, cp, sandbox)
	require.NoError(t, err, out)
	checkClone(t, c, ns, cp, sandbox, out)
}

// requestRestore POSTs to the restore subresource with kubectl.
func requestRestore(c *framework.Cluster, ns, cp, sandbox string) (string, error) {
	body := fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"CheckpointRestore","spec":{"sandboxName":%q}}`, sandbox)
	return c.KubectlStdin(body, "create", "--raw", "/apis/agents.kruise.io/v1alpha1/namespaces/"+ns+"/checkpoints/"+cp+"/restore", "-f", "-")
}

// checkClone checks the clone a restore answered with out.
func checkClone(t *testing.T, c *framework.Cluster, ns, cp, sandbox, out string) {
	t.Helper()
	c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/"+sandbox, "--timeout=60s")
	node := c.Must("get", "pod", sandbox, "-n", ns, "-o", "jsonpath={.spec.nodeName}")
	assert.Regexp(t, `^node-\d$`, node)
	assert.Contains(t, out, fmt.Sprintf(`"node":%q`, node), "the restore answers with the clone's node")
	id := c.Must("get", "cp", cp, "-n", ns, "-o", "jsonpath={.status.checkpointId}")
	assert.Equal(t, id, c.Must("get", "pod", sandbox, "-n", ns, "-o", `jsonpath={.metadata.annotations.agents\.kruise\.io/restore-from}`))
	assert.Equal(t, "local-up-admin", c.Must("get", "pod", sandbox, "-n", ns, "-o", `jsonpath={.metadata.annotations.agents\.kruise\.io/owner}`))
	assert.Equal(t, "0", c.Must("get", "pod", sandbox, "-n", ns, "-o", "jsonpath={.status.containerStatuses[0].restartCount}"),
		"the kubelet runs the restored container as it is, without restarting it")
	assert.Equal(t, "checkpoint", c.Must("get", "pod", sandbox, "-n", ns, "-o", "jsonpath={.spec.runtimeClassName}"),
		"the clone is run by the restore runtime")
	assert.Empty(t, c.MustStdout("exec", "-n", ns, sandbox, "--", "ls", "/var/run/secrets/kubernetes.io/serviceaccount"),
		"the clone gets no service-account token")
}

// firstCount is the first number a Pod printed.
func firstCount(t *testing.T, c *framework.Cluster, ns, pod string) int {
	t.Helper()
	for _, l := range strings.Split(c.Must("logs", "-n", ns, pod), "\n") {
		if n, err := strconv.Atoi(strings.TrimSpace(l)); err == nil {
			return n
		}
	}
	return -1
}

// runCounting applies the counting Pod name of manifest (bound to node,
// when set) and waits until it is Ready and has counted to 3.
func runCounting(t *testing.T, c *framework.Cluster, ns, name, manifest, node string) {
	t.Helper()
	if node != "" {
		manifest = framework.OnNode(manifest, node)
	}
	c.Apply(manifest)
	c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/"+name, "--timeout=120s")
	c.Eventually(name+" counts", func() bool { return lastCount(t, c, ns, name) >= 3 })
}

// startPython runs the Python sandbox as Pod py (bound to node, when set),
// writes /root/note in it, and returns the kubectl arguments that read what
// it serves, and the secret it drew.
func startPython(t *testing.T, c *framework.Cluster, ns, node string) ([]string, string) {
	t.Helper()
	runCounting(t, c, ns, "py", pythonPodYAML(ns, "py"), node)
	get := []string{"exec", "-n", ns, "py", "--", "python3", "-c",
		"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/', timeout=5).read().decode())"}
	before := c.MustStdout(get...)
	require.Contains(t, before, "secret=")
	c.Must("exec", "-n", ns, "py", "--", "python3", "-c", "open('/root/note', 'w').write('written before the capture')")
	return get, strings.Fields(before)[1]
}

// captureEndingPod runs the counting Pod done with restartPolicy Never
// under the restore runtime, its process ignoring SIGTERM (bound to node,
// when set), captures it as cp-done with keepRunning false, and waits for
// the Pod to end Succeeded.
func captureEndingPod(t *testing.T, c *framework.Cluster, ns, node string) {
	t.Helper()
	runCounting(t, c, ns, "done", restoreRuntimePodYAML(ns, "done"), node)
	captureByApply(t, c, ns, "cp-done", "done", false)
	c.Eventually("the source Pod ends Succeeded", func() bool {
		out, _ := c.Kubectl("get", "pod", "done", "-n", ns, "-o", "jsonpath={.status.phase}")
		return out == "Succeeded"
	})
}

// checkEvents checks what kubectl describe shows of Checkpoints: cp, a
// capture of pod restored into each of clones (clone: node); a capture of
// a Pod that does not exist; and deleting Checkpoint del.
func checkEvents(t *testing.T, c *framework.Cluster, ns, cp, pod string, clones map[string]string, del string) {
	t.Helper()
	c.Eventually("describe shows the capture and the restores", func() bool {
		out, _ := c.Kubectl("describe", "cp", cp, "-n", ns)
		return strings.Contains(out, "Capturing") && strings.Contains(out, "Captured") && strings.Contains(out, "Restored")
	})
	out := c.Must("describe", "cp", cp, "-n", ns)
	assert.Regexp(t, `Captured\s.*captured memory,filesystem of `+ns+`/`+pod+`: \S+ in \S+ \(paused \S+\), checkpoint ckpt-`, out, "the Captured Event gives the size, the duration and the pause")
	for clone, node := range clones {
		assert.Contains(t, out, "Restored into "+ns+"/"+clone+` on node "`+node+`"`)
	}
	// A capture that fails says why.
	c.Apply(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"cp-nothing","namespace":%q},"spec":{"podName":"no-such-pod"}}`, ns))
	c.Eventually("a failed capture's Event", func() bool {
		out, _ := c.Kubectl("describe", "cp", "cp-nothing", "-n", ns)
		return strings.Contains(out, "CaptureFailed") && strings.Contains(out, "TargetNotFound")
	})
	assert.Equal(t, "Failed", c.Must("get", "cp", "cp-nothing", "-n", ns, "-o", "jsonpath={.status.phase}"))
	// Deleting a Checkpoint deletes its state, and says so.
	c.Must("delete", "cp", del, "-n", ns, "--timeout=60s")
	c.Eventually("the StateDeleted Event", func() bool {
		out, _ := c.Kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.name="+del+",reason=StateDeleted")
		return strings.Contains(out, "Deleted the captured state ckpt-")
	})
}

// e2bKeys writes the E2B front's keys of the sandboxes tests: alice and bob
// in team (namespace) ns, carol in another.
func e2bKeys(t *testing.T, ns string) string {
	keys := filepath.Join(t.TempDir(), "e2b-keys.yaml")
	require.NoError(t, os.WriteFile(keys, []byte(fmt.Sprintf(`keys:
- {key: %s, user: alice, team: %s}
- {key: %s, user: bob, team: %s}
- {key: %s, user: carol, team: other}
`, keyAlice, ns, keyBob, ns, keyCarol)), 0o600))
	return keys
}

// sandboxesOnTheNodes runs Pods on the real kubelets (containerd 2.3, CRIU
// 4.2) in namespace ns and captures them through Checkpoints applied with
// kubectl; clones go where the scheduler puts them. The E2B SDK drives the
// same through the E2B front.
func sandboxesOnTheNodes(t *testing.T, c *framework.Cluster, ns string, front e2bFront) {
	c.SandboxNamespace(ns)
	var counterCloneNode string

	t.Run("PodsRun", func(t *testing.T) {
		c.Must("run", "x", "-n", ns, "--image=docker.io/library/busybox:local", "--image-pull-policy=Never",
			"--", "sh", "-c", "echo started; sleep 100000")
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/x", "--timeout=120s")
		assert.Regexp(t, `^node-\d$`, c.Must("get", "pod", "x", "-n", ns, "-o", "jsonpath={.spec.nodeName}"), "scheduled onto a node")
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

		// The clone is a Pod that goes on counting from the captured value,
		// with the file the source wrote in its writable layer.
		restoreByKubectl(t, c, ns, "cp-counter", "counter-clone")
		assert.Greater(t, firstCount(t, c, ns, "counter-clone"), 3, "the clone counts on from the captured value, not from 1")
		from := lastCount(t, c, ns, "counter-clone")
		c.Eventually("the clone counts", func() bool { return lastCount(t, c, ns, "counter-clone") > from })
		assert.Equal(t, "captured", strings.TrimSpace(c.MustStdout("exec", "-n", ns, "counter-clone", "--", "cat", "/data/marker")))
		counterCloneNode = c.Must("get", "pod", "counter-clone", "-n", ns, "-o", "jsonpath={.spec.nodeName}")
		// Deleting the clone stops it, as any Pod.
		c.Must("delete", "pod", "counter-clone", "-n", ns, "--wait=true", "--timeout=60s")
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

		// In the clone the server listens again and answers; the established
		// connection comes back closed (CRIU tcp-close), as its peer is the
		// source's, and the client in the clone sees it end.
		restoreByKubectl(t, c, ns, "cp-web", "web-clone")
		assert.Contains(t, c.Must("exec", "-n", ns, "web-clone", "--", "wget", "-q", "-O", "-", "http://127.0.0.1:8080/"), "web-sandbox",
			"the clone's HTTP server answers")
		c.Eventually("the clone's established connection is closed", func() bool {
			out, _ := c.Kubectl("logs", "-n", ns, "web-clone")
			return strings.Contains(out, "conn-closed")
		})
		assert.NotContains(t, c.Must("logs", "-n", ns, "web"), "conn-closed", "the source's connection is untouched")
	})

	t.Run("CaptureAPythonSandbox", func(t *testing.T) {
		get, secret := startPython(t, c, ns, "")
		captureByApply(t, c, ns, "cp-py", "py", true)
		after := c.MustStdout(get...)
		assert.Equal(t, secret, strings.Fields(after)[1], "the source's interpreter is the same process, its secret unchanged")
		captured, err := strconv.Atoi(strings.TrimPrefix(strings.Fields(after)[0], "n="))
		require.NoError(t, err)

		// One to many: three clones of the checkpoint at once, each a Running
		// Pod whose interpreter has the source's secret, went on counting
		// from the captured value, and serves on its listening socket.
		var wg sync.WaitGroup
		outs, errs := make([]string, 3), make([]error, 3)
		for i := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				outs[i], errs[i] = requestRestore(c, ns, "cp-py", fmt.Sprintf("py-clone-%d", i+1))
			}()
		}
		wg.Wait()
		for i := range 3 {
			clone := fmt.Sprintf("py-clone-%d", i+1)
			require.NoError(t, errs[i], outs[i])
			checkClone(t, c, ns, "cp-py", clone, outs[i])
			assert.Equal(t, "Running", c.Must("get", "pod", clone, "-n", ns, "-o", "jsonpath={.status.phase}"))
			get[3] = clone
			fields := strings.Fields(c.MustStdout(get...))
			require.Len(t, fields, 2)
			assert.Equal(t, secret, fields[1], "the clone's interpreter state is the source's")
			n, err := strconv.Atoi(strings.TrimPrefix(fields[0], "n="))
			require.NoError(t, err)
			assert.GreaterOrEqual(t, n, captured-20, "the clone counts on from about the captured value (%d), not from 1", captured)
			assert.Equal(t, "written before the capture", c.MustStdout("exec", "-n", ns, clone, "--", "cat", "/root/note"))
		}
	})

	t.Run("KeepRunningFalseEndsThePod", func(t *testing.T) {
		// restartPolicy Always (the default): killing the container would only
		// make the kubelet start it afresh, so the server deletes the Pod.
		c.Apply(podYAML(ns, "once", framework.CounterScript))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/once", "--timeout=120s")
		c.Eventually("the counter counts", func() bool { return lastCount(t, c, ns, "once") >= 3 })
		captureByApply(t, c, ns, "cp-once", "once", false)
		// Recorded Succeeded first, then the source stopped, then said so.
		c.Eventually("the message says the source was stopped", func() bool {
			return strings.Contains(c.Must("get", "cp", "cp-once", "-n", ns, "-o", "jsonpath={.status.message}"), "the source was stopped")
		})
		c.Eventually("the source Pod is deleted", func() bool {
			out, err := c.Kubectl("get", "pod", "once", "-n", ns)
			return err != nil && strings.Contains(out, "NotFound")
		})
		// The checkpoint keeps what it takes to remake the Pod without it.
		restoreByKubectl(t, c, ns, "cp-once", "once-clone")
		assert.Greater(t, firstCount(t, c, ns, "once-clone"), 3)

		// restartPolicy Never: the server ends the processes (SIGTERM, then
		// SIGKILL, as this loop ignores SIGTERM), the kubelet ends the Pod
		// by their exit: Succeeded, as the restore runtime reports exit 0
		// for a container ended by its checkpoint.
		captureEndingPod(t, c, ns, "")
		assert.Equal(t, "0", c.Must("get", "pod", "done", "-n", ns, "-o", "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}"))
	})

	t.Run("EventsOnCheckpoints", func(t *testing.T) {
		checkEvents(t, c, ns, "cp-counter", "counter", map[string]string{"counter-clone": counterCloneNode}, "cp-counter")
	})

	t.Run("E2BSDKOnPods", func(t *testing.T) {
		// The team's users may work with Pods and Checkpoints in their namespace.
		c.Must("create", "rolebinding", "e2b-team", "-n", ns, "--clusterrole=edit", "--group=agents.kruise.io:e2b-team:"+ns)
		c.Must("create", "namespace", "other")
		c.Must("create", "rolebinding", "e2b-team", "-n", "other", "--clusterrole=edit", "--group=agents.kruise.io:e2b-team:other")
		c.Apply(podYAMLWith(ns, "e2b-src", framework.SecretCounterScript,
			"{requests: {cpu: 250m, memory: 32Mi}, limits: {cpu: 1500m, memory: 96Mi}}"))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/e2b-src", "--timeout=120s")
		c.Eventually("the counter counts", func() bool { return lastCount(t, c, ns, "e2b-src") >= 5 })
		secret := c.Secret(ns, "e2b-src")
		for _, pkg := range []string{"e2b", "e2b-2-20"} {
			t.Run(pkg, func(t *testing.T) {
				var made struct {
					SnapshotID, CloneID, TemplateID, StartedAt string
					CPUCount, MemoryMB                         int
				}
				e2bStep(t, front, pkg, keyAlice, "create", "e2b-src", &made)
				// The clone is a Pod of alice's, restored from the snapshot,
				// whose counter went on from the captured value.
				clone := made.CloneID
				assert.Equal(t, "Running", c.Must("get", "pod", clone, "-n", ns, "-o", "jsonpath={.status.phase}"))
				assert.Equal(t, "e2b:alice", c.Must("get", "pod", clone, "-n", ns, "-o", `jsonpath={.metadata.annotations.agents\.kruise\.io/owner}`))
				assert.Equal(t, made.SnapshotID, c.Must("get", "pod", clone, "-n", ns, "-o", `jsonpath={.metadata.annotations.agents\.kruise\.io/restore-from}`))
				assert.Greater(t, firstCount(t, c, ns, clone), 5, "the clone counts on from the captured value")
				// GET reads the Pod: its limits, its start.
				assert.Equal(t, 2, made.CPUCount, "1500m of CPU is 2 CPUs")
				assert.Equal(t, 96, made.MemoryMB)
				assert.Equal(t, made.SnapshotID, made.TemplateID)
				assert.Equal(t, c.Must("get", "pod", clone, "-n", ns, "-o", "jsonpath={.status.startTime}"), made.StartedAt[:19]+"Z")

				// alice pauses her clone: its memory and files are captured, its
				// Pod goes; neither bob nor carol can resume, pause or kill the
				// paused sandbox; alice's connect brings it back under the same
				// ID, its counter going on from where the pause took it.
				before := lastCount(t, c, ns, clone)
				var step struct{ Paused, Resumed, Refused bool }
				e2bStep(t, front, pkg, keyAlice, "pause", clone, &step)
				require.True(t, step.Paused)
				out, err := c.Kubectl("get", "pod", clone, "-n", ns)
				require.Error(t, err, "a paused sandbox has no Pod: %s", out)
				assert.Contains(t, out, "NotFound")
				pause := c.Must("get", "cp", "-n", ns, "-l", "agents.kruise.io/paused-sandbox="+clone, "-o", "jsonpath={.items[*].status.checkpointId}")
				require.Len(t, strings.Fields(pause), 1, "one pause Checkpoint holds it")
				e2bStep(t, front, pkg, keyBob, "other-paused", clone, &step)
				require.True(t, step.Refused)
				e2bStep(t, front, pkg, keyCarol, "other-paused", clone, &step)
				e2bStep(t, front, pkg, keyAlice, "resume", clone, &step)
				require.True(t, step.Resumed)
				c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/"+clone, "--timeout=120s")
				assert.Equal(t, pause, c.Must("get", "pod", clone, "-n", ns, "-o", `jsonpath={.metadata.annotations.agents\.kruise\.io/restore-from}`),
					"resumed from its pause")
				c.Eventually("the resumed sandbox counts", func() bool { return firstCount(t, c, ns, clone) > 0 })
				assert.GreaterOrEqual(t, firstCount(t, c, ns, clone), before, "the resumed sandbox counts on from its pause, not from 1")
				assert.Equal(t, secret, c.Secret(ns, clone), "the resumed sandbox keeps the secret its memory alone held")

				// bob (same team, so RBAC lets him at the namespace's Pods: the
				// owner annotation stops him) and carol (another team, whose
				// namespace holds no such Pod) do not find alice's clone: GET,
				// connect and DELETE all answer 404, and the clone runs on.
				var refused struct{ Refused bool }
				e2bStep(t, front, pkg, keyBob, "other", clone, &refused)
				assert.True(t, refused.Refused)
				e2bStep(t, front, pkg, keyCarol, "other", clone, &refused)
				assert.Equal(t, "Running", c.Must("get", "pod", clone, "-n", ns, "-o", "jsonpath={.status.phase}"))

				// alice's kill deletes the Pod.
				var killed struct{ Killed bool }
				e2bStep(t, front, pkg, keyAlice, "kill", clone, &killed)
				assert.True(t, killed.Killed)
				c.Eventually("the killed clone's Pod is gone", func() bool {
					out, err := c.Kubectl("get", "pod", clone, "-n", ns)
					return err != nil && strings.Contains(out, "NotFound")
				})
				assert.Empty(t, c.Must("get", "cp", "-n", ns, "-l", "agents.kruise.io/paused-sandbox="+clone, "-o", "name"),
					"the kill deleted its pause")
			})
		}
	})
}
