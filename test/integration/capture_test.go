package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/generated/clientset/versioned"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

const sandboxNS = "team-a"

type captureEnv struct {
	ctrd   *framework.Containerd
	srv    *framework.Server
	client versioned.Interface
}

func startCaptureEnv(t *testing.T, extraArgs ...string) *captureEnv {
	ctrd := framework.StartContainerd(t, "k8s.io")
	args := append([]string{
		"--containerd-address=" + ctrd.Address,
		"--containerd-namespace=k8s.io",
		"--resolver=labels",
		"--declarative-capture-delay=3s",
	}, extraArgs...)
	srv := framework.StartStandalone(t, t.TempDir(), args...)
	return &captureEnv{ctrd: ctrd, srv: srv, client: clientFor(t, srv.Config, "application/vnd.kubernetes.protobuf")}
}

func (e *captureEnv) cps() checkpointsClient {
	return e.client.AgentsV1alpha1().Checkpoints(sandboxNS)
}

type checkpointsClient = interface {
	checkpoints
	Create(ctx context.Context, cp *v1alpha1.Checkpoint, opts metav1.CreateOptions) (*v1alpha1.Checkpoint, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
	Capture(ctx context.Context, name string, opts *v1alpha1.CaptureOptions, co metav1.CreateOptions) (*v1alpha1.Checkpoint, error)
	Restore(ctx context.Context, name string, r *v1alpha1.CheckpointRestore, co metav1.CreateOptions) (*v1alpha1.CheckpointRestore, error)
}

// checkpointImages lists the checkpoint images containerd holds for id.
func (e *captureEnv) checkpointImages(t *testing.T, id string) int {
	t.Helper()
	imgs, err := e.ctrd.Client.ImageService().List(e.ctrd.Ctx(), fmt.Sprintf(`labels."agents.kruise.io/checkpoint-id"==%q`, id))
	require.NoError(t, err)
	return len(imgs)
}

func (e *captureEnv) create(t *testing.T, name string, spec v1alpha1.CheckpointSpec) *v1alpha1.Checkpoint {
	t.Helper()
	cp, err := e.cps().Create(context.Background(), &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}, metav1.CreateOptions{})
	require.NoError(t, err)
	return cp
}

func (e *captureEnv) capture(t *testing.T, name string) *v1alpha1.Checkpoint {
	t.Helper()
	cp, err := e.cps().Capture(context.Background(), name, &v1alpha1.CaptureOptions{}, metav1.CreateOptions{})
	require.NoError(t, err)
	return cp
}

func ready(cp *v1alpha1.Checkpoint) metav1.Condition {
	for _, c := range cp.Status.Conditions {
		if c.Type == "Ready" {
			return c
		}
	}
	return metav1.Condition{}
}

