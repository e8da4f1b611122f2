package agent

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/agents-kruise/checkpoint-apiserver/ociregistry"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// TestRegistrySweepSeesItsOwnOnly: the server's registry sweep is offered
// only its own installation's checkpoints, each with when it was pushed,
// never another installation's sharing the registry, nor what it cannot
// tell the age of.
func TestRegistrySweepSeesItsOwnOnly(t *testing.T) {
	lr := framework.StartRegistry(t)
	reg, err := ociregistry.New(ociregistry.Config{Repository: lr.Repository, CAFile: lr.CAFile, AuthFile: lr.AuthFile})
	require.NoError(t, err)
	ctx := context.Background()
	pushed := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	push := func(ns, id string, annotations map[string]string) {
		annotations[ociregistry.AnnotationCheckpointID] = id
		if ns != "" {
			annotations[ociregistry.AnnotationNamespace] = ns
		}
		data, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
			Manifests: []ocispec.Descriptor{}, Annotations: annotations})
		require.NoError(t, err)
		in := reg
		if ns != "" {
			in, err = reg.In(ns)
			require.NoError(t, err)
		}
		// As a capture does: a registry's catalog lists the repositories
		// that hold blobs.
		_, err = in.PushBytes(ctx, ocispec.MediaTypeImageConfig, []byte("{}"))
		require.NoError(t, err)
		_, err = in.PushManifest(ctx, id, ocispec.MediaTypeImageIndex, data)
		require.NoError(t, err)
	}
	created := pushed.Format(time.RFC3339)
	ours := func() map[string]string {
		return map[string]string{ociregistry.AnnotationInstallation: "ours", ociregistry.AnnotationCreated: created}
	}
	push("team-a", "ckpt-aaaaaaaaaaaaaaaaaaaaaaaa", ours())
	push("team-b", "ckpt-dddddddddddddddddddddddd", ours())
	push("team-a", "ckpt-bbbbbbbbbbbbbbbbbbbbbbbb", map[string]string{ociregistry.AnnotationInstallation: "theirs", ociregistry.AnnotationCreated: created})
	push("team-a", "ckpt-cccccccccccccccccccccccc", map[string]string{ociregistry.AnnotationInstallation: "ours"})
	push("team-a", "not-a-checkpoint", ours())
	// The prefix's own repository (where an older version pushed) and an
	// index whose namespace is not its repository's are none of its own.
	push("", "ckpt-eeeeeeeeeeeeeeeeeeeeeeee", ours())
	forged := ours()
	push("team-b", "ckpt-ffffffffffffffffffffffff", forged)
	teamB, err := reg.In("team-b")
	require.NoError(t, err)
	data, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{}, Annotations: map[string]string{ociregistry.AnnotationInstallation: "ours", ociregistry.AnnotationCreated: created,
			ociregistry.AnnotationCheckpointID: "ckpt-ffffffffffffffffffffffff", ociregistry.AnnotationNamespace: "team-a"}})
	require.NoError(t, err)
	_, err = teamB.PushManifest(ctx, "ckpt-ffffffffffffffffffffffff", ocispec.MediaTypeImageIndex, data)
	require.NoError(t, err)

	c := &Client{cfg: ClientConfig{Registry: reg, Installation: "ours", Client: fake.NewClientset()}}
	states, err := c.States(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[string]time.Time{"ckpt-aaaaaaaaaaaaaaaaaaaaaaaa": pushed, "ckpt-dddddddddddddddddddddddd": pushed}, states)

	// A delete finds a checkpoint in its namespace's repository, whether
	// the client knows the namespace (DeleteIn, or from States) or not.
	require.NoError(t, c.Delete(ctx, "ckpt-dddddddddddddddddddddddd"))
	_, err = teamB.Index(ctx, "ckpt-dddddddddddddddddddddddd")
	assert.ErrorIs(t, err, ociregistry.ErrNotFound)
	fresh := &Client{cfg: ClientConfig{Registry: reg, Installation: "ours", Client: fake.NewClientset()}}
	require.NoError(t, fresh.Delete(ctx, "ckpt-aaaaaaaaaaaaaaaaaaaaaaaa"))
	teamA, err := reg.In("team-a")
	require.NoError(t, err)
	_, err = teamA.Index(ctx, "ckpt-aaaaaaaaaaaaaaaaaaaaaaaa")
	assert.ErrorIs(t, err, ociregistry.ErrNotFound)
	require.NoError(t, fresh.DeleteIn(ctx, "team-a", "ckpt-cccccccccccccccccccccccc"))
	_, err = teamA.Index(ctx, "ckpt-cccccccccccccccccccccccc")
	assert.ErrorIs(t, err, ociregistry.ErrNotFound)
	_, err = teamA.Index(ctx, "ckpt-bbbbbbbbbbbbbbbbbbbbbbbb")
	assert.NoError(t, err, "another checkpoint stays")
	require.NoError(t, fresh.Delete(ctx, "ckpt-0000000000000000000000aa"), "what is nowhere is gone")
}
