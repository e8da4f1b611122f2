package faults

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// busyboxPod is a busybox Pod bound to node running script.
func busyboxPod(ns, name, node, script string) string {
	return framework.OnNode(framework.BusyboxPodYAML(ns, name, script, "{}"), node)
}

// checkpoints reads and applies the Checkpoints of one namespace with kubectl.
type checkpoints struct {
	c  *framework.Cluster
	ns string
}

// get is the jsonpath path of Checkpoint cp ("" when it cannot be read).
func (k checkpoints) get(cp, path string) string {
	out, _ := k.c.Kubectl("get", "cp", cp, "-n", k.ns, "-o", "jsonpath="+path)
	return out
}

// apply applies a Checkpoint of pod, captured declaratively.
func (k checkpoints) apply(name, pod string) {
	k.c.Apply(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":%q,"namespace":%q},"spec":{"podName":%q}}`, name, k.ns, pod))
}

// waitEnd waits for Checkpoint name to end and returns its phase.
func (k checkpoints) waitEnd(name string) string {
	var phase string
	k.c.Eventually("Checkpoint "+name+" ends", func() bool {
		phase = k.get(name, "{.status.phase}")
		return phase == "Succeeded" || phase == "Failed"
	})
	return phase
}

// nothingLeftOf says whether the two nodes of c hold no image of checkpoint
// id (nor one of digests) and no capture lease, and nothing is under its
// tag in namespace ns's repository of the registry.
func nothingLeftOf(c *framework.Cluster, reg framework.Registry, ns, id string, digests ...string) bool {
	for i := 1; i <= 2; i++ {
		imgs, err := c.NodeCtr(i, "images", "ls")
		if err != nil || strings.Contains(imgs, id) {
			return false
		}
		for _, d := range digests {
			if strings.Contains(imgs, strings.TrimPrefix(d, "sha256:")) {
				return false
			}
		}
		ls, err := c.NodeCtr(i, "leases", "ls")
		if err != nil || strings.Contains(ls, id) {
			return false
		}
		for _, root := range c.RestoreImages(i) {
			if unpacked, _ := filepath.Glob(filepath.Join(root, "*", id)); len(unpacked) > 0 {
				return false
			}
		}
	}
	out, err := reg.Inspect(framework.RegistryHost+"/checkpoints/"+ns+":"+id, true)
	// Its repository may never have been made (the capture pushed nothing).
	return err != nil && (strings.Contains(out, "manifest unknown") || strings.Contains(out, "name unknown"))
}

// firstCount waits for pod's log to start with a number (a counting
// script's first line) and returns it.
func firstCount(c *framework.Cluster, ns, pod string) int {
	var first int
	c.Eventually(pod+" prints its count", func() bool {
		logs, _ := c.Kubectl("logs", "-n", ns, pod)
		f := strings.Fields(logs)
		if len(f) == 0 {
			return false
		}
		n, err := strconv.Atoi(f[0])
		first = n
		return err == nil
	})
	return first
}

// freeze stops process pid (SIGSTOP) and returns what continues it, once
// however often it is called.
func freeze(t *testing.T, pid int) (thaw func()) {
	require.NoError(t, syscall.Kill(pid, syscall.SIGSTOP))
	var once sync.Once
	return func() { once.Do(func() { assert.NoError(t, syscall.Kill(pid, syscall.SIGCONT)) }) }
}

// TestNodeAgentFaults breaks the node agents and the registry of a
// two-node cluster (local-up LOCAL_UP_NODES=2) while they work.
func TestNodeAgentFaults(t *testing.T) {
	framework.RequireTool(t, "skopeo")
	framework.RequireTool(t, "docker-registry")
	const ns = "agent-faults"
	// The orphan sweeps (the agents' of their nodes, the server's of the
	// registry) run every 5 s, on state at least 5 s old.
	c := framework.LocalUpNodesEnv(t, 2, []string{"AGENT_ARGS=--orphan-sweep-interval=5s"}, "--orphan-sweep-interval=5s")
	reg := c.Registry()
	c.SandboxNamespace(ns)
	cps := checkpoints{c, ns}
	get, apply, waitEnd := cps.get, cps.apply, cps.waitEnd
	nothingLeft := func(id string, digests ...string) bool { return nothingLeftOf(c, reg, ns, id, digests...) }
	idOf := func(name string) string {
		return agents.CheckpointID(types.UID(get(name, "{.metadata.uid}")))
	}

	c.Apply(busyboxPod(ns, "big", "node-1", framework.MemoryScript(256)))
	c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/big", "--timeout=120s")

	t.Run("AgentKilledMidCapture", func(t *testing.T) {
		// The registry is frozen (SIGSTOP) until the agent is dead, so the
		// capture cannot end before the kill however fast this machine dumps:
		// the kill lands mid-dump or mid-push (which waits on the registry).
		thaw := freeze(t, c.PID("registry"))
		defer thaw()
		apply("cut", "big")
		c.Eventually("the capture started", func() bool { return get("cut", "{.status.phase}") == "Creating" })
		time.Sleep(700 * time.Millisecond)
		require.NoError(t, syscall.Kill(c.PID("agent-node-1"), syscall.SIGKILL))
		thaw()
		require.Equal(t, "Failed", waitEnd("cut"), get("cut", "{.status.message}"))
		assert.Equal(t, "DriverUnavailable", get("cut", `{.status.conditions[?(@.type=="Ready")].reason}`))
		assert.Contains(t, get("cut", "{.status.message}"), "node agent of node-1")
		assert.Empty(t, get("cut", "{.status.image}"), "a failed capture records no image")
		t.Logf("failed as expected: %s", get("cut", "{.status.message}"))

		require.NoError(t, c.Script("start-agent", "1"))
		id := idOf("cut")
		c.Eventually("nothing of the failed capture is left on the nodes or in the registry", func() bool { return nothingLeft(id) })

		// The agent is back: the same Pod captures, and lands in the registry.
		apply("again", "big")
		require.Equal(t, "Succeeded", waitEnd("again"), get("again", "{.status.message}"))
		out, err := reg.Inspect(get("again", "{.status.image}"), true)
		require.NoError(t, err, out)
	})

	t.Run("LazyPagesDaemonKilledMidRestore", func(t *testing.T) {
		// A clone of big (256 MiB) on node-2, restored lazily from what
		// node-2's agent pulled: once the restored process registered with
		// its lazy-pages daemon, the daemon is stopped (no page more), then
		// killed. The processes hold their userfaultfd, so they and CRIU's
		// restore would wait forever: the runtime kills them, the restore
		// fails, and an Event on the Checkpoint says why. The clone never
		// runs on memory it did not get back: the kubelet may start it
		// again, restored whole by a new daemon, counting on from the
		// capture, or the Pod fails.
		require.Equal(t, "Succeeded", get("again", "{.status.phase}"), "AgentKilledMidCapture captured big as again")
		id := idOf("again")
		const pod = "lost"
		manifest := framework.MarkForRestore(busyboxPod(ns, pod, "node-2", framework.CounterScript), id)
		c.Apply(strings.Replace(manifest, "spec:\n", "spec:\n  restartPolicy: Never\n", 1))
		var daemon int
		var work string
		deadline := time.Now().Add(120 * time.Second)
		for daemon == 0 && time.Now().Before(deadline) {
			if daemon, work = framework.LazyPagesDaemon(id); daemon == 0 {
				time.Sleep(2 * time.Millisecond)
			}
		}
		require.NotZero(t, daemon, "no criu lazy-pages daemon ran for the clone")
		registered := regexp.MustCompile(`uffd: \d+-`)
		for time.Now().Before(deadline) {
			log, _ := os.ReadFile(filepath.Join(work, "lazy-pages.log"))
			if registered.Match(log) {
				break
			}
			require.NoError(t, syscall.Kill(daemon, 0), "the daemon ended before the restored process registered")
			time.Sleep(time.Millisecond)
		}
		require.NoError(t, syscall.Kill(daemon, syscall.SIGSTOP))
		time.Sleep(time.Second)
		require.NoError(t, syscall.Kill(daemon, syscall.SIGKILL))

		c.Eventually("an Event on the Checkpoint says why", func() bool {
			out, _ := c.Kubectl("describe", "cp", "again", "-n", ns)
			return strings.Contains(out, "RestoreFailed") && strings.Contains(out, "lazy-pages daemon ended during the restore")
		})
		out := c.Must("describe", "cp", "again", "-n", ns)
		assert.Contains(t, out, ns+"/"+pod, "the Event names the clone")
		assert.Contains(t, out, `node "node-2"`, "the Event names the node")
		c.Eventually("the Pod says why", func() bool {
			events, _ := c.Kubectl("get", "events", "-n", ns, "--field-selector", "involvedObject.name="+pod, "-o", "jsonpath={.items[*].message}")
			return strings.Contains(events, "lazy-pages daemon ended during the restore")
		})
		podPath := func(path string) string {
			out, _ := c.Kubectl("get", "pod", pod, "-n", ns, "-o", "jsonpath="+path)
			return out
		}
		c.Eventually("the clone fails, or runs restored whole", func() bool {
			return podPath("{.status.phase}") == "Failed" || podPath("{.status.containerStatuses[0].state.running}") != ""
		})
		if podPath("{.status.phase}") != "Failed" {
			assert.Greater(t, firstCount(c, ns, pod), 1, "a clone that runs counts on from the capture: never fresh, never zeroed")
		}
		assert.False(t, lazyPagesRestoreLeft(id), "no CRIU restore of it is left waiting")
		c.Must("delete", "pod", pod, "-n", ns, "--wait=true", "--timeout=60s")
	})

	t.Run("RegistryDownDuringCapture", func(t *testing.T) {
		c.Apply(busyboxPod(ns, "small", "node-1", framework.CounterScript))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/small", "--timeout=120s")
		require.NoError(t, c.Script("stop-registry"))
		apply("unshipped", "small")
		phase := waitEnd("unshipped")
		require.NoError(t, c.Script("start-registry"))
		require.Equal(t, "Failed", phase, "never Succeeded without the image in the registry: %s", get("unshipped", "{.status.message}"))
		assert.Equal(t, "DriverUnavailable", get("unshipped", `{.status.conditions[?(@.type=="Ready")].reason}`))
		assert.Contains(t, get("unshipped", "{.status.message}"), "registry")
		id := idOf("unshipped")
		c.Eventually("nothing of the unshipped capture is left", func() bool { return nothingLeft(id) })
	})

	t.Run("AgentDownDuringRestoreAndDelete", func(t *testing.T) {
		apply("kept", "small")
		require.Equal(t, "Succeeded", waitEnd("kept"), get("kept", "{.status.message}"))
		digest, gen := get("kept", "{.status.imageDigest}"), get("kept", "{.metadata.generation}")
		require.NoError(t, c.Script("stop-agent", "2"))
		restarted := false
		defer func() {
			if !restarted {
				_ = c.Script("start-agent", "2")
			}
		}()

		// node-2's agent puts the checkpoint on node-2 for its restore
		// runtime: while it is down, a restore there fails and says why,
		// leaving no Pod, and nothing starts fresh.
		body := `{"apiVersion":"agents.kruise.io/v1alpha1","kind":"CheckpointRestore","spec":{"sandboxName":"kept-b","nodeName":"node-2"}}`
		out, err := c.KubectlStdin(body, "create", "--raw", "/apis/agents.kruise.io/v1alpha1/namespaces/"+ns+"/checkpoints/kept/restore", "-f", "-")
		require.Error(t, err, out)
		assert.Contains(t, out, "node agent", "the restore says the node's agent did not answer")
		_, err = c.Kubectl("get", "pod", "kept-b", "-n", ns)
		assert.Error(t, err, "a failed restore leaves no Pod")

		// A Pod marked by hand waits, never running fresh, and is restored
		// once the agent is back (the kubelet retries its container).
		id := idOf("kept")
		c.Apply(framework.MarkForRestore(framework.OnNode(framework.BusyboxPodYAML(ns, "kept-c", framework.CounterScript, "{}"), "node-2"), id))
		c.Eventually("the marked Pod's container waits on the agent", func() bool {
			msg, _ := c.Kubectl("get", "pod", "kept-c", "-n", ns, "-o", "jsonpath={.status.containerStatuses[0].state.waiting.message}")
			return strings.Contains(msg, "node agent")
		})
		running, _ := c.Kubectl("get", "pod", "kept-c", "-n", ns, "-o", "jsonpath={.status.containerStatuses[0].state.running}")
		assert.Empty(t, running, "never started fresh")
		require.NoError(t, c.Script("start-agent", "2"))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/kept-c", "--timeout=120s")
		assert.Greater(t, firstCount(c, ns, "kept-c"), 1, "the clone counts on from the capture, not from 1")
		assert.Equal(t, "Succeeded", get("kept", "{.status.phase}"), "the Checkpoint is untouched")
		assert.Equal(t, digest, get("kept", "{.status.imageDigest}"))
		assert.Equal(t, gen, get("kept", "{.metadata.generation}"))
		c.Must("delete", "pod", "kept-c", "-n", ns, "--wait=true", "--timeout=60s")
		require.NoError(t, c.Script("stop-agent", "2"))

		// A delete must reach every node: it waits for node-2's agent.
		raw, err := reg.Inspect(framework.RegistryHost+"/checkpoints/"+ns+":"+id, true)
		require.NoError(t, err, raw)
		var index struct {
			Manifests []struct{ Digest string } `json:"manifests"`
		}
		require.NoError(t, json.Unmarshal([]byte(raw), &index))
		pulled := []string{digest}
		for _, m := range index.Manifests {
			pulled = append(pulled, m.Digest)
		}
		c.Must("delete", "cp", "kept", "-n", ns, "--wait=false")
		time.Sleep(3 * time.Second)
		assert.NotEmpty(t, get("kept", "{.metadata.deletionTimestamp}"), "the Checkpoint stays, Terminating, while node-2's agent is down")
		require.NoError(t, c.Script("start-agent", "2"))
		restarted = true
		c.Eventually("the Checkpoint is deleted once node-2's agent is back", func() bool {
			_, err := c.Kubectl("get", "cp", "kept", "-n", ns)
			return err != nil
		})
		c.Eventually("nothing of it is left on the nodes (node-2's pull included) or in the registry", func() bool {
			return nothingLeft(id, pulled...)
		})
	})

	t.Run("AgentKilledDuringRestorePull", func(t *testing.T) {
		// big (256 MiB) captured on node-1 and cloned on node-2 by a marked
		// Pod: node-2's agent pulls the checkpoint from the registry into its
		// store. Once that pull is writing, the registry is frozen (so the
		// pull cannot end first, however fast this machine) and the agent is
		// killed. The clone waits, never running fresh; the agent back, it
		// removes the interrupted pull and the clone is restored.
		apply("pulled", "big")
		require.Equal(t, "Succeeded", waitEnd("pulled"), get("pulled", "{.status.message}"))
		id := idOf("pulled")
		stores := c.RestoreImages(2)
		partial := func() ([]string, int64) {
			var dirs []string
			for _, store := range stores {
				d, _ := filepath.Glob(filepath.Join(store, ns, id, ".tmp-*"))
				dirs = append(dirs, d...)
			}
			var size int64
			for _, d := range dirs {
				_ = filepath.WalkDir(d, func(_ string, e os.DirEntry, err error) error {
					if err == nil && !e.IsDir() {
						if fi, err := e.Info(); err == nil {
							size += fi.Size()
						}
					}
					return nil
				})
			}
			return dirs, size
		}
		const pod = "pulling"
		c.Apply(framework.MarkForRestore(busyboxPod(ns, pod, "node-2", framework.CounterScript), id))
		deadline := time.Now().Add(120 * time.Second)
		for _, size := partial(); size < 1<<20 && time.Now().Before(deadline); _, size = partial() {
			time.Sleep(time.Millisecond)
		}
		_, size := partial()
		require.GreaterOrEqual(t, size, int64(1<<20), "node-2's agent never pulled 1 MiB of %s", id)
		thaw := freeze(t, c.PID("registry"))
		defer thaw()
		restarted := false
		defer func() {
			if !restarted {
				_ = c.Script("start-agent", "2")
			}
		}()
		require.NoError(t, syscall.Kill(c.PID("agent-node-2"), syscall.SIGKILL))
		thaw()
		left, size := partial()
		require.NotEmpty(t, left, "the kill interrupted the pull")
		t.Logf("the killed agent left %d bytes of its pull in %d directories", size, len(left))
		assert.Less(t, size, int64(256<<20), "the interrupted pull is partial")
		assert.Empty(t, c.RestoreImage(2, ns, id, "main"), "nothing of the interrupted pull looks whole")

		c.Eventually("the clone's container waits on the agent", func() bool {
			msg, _ := c.Kubectl("get", "pod", pod, "-n", ns, "-o", "jsonpath={.status.containerStatuses[0].state.waiting.message}")
			return strings.Contains(msg, "node agent")
		})
		running, _ := c.Kubectl("get", "pod", pod, "-n", ns, "-o", "jsonpath={.status.containerStatuses[0].state.running}")
		assert.Empty(t, running, "never started fresh while the agent is down")

		require.NoError(t, c.Script("start-agent", "2"))
		restarted = true
		c.Eventually("the agent back removed the interrupted pull", func() bool { dirs, _ := partial(); return len(dirs) == 0 })
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/"+pod, "--timeout=180s")
		assert.Greater(t, firstCount(c, ns, pod), 1, "the clone counts on from the capture, never from 1")
		c.Must("delete", "pod", pod, "-n", ns, "--wait=false")
	})

	t.Run("CRIURefusesCapture", func(t *testing.T) {
		// A process holding a deleted 2 MiB file: CRIU keeps deleted files
		// as ghosts of at most 1 MiB and refuses the dump. Its own error
		// line reaches the Checkpoint's message and its Event.
		c.Apply(busyboxPod(ns, "ghostly", "node-1",
			`dd if=/dev/urandom of=/tmp/ghost bs=1M count=2 2>/dev/null; exec 3</tmp/ghost; rm /tmp/ghost; `+framework.CounterScript))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/ghostly", "--timeout=120s")
		apply("refused", "ghostly")
		require.Equal(t, "Failed", waitEnd("refused"), get("refused", "{.status.message}"))
		criuLine := "Can't dump ghost file"
		assert.Contains(t, get("refused", "{.status.message}"), criuLine, "the message quotes CRIU's error")
		t.Logf("refused as expected: %s", get("refused", "{.status.message}"))
		c.Eventually("kubectl describe cp shows CRIU's error", func() bool {
			out, _ := c.Kubectl("describe", "cp", "refused", "-n", ns)
			return strings.Contains(out, "CaptureFailed") && strings.Contains(out, criuLine)
		})
		phase, _ := c.Kubectl("get", "pod", "ghostly", "-n", ns, "-o", "jsonpath={.status.phase}")
		assert.Equal(t, "Running", phase, "a refused dump leaves the sandbox running")
	})
}

// lazyPagesRestoreLeft says whether a lazy-pages daemon of checkpoint id,
// or a CRIU restore, still runs on this machine.
func lazyPagesRestoreLeft(id string) bool {
	if pid, _ := framework.LazyPagesDaemon(id); pid != 0 {
		return true
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if data, err := os.ReadFile(p); err == nil && strings.HasPrefix(string(data), "criu: restore") {
			return true
		}
	}
	return false
}
