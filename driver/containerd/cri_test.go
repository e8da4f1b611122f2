package containerd_test

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/agents-kruise/checkpoint-apiserver/driver"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// TestPrepareRestore checks the CRI checkpoint image a restore into a Pod
// is made from, on a real containerd: its index names the container, its
// one layer is laid out as the kubelet's checkpoint archive, and a second
// prepare reuses it. The CRI restoring a Pod from it is tested with a real
// kubelet (test/e2e TestRealNode).
func TestPrepareRestore(t *testing.T) {
	c := framework.StartContainerd(t, ns)
	d := newDriver(t, c)
	ctx := context.Background()
	source(t, c, "to-clone")
	target, err := d.Resolve(ctx, "team-a", "to-clone")
	require.NoError(t, err)
	target.Template = []byte(`{"spec":{}}`)
	_, err = d.Capture(ctx, target, driver.CaptureRequest{ID: "ckpt-cri", Contents: []driver.Content{driver.Memory, driver.Filesystem}})
	require.NoError(t, err)

	p, err := d.PrepareRestore(ctx, "ckpt-cri")
	require.NoError(t, err)
	assert.Equal(t, `{"spec":{}}`, string(p.Template), "the template comes back as captured")
	assert.True(t, strings.HasSuffix(p.CRIUConfig, "restore.conf"))
	require.Equal(t, []driver.ContainerImage{{Container: "main", Image: "checkpoint.agents.kruise.io/ckpt-cri/main:restore"}}, p.Images)

	img, err := c.Client.GetImage(c.Ctx(), p.Images[0].Image)
	require.NoError(t, err)
	cs := c.Client.ContentStore()
	var index ocispec.Index
	readJSON(t, cs, img.Target(), &index)
	assert.Equal(t, "main", index.Annotations["org.criu.checkpoint.container.name"])
	require.Len(t, index.Manifests, 1)
	var manifest ocispec.Manifest
	readJSON(t, cs, index.Manifests[0], &manifest)
	require.Len(t, manifest.Layers, 1)
	unpacked, err := img.IsUnpacked(c.Ctx(), "")
	require.NoError(t, err)
	assert.True(t, unpacked, "the CRI mounts the image's snapshot to read it")

	files := map[string][]byte{}
	ra, err := cs.ReaderAt(c.Ctx(), manifest.Layers[0])
	require.NoError(t, err)
	defer ra.Close()
	tr := tar.NewReader(content.NewReader(ra))
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
	var status struct {
		Annotations map[string]string `json:"annotations"`
	}
	require.NoError(t, json.Unmarshal(files["status.dump"], &status))
	assert.Contains(t, status.Annotations, "io.kubernetes.container.hash", "the CRI replaces it with the clone's, so the kubelet keeps the restored container")
	var spec struct {
		Process struct{ Args []string } `json:"process"`
	}
	require.NoError(t, json.Unmarshal(files["spec.dump"], &spec))
	assert.NotEmpty(t, spec.Process.Args, "spec.dump is the runtime spec as JSON")

	again, err := d.PrepareRestore(ctx, "ckpt-cri")
	require.NoError(t, err)
	assert.Equal(t, p, again)
	same, err := c.Client.GetImage(c.Ctx(), p.Images[0].Image)
	require.NoError(t, err)
	assert.Equal(t, img.Target().Digest, same.Target().Digest, "a second prepare reuses the image")

	// Deleting the checkpoint deletes the restore image too.
	require.NoError(t, d.Delete(ctx, "ckpt-cri"))
	_, err = c.Client.ImageService().Get(c.Ctx(), p.Images[0].Image)
	assert.True(t, errdefs.IsNotFound(err), "%v", err)
}

func readJSON(t *testing.T, cs content.Store, desc ocispec.Descriptor, v interface{}) {
	t.Helper()
	data, err := content.ReadBlob(context.Background(), cs, desc)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, v))
}
