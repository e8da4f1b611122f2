package bench

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/generated/clientset/versioned"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

const captureNS = "bench"

// MeasureCapture times, for containers holding each of sizes MiB in memory,
// the capture subresource end to end (HTTP, status writes, driver) against a
// bare containerd checkpoint of the same container with the same options,
// interleaved, runs times each, and a restore from each capture. It starts
// its own containerd (with runc and CRIU) and a standalone server.
func MeasureCapture(t testing.TB, sizes []int, runs int) []CaptureResult {
	ctrd := framework.StartContainerd(t, "k8s.io")
	srv := framework.StartStandalone(t, t.TempDir(),
		"--containerd-address="+ctrd.Address, "--containerd-namespace=k8s.io", "--resolver=labels", "--declarative-capture-delay=24h")
	cfg := rest.CopyConfig(srv.Config)
	cfg.ContentType, cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf", "application/vnd.kubernetes.protobuf"
	cs, err := versioned.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cps := cs.AgentsV1alpha1().Checkpoints(captureNS)
	ctx := context.Background()

	var out []CaptureResult
	for _, size := range sizes {
		script := framework.MemoryScript(size)
		pod := fmt.Sprintf("bench-%d-%d", size, time.Now().UnixNano())
		src := ctrd.RunPodContainer(t, captureNS, pod, "main", script)
		framework.WaitCounter(t, src.LogPath, 3)

		var api, bare, dump, restore []time.Duration
		for i := 0; i < runs; i++ {
			// CRIU alone: the task's memory dumped into a directory, nothing
			// copied into the content store.
			dir, err := os.MkdirTemp("", "criu-dump")
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if _, err := src.Task.Checkpoint(ctrd.Ctx(), containerd.WithCheckpointImagePath(dir)); err != nil {
				t.Fatalf("task checkpoint into a directory: %v", err)
			}
			dump = append(dump, time.Since(start))
			_ = os.RemoveAll(dir)

			ref := fmt.Sprintf("bench/bare-%s-%d", pod, i)
			start = time.Now()
			if _, err := src.Container.Checkpoint(ctrd.Ctx(), ref, containerd.WithCheckpointImage, containerd.WithCheckpointRuntime,
				containerd.WithCheckpointRW, containerd.WithCheckpointTask); err != nil {
				t.Fatalf("bare checkpoint: %v", err)
			}
			bare = append(bare, time.Since(start))
			if err := ctrd.Client.ImageService().Delete(ctrd.Ctx(), ref, images.SynchronousDelete()); err != nil {
				t.Fatal(err)
			}

			name := fmt.Sprintf("%s-%d", pod, i)
			if _, err := cps.Create(ctx, &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: v1alpha1.CheckpointSpec{PodName: pod}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			start = time.Now()
			cp, err := cps.Capture(ctx, name, &v1alpha1.CaptureOptions{}, metav1.CreateOptions{})
			if err != nil || cp.Status.Phase != v1alpha1.PhaseSucceeded {
				t.Fatalf("capture: %v %+v", err, cp)
			}
			api = append(api, time.Since(start))

			clone := name + "-clone"
			start = time.Now()
			res, err := cps.Restore(ctx, name, &v1alpha1.CheckpointRestore{Spec: v1alpha1.CheckpointRestoreSpec{SandboxName: clone}}, metav1.CreateOptions{})
			if err != nil || len(res.Status.Containers) != 1 {
				t.Fatalf("restore: %v %+v", err, res)
			}
			restore = append(restore, time.Since(start))
			ctrd.RemovePod(t, clone)
			if err := cps.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		ctrd.RemovePod(t, pod)
		c := CaptureResult{MemoryMiB: size, Runs: runs, APIMs: Summarize(api).P50Ms, BareMs: Summarize(bare).P50Ms, RestoreMs: Summarize(restore).P50Ms,
			DumpMs: Summarize(dump).P50Ms}
		t.Logf("%d MiB: capture subresource median %.1f ms, bare containerd checkpoint %.1f ms, ratio %.3f; CRIU dump alone %.1f ms; restore %.1f ms (n=%d)",
			size, c.APIMs, c.BareMs, c.APIMs/c.BareMs, c.DumpMs, c.RestoreMs, runs)
		out = append(out, c)
	}
	return out
}