// clone restores name into sandbox and returns the log of its one container.
func (e *captureEnv) clone(t *testing.T, name, sandbox string) string {
	t.Helper()
	res, err := e.cps().Restore(context.Background(), name, &v1alpha1.CheckpointRestore{
		Spec: v1alpha1.CheckpointRestoreSpec{SandboxName: sandbox, Labels: map[string]string{"purpose": "test"}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.Equal(t, sandbox, res.Status.SandboxName)
	require.Len(t, res.Status.Containers, 1)
	assert.Equal(t, "main", res.Status.Containers[0].Name)
	return e.srv.DataDir + "/containers/" + res.Status.Containers[0].ContainerID + ".log"
}

func (e *captureEnv) hasMarker(t *testing.T, sandbox string) bool {
	t.Helper()
	ctrs, err := e.ctrd.Client.Containers(e.ctrd.Ctx(), fmt.Sprintf(`labels."io.kubernetes.pod.name"==%q`, sandbox))
	require.NoError(t, err)
	require.Len(t, ctrs, 1)
	_, code := e.ctrd.Exec(t, ctrs[0], "sh", "-c", `test "$(cat /data/marker)" = captured`)
	return code == 0
}

func TestCaptureThroughTheAPI(t *testing.T) {
	env := startCaptureEnv(t)
	ctx := context.Background()

	cases := []struct {
		name          string
		contents      []v1alpha1.ContentType
		keepRunning   bool
		wantContinues bool
		wantMarker    bool
	}{
		{"both", nil, true, true, true},
		{"filesystem", []v1alpha1.ContentType{v1alpha1.ContentFilesystem}, true, false, true},
		{"memory", []v1alpha1.ContentType{v1alpha1.ContentMemory}, false, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			pod := "sandbox-" + tc.name
			src := env.ctrd.RunPodContainer(t, sandboxNS, pod, "main", framework.CounterScript)
			framework.WaitCounter(t, src.LogPath, 5)
			env.create(t, "cp-"+tc.name, v1alpha1.CheckpointSpec{PodName: pod, PersistentContents: tc.contents, KeepRunning: ptr.To(tc.keepRunning)})

			_, before, _ := framework.Counter(t, src.LogPath)
			cp := env.capture(t, "cp-"+tc.name)
			_, after, _ := framework.Counter(t, src.LogPath)

			require.Equal(t, v1alpha1.PhaseSucceeded, cp.Status.Phase, cp.Status.Message)
			assert.NotEmpty(t, cp.Status.CheckpointID)
			assert.Equal(t, cp.Status.CheckpointID, cp.Labels["agents.kruise.io/checkpoint-id"])
			assert.NotNil(t, cp.Status.CompletionTime)
			require.NotNil(t, cp.Status.CaptureDuration)
			assert.Positive(t, cp.Status.SizeBytes)
			// The pause is CRIU's frozen time: only a memory capture freezes.
			if slices.Contains(cp.Status.Contents, v1alpha1.ContentMemory) {
				require.NotNil(t, cp.Status.PauseDuration, "a memory capture reports its pause")
				assert.Positive(t, cp.Status.PauseDuration.Duration)
				assert.LessOrEqual(t, cp.Status.PauseDuration.Duration, cp.Status.CaptureDuration.Duration)
			} else {
				assert.Nil(t, cp.Status.PauseDuration, "a filesystem-only capture freezes nothing")
			}
			wantContents := tc.contents
			if wantContents == nil {
				wantContents = []v1alpha1.ContentType{v1alpha1.ContentMemory, v1alpha1.ContentFilesystem}
			}
			assert.Equal(t, wantContents, cp.Status.Contents)
			assert.Equal(t, metav1.ConditionTrue, ready(cp).Status)
			assert.Equal(t, "Captured", ready(cp).Reason)
			assert.Equal(t, 1, env.checkpointImages(t, cp.Status.CheckpointID))

			// keepRunning: true leaves the source counting, false stops it.
			_, err := src.Container.Task(env.ctrd.Ctx(), nil)
			if tc.keepRunning {
				require.NoError(t, err)
				framework.WaitCounter(t, src.LogPath, after+3)
			} else {
				assert.Error(t, err, "keepRunning=false: the source task is gone")
				assert.Contains(t, cp.Status.Message, "the source was stopped")
			}

			log := env.clone(t, "cp-"+tc.name, pod+"-clone")
			framework.WaitCounter(t, log, 1)
			first, _, _ := framework.Counter(t, log)
			if tc.wantContinues {
				assert.GreaterOrEqual(t, first, before, "the clone's counter continues from the capture (%d..%d)", before, after)
				assert.LessOrEqual(t, first, after+1, "the clone's counter continues from the capture (%d..%d)", before, after)
			} else {
				assert.Equal(t, 1, first, "a filesystem-only clone starts its process afresh")
			}
			assert.Equal(t, tc.wantMarker, env.hasMarker(t, pod+"-clone"), "the clone has the source's file")
		})
	}

	t.Run("OneToMany", func(t *testing.T) {
		src := env.ctrd.RunPodContainer(t, sandboxNS, "origin", "main", framework.CounterScript)
		framework.WaitCounter(t, src.LogPath, 5)
		env.create(t, "cp-many", v1alpha1.CheckpointSpec{PodName: "origin"})
		_, before, _ := framework.Counter(t, src.LogPath)
		require.Equal(t, v1alpha1.PhaseSucceeded, env.capture(t, "cp-many").Status.Phase)
		var logs []string
		for i := 0; i < 3; i++ {
			logs = append(logs, env.clone(t, "cp-many", fmt.Sprintf("many-%d", i)))
		}
		for _, log := range logs {
			framework.WaitCounter(t, log, 1)
			first, last, _ := framework.Counter(t, log)
			assert.GreaterOrEqual(t, first, before)
			framework.WaitCounter(t, log, last+5) // each keeps counting on its own
		}
		_, err := env.cps().Restore(ctx, "cp-many", &v1alpha1.CheckpointRestore{Spec: v1alpha1.CheckpointRestoreSpec{SandboxName: "many-0"}}, metav1.CreateOptions{})
		assert.True(t, apierrors.IsAlreadyExists(err), "restoring into an existing sandbox: %v", err)
	})

	t.Run("MissingPod", func(t *testing.T) {
		env.create(t, "cp-missing", v1alpha1.CheckpointSpec{PodName: "no-such-pod"})
		cp := env.capture(t, "cp-missing")
		assert.Equal(t, v1alpha1.PhaseFailed, cp.Status.Phase)
		assert.Equal(t, "TargetNotFound", ready(cp).Reason)
		assert.Contains(t, cp.Status.Message, "no-such-pod")
		_, err := env.cps().Restore(ctx, "cp-missing", &v1alpha1.CheckpointRestore{Spec: v1alpha1.CheckpointRestoreSpec{SandboxName: "x"}}, metav1.CreateOptions{})
		assert.True(t, apierrors.IsConflict(err), "restore of a Failed checkpoint: %v", err)
		_, err = env.cps().Capture(ctx, "cp-missing", &v1alpha1.CaptureOptions{}, metav1.CreateOptions{})
		assert.True(t, apierrors.IsConflict(err), "capturing a finished checkpoint again: %v", err)
	})

	t.Run("Metrics", func(t *testing.T) {
		// What the subtests above did, as /metrics counts it (this server's
		// process only; the subtests above ran in it).
		raw, err := env.client.AgentsV1alpha1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
		require.NoError(t, err)
		metric := func(series string) float64 {
			t.Helper()
			m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(string(raw))
			require.NotNil(t, m, "/metrics has no %s", series)
			v, err := strconv.ParseFloat(m[1], 64)
			require.NoError(t, err)
			return v
		}
		assert.GreaterOrEqual(t, metric(`checkpoint_apiserver_capture_duration_seconds_count{reason="Captured",result="Succeeded"}`), 4.0)
		assert.GreaterOrEqual(t, metric(`checkpoint_apiserver_capture_duration_seconds_count{reason="TargetNotFound",result="Failed"}`), 1.0)
		assert.GreaterOrEqual(t, metric(`checkpoint_apiserver_capture_size_bytes_count{reason="Captured",result="Succeeded"}`), 4.0)
		assert.Positive(t, metric(`checkpoint_apiserver_capture_size_bytes_sum{reason="Captured",result="Succeeded"}`))
		assert.GreaterOrEqual(t, metric(`checkpoint_apiserver_restore_duration_seconds_count{result="Succeeded"}`), 6.0)
		assert.GreaterOrEqual(t, metric(`checkpoint_apiserver_restore_duration_seconds_count{result="Failed"}`), 1.0)
		assert.GreaterOrEqual(t, metric(`checkpoint_apiserver_driver_errors_total{kind="TargetNotFound",operation="capture"}`), 1.0)
		assert.Equal(t, 0.0, metric(`checkpoint_apiserver_captures_in_flight`))
		metric(`workqueue_depth{name="checkpoint-lifecycle"}`)
	})

	t.Run("MetricsCountEveryCapture", func(t *testing.T) {
		// N captures more: the histogram's count grows by N, and its sum by
		// the captureDuration the N Checkpoints record.
		// series reads the capture histogram's count and sum, and the pause histogram's.
		series := func() (count, sum, pauseCount, pauseSum float64) {
			raw, err := env.client.AgentsV1alpha1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
			require.NoError(t, err)
			value := func(name, labels string) float64 {
				m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name+labels) + ` (\S+)$`).FindStringSubmatch(string(raw))
				if m == nil {
					return 0 // no observation yet; the counts below tell
				}
				v, err := strconv.ParseFloat(m[1], 64)
				require.NoError(t, err)
				return v
			}
			const captured = `{reason="Captured",result="Succeeded"}`
			return value("checkpoint_apiserver_capture_duration_seconds_count", captured), value("checkpoint_apiserver_capture_duration_seconds_sum", captured),
				value("checkpoint_apiserver_capture_pause_seconds_count", captured), value("checkpoint_apiserver_capture_pause_seconds_sum", captured)
		}
		src := env.ctrd.RunPodContainer(t, sandboxNS, "metered", "main", framework.CounterScript)
		framework.WaitCounter(t, src.LogPath, 3)
		count0, sum0, pauseCount0, pauseSum0 := series()
		const n = 3
		var recorded, paused time.Duration
		for i := range n {
			name := fmt.Sprintf("cp-metered-%d", i)
			env.create(t, name, v1alpha1.CheckpointSpec{PodName: "metered"})
			cp := env.capture(t, name)
			require.Equal(t, v1alpha1.PhaseSucceeded, cp.Status.Phase, cp.Status.Message)
			require.NotNil(t, cp.Status.CaptureDuration)
			require.NotNil(t, cp.Status.PauseDuration)
			recorded += cp.Status.CaptureDuration.Duration
			paused += cp.Status.PauseDuration.Duration
		}
		count1, sum1, pauseCount1, pauseSum1 := series()
		assert.Equal(t, float64(n), count1-count0, "one observation per capture")
		assert.InDelta(t, recorded.Seconds(), sum1-sum0, 0.001*n, "the observed durations are the recorded ones")
		assert.Equal(t, float64(n), pauseCount1-pauseCount0, "one pause per capture")
		assert.InDelta(t, paused.Seconds(), pauseSum1-pauseSum0, 0.001*n, "the observed pauses are the recorded ones")
	})

	t.Run("ConcurrentCaptures", func(t *testing.T) {
		src := env.ctrd.RunPodContainer(t, sandboxNS, "contended", "main", framework.CounterScript)
		framework.WaitCounter(t, src.LogPath, 3)
		env.create(t, "cp-race", v1alpha1.CheckpointSpec{PodName: "contended"})
		var wg sync.WaitGroup
		results := make([]error, 2)
		cps := make([]*v1alpha1.Checkpoint, 2)
		for i := range results {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				cps[i], results[i] = env.cps().Capture(ctx, "cp-race", &v1alpha1.CaptureOptions{}, metav1.CreateOptions{})
			}(i)
		}
		wg.Wait()
		var ok, conflicts int
		for i, err := range results {
			switch {
			case err == nil:
				ok++
				assert.Equal(t, v1alpha1.PhaseSucceeded, cps[i].Status.Phase)
			case apierrors.IsConflict(err):
				conflicts++
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}
		assert.Equal(t, 1, ok, "exactly one capture")
		assert.Equal(t, 1, conflicts, "exactly one 409")
		got, err := env.cps().Get(ctx, "cp-race", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, 1, env.checkpointImages(t, got.Status.CheckpointID))
	})

	t.Run("DryRunCapturesNothing", func(t *testing.T) {
		env.create(t, "cp-dry", v1alpha1.CheckpointSpec{PodName: "contended"})
		out, err := env.cps().Capture(ctx, "cp-dry", &v1alpha1.CaptureOptions{}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		require.NoError(t, err)
		assert.Equal(t, v1alpha1.PhaseCreating, out.Status.Phase, "the answer shows the capture as it would start")
		got, err := env.cps().Get(ctx, "cp-dry", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, v1alpha1.PhasePending, got.Status.Phase)
		_, err = env.cps().Capture(ctx, "cp-dry", &v1alpha1.CaptureOptions{TimeoutSeconds: ptr.To[int64](120)}, metav1.CreateOptions{})
		assertInvalid(t, err, "timeoutSeconds")
	})

	t.Run("DeleteRemovesState", func(t *testing.T) {
		got, err := env.cps().Get(ctx, "cp-race", metav1.GetOptions{})
		require.NoError(t, err)
		id := got.Status.CheckpointID
		require.Equal(t, 1, env.checkpointImages(t, id))
		require.NoError(t, env.cps().Delete(ctx, "cp-race", metav1.DeleteOptions{}))
		waitGone(t, env.cps(), "cp-race")
		assert.Equal(t, 0, env.checkpointImages(t, id), "the checkpoint image went with the object")
		err = env.cps().Delete(ctx, "cp-race", metav1.DeleteOptions{})
		assert.True(t, apierrors.IsNotFound(err))
	})

	t.Run("TTLExpiry", func(t *testing.T) {
		src := env.ctrd.RunPodContainer(t, sandboxNS, "short-lived", "main", framework.CounterScript)
		framework.WaitCounter(t, src.LogPath, 3)
		env.create(t, "cp-ttl", v1alpha1.CheckpointSpec{PodName: "short-lived", TTLAfterFinished: "0d3s"})
		cp := env.capture(t, "cp-ttl")
		require.Equal(t, v1alpha1.PhaseSucceeded, cp.Status.Phase)
		require.Equal(t, 1, env.checkpointImages(t, cp.Status.CheckpointID))
		waitGone(t, env.cps(), "cp-ttl")
		assert.Equal(t, 0, env.checkpointImages(t, cp.Status.CheckpointID))
	})

	t.Run("Declarative", func(t *testing.T) {
		src := env.ctrd.RunPodContainer(t, sandboxNS, "declared", "main", framework.CounterScript)
		framework.WaitCounter(t, src.LogPath, 3)
		w, err := env.client.AgentsV1alpha1().Checkpoints(sandboxNS).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=cp-declared"})
		require.NoError(t, err)
		defer w.Stop()
		env.create(t, "cp-declared", v1alpha1.CheckpointSpec{PodName: "declared"})
		var phases []v1alpha1.CheckpointPhase
		timeout := time.After(30 * time.Second)
		for len(phases) == 0 || phases[len(phases)-1] != v1alpha1.PhaseSucceeded {
			select {
			case ev := <-w.ResultChan():
				cp := ev.Object.(*v1alpha1.Checkpoint)
				if len(phases) == 0 || phases[len(phases)-1] != cp.Status.Phase {
					phases = append(phases, cp.Status.Phase)
				}
			case <-timeout:
				t.Fatalf("phases so far: %v", phases)
			}
		}
		assert.Equal(t, []v1alpha1.CheckpointPhase{"Pending", "Creating", "Succeeded"}, phases)
	})
}

// TestCaptureWithoutContainerd: captures fail with DriverUnavailable, the server keeps serving.
func TestCaptureWithoutContainerd(t *testing.T) {
	srv := framework.StartStandalone(t, t.TempDir(), noDeclarativeCapture(t)...)
	cps := clientFor(t, srv.Config, "application/json").AgentsV1alpha1().Checkpoints("default")
	ctx := context.Background()
	_, err := cps.Create(ctx, newCheckpoint("no-driver", "some-pod"), metav1.CreateOptions{})
	require.NoError(t, err)
	cp, err := cps.Capture(ctx, "no-driver", &v1alpha1.CaptureOptions{}, metav1.CreateOptions{})
	require.NoError(t, err)
	assert.Equal(t, v1alpha1.PhaseFailed, cp.Status.Phase)
	assert.Equal(t, "DriverUnavailable", ready(cp).Reason)
	assert.Contains(t, cp.Status.Message, "containerd")
	assert.NoError(t, srv.Healthy(ctx))
	require.NoError(t, cps.Delete(ctx, "no-driver", metav1.DeleteOptions{}))
	waitGone(t, cps, "no-driver")
}

// TestDeclarativeCaptureWaitsForTheDriver: a Checkpoint nobody captures
// stays Pending while containerd is away, saying why, and is captured once
// containerd is there.
func TestDeclarativeCaptureWaitsForTheDriver(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "late.sock")
	srv := framework.StartStandalone(t, t.TempDir(), "--declarative-capture-delay=1s", "--containerd-address="+sock,
		"--containerd-namespace=k8s.io", "--resolver=labels")
	cps := clientFor(t, srv.Config, "application/json").AgentsV1alpha1().Checkpoints(sandboxNS)
	ctx := context.Background()
	_, err := cps.Create(ctx, &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: "patient"},
		Spec: v1alpha1.CheckpointSpec{PodName: "late"}}, metav1.CreateOptions{})
	require.NoError(t, err)
	var cp *v1alpha1.Checkpoint
	require.Eventually(t, func() bool {
		cp, err = cps.Get(ctx, "patient", metav1.GetOptions{})
		return err == nil && ready(cp).Reason == "DriverUnavailable"
	}, 30*time.Second, 100*time.Millisecond)
	assert.Equal(t, v1alpha1.PhasePending, cp.Status.Phase, "still Pending, not Failed")
	assert.Contains(t, cp.Status.Message, "waiting for the checkpoint driver")

	// containerd arrives (at the address the server was given), with the pod.
	ctrd := framework.StartContainerd(t, "k8s.io")
	src := ctrd.RunPodContainer(t, sandboxNS, "late", "main", framework.CounterScript)
	framework.WaitCounter(t, src.LogPath, 2)
	require.NoError(t, os.Symlink(ctrd.Address, sock))
	require.Eventually(t, func() bool {
		cp, err = cps.Get(ctx, "patient", metav1.GetOptions{})
		return err == nil && (cp.Status.Phase == v1alpha1.PhaseSucceeded || cp.Status.Phase == v1alpha1.PhaseFailed)
	}, 90*time.Second, 200*time.Millisecond)
	assert.Equal(t, v1alpha1.PhaseSucceeded, cp.Status.Phase, cp.Status.Message)
}

