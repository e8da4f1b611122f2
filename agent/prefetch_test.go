package agent

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agents-kruise/checkpoint-apiserver/nodeimages"
	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
)

type oneCheckpoint struct{ ns, id string }

func (o oneCheckpoint) Find(_ context.Context, ns, id string) (nodeimages.Checkpoint, error) {
	if ns != o.ns || id != o.id {
		return nodeimages.Checkpoint{}, nodeimages.ErrNotFound
	}
	return nodeimages.Checkpoint{Namespace: ns, Name: "snap"}, nil
}

type tarArchives struct{}

func (tarArchives) Archive(context.Context, nodeimages.Checkpoint, api.Request) (io.ReadCloser, int64, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	_ = tw.WriteHeader(&tar.Header{Name: "checkpoint/inventory.img", Typeflag: tar.TypeReg, Size: 3, Mode: 0o600})
	_, _ = tw.Write([]byte("inv"))
	_ = tw.Close()
	return io.NopCloser(bytes.NewReader(b.Bytes())), int64(b.Len()), nil
}

// The server has the clone's node fetch the checkpoint before the Pod
// asks: the agent answers at once and unpacks it for its restore runtime,
// resolving the ID in the clone's namespace only.
func TestPrefetchForAClone(t *testing.T) {
	const id = "ckpt-0123456789abcdef01234567"
	dir := t.TempDir()
	store := &nodeimages.Store{Dir: dir, Lookup: oneCheckpoint{ns: "ns", id: id}, Archives: tarArchives{}}
	require.NoError(t, store.Start())
	c, _ := hopWith(t, func(cfg *Config) { cfg.Images = store })
	ctx := context.Background()

	require.NoError(t, c.Prefetch(ctx, "node-1", "ns", "clone", id, []string{"main"}))
	inventory := filepath.Join(api.Dir(dir, api.Request{Namespace: "ns", Container: "main", CheckpointID: id}), "checkpoint", "inventory.img")
	assert.Eventually(t, func() bool { _, err := os.Stat(inventory); return err == nil }, 10*time.Second, 10*time.Millisecond,
		"the checkpoint is on the node before its clone asks")

	require.NoError(t, c.Prefetch(ctx, "node-1", "other", "clone", id, []string{"main"}), "answered at once; the fetch fails alone")
	time.Sleep(200 * time.Millisecond)
	_, err := os.Stat(filepath.Join(dir, "other"))
	assert.True(t, os.IsNotExist(err), "another namespace gets nothing of it")

	err = c.Prefetch(ctx, "node-1", "ns", "clone", "../../etc", []string{"main"})
	assert.Error(t, err, "an ID the server never makes is refused")
}

func TestPrefetchWithoutARestoreRuntime(t *testing.T) {
	c, _ := hop(t)
	err := c.Prefetch(context.Background(), "node-1", "ns", "clone", "ckpt-0123456789abcdef01234567", []string{"main"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "restore-socket")
}
