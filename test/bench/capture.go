package bench

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"golang.org/x/sys/unix"
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
	ctrd.ImportTestImage(t, "python.tar")
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
		// Beside the memory it holds, the sandbox stamps the clock: the
		// longest gap it sees across a capture is the pause it felt.
		pod := fmt.Sprintf("bench-%d-%d", size, time.Now().UnixNano())
		src := ctrd.RunPodImage(t, captureNS, pod, "main", framework.PythonImage, sandboxCommand(size)...)
		framework.WaitCounter(t, src.LogPath, 3)
		waitStamper(t, src.LogPath)

		var api, bare, dump, restore, pause, felt []time.Duration
		for i := 0; i < runs; i++ {
			// CRIU alone: the task's memory dumped into a directory on the
			// tmpfs the server dumps to, nothing copied into the content store.
			dir, err := os.MkdirTemp("/dev/shm", "criu-dump")
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
			from := boottime()
			start = time.Now()
			cp, err := cps.Capture(ctx, name, &v1alpha1.CaptureOptions{}, metav1.CreateOptions{})
			if err != nil || cp.Status.Phase != v1alpha1.PhaseSucceeded {
				t.Fatalf("capture: %v %+v", err, cp)
			}
			api = append(api, time.Since(start))
			to := boottime()
			if p, c := cp.Status.PauseDuration, cp.Status.CaptureDuration; p == nil || c == nil || p.Duration <= 0 || p.Duration > c.Duration {
				t.Fatalf("capture %s: pauseDuration %v must be set, positive and no larger than captureDuration %v", name, p, c)
			}
			pause = append(pause, cp.Status.PauseDuration.Duration)
			felt = append(felt, longestGap(t, src.LogPath, from, to))

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
			DumpMs: Summarize(dump).P50Ms, PauseMs: Summarize(pause).P50Ms, FeltMs: Summarize(felt).P50Ms}
		t.Logf("%d MiB: capture subresource median %.1f ms, bare containerd checkpoint %.1f ms, ratio %.3f; CRIU dump alone %.1f ms; "+
			"paused %.1f ms (status), felt %.1f ms inside; restore %.1f ms (n=%d)",
			size, c.APIMs, c.BareMs, c.APIMs/c.BareMs, c.DumpMs, c.PauseMs, c.FeltMs, c.RestoreMs, runs)
		out = append(out, c)
	}
	return out
}

// sandboxPy is the benchmarks' sandbox: it holds memory, counts, and
// stamps the clock (see the file).
//
//go:embed sandbox.py
var sandboxPy string

// sandboxCommand runs sandboxPy in the Python sandbox image, holding mib MiB.
func sandboxCommand(mib int) []string {
	return []string{"python3", "-c", sandboxPy, strconv.Itoa(mib)}
}

// boottime is this machine's CLOCK_BOOTTIME in microseconds: the clock the
// sandbox's stamper reads.
func boottime() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		panic(err) // CLOCK_BOOTTIME is in every Linux since 2.6.39
	}
	return ts.Nano() / 1000
}

// waitStamper waits until the stamper in the container logging to logPath runs.
func waitStamper(t testing.TB, logPath string) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, _ := os.ReadFile(logPath); strings.Contains(string(b), "stamper-ready") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stamper in %s did not start", logPath)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// longestGap is the longest gap the stamper logged that began within
// [from, to] (microseconds of CLOCK_BOOTTIME); 0 when it saw none of 5 ms
// or more.
func longestGap(t testing.TB, logPath string, from, to int64) time.Duration {
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	var longest int64
	for _, line := range strings.Split(string(b), "\n") {
		var start, length int64
		if _, err := fmt.Sscanf(strings.TrimSpace(line), "gap %d %d", &start, &length); err != nil {
			continue
		}
		if start >= from-5000 && start <= to && length > longest {
			longest = length
		}
	}
	return time.Duration(longest) * time.Microsecond
}
