package faults

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// TestContainerdKilledMidCapture kills the containerd daemon while CRIU is
// dumping a 256 MiB container: the Checkpoint ends Failed/DriverUnavailable,
// nothing half-written stays in containerd once it is back (the lease is
// swept), and a new capture of the same container succeeds.
func TestContainerdKilledMidCapture(t *testing.T) {
	e := startEnv(t)
	ctx := context.Background()
	src := e.ctrd.RunPodContainer(t, ns, "big", "main", framework.MemoryScript(256))
	framework.WaitCounter(t, src.LogPath, 3)

	e.create(t, "cut", "big")
	type result struct {
		cp  *v1alpha1.Checkpoint
		err error
	}
	done := make(chan result, 1)
	go func() {
		cp, err := e.cps().Capture(ctx, "cut", &v1alpha1.CaptureOptions{}, metav1.CreateOptions{})
		done <- result{cp, err}
	}()
	// mid-dump: a 256 MiB capture takes about 2.5 s here
	require.Eventually(t, func() bool {
		cp, err := e.cps().Get(ctx, "cut", metav1.GetOptions{})
		return err == nil && cp.Status.Phase == v1alpha1.PhaseCreating
	}, 10*time.Second, 20*time.Millisecond)
	time.Sleep(700 * time.Millisecond)
	e.ctrd.KillDaemon(t)

	var r result
	select {
	case r = <-done:
	case <-time.After(90 * time.Second):
		t.Fatal("capture did not return after containerd died")
	}
	require.NoError(t, r.err, "the capture call answers with the failed Checkpoint")
	assert.Equal(t, v1alpha1.PhaseFailed, r.cp.Status.Phase, "%s", r.cp.Status.Message)
	assert.Equal(t, "DriverUnavailable", readyReason(r.cp), "%s", r.cp.Status.Message)
	id := r.cp.Status.CheckpointID
	t.Logf("failed as expected: %s", r.cp.Status.Message)

	e.ctrd.RestartDaemon(t)
	assert.Zero(t, e.images(t, ""), "no checkpoint image was written")
	require.Eventually(t, func() bool { return e.leases(t) == 0 }, 60*time.Second, 500*time.Millisecond,
		"the half-written capture's lease is swept")
	assert.Empty(t, id, "a failed capture records no checkpoint id")

	// containerd is back: the same container captures.
	e.create(t, "again", "big")
	require.Eventually(t, func() bool {
		cp, err := e.cps().Capture(ctx, "again", &v1alpha1.CaptureOptions{}, metav1.CreateOptions{})
		if err != nil {
			t.Logf("capture: %v", err)
			return false
		}
		require.Equal(t, v1alpha1.PhaseSucceeded, cp.Status.Phase, "%s", cp.Status.Message)
		assert.Equal(t, 1, e.images(t, cp.Status.CheckpointID))
		return true
	}, 30*time.Second, time.Second)
	_, last, _ := framework.Counter(t, src.LogPath)
	time.Sleep(1500 * time.Millisecond)
	_, later, _ := framework.Counter(t, src.LogPath)
	assert.Greater(t, later, last, "the source container kept running through it all")
}
