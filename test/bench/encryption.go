package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/driver"
	"github.com/agents-kruise/checkpoint-apiserver/driver/containerd"
	"github.com/agents-kruise/checkpoint-apiserver/encryption"
	"github.com/agents-kruise/checkpoint-apiserver/nodeimages"
	"github.com/agents-kruise/checkpoint-apiserver/ociregistry"
	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
	"k8s.io/apimachinery/pkg/types"
)

// EncryptionResult is one memory size's cost of encryption at rest, as
// medians: a capture streamed into the registry (CRIU's dump, the archive,
// the push), and a node's fetch and unpack of it for a restore, each in
// clear and encrypted, side by side in one run.
type EncryptionResult struct {
	MemoryMiB        int     `json:"memoryMiB"`
	Runs             int     `json:"runs"`
	CaptureClearMs   float64 `json:"captureClearMs"`
	CaptureEncMs     float64 `json:"captureEncryptedMs"`
	FetchClearMs     float64 `json:"fetchClearMs"`
	FetchEncMs       float64 `json:"fetchEncryptedMs"`
	ArchiveSizeBytes int64   `json:"archiveSizeBytes"`
}

// digestOf finds every checkpoint at one registry digest (the node
// store's lookup, with the Checkpoint the benchmark stands for).
type digestOf string

func (d digestOf) Find(_ context.Context, ns, _ string) (nodeimages.Checkpoint, error) {
	return nodeimages.Checkpoint{Namespace: ns, Name: "bench", ImageDigest: string(d)}, nil
}

// MeasureEncryption times, for Python sandboxes holding each of sizes MiB
// of random memory, the containerd driver's capture into a real registry
// (docker-registry) and a node store's fetch and unpack of it, in clear
// and encrypted with a data key, interleaved, runs times each.
func MeasureEncryption(t testing.TB, sizes []int, runs int) []EncryptionResult {
	ctrd := framework.StartContainerd(t, "k8s.io")
	ctrd.ImportTestImage(t, "python.tar")
	lr := framework.StartRegistry(t)
	reg, err := ociregistry.New(ociregistry.Config{Repository: lr.Repository, CAFile: lr.CAFile, AuthFile: lr.AuthFile})
	if err != nil {
		t.Fatal(err)
	}
	// The dumps go to a tmpfs, as deployed; the directory goes with the test.
	dumps := filepath.Join("/dev/shm", filepath.Base(ctrd.Dir)+"-dumps")
	t.Cleanup(func() { _ = os.RemoveAll(dumps) })
	d, err := containerd.New(containerd.Config{Address: ctrd.Address, Namespace: "k8s.io", LogDir: filepath.Join(ctrd.Dir, "logs"),
		CRIUConfigDir: filepath.Join(ctrd.Dir, "criu"), DumpDir: dumps})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	ctx := context.Background()
	var out []EncryptionResult
	for _, size := range sizes {
		pod := fmt.Sprintf("enc-%d-%d", size, time.Now().UnixNano())
		src := ctrd.RunPodImage(t, captureNS, pod, "main", framework.PythonImage, sandboxCommand(size)...)
		framework.WaitCounter(t, src.LogPath, 3)
		target, err := d.Resolve(ctx, captureNS, pod)
		if err != nil {
			t.Fatal(err)
		}
		var capClear, capEnc, fetchClear, fetchEnc []time.Duration
		var archive int64
		for i := 0; i < runs; i++ {
			for _, encrypted := range []bool{false, true} {
				id := agents.CheckpointID(types.UID(fmt.Sprintf("%s-%d-%t", pod, i, encrypted)))
				req := driver.CaptureRequest{ID: id, Contents: []driver.Content{driver.Memory, driver.Filesystem}}
				ring := &encryption.Ring{}
				var keys nodeimages.Keys
				if encrypted {
					if req.Key, err = encryption.NewDEK(); err != nil {
						t.Fatal(err)
					}
					if err := ring.Put(captureNS, id, req.Key); err != nil {
						t.Fatal(err)
					}
					keys = ring
				}
				start := time.Now()
				res, pub, err := d.CaptureToRegistry(ctx, target, req, reg)
				if err != nil {
					t.Fatalf("capture into the registry (encrypted %t): %v", encrypted, err)
				}
				took := time.Since(start)
				archive = res.SizeBytes
				store := &nodeimages.Store{Dir: t.TempDir(), Lookup: digestOf(pub.Digest), Archives: nodeimages.RegistryArchives{Registry: reg, Keys: keys}}
				if err := store.Start(); err != nil {
					t.Fatal(err)
				}
				start = time.Now()
				if _, err := store.Prepare(ctx, api.Request{Namespace: captureNS, Pod: "clone", Container: "main", CheckpointID: id}); err != nil {
					t.Fatalf("fetch and unpack (encrypted %t): %v", encrypted, err)
				}
				fetched := time.Since(start)
				if encrypted {
					capEnc, fetchEnc = append(capEnc, took), append(fetchEnc, fetched)
				} else {
					capClear, fetchClear = append(capClear, took), append(fetchClear, fetched)
				}
				if err := d.Delete(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
		}
		ctrd.RemovePod(t, pod)
		r := EncryptionResult{MemoryMiB: size, Runs: runs, CaptureClearMs: Summarize(capClear).P50Ms, CaptureEncMs: Summarize(capEnc).P50Ms,
			FetchClearMs: Summarize(fetchClear).P50Ms, FetchEncMs: Summarize(fetchEnc).P50Ms, ArchiveSizeBytes: archive}
		t.Logf("%d MiB: capture into the registry %.1f ms clear, %.1f ms encrypted (ratio %.3f); fetch and unpack %.1f ms clear, "+
			"%.1f ms encrypted (ratio %.3f); archive %d bytes (n=%d)", size, r.CaptureClearMs, r.CaptureEncMs, r.CaptureEncMs/r.CaptureClearMs,
			r.FetchClearMs, r.FetchEncMs, r.FetchEncMs/r.FetchClearMs, archive, runs)
		out = append(out, r)
	}
	return out
}