// TestCaptureTimeout bounds a capture of a large container by timeoutSeconds:
// it ends Failed with reason Timeout and leaves no checkpoint image.
func TestCaptureTimeout(t *testing.T) {
	env := startCaptureEnv(t)
	ctx := context.Background()
	// 2 GiB in one Python bytes object (filled in a fraction of a second,
	// where a shell takes half a minute): CRIU alone keeps that frozen about
	// two seconds here, so the capture cannot end within its 1 s timeout
	// however fast the disk (at 256 MiB a fast tmpfs sometimes made it).
	env.ctrd.ImportTestImage(t, "python.tar")
	src := env.ctrd.RunPodImage(t, sandboxNS, "slow", "main", framework.PythonImage, "python3", "-u", "-c",
		"import time\nheld = b'\\x5a' * (2 << 30)\ni = 0\nwhile True:\n    i += 1\n    print(i)\n    time.sleep(0.1)\n")
	framework.WaitCounter(t, src.LogPath, 2)
	env.create(t, "cp-slow", v1alpha1.CheckpointSpec{PodName: "slow"})
	cp, err := env.cps().Capture(ctx, "cp-slow", &v1alpha1.CaptureOptions{TimeoutSeconds: ptr.To[int64](1)}, metav1.CreateOptions{})
	require.NoError(t, err)
	assert.Equal(t, v1alpha1.PhaseFailed, cp.Status.Phase, cp.Status.Message)
	assert.Equal(t, "Timeout", ready(cp).Reason, cp.Status.Message)
	assert.Less(t, cp.Status.CaptureDuration.Duration, 5*time.Second)
	imgs, err := env.ctrd.Client.ImageService().List(env.ctrd.Ctx(), `labels."agents.kruise.io/checkpoint-id"`)
	require.NoError(t, err)
	assert.Empty(t, imgs, "a timed-out capture leaves no checkpoint image")
	// The source was only paused for the dump: it goes on.
	_, last, _ := framework.Counter(t, src.LogPath)
	framework.WaitCounter(t, src.LogPath, last+3)
}
