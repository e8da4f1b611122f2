package encryption

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes/fake"
)

// TestSecretKeys: a wrapped key is kept once, read for its own Checkpoint
// only, and gone once deleted.
func TestSecretKeys(t *testing.T) {
	ctx := context.Background()
	s := SecretKeys{Client: fake.NewSimpleClientset(), Namespace: "checkpoint-system"}
	b := Binding{Namespace: "team-a", UID: "uid-1", CheckpointID: "ckpt-aaaaaaaaaaaaaaaaaaaaaaaa"}
	require.NoError(t, s.Put(ctx, b, Record{Wrapped: "v1:k:wrapped", Template: []byte(`{"spec":{}}`)}))
	assert.True(t, apierrors.IsAlreadyExists(s.Put(ctx, b, Record{Wrapped: "v1:k:other"})), "a key is made once")
	got, err := s.Get(ctx, b)
	require.NoError(t, err)
	assert.Equal(t, Record{Wrapped: "v1:k:wrapped", Template: []byte(`{"spec":{}}`)}, got)
	_, err = s.Get(ctx, Binding{Namespace: "team-b", UID: "uid-1", CheckpointID: b.CheckpointID})
	assert.ErrorIs(t, err, ErrNoKey, "another namespace's Checkpoint of that ID has no key")
	list, err := s.List(ctx)
	require.NoError(t, err)
	assert.Contains(t, list, b.CheckpointID)
	require.NoError(t, s.Delete(ctx, b.CheckpointID))
	require.NoError(t, s.Delete(ctx, b.CheckpointID), "gone is gone")
	_, err = s.Get(ctx, b)
	assert.ErrorIs(t, err, ErrNoKey)
}
