package apiserver

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes/fake"
)

// Replica Leases against client-go's fake clientset (a fake API server in
// memory): who is alive, who restarted, whose Lease expired, and which
// Leases are collected.
func TestReplicaLeases(t *testing.T) {
	ctx := context.Background()
	client := fake.NewSimpleClientset()
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	r1 := newReplicaLeases(client.CoordinationV1(), "ns", "r1", "inc-1")
	r2 := newReplicaLeases(client.CoordinationV1(), "ns", "r2", "inc-2")
	r1.now, r2.now = clock, clock

	_, known, _ := r1.Alive(ctx, "r2", "inc-2", now)
	assert.False(t, known, "before its own Lease is written, r1 cannot tell")
	require.NoError(t, r1.renew(ctx))
	require.NoError(t, r2.renew(ctx))

	alive, known, _ := r1.Alive(ctx, "r2", "inc-2", now)
	assert.True(t, alive && known, "r2's process renews its Lease")
	alive, known, why := r1.Alive(ctx, "r2", "inc-0", now)
	assert.True(t, known && !alive, "a capture of r2's earlier process")
	assert.Contains(t, why, "restarted")

	// r2 restarts: its new process takes the Lease over.
	r2b := newReplicaLeases(client.CoordinationV1(), "ns", "r2", "inc-3")
	r2b.now = clock
	require.NoError(t, r2b.renew(ctx))
	alive, _, _ = r1.Alive(ctx, "r2", "inc-2", now)
	assert.False(t, alive)
	alive, _, _ = r1.Alive(ctx, "r2", "inc-3", now)
	assert.True(t, alive)

	// No Lease at all: unknown at first (its replica may not have written
	// it yet), gone once the capture is older than two durations.
	_, known, _ = r1.Alive(ctx, "r9", "x", now)
	assert.False(t, known)
	alive, known, why = r1.Alive(ctx, "r9", "x", now.Add(-3*replicaLeaseDuration))
	assert.True(t, known && !alive)
	assert.Contains(t, why, "holds no Lease")

	// r2 stops renewing: past its duration it is gone.
	now = now.Add(replicaLeaseDuration + time.Second)
	alive, known, why = r1.Alive(ctx, "r2", "inc-3", now)
	assert.True(t, known && !alive)
	assert.Contains(t, why, "expired at")

	// An hour on, r1 (still renewing) removes r2's Lease, never its own.
	now = now.Add(replicaLeaseGC)
	require.NoError(t, r1.renew(ctx))
	r1.collect(ctx)
	list, err := client.CoordinationV1().Leases("ns").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, list.Items, 1)
	assert.Equal(t, "checkpoint-apiserver-replica-r1", list.Items[0].Name)
	assert.Equal(t, "inc-1", *list.Items[0].Spec.HolderIdentity)
}

func TestReplicaLeaseName(t *testing.T) {
	assert.Equal(t, "checkpoint-apiserver-replica-checkpoint-apiserver-5d8f-x2", replicaLeaseName("checkpoint-apiserver-5d8f-x2"))
	for _, replica := range []string{"Host_1", "a/b", string(make([]byte, 300))} {
		name := replicaLeaseName(replica)
		assert.Empty(t, validation.IsDNS1123Subdomain(name), "%q gives a valid name: %s", replica, name)
	}
	assert.NotEqual(t, replicaLeaseName("Host_1"), replicaLeaseName("Host_2"))
}
