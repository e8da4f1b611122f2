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
	push := func(id string, annotations map[string]string) {
		annotations[ociregistry.AnnotationCheckpointID] = id
		data, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
			Manifests: []ocispec.Descriptor{}, Annotations: annotations})
		require.NoError(t, err)
		_, err = reg.PushManifest(ctx, id, ocispec.MediaTypeImageIndex, data)
		require.NoError(t, err)
	}
	created := pushed.Format(time.RFC3339)
	push("ckpt-aaaaaaaaaaaaaaaaaaaaaaaa", map[string]string{ociregistry.AnnotationInstallation: "ours", ociregistry.AnnotationCreated: created})
	push("ckpt-bbbbbbbbbbbbbbbbbbbbbbbb", map[string]string{ociregistry.AnnotationInstallation: "theirs", ociregistry.AnnotationCreated: created})
	push("ckpt-cccccccccccccccccccccccc", map[string]string{ociregistry.AnnotationInstallation: "ours"})
	push("not-a-checkpoint", map[string]string{ociregistry.AnnotationInstallation: "ours", ociregistry.AnnotationCreated: created})

	c := &Client{cfg: ClientConfig{Registry: reg, Installation: "ours"}}
	states, err := c.States(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[string]time.Time{"ckpt-aaaaaaaaaaaaaaaaaaaaaaaa": pushed}, states)
}
