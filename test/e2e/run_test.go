package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// sandboxAnswer is what the Python sandbox serves: its counter and secret.
type sandboxAnswer struct {
	n      int
	secret string
}

var answerRE = regexp.MustCompile(`^n=(\d+) secret=([0-9a-f]+)\s*$`)

// TestMakeRunWalkthrough is the README's first walkthrough, as a newcomer on
// a fresh machine runs it: make run (which, as root, installs and starts a
// private containerd with the demo sandbox code-interpreter-28rvn), kubectl
// version, kubectl apply of the example Checkpoint with kubectl get cp -w
// watching it go Pending -> Creating -> Succeeded, then the restore
// subresource, whose clone answers with the sandbox's secret and a counter
// that went on from the capture. Stopping make run stops everything it
// started.
func TestMakeRunWalkthrough(t *testing.T) {
	kubectl := framework.Kubectl(t)
	if os.Geteuid() != 0 {
		framework.Missing(t, "make run starts its containerd as root only")
	}
	if _, err := exec.LookPath("make"); err != nil {
		framework.Missing(t, "make not on PATH")
	}
	root := framework.RepoRoot()
	// A short path of its own: make run's data dir, containerd's root inside.
	runDir, err := os.MkdirTemp("", "mkrun")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(runDir) })
	port, e2bPort := framework.FreePort(t), framework.FreePort(t)

	var out framework.SafeBuffer
	run := exec.Command("make", "-C", root, "run", "RUN_DIR="+runDir,
		fmt.Sprintf("ARGS=--secure-port=%d --e2b-bind-address=127.0.0.1:%d", port, e2bPort))
	run.Stdout, run.Stderr = &out, &out
	run.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	require.NoError(t, run.Start())
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	stopped := false
	// stop signals make run's script (what Ctrl-C does) and waits for it.
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		if b, err := os.ReadFile(filepath.Join(runDir, "run.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGTERM)
			}
		}
		select {
		case <-exited:
		case <-time.After(2 * time.Minute):
			_ = syscall.Kill(-run.Process.Pid, syscall.SIGKILL)
			<-exited
			t.Errorf("make run did not stop within 2 minutes of SIGTERM")
		}
	}
	t.Cleanup(stop)

	ready := fmt.Sprintf("checkpoint-apiserver is ready at https://127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Minute) // installs and builds, when not cached yet
	for !strings.Contains(out.String(), ready) {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("make run exited before it was ready: %v\n%s", err, tail(out.String()))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("make run not ready\n%s", tail(out.String()))
		}
	}
	kubeconfig := filepath.Join(runDir, "kubeconfig")
	assert.Contains(t, out.String(), "kubeconfig: "+kubeconfig, "make run prints how to reach it")
	assert.Contains(t, out.String(), "demo sandbox code-interpreter-28rvn")
	k := func(args ...string) (string, error) {
		cmd := exec.Command(kubectl, args...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
		cmd.Dir = root
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	must := func(args ...string) string {
		t.Helper()
		o, err := k(args...)
		require.NoError(t, err, "kubectl %s: %s", strings.Join(args, " "), o)
		return o
	}
	sandbox := func(name string) (sandboxAnswer, error) {
		cmd := exec.Command(filepath.Join(root, "hack", "run.sh"), "sandbox", name)
		cmd.Env = append(os.Environ(), "RUN_DIR="+runDir)
		b, err := cmd.Output()
		if err != nil {
			return sandboxAnswer{}, fmt.Errorf("hack/run.sh sandbox %s: %v: %s", name, err, b)
		}
		m := answerRE.FindStringSubmatch(string(b))
		if m == nil {
			return sandboxAnswer{}, fmt.Errorf("hack/run.sh sandbox %s answered %q", name, b)
		}
		n, _ := strconv.Atoi(m[1])
		return sandboxAnswer{n: n, secret: m[2]}, nil
	}

	t.Run("KubectlVersionShowsTheServersBuild", func(t *testing.T) {
		var v struct {
			ServerVersion struct {
				GitVersion string `json:"gitVersion"`
				GitCommit  string `json:"gitCommit"`
			} `json:"serverVersion"`
		}
		o, _ := k("version", "-o", "json") // exits 1 on the version skew warning alone
		require.NoError(t, json.Unmarshal([]byte(o[strings.Index(o, "{"):strings.LastIndex(o, "}")+1]), &v), o)
		assert.NotContains(t, v.ServerVersion.GitVersion, "v0.0.0-master")
		assert.Regexp(t, `^v\d+\.\d+\.\d+`, v.ServerVersion.GitVersion)
		head, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
		require.NoError(t, err)
		assert.Equal(t, strings.TrimSpace(string(head)), v.ServerVersion.GitCommit)
	})

	var before sandboxAnswer
	var captured sandboxAnswer
	t.Run("TheExampleIsCaptured", func(t *testing.T) {
		var err error
		before, err = sandbox("code-interpreter-28rvn")
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var watch framework.SafeBuffer
		w := exec.CommandContext(ctx, kubectl, "get", "cp", "-w")
		w.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
		w.Stdout, w.Stderr = &watch, &watch
		require.NoError(t, w.Start())
		defer func() { cancel(); _ = w.Wait() }()
		time.Sleep(time.Second) // the watch is open before the object exists

		assert.Contains(t, must("apply", "-f", "artifacts/examples/checkpoint.yaml"), "checkpoint-code-demo-01 created")
		require.Eventually(t, func() bool {
			o, _ := k("get", "cp", "checkpoint-code-demo-01", "-o", "jsonpath={.status.phase}")
			return o == "Succeeded" || o == "Failed"
		}, 2*time.Minute, 250*time.Millisecond)
		assert.Equal(t, "Succeeded", must("get", "cp", "checkpoint-code-demo-01", "-o", "jsonpath={.status.phase}"),
			must("get", "cp", "checkpoint-code-demo-01", "-o", "yaml"))
		require.Eventually(t, func() bool { return strings.Contains(watch.String(), "Succeeded") }, 30*time.Second, 100*time.Millisecond)
		phases := regexp.MustCompile(`(?m)^checkpoint-code-demo-01\s+(\w+)`).FindAllStringSubmatch(watch.String(), -1)
		var seen []string
		for _, p := range phases {
			if len(seen) == 0 || seen[len(seen)-1] != p[1] {
				seen = append(seen, p[1])
			}
		}
		assert.Equal(t, []string{"Pending", "Creating", "Succeeded"}, seen, "kubectl get cp -w:\n%s", watch.String())
		// -o wide shows how long the sandbox was frozen and how long the capture took.
		assert.Regexp(t, `checkpoint-code-demo-01\s+Succeeded\s+\S+\s+code-interpreter-28rvn\s+memory,filesystem\s+ckpt-\S+\s+\S+\s+[0-9.]+m?s\s+[0-9.]+m?s\s+30h`,
			must("get", "cp", "-o", "wide"))
		pauseAtMostCapture(t, must("get", "cp", "checkpoint-code-demo-01", "-o", "jsonpath={.status.pauseDuration} {.status.captureDuration}"))
		captured, err = sandbox("code-interpreter-28rvn")
		require.NoError(t, err)
		assert.Equal(t, before.secret, captured.secret, "the source keeps running (keepRunning: true)")
		assert.Greater(t, captured.n, before.n)
	})

	t.Run("TheCloneContinues", func(t *testing.T) {
		body := `{"spec": {"sandboxName": "clone-1"}}`
		cmd := exec.Command(kubectl, "create", "--raw",
			"/apis/agents.kruise.io/v1alpha1/namespaces/default/checkpoints/checkpoint-code-demo-01/restore", "-f", "-")
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
		cmd.Stdin = strings.NewReader(body)
		o, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", o)
		assert.Contains(t, string(o), `"sandboxName":"clone-1"`)

		var first sandboxAnswer
		require.Eventually(t, func() bool {
			first, err = sandbox("clone-1")
			return err == nil
		}, 30*time.Second, 250*time.Millisecond, "the clone serves: %v", err)
		assert.Equal(t, before.secret, first.secret, "the clone holds the sandbox's secret: its memory, not a fresh start")
		assert.GreaterOrEqual(t, first.n, before.n, "its counter went on from the capture")
		require.Eventually(t, func() bool {
			later, err := sandbox("clone-1")
			return err == nil && later.n > first.n
		}, 30*time.Second, 250*time.Millisecond, "the clone counts on")
	})

	t.Run("StoppingStopsEverything", func(t *testing.T) {
		stop()
		assert.Contains(t, out.String(), "stopped the sandboxes and containerd")
		ps, _ := exec.Command("pgrep", "-f", runDir).Output()
		assert.Empty(t, strings.TrimSpace(string(ps)), "no process of make run is left")
		mounts, err := os.ReadFile("/proc/self/mounts")
		require.NoError(t, err)
		assert.NotContains(t, string(mounts), runDir+"/", "nothing stays mounted")
		_, err = os.Stat(filepath.Join(runDir, "run.pid"))
		assert.True(t, os.IsNotExist(err), "run.pid is removed")
	})
}

// pauseAtMostCapture checks "<pauseDuration> <captureDuration>" of a
// Checkpoint: both set, the pause positive and no longer than the capture.
func pauseAtMostCapture(t *testing.T, durations string) {
	t.Helper()
	f := strings.Fields(durations)
	require.Len(t, f, 2, "pauseDuration and captureDuration are set: %q", durations)
	pause, err := time.ParseDuration(f[0])
	require.NoError(t, err)
	capture, err := time.ParseDuration(f[1])
	require.NoError(t, err)
	assert.Positive(t, pause)
	assert.LessOrEqual(t, pause, capture, "the sandbox stood still no longer than the capture took")
}

func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}
