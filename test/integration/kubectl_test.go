package integration

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// TestKubectlWalkthrough is the README's walkthrough, with the real kubectl
// against a standalone server and the kubeconfig it wrote.
func TestKubectlWalkthrough(t *testing.T) {
	kubectlBin := framework.Kubectl(t)
	srv := framework.StartStandalone(t, t.TempDir(), noDeclarativeCapture(t)...)
	cacheDir := t.TempDir()
	kubectl := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(kubectlBin, append([]string{"--kubeconfig", srv.Kubeconfig}, args...)...)
		cmd.Env = append(cmd.Environ(), "KUBECACHEDIR="+cacheDir)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "kubectl %s:\n%s", strings.Join(args, " "), out)
		return string(out)
	}
	example := filepath.Join(framework.RepoRoot(), "artifacts", "examples", "checkpoint.yaml")

	// The server says which build it is: its version, commit and tree state.
	var version struct {
		Server struct{ GitVersion, GitCommit, GitTreeState string } `json:"serverVersion"`
	}
	versionCmd := exec.Command(kubectlBin, "--kubeconfig", srv.Kubeconfig, "version", "-o", "json")
	versionCmd.Env = append(versionCmd.Environ(), "KUBECACHEDIR="+cacheDir)
	versionOut, err := versionCmd.Output() // stdout only: a version-skew warning goes to stderr
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(versionOut, &version), "%s", versionOut)
	head, err := exec.Command("git", "-C", framework.RepoRoot(), "rev-parse", "HEAD").Output()
	require.NoError(t, err)
	assert.Regexp(t, `^v0\.1\.0-alpha\.\d+\+[0-9a-f]{12}`, version.Server.GitVersion)
	assert.Equal(t, strings.TrimSpace(string(head)), version.Server.GitCommit)
	assert.Contains(t, []string{"clean", "dirty"}, version.Server.GitTreeState)

	out := kubectl("apply", "-f", example)
	assert.Contains(t, out, "checkpoint.agents.kruise.io/checkpoint-code-demo-01 created")

	out = kubectl("get", "cp")
	assert.Regexp(t, `(?m)^NAME\s+STATUS\s+AGE$`, out)
	assert.Regexp(t, `(?m)^checkpoint-code-demo-01\s+Pending\s+\S+$`, out)

	out = kubectl("get", "cp", "-o", "wide")
	assert.Regexp(t, `(?m)^NAME\s+STATUS\s+AGE\s+POD\s+CONTENTS\s+CHECKPOINT-ID\s+COMPLETED\s+PAUSE\s+DURATION\s+TTL$`, out)
	assert.Regexp(t, `(?m)^checkpoint-code-demo-01\s+Pending\s+\S+\s+code-interpreter-28rvn\s+memory,filesystem\s+<none>\s+<none>\s+<none>\s+<none>\s+30h$`, out)

	out = kubectl("get", "agents")
	assert.Contains(t, out, "checkpoint-code-demo-01", "the agents category lists checkpoints")

	out = kubectl("api-resources", "--api-group=agents.kruise.io")
	assert.Regexp(t, `checkpoints\s+cp\s+agents.kruise.io/v1alpha1\s+true\s+Checkpoint`, out)

	out = kubectl("explain", "cp.spec.ttlAfterFinished")
	assert.Contains(t, out, "FIELD: ttlAfterFinished <string>")
	assert.Contains(t, out, "1d12h")

	// Server-side apply of the same manifest takes over the fields.
	out = kubectl("apply", "--server-side", "--force-conflicts", "-f", example)
	assert.Contains(t, out, "serverside-applied")

	// Changing spec is refused with the field named.
	cmd := exec.Command(kubectlBin, "--kubeconfig", srv.Kubeconfig, "patch", "cp", "checkpoint-code-demo-01",
		"--type=merge", "-p", `{"spec":{"podName":"another"}}`)
	cmd.Env = append(cmd.Environ(), "KUBECACHEDIR="+cacheDir)
	patchOut, err := cmd.CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(patchOut), "spec.podName")

	// get -w prints the change a status writer makes.
	var watchOut framework.SafeBuffer
	watch := exec.Command(kubectlBin, "--kubeconfig", srv.Kubeconfig, "get", "cp", "-w", "--no-headers")
	watch.Env = append(watch.Environ(), "KUBECACHEDIR="+cacheDir)
	watch.Stdout, watch.Stderr = &watchOut, &watchOut
	require.NoError(t, watch.Start())
	defer func() { _ = watch.Process.Kill(); _ = watch.Wait() }()
	require.Eventually(t, func() bool { return strings.Contains(watchOut.String(), "Pending") }, 15*time.Second, 100*time.Millisecond)

	cps := clientFor(t, srv.Config, "application/json").AgentsV1alpha1().Checkpoints("default")
	cp, err := cps.Get(context.Background(), "checkpoint-code-demo-01", metav1.GetOptions{})
	require.NoError(t, err)
	cp.Status.Phase = v1alpha1.PhaseCreating
	_, err = cps.UpdateStatus(context.Background(), cp, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return strings.Contains(watchOut.String(), "Creating") }, 15*time.Second, 100*time.Millisecond,
		"kubectl get -w output:\n%s", &watchOut)
	// No containerd here: the capture ends Failed, so there is no state to delete.
	cp, err = cps.Get(context.Background(), "checkpoint-code-demo-01", metav1.GetOptions{})
	require.NoError(t, err)
	cp.Status.Phase = v1alpha1.PhaseFailed
	_, err = cps.UpdateStatus(context.Background(), cp, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return strings.Contains(watchOut.String(), "Failed") }, 15*time.Second, 100*time.Millisecond)

	out = kubectl("delete", "cp", "checkpoint-code-demo-01")
	assert.Contains(t, out, `checkpoint.agents.kruise.io "checkpoint-code-demo-01" deleted`)
	out = kubectl("get", "cp")
	assert.Contains(t, out, "No resources found")
}

// TestRestartKeepsData stops a standalone server and starts it again on the
// same data dir: the objects, the PKI and the kubeconfig all survive.
func TestRestartKeepsData(t *testing.T) {
	dataDir := t.TempDir()
	srv := framework.StartStandalone(t, dataDir, noDeclarativeCapture(t)...)
	ctx := context.Background()
	cps := clientFor(t, srv.Config, "application/vnd.kubernetes.protobuf").AgentsV1alpha1().Checkpoints("default")
	created, err := cps.Create(ctx, newCheckpoint("survivor", "pod-s"), metav1.CreateOptions{})
	require.NoError(t, err)
	id := succeed(t, cps, "survivor").Status.CheckpointID
	srv.Stop()

	again := framework.StartStandalone(t, dataDir, noDeclarativeCapture(t)...)
	cps = clientFor(t, again.Config, "application/json").AgentsV1alpha1().Checkpoints("default")
	got, err := cps.Get(ctx, "survivor", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, created.UID, got.UID)
	assert.Equal(t, v1alpha1.PhaseSucceeded, got.Status.Phase)
	assert.Equal(t, id, got.Status.CheckpointID)
	assert.Equal(t, srv.Config.CAData, again.Config.CAData, "the CA was kept")
	assert.Equal(t, srv.Config.CertData, again.Config.CertData, "the admin identity was kept")
}
