package faults

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/agents-kruise/checkpoint-apiserver/test/bench"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// pauseKey is the E2B API key of the fault test's user, alice; benchKey
// the pause benchmark's smoke run's, in its own team.
const (
	pauseKey = "e2b_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	benchKey = "e2b_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// e2bCall is one call of the E2B front: the status and body, or the
// error of a call cut short.
type e2bCall struct {
	status int
	body   string
	err    error
}

func e2bDo(url, method, path string) e2bCall {
	status, body, err := framework.E2BCall(url, pauseKey, method, path)
	return e2bCall{status: status, body: body, err: err}
}

// TestPauseAndResumeFaults kills the server between a pause's capture and
// its Pod's removal, and a node agent during a resume, on two kubelet
// nodes with agents and the registry, through the E2B front. Either way
// the sandbox ends paused with a usable checkpoint or running, never lost
// and never running twice: it is resumed (or found running), its count
// going on and the secret its memory alone held the same.
func TestPauseAndResumeFaults(t *testing.T) {
	framework.RequireTool(t, "skopeo")
	framework.RequireTool(t, "docker-registry")
	const ns, sb = "pause-faults", "sb"
	keys := filepath.Join(t.TempDir(), "e2b-keys.yaml")
	require.NoError(t, os.WriteFile(keys, []byte(fmt.Sprintf("keys:\n- {key: %s, user: alice, team: %s}\n- {key: %s, user: bench, team: bench-pause}\n",
		pauseKey, ns, benchKey)), 0o600))
	addr := fmt.Sprintf("127.0.0.1:%d", framework.FreePort(t))
	front := "http://" + addr
	c := framework.LocalUpNodesEnv(t, 2, []string{"AGENT_ARGS=--orphan-sweep-interval=5s"},
		"--orphan-sweep-interval=5s", "--e2b-bind-address="+addr, "--e2b-api-keys-file="+keys)
	c.SandboxNamespace(ns)
	c.E2BTeam(ns)
	kube, err := kubernetes.NewForConfig(c.RESTConfig())
	require.NoError(t, err)
	ctx := context.Background()

	c.Apply(busyboxPod(ns, sb, "node-1", framework.SecretCounterScript))
	c.Must("annotate", "pod", sb, "-n", ns, "agents.kruise.io/owner=e2b:alice")
	c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/"+sb, "--timeout=120s")
	c.Eventually("the sandbox counts", func() bool { return c.Count(ns, sb, "main", true) >= 3 })
	secret := c.Secret(ns, sb)

	pauses := func() []string {
		out, _ := c.Kubectl("get", "cp", "-n", ns, "-l", "agents.kruise.io/paused-sandbox="+sb,
			"-o", `jsonpath={range .items[*]}{.status.phase}{"\n"}{end}`)
		return strings.Fields(out)
	}
	podState := func() (uid string, terminating, found bool) {
		pod, err := kube.CoreV1().Pods(ns).Get(ctx, sb, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return "", false, false
		}
		require.NoError(t, err)
		return string(pod.UID), pod.DeletionTimestamp != nil, true
	}
	// settled waits until the sandbox is running (its Pod there and not
	// going) or paused (no Pod, and a Succeeded pause), never lost.
	settled := func(t *testing.T) string {
		t.Helper()
		state := ""
		c.Eventually("the sandbox is running or paused", func() bool {
			_, terminating, found := podState()
			switch {
			case found && !terminating:
				state = "running"
			case !found && strings.Contains(strings.Join(pauses(), " "), "Succeeded"):
				state = "paused"
			default:
				state = ""
			}
			return state != ""
		})
		got := e2bDo(front, http.MethodGet, "/sandboxes/"+sb)
		require.NoError(t, got.err)
		require.Equal(t, http.StatusOK, got.status, got.body)
		assert.Contains(t, got.body, `"state":"`+state+`"`, "the front says %s", state)
		return state
	}
	// resumed connects (again when a resume failed) until the sandbox runs,
	// and checks it is the same sandbox, once: from state ("running": the
	// Pod that ran before the fault, uid, goes on; "paused": it is restored
	// from its pause, counting on from before).
	resumed := func(t *testing.T, before int, state, uid string) {
		t.Helper()
		require.Eventually(t, func() bool {
			got := e2bDo(front, http.MethodPost, "/sandboxes/"+sb+"/connect")
			t.Logf("connect: %d %s %v", got.status, got.body, got.err)
			return got.err == nil && (got.status == http.StatusOK || got.status == http.StatusCreated)
		}, 3*time.Minute, 2*time.Second, "the sandbox resumes")
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/"+sb, "--timeout=120s")
		c.Eventually("the sandbox counts on", func() bool { return c.Count(ns, sb, "main", true) > before })
		assert.Equal(t, secret, c.Secret(ns, sb), "the same sandbox: the secret its memory alone held")
		now, _, _ := podState()
		if state == "running" {
			assert.Equal(t, uid, now, "the very Pod that ran before goes on")
		} else {
			assert.NotEqual(t, uid, now)
			assert.GreaterOrEqual(t, c.Count(ns, sb, "main", false), before, "restored, it counts on from before the pause")
		}
		assert.Equal(t, "pod/"+sb, strings.TrimSpace(c.Must("get", "pods", "-n", ns, "-o", "name")), "never running twice")
	}
	killServer := func() {
		require.NoError(t, syscall.Kill(c.PID("checkpoint-apiserver"), syscall.SIGKILL))
	}

	t.Run("ServerKilledWhileCapturing", func(t *testing.T) {
		// The registry is frozen until the server is dead, so the capture
		// cannot end first, however fast this machine dumps.
		uid, _, _ := podState()
		before := c.Count(ns, sb, "main", true)
		thaw := freeze(t, c.PID("registry"))
		defer thaw()
		paused := make(chan e2bCall, 1)
		go func() { paused <- e2bDo(front, http.MethodPost, "/sandboxes/"+sb+"/pause") }()
		c.Eventually("the pause's capture runs", func() bool { return strings.Join(pauses(), " ") == "Creating" })
		killServer()
		thaw()
		got := <-paused
		assert.True(t, got.err != nil || got.status >= 500, "the pause was cut short: %d %s %v", got.status, got.body, got.err)
		require.NoError(t, c.Script("start-server"))
		assert.Equal(t, "running", settled(t), "a capture cut short ends nothing")
		c.Eventually("the cut pause ends Failed", func() bool { return strings.Join(pauses(), " ") == "Failed" })
		resumed(t, before, "running", uid)
	})

	t.Run("ServerKilledOnceCaptured", func(t *testing.T) {
		// Killed as soon as the pause's capture is recorded: before, while
		// or after its Pod is removed, whichever this machine makes it.
		uid, _, _ := podState()
		before := c.Count(ns, sb, "main", true)
		paused := make(chan e2bCall, 1)
		go func() { paused <- e2bDo(front, http.MethodPost, "/sandboxes/"+sb+"/pause") }()
		deadline := time.Now().Add(3 * time.Minute)
		for !strings.Contains(strings.Join(pauses(), " "), "Succeeded") {
			require.True(t, time.Now().Before(deadline), "the pause's capture did not succeed: %v", pauses())
			time.Sleep(20 * time.Millisecond)
		}
		killServer()
		got := <-paused
		t.Logf("the pause answered %d %s %v", got.status, got.body, got.err)
		require.NoError(t, c.Script("start-server"))
		state := settled(t)
		t.Logf("after the kill the sandbox is %s", state)
		resumed(t, before, state, uid)
	})

	t.Run("AgentKilledDuringResume", func(t *testing.T) {
		uid, _, _ := podState()
		before := c.Count(ns, sb, "main", true)
		got := e2bDo(front, http.MethodPost, "/sandboxes/"+sb+"/pause")
		require.NoError(t, got.err)
		require.Equal(t, http.StatusNoContent, got.status, got.body)
		require.Equal(t, "paused", settled(t))

		connected := make(chan e2bCall, 1)
		go func() { connected <- e2bDo(front, http.MethodPost, "/sandboxes/"+sb+"/connect") }()
		node := ""
		c.Eventually("the resumed Pod is bound to a node", func() bool {
			pod, err := kube.CoreV1().Pods(ns).Get(ctx, sb, metav1.GetOptions{})
			if err == nil {
				node = pod.Spec.NodeName
			}
			return node != ""
		})
		i := strings.TrimPrefix(node, "node-")
		require.NoError(t, syscall.Kill(c.PID("agent-"+node), syscall.SIGKILL))
		got = <-connected
		t.Logf("the resume with %s's agent killed answered %d %s %v", node, got.status, got.body, got.err)
		require.NoError(t, c.Script("start-agent", i))
		state := settled(t)
		t.Logf("after the kill the sandbox is %s", state)
		if state == "paused" {
			assert.Contains(t, pauses(), "Succeeded", "a failed resume leaves its pause usable")
		}
		resumed(t, before, "paused", uid)
	})

	t.Run("PauseBenchmarkSmoke", func(t *testing.T) {
		// BenchmarkPauseResume's every step, once, at 0 MiB, on this cluster.
		r := bench.PauseResume(t, c, front, benchKey, "bench-pause", 0, 1)
		t.Logf("pause %.0f ms (frozen %.0f ms), resume %.0f ms, fresh Pod %.0f ms", r.PauseMs, r.FrozenMs, r.ResumeMs, r.FreshMs)
		assert.Positive(t, r.PauseMs)
		assert.Positive(t, r.FrozenMs)
		assert.LessOrEqual(t, r.FrozenMs, r.CaptureMs, "the sandbox is frozen for part of its capture")
		assert.LessOrEqual(t, r.CaptureMs, r.PauseMs, "the capture is part of the pause")
		assert.Positive(t, r.ResumeMs)
		assert.Positive(t, r.FreshMs)
		assert.Contains(t, bench.PauseTable([]bench.PauseResult{r}), "| 0 MiB |")
	})

	t.Run("PausedLongerThanTheTTLIsDeleted", func(t *testing.T) {
		// The server again, with --e2b-paused-sandbox-ttl=8s.
		args := ""
		for _, e := range c.Env {
			if v, ok := strings.CutPrefix(e, "CHECKPOINT_APISERVER_ARGS="); ok {
				args = v
			}
		}
		require.NoError(t, c.Script("stop-server"))
		require.NoError(t, c.ScriptWith([]string{"CHECKPOINT_APISERVER_ARGS=" + args + " --e2b-paused-sandbox-ttl=8s"}, "start-server"))
		require.Equal(t, "running", settled(t))
		// pauseOf is the sandbox's pause (not one being deleted).
		pauseOf := func() string {
			return strings.TrimSpace(c.MustStdout("get", "cp", "-n", ns, "-l", "agents.kruise.io/paused-sandbox="+sb, "-o",
				"go-template={{range .items}}{{if not .metadata.deletionTimestamp}}{{.metadata.name}} {{end}}{{end}}"))
		}

		// Paused, then resumed at once: the pause the sandbox runs on stays.
		got := e2bDo(front, http.MethodPost, "/sandboxes/"+sb+"/pause")
		require.Equal(t, http.StatusNoContent, got.status, got.body)
		got = e2bDo(front, http.MethodPost, "/sandboxes/"+sb+"/connect")
		require.Equal(t, http.StatusCreated, got.status, got.body)
		pause := pauseOf()
		require.NotEmpty(t, pause)
		time.Sleep(12 * time.Second)
		assert.Equal(t, pause, pauseOf(), "a resumed sandbox's pause outlives the TTL")
		assert.Equal(t, "running", settled(t))

		// Paused, and left paused: it goes after the TTL, and with it the sandbox.
		got = e2bDo(front, http.MethodPost, "/sandboxes/"+sb+"/pause")
		require.Equal(t, http.StatusNoContent, got.status, got.body)
		require.Equal(t, "paused", settled(t))
		c.Eventually("the sandbox paused longer than the TTL is deleted", func() bool {
			got := e2bDo(front, http.MethodGet, "/sandboxes/"+sb)
			return got.err == nil && got.status == http.StatusNotFound && pauseOf() == ""
		})
	})
}
