package checkpoint

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
)

func TestAbandoned(t *testing.T) {
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

	gone, _ := c.abandoned(creating("r1/before/1800000000", now), now)
	assert.True(t, gone, "this replica's earlier run: abandoned at once")

	gone, wait := c.abandoned(creating("r2/x/1800000000", now), now)
	assert.False(t, gone, "another replica's capture that may still run")
	assert.Equal(t, limit, wait, "asked again once it must have ended")

	gone, _ = c.abandoned(creating("r2/x/1800000000", now), now.Add(limit+time.Second))
	assert.True(t, gone, "another replica's capture past every deadline")

	gone, _ = c.abandoned(creating("", now), now.Add(time.Minute))
	assert.False(t, gone, "moved to Creating by hand a minute ago")
	gone, _ = c.abandoned(creating("", now), now.Add(limit+time.Second))
	assert.True(t, gone, "moved to Creating by hand long ago")

	inflight := creating("r1/now/1800000000", now)
	c.inflight.Store(inflight.UID, struct{}{})
	gone, _ = c.abandoned(inflight, now.Add(time.Hour))
	assert.False(t, gone, "captured by this process right now")
}
