package containerd_test

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd/containerd/v2/core/content"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/agents-kruise/checkpoint-apiserver/driver"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// TestPrepareRestoreAndArchive checks what a restore into a Pod reads of a
// checkpoint on a real containerd: PrepareRestore the template and the
// node, Archive each container's state laid out as the kubelet's
// checkpoint archive, which the node's restore runtime unpacks (the
// runtime restoring from it: test/integration TestRestoreRuntime).
func TestPrepareRestoreAndArchive(t *testing.T) {
	c := framework.StartContainerd(t, ns)
	d := newDriver(t, c)
	ctx := context.Background()
	source(t, c, "to-clone")
	target, err := d.Resolve(ctx, "team-a", "to-clone")
	require.NoError(t, err)
	target.Template = []byte(`{"spec":{}}`)
	_, err = d.Capture(ctx, target, driver.CaptureRequest{ID: "ckpt-cri", Contents: []driver.Content{driver.Memory, driver.Filesystem}})
	require.NoError(t, err)

	p, err := d.PrepareRestore(ctx, "default", "ckpt-cri", "")
	require.NoError(t, err)
	assert.Equal(t, `{"spec":{}}`, string(p.Template), "the template comes back as captured")
	assert.False(t, p.Anywhere, "without a registry, the checkpoint is on this node only")

	_, err = d.Archive(ctx, "ckpt-cri", "other")
	assert.ErrorIs(t, err, driver.ErrCheckpointNotFound, "no such container in the checkpoint")
	r, err := d.Archive(ctx, "ckpt-cri", "main")
	require.NoError(t, err)
	defer r.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		data, err := io.ReadAll(tr)
		require.NoError(t, err)
		files[hdr.Name] = data
	}
	for _, name := range []string{"config.dump", "spec.dump", "status.dump", "rootfs-diff.tar", "checkpoint/inventory.img", "checkpoint/pstree.img"} {
		assert.Contains(t, files, name)
	}
	var config struct {
		Name           string `json:"name"`
		RootfsImageRef string `json:"rootfsImageRef"`
	}
	require.NoError(t, json.Unmarshal(files["config.dump"], &config))
	base, err := c.Client.GetImage(c.Ctx(), framework.BusyboxImage)
	require.NoError(t, err)
	baseConfig, err := base.Config(c.Ctx())
	require.NoError(t, err)
	assert.Equal(t, baseConfig.Digest.String(), config.RootfsImageRef, "the base image is found by its ID")
	var spec struct {
		Process struct{ Args []string } `json:"process"`
	}
	require.NoError(t, json.Unmarshal(files["spec.dump"], &spec))
	assert.NotEmpty(t, spec.Process.Args, "spec.dump is the runtime spec as JSON")

	require.NoError(t, d.Delete(ctx, "ckpt-cri"))
	_, err = d.Archive(ctx, "ckpt-cri", "main")
	assert.ErrorIs(t, err, driver.ErrCheckpointNotFound, "a deleted checkpoint has no archive")
}

func readJSON(t *testing.T, cs content.Store, desc ocispec.Descriptor, v interface{}) {
	t.Helper()
	data, err := content.ReadBlob(context.Background(), cs, desc)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, v))
}
