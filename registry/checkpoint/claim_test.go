package checkpoint

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
)

func sandboxCheckpoint(ns, name, pod string) *agents.Checkpoint {
	return &agents.Checkpoint{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: agents.CheckpointSpec{PodName: pod}}
}

// TestOneCaptureOfASandboxAtATime: a second capture of a sandbox waits
// for the first (imperative) or is put off (declarative); a namespace's
// declarative captures are bounded while other namespaces' go on; an
// imperative call that waits past its time is told why.
func TestOneCaptureOfASandboxAtATime(t *testing.T) {
	c := &Capturer{perNamespace: 1}
	ctx := context.Background()
	release, err := c.claim(ctx, sandboxCheckpoint("team-a", "cp-1", "p"))
	require.NoError(t, err)

	// The same sandbox, declaratively: put off with the reason.
	_, err = c.claim(declarative(ctx), sandboxCheckpoint("team-a", "cp-2", "p"))
	require.True(t, apierrors.IsTooManyRequests(err), "%v", err)
	assert.Contains(t, err.Error(), "team-a/p is being captured (Checkpoint cp-1)")

	// Another sandbox of the namespace: declaratively over its bound, put
	// off; imperatively (the API's own fairness queues those), it goes.
	_, err = c.claim(declarative(ctx), sandboxCheckpoint("team-a", "cp-3", "q"))
	require.True(t, apierrors.IsTooManyRequests(err), "%v", err)
	assert.Contains(t, err.Error(), "namespace team-a has 1 captures running")
	releaseQ, err := c.claim(ctx, sandboxCheckpoint("team-a", "cp-3", "q"))
	require.NoError(t, err)
	releaseQ()

	// Another namespace is not held up by team-a's.
	releaseB, err := c.claim(declarative(ctx), sandboxCheckpoint("team-b", "cp-4", "p"))
	require.NoError(t, err)
	releaseB()

	// The same sandbox, imperatively: it waits for the first to end.
	got := make(chan error, 1)
	go func() {
		r, err := c.claim(ctx, sandboxCheckpoint("team-a", "cp-5", "p"))
		if err == nil {
			r()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("a second capture of the sandbox did not wait: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	require.NoError(t, <-got, "once the first ended, the second went")

	// Waiting past its time: told why.
	release, err = c.claim(ctx, sandboxCheckpoint("team-a", "cp-6", "p"))
	require.NoError(t, err)
	defer release()
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = c.claim(short, sandboxCheckpoint("team-a", "cp-7", "p"))
	require.True(t, apierrors.IsTooManyRequests(err), "%v", err)
	assert.Contains(t, err.Error(), "at the capture's timeout")
}
