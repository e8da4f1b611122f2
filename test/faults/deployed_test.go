package faults

import (
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// TestServerPodKilledMidCapture runs the server as the Deployment's two
// replicas (local-up DEPLOY=pods) and kills the replica capturing a 1 GiB
// sandbox, twice: its process SIGKILLed (the kubelet restarts the container:
// same Pod, a new process), then its process SIGKILLed and its Pod deleted
// (the Deployment makes a replacement with another name). Each time the
// Checkpoint ends Failed (Interrupted), told from the killed replica's own
// Lease rather than after the longest a capture may run; nothing of it stays
// on the nodes or in the registry; no other Checkpoint is lost; and the
// sandbox captures again.
func TestServerPodKilledMidCapture(t *testing.T) {
	framework.RequireTool(t, "skopeo")
	framework.RequireTool(t, "docker-registry")
	const ns = "server-faults"
	c := framework.LocalUpNodesEnv(t, 2, []string{"DEPLOY=pods", "AGENT_ARGS=--orphan-sweep-interval=5s"}, "--orphan-sweep-interval=5s")
	reg := c.Registry()
	c.SandboxNamespace(ns)
	cps := checkpoints{c, ns}
	get, apply, waitEnd := cps.get, cps.apply, cps.waitEnd
	serverPods := func() string {
		return c.Must("-n", "checkpoint-system", "get", "pods", "-l", "app=checkpoint-apiserver",
			"-o", `jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.status.containerStatuses[0].ready}{"\n"}{end}`)
	}
	bothReady := func() bool {
		lines := strings.Split(strings.TrimSpace(serverPods()), "\n")
		ready := 0
		for _, l := range lines {
			if strings.HasSuffix(l, " Running true") {
				ready++
			}
		}
		return len(lines) == 2 && ready == 2
	}

	c.Apply(busyboxPod(ns, "big", "node-1", framework.MemoryScript(1024)))
	c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/big", "--timeout=120s")
	c.Eventually("big holds its memory and counts", func() bool {
		out, _ := c.Kubectl("logs", "-n", ns, "big", "--tail=1")
		return strings.TrimSpace(out) != ""
	})
	c.Eventually("both server replicas are ready", bothReady)
	apply("keeper", "big")
	require.Equal(t, "Succeeded", waitEnd("keeper"), get("keeper", "{.status.message}"))

	// killMidCapture starts a declarative capture of big (the leader runs
	// it), kills the replica its marker names with kill, and returns the
	// replica's name once the Checkpoint ended.
	killMidCapture := func(t *testing.T, name, told string, kill func(replica string)) string {
		apply(name, "big")
		c.Eventually("the capture started", func() bool { return get(name, "{.status.phase}") == "Creating" })
		marker := get(name, `{.metadata.annotations.agents\.kruise\.io/captured-by}`)
		replica, _, ok := strings.Cut(marker, "/")
		require.True(t, ok, "the capture's marker names its replica: %q", marker)
		// Into the capture: at 1 GiB, CRIU's dump and the stream into the
		// registry take several seconds here, more on a slower machine.
		time.Sleep(700 * time.Millisecond)
		kill(replica)
		start := time.Now()
		require.Equal(t, "Failed", waitEnd(name), get(name, "{.status.message}"))
		t.Logf("%s ended Failed %s after %s was killed: %s", name, time.Since(start).Round(time.Second), replica, get(name, "{.status.message}"))
		assert.Equal(t, "Interrupted", get(name, `{.status.conditions[?(@.type=="Ready")].reason}`))
		assert.Empty(t, get(name, "{.status.image}"), "an interrupted capture records no image")
		// Told from the killed replica's Lease (or by the restarted replica
		// itself), not by waiting out the longest a capture may run.
		assert.Contains(t, get(name, "{.status.message}"), "the server replica "+replica+" stopped during the capture")
		assert.Regexp(t, told, get(name, "{.status.message}"))
		c.Eventually("describe shows the Interrupted Event", func() bool {
			out, _ := c.Kubectl("describe", "cp", name, "-n", ns)
			return strings.Contains(out, "Interrupted") && strings.Contains(out, replica)
		})
		id := agents.CheckpointID(types.UID(get(name, "{.metadata.uid}")))
		c.Eventually("nothing of the interrupted capture is left on the nodes or in the registry", func() bool {
			return nothingLeftOf(c, reg, ns, id)
		})
		return replica
	}
	sigkill := func(replica string) {
		out, err := exec.Command("pgrep", "-f", "--", "--replica-name="+replica+"( |$)").Output()
		require.NoError(t, err, "the server process of %s", replica)
		pids := strings.Fields(string(out))
		require.Len(t, pids, 1)
		pid, err := strconv.Atoi(pids[0])
		require.NoError(t, err)
		require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	}

	t.Run("ProcessKilledContainerRestarts", func(t *testing.T) {
		restarts := func(pod string) string {
			return c.Must("-n", "checkpoint-system", "get", "pod", pod, "-o", "jsonpath={.status.containerStatuses[0].restartCount}")
		}
		var before string
		replica := killMidCapture(t, "cut-process", `\(this replica restarted|it restarted since`, func(replica string) {
			before = restarts(replica)
			sigkill(replica)
		})
		c.Eventually("the kubelet restarted the killed replica's container", func() bool {
			return restarts(replica) != before && bothReady()
		})
	})

	t.Run("PodDeletedReplacementRuns", func(t *testing.T) {
		replica := killMidCapture(t, "cut-pod", `\(its Lease checkpoint-apiserver-replica-\S+ expired at `, func(replica string) {
			sigkill(replica)
			c.Must("-n", "checkpoint-system", "delete", "pod", replica, "--grace-period=0", "--force")
		})
		c.Eventually("a replacement replica runs", func() bool {
			return !strings.Contains(serverPods(), replica) && bothReady()
		})
	})

	t.Run("NothingLostCapturesGoOn", func(t *testing.T) {
		assert.Equal(t, "Succeeded", get("keeper", "{.status.phase}"))
		out, err := reg.Inspect(get("keeper", "{.status.image}"), true)
		require.NoError(t, err, "the keeper's image is still in the registry: %s", out)
		apply("again", "big")
		require.Equal(t, "Succeeded", waitEnd("again"), get("again", "{.status.message}"))
	})
}
