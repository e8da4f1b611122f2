package integration

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// BenchmarkCapture times the capture subresource end to end (HTTP, status
// writes, driver) against a bare containerd checkpoint of the same
// container with the same options, interleaved in one run, for containers
// holding 0 to 256 MiB in memory, and reports both, their ratio, and the
// capture time per GiB:
//
//	go test -run '^$' -bench BenchmarkCapture -benchtime 5x ./test/integration/
func BenchmarkCapture(b *testing.B) {
	env := &captureEnv{ctrd: framework.StartContainerd(b, "k8s.io")}
	env.srv = framework.StartStandalone(b, b.TempDir(),
		"--containerd-address="+env.ctrd.Address, "--containerd-namespace=k8s.io", "--resolver=labels", "--declarative-capture-delay=24h")
	env.client = clientFor(b, env.srv.Config, "application/vnd.kubernetes.protobuf")
	for _, mib := range []int{0, 16, 64, 256} {
		script := framework.CounterScript
		if mib > 0 {
			script = fmt.Sprintf(`a=$(yes 0123456789abcdef | head -c %d); `, mib<<20) + framework.CounterScript
		}
		pod := fmt.Sprintf("bench-%d", mib)
		// One container per size: the benchmark function runs more than once.
		src := env.ctrd.RunPodContainer(b, sandboxNS, pod, "main", script)
		framework.WaitCounter(b, src.LogPath, 3)
		b.Run(fmt.Sprintf("mem=%dMiB", mib), func(b *testing.B) { benchmarkCapture(b, env, src, pod, mib) })
	}
}

func benchmarkCapture(b *testing.B, env *captureEnv, src *framework.PodContainer, pod string, mib int) {
	ctx := context.Background()
	cps := env.client.AgentsV1alpha1().Checkpoints(sandboxNS)

	var api, bare []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// bare: what the driver asks containerd to do, nothing else.
		ref := fmt.Sprintf("bench/bare-%d-%d", mib, i)
		start := time.Now()
		if _, err := src.Container.Checkpoint(env.ctrd.Ctx(), ref, containerd.WithCheckpointImage, containerd.WithCheckpointRuntime,
			containerd.WithCheckpointRW, containerd.WithCheckpointTask); err != nil {
			b.Fatal(err)
		}
		bare = append(bare, time.Since(start))
		b.StopTimer()
		if err := env.ctrd.Client.ImageService().Delete(env.ctrd.Ctx(), ref, images.SynchronousDelete()); err != nil {
			b.Fatal(err)
		}
		name := fmt.Sprintf("bench-%d-%d-%d", mib, i, time.Now().UnixNano())
		if _, err := cps.Create(ctx, &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1alpha1.CheckpointSpec{PodName: pod}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()

		start = time.Now()
		cp, err := cps.Capture(ctx, name, &v1alpha1.CaptureOptions{}, metav1.CreateOptions{})
		if err != nil || cp.Status.Phase != v1alpha1.PhaseSucceeded {
			b.Fatalf("capture: %v %v", err, cp)
		}
		api = append(api, time.Since(start))
		b.StopTimer()
		if err := cps.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	apiMed, bareMed := median(api), median(bare)
	b.ReportMetric(float64(apiMed.Microseconds())/1000, "api-ms")
	b.ReportMetric(float64(bareMed.Microseconds())/1000, "bare-ms")
	b.ReportMetric(float64(apiMed)/float64(bareMed), "api/bare")
	if mib > 0 {
		b.ReportMetric(apiMed.Seconds()*1024/float64(mib), "api-s/GiB")
	}
	b.Logf("%d MiB: capture subresource median %s, bare containerd checkpoint median %s, ratio %.3f, overhead %s (n=%d)",
		mib, apiMed, bareMed, float64(apiMed)/float64(bareMed), apiMed-bareMed, len(api))
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}
