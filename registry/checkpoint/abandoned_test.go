package checkpoint

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
)

func TestAbandoned(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	c := &Capturer{replica: "r1", incarnation: "now"}
	creating := func(marker string, since time.Time) *agents.Checkpoint {
		cp := &agents.Checkpoint{ObjectMeta: metav1.ObjectMeta{UID: types.UID("u-" + marker), CreationTimestamp: metav1.NewTime(since)},
			Status: agents.CheckpointStatus{Phase: agents.PhaseCreating}}
		if marker != "" {
			cp.Annotations = map[string]string{agents.AnnotationCapturedBy: marker}
		}
		return cp
	}
	limit := MaxCaptureTimeout + 2*time.Minute + 30*time.Second

	gone, _, _ := c.abandoned(ctx, creating("r1/before/1800000000", now), now)
	assert.True(t, gone, "this replica's earlier run: abandoned at once")

	gone, _, wait := c.abandoned(ctx, creating("r2/x/1800000000", now), now)
	assert.False(t, gone, "another replica's capture that may still run")
	assert.Equal(t, limit, wait, "asked again once it must have ended")

	gone, _, _ = c.abandoned(ctx, creating("r2/x/1800000000", now), now.Add(limit+time.Second))
	assert.True(t, gone, "another replica's capture past every deadline")

	gone, _, _ = c.abandoned(ctx, creating("", now), now.Add(time.Minute))
	assert.False(t, gone, "moved to Creating by hand a minute ago")
	gone, _, _ = c.abandoned(ctx, creating("", now), now.Add(limit+time.Second))
	assert.True(t, gone, "moved to Creating by hand long ago")

	inflight := creating("r1/now/1800000000", now)
	c.inflight.Store(inflight.UID, struct{}{})
	gone, _, _ = c.abandoned(ctx, inflight, now.Add(time.Hour))
	assert.False(t, gone, "captured by this process right now")
}

// fakeLiveness answers Alive from a table of running incarnations by
// replica; replicas it has no entry for are unknown.
type fakeLiveness map[string]string

func (f fakeLiveness) Alive(_ context.Context, replica, incarnation string, _ time.Time) (bool, bool, string) {
	running, ok := f[replica]
	if !ok {
		return false, false, ""
	}
	return running == incarnation, true, "fake says " + running
}

func TestAbandonedByReplicaLiveness(t *testing.T) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	c := &Capturer{replica: "r1", incarnation: "now", liveness: fakeLiveness{"r2": "x", "r3": ""}}
	cp := func(marker string) *agents.Checkpoint {
		return &agents.Checkpoint{ObjectMeta: metav1.ObjectMeta{UID: types.UID("u-" + marker), CreationTimestamp: metav1.NewTime(now),
			Annotations: map[string]string{agents.AnnotationCapturedBy: marker}}, Status: agents.CheckpointStatus{Phase: agents.PhaseCreating}}
	}
	gone, _, wait := c.abandoned(ctx, cp("r2/x/1800000000"), now)
	assert.False(t, gone, "r2's process that started it runs")
	assert.Equal(t, livenessRecheck, wait, "looked at again soon: it may stop")

	gone, why, _ := c.abandoned(ctx, cp("r2/before/1800000000"), now)
	assert.True(t, gone, "r2 restarted since: its capture is gone at once")
	assert.Equal(t, "fake says x", why, "the liveness says why")

	gone, _, _ = c.abandoned(ctx, cp("r3/y/1800000000"), now)
	assert.True(t, gone, "r3 runs no process (its lease expired)")

	gone, _, wait = c.abandoned(ctx, cp("r4/z/1800000000"), now)
	assert.False(t, gone, "r4's liveness is unknown: only the deadline tells")
	assert.Equal(t, MaxCaptureTimeout+2*time.Minute+30*time.Second, wait)
}
