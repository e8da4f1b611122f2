package agent

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/driver"
	"github.com/agents-kruise/checkpoint-apiserver/nodeimages"
	"github.com/agents-kruise/checkpoint-apiserver/ociregistry"
)

// fakeNodeDriver is a fake of the node's containerd driver: state by ID
// with when it was made and its size; Delete records what it removed.
type fakeNodeDriver struct {
	made    map[string]time.Time
	sizes   map[string]int64
	deleted []string
}

func (f *fakeNodeDriver) Capture(context.Context, driver.Target, driver.CaptureRequest) (driver.CaptureResult, error) {
	return driver.CaptureResult{}, driver.ErrUnsupported
}
func (f *fakeNodeDriver) Delete(_ context.Context, id string) error {
	f.deleted = append(f.deleted, id)
	delete(f.made, id)
	delete(f.sizes, id)
	return nil
}
func (f *fakeNodeDriver) Stop(context.Context, driver.Target) error      { return nil }
func (f *fakeNodeDriver) Terminate(context.Context, driver.Target) error { return nil }
func (f *fakeNodeDriver) States(context.Context) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	for k, v := range f.made {
		out[k] = v
	}
	return out, nil
}
func (f *fakeNodeDriver) CaptureToRegistry(context.Context, driver.Target, driver.CaptureRequest, *ociregistry.Registry) (driver.CaptureResult, driver.Published, error) {
	return driver.CaptureResult{}, driver.Published{}, driver.ErrUnsupported
}
func (f *fakeNodeDriver) DeleteImages(context.Context, []string) error { return nil }
func (f *fakeNodeDriver) Ping(context.Context) error                   { return nil }
func (f *fakeNodeDriver) Sizes(context.Context) (map[string]int64, error) {
	out := map[string]int64{}
	for k, v := range f.sizes {
		out[k] = v
	}
	return out, nil
}

func checkpointObject(uid, phase, image string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "agents.kruise.io/v1alpha1", "kind": "Checkpoint",
		"metadata": map[string]interface{}{"name": uid, "namespace": "ns", "uid": uid},
		"status":   map[string]interface{}{"phase": phase, "image": image},
	}}
	return u
}

func TestSweepDeletesOrphansAndBoundsTheCache(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	id := func(uid string) string { return agents.CheckpointID(types.UID(uid)) }
	old, young := now.Add(-time.Hour), now.Add(-time.Second)
	d := &fakeNodeDriver{
		made: map[string]time.Time{
			id("failed"): old, id("gone"): old, id("gone-young"): young, id("creating"): old,
			id("shipped-old"): old.Add(-time.Hour), id("shipped-new"): old, id("local"): old,
		},
		sizes: map[string]int64{id("shipped-old"): 600, id("shipped-new"): 300, id("local"): 300, id("creating"): 100},
	}
	scheme := runtime.NewScheme()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme,
		map[schema.GroupVersionResource]string{checkpoints: "CheckpointList"},
		checkpointObject("failed", "Failed", ""), checkpointObject("creating", "Creating", ""),
		checkpointObject("shipped-old", "Succeeded", "reg/checkpoints@sha256:1"),
		checkpointObject("shipped-new", "Succeeded", "reg/checkpoints@sha256:2"),
		// Succeeded without a registry image: the node holds the only copy.
		checkpointObject("local", "Succeeded", ""))
	// Unpacked copies for the restore runtime: of a checkpoint that is
	// gone (its delete found this agent down), of one gone a moment ago,
	// and of a live one.
	images := &nodeimages.Store{Dir: t.TempDir()}
	unpacked := func(uid string, used time.Time) string {
		dir := filepath.Join(images.Dir, "team-a", id(uid), "main")
		require.NoError(t, os.MkdirAll(dir, 0o700))
		marker := filepath.Join(dir, ".complete")
		require.NoError(t, os.WriteFile(marker, nil, 0o600))
		require.NoError(t, os.Chtimes(marker, used, used))
		return dir
	}
	goneCopy, youngCopy, liveCopy := unpacked("gone", old), unpacked("gone-young", young), unpacked("shipped-new", old)
	s := &Server{cfg: Config{Node: "node-1", Driver: d, Images: images}}
	require.NoError(t, s.sweep(context.Background(), SweepConfig{Checkpoints: dyn, Interval: time.Minute, CacheMaxBytes: 1000}, now))
	assert.NoDirExists(t, goneCopy, "the unpacked copy of a checkpoint that is gone is swept")
	assert.DirExists(t, youngCopy, "one used a moment ago is left for now")
	assert.DirExists(t, liveCopy, "a live checkpoint's copy stays")

	sort.Strings(d.deleted)
	want := []string{id("failed"), id("gone"), id("shipped-old")}
	sort.Strings(want)
	assert.Equal(t, want, d.deleted,
		"orphans older than the interval go, then the oldest registry-held copy, until the cache fits its bound")
	for _, kept := range []string{"gone-young", "creating", "shipped-new", "local"} {
		assert.Contains(t, d.made, id(kept), "%s is kept", kept)
	}
}
