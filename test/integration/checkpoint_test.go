package integration

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	applyv1alpha1 "github.com/agents-kruise/checkpoint-apiserver/generated/applyconfiguration/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/generated/clientset/versioned"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

const (
	labelSandboxName  = "agents.kruise.io/sandbox-name"
	labelCheckpointID = "agents.kruise.io/checkpoint-id"
	annotationOwner   = "agents.kruise.io/owner"
)

func clientFor(t testing.TB, cfg *rest.Config, contentType string) versioned.Interface {
	t.Helper()
	c := rest.CopyConfig(cfg)
	c.ContentType = contentType
	c.AcceptContentTypes = contentType
	cs, err := versioned.NewForConfig(c)
	require.NoError(t, err)
	return cs
}

func newCheckpoint(name, pod string) *v1alpha1.Checkpoint {
	return &v1alpha1.Checkpoint{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       v1alpha1.CheckpointSpec{PodName: pod, TTLAfterFinished: "30h"},
	}
}

func namespace(t *testing.T) string {
	// The standalone server has no Namespace objects: any valid name works,
	// and a name per test keeps the tests apart.
	return fmt.Sprintf("it-%d", time.Now().UnixNano()%1_000_000_000)
}

// TestCheckpointAPI runs the API's behaviour against one server.
func TestCheckpointAPI(t *testing.T) {
	// The lifecycle controller would capture these Pending objects after the
	// delay; here the tests move phases by hand, and there is no containerd.
	srv := framework.StartStandalone(t, t.TempDir(), noDeclarativeCapture(t)...)
	pb := clientFor(t, srv.Config, runtime.ContentTypeProtobuf)
	js := clientFor(t, srv.Config, runtime.ContentTypeJSON)
	ctx := context.Background()

	t.Run("CRUD", func(t *testing.T) {
		ns := namespace(t)
		cps := pb.AgentsV1alpha1().Checkpoints(ns)
		in := newCheckpoint("checkpoint-code-demo-01", "code-interpreter-28rvn")
		in.Status.Phase = v1alpha1.PhaseSucceeded // must be reset
		in.Status.CheckpointID = "forged"

		created, err := cps.Create(ctx, in, metav1.CreateOptions{})
		require.NoError(t, err)
		assert.Equal(t, v1alpha1.PhasePending, created.Status.Phase, "status is reset on create")
		assert.Empty(t, created.Status.CheckpointID)
		assert.Equal(t, int64(1), created.Generation)
		assert.Equal(t, "code-interpreter-28rvn", created.Labels[labelSandboxName])
		assert.Equal(t, "checkpoint-admin", created.Annotations[annotationOwner])
		assert.Equal(t, ptr.To(true), created.Spec.KeepRunning, "keepRunning defaults to true")
		assert.Equal(t, []v1alpha1.ContentType{v1alpha1.ContentMemory, v1alpha1.ContentFilesystem}, created.Spec.PersistentContents,
			"empty persistentContents defaults to both")

		got, err := cps.Get(ctx, in.Name, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, created.ResourceVersion, got.ResourceVersion)

		got.Labels["team"] = "red"
		updated, err := cps.Update(ctx, got, metav1.UpdateOptions{})
		require.NoError(t, err)
		assert.Equal(t, "red", updated.Labels["team"])
		assert.Equal(t, int64(1), updated.Generation, "metadata changes keep the generation")

		updated.Spec.PodName = "another-pod"
		_, err = cps.Update(ctx, updated, metav1.UpdateOptions{})
		assertInvalid(t, err, "spec.podName")

		_, err = cps.Create(ctx, in, metav1.CreateOptions{})
		assert.True(t, apierrors.IsAlreadyExists(err), "second create: %v", err)

		assert.Equal(t, []string{"agents.kruise.io/captured-state"}, created.Finalizers)
		require.NoError(t, cps.Delete(ctx, in.Name, metav1.DeleteOptions{}))
		waitGone(t, cps, in.Name)
		err = cps.Delete(ctx, in.Name, metav1.DeleteOptions{})
		assert.True(t, apierrors.IsNotFound(err), "second delete: %v", err)
	})

	t.Run("ListWithSelectors", func(t *testing.T) {
		ns := namespace(t)
		cps := pb.AgentsV1alpha1().Checkpoints(ns)
		a := newCheckpoint("a", "pod-a")
		b := newCheckpoint("b", "pod-b")
		c := &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: "c", Labels: map[string]string{"tier": "gold"}},
			Spec: v1alpha1.CheckpointSpec{SandboxName: "sandbox-c"}}
		for _, cp := range []*v1alpha1.Checkpoint{a, b, c} {
			_, err := cps.Create(ctx, cp, metav1.CreateOptions{})
			require.NoError(t, err)
		}
		idB := succeed(t, cps, "b").Status.CheckpointID
		creating(t, cps, "c")

		cases := map[string]struct {
			label, field string
			want         []string
		}{
			"everything":          {"", "", []string{"a", "b", "c"}},
			"label sandbox-name":  {labelSandboxName + "=sandbox-c", "", []string{"c"}},
			"label set by user":   {"tier=gold", "", []string{"c"}},
			"label checkpoint-id": {labelCheckpointID + "=" + idB, "", []string{"b"}},
			"metadata.name":       {"", "metadata.name=a", []string{"a"}},
			"spec.podName":        {"", "spec.podName=pod-b", []string{"b"}},
			"spec.sandboxName":    {"", "spec.sandboxName=sandbox-c", []string{"c"}},
			"status.phase":        {"", "status.phase=Pending", []string{"a"}},
			"status.phase not":    {"", "status.phase!=Pending", []string{"b", "c"}},
			"status.checkpointId": {"", "status.checkpointId=" + idB, []string{"b"}},
			"label and field":     {"tier=gold", "status.phase=Creating", []string{"c"}},
		}
		for name, tc := range cases {
			for _, rv := range []string{"", "0"} { // from etcd, and from the watch cache
				t.Run(name+"/rv="+rv, func(t *testing.T) {
					list, err := cps.List(ctx, metav1.ListOptions{LabelSelector: tc.label, FieldSelector: tc.field, ResourceVersion: rv})
					require.NoError(t, err)
					assert.Equal(t, tc.want, names(list.Items))
				})
			}
		}

		_, err := cps.List(ctx, metav1.ListOptions{FieldSelector: "spec.keepRunning=true"})
		assert.True(t, apierrors.IsBadRequest(err), "unsupported field selector: %v", err)

		all, err := pb.AgentsV1alpha1().Checkpoints(metav1.NamespaceAll).List(ctx, metav1.ListOptions{FieldSelector: "metadata.namespace=" + ns})
		require.NoError(t, err)
		assert.Equal(t, []string{"a", "b", "c"}, names(all.Items), "cluster-wide list by namespace field")
	})

	t.Run("WatchFromResourceVersion", func(t *testing.T) {
		ns := namespace(t)
		cps := pb.AgentsV1alpha1().Checkpoints(ns)
		first, err := cps.Create(ctx, newCheckpoint("first", "pod-1"), metav1.CreateOptions{})
		require.NoError(t, err)
		_, err = cps.Create(ctx, newCheckpoint("second", "pod-2"), metav1.CreateOptions{})
		require.NoError(t, err)
		creating(t, cps, "second")
		require.NoError(t, cps.Delete(ctx, "first", metav1.DeleteOptions{}))

		w, err := cps.Watch(ctx, metav1.ListOptions{ResourceVersion: first.ResourceVersion})
		require.NoError(t, err)
		defer w.Stop()
		// Deleting marks first (deletionTimestamp), then the finalizer goes and so does first.
		want := []string{"ADDED second Pending", "MODIFIED second Creating", "MODIFIED first Pending", "DELETED first Pending"}
		assert.Equal(t, want, collect(t, w, len(want)), "events after the first create, in order")

		// A watch narrowed to one sandbox sees only that sandbox.
		sw, err := cps.Watch(ctx, metav1.ListOptions{FieldSelector: "spec.sandboxName=sb-w"})
		require.NoError(t, err)
		defer sw.Stop()
		_, err = cps.Create(ctx, newCheckpoint("other", "pod-3"), metav1.CreateOptions{})
		require.NoError(t, err)
		_, err = cps.Create(ctx, &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: "mine"},
			Spec: v1alpha1.CheckpointSpec{SandboxName: "sb-w"}}, metav1.CreateOptions{})
		require.NoError(t, err)
		assert.Equal(t, []string{"ADDED mine Pending"}, collect(t, sw, 1))
	})

	t.Run("StatusSubresource", func(t *testing.T) {
		ns := namespace(t)
		cps := pb.AgentsV1alpha1().Checkpoints(ns)
		_, err := cps.Create(ctx, newCheckpoint("s", "pod-s"), metav1.CreateOptions{})
		require.NoError(t, err)

		// status through the main resource is ignored
		cp, err := cps.Get(ctx, "s", metav1.GetOptions{})
		require.NoError(t, err)
		cp.Status.Phase = v1alpha1.PhaseSucceeded
		cp.Status.CheckpointID = "sneaky"
		cp, err = cps.Update(ctx, cp, metav1.UpdateOptions{})
		require.NoError(t, err)
		assert.Equal(t, v1alpha1.PhasePending, cp.Status.Phase)

		// spec through status is ignored; status is written
		cp.Status.Phase = v1alpha1.PhaseCreating
		cp.Spec.PodName = "changed-through-status"
		cp, err = cps.UpdateStatus(ctx, cp, metav1.UpdateOptions{})
		require.NoError(t, err)
		assert.Equal(t, v1alpha1.PhaseCreating, cp.Status.Phase)
		assert.Equal(t, "pod-s", cp.Spec.PodName)

		cp.Status.Phase = v1alpha1.PhasePending
		_, err = cps.UpdateStatus(ctx, cp, metav1.UpdateOptions{})
		assertInvalid(t, err, "status.phase")

		cp = succeed(t, cps, "s")
		assert.Equal(t, agents.CheckpointID(cp.UID), cp.Labels[labelCheckpointID], "checkpoint-id label follows a Succeeded status")
		assert.Equal(t, int64(12345), cp.Status.SizeBytes)

		cp.Status.Phase = v1alpha1.PhaseFailed
		_, err = cps.UpdateStatus(ctx, cp, metav1.UpdateOptions{})
		assertInvalid(t, err, "status.phase")

		cp.Status.Phase = v1alpha1.PhaseTerminating
		cp, err = cps.UpdateStatus(ctx, cp, metav1.UpdateOptions{})
		require.NoError(t, err)
		assert.Equal(t, v1alpha1.PhaseTerminating, cp.Status.Phase)
	})

	t.Run("OptimisticConcurrency", func(t *testing.T) {
		ns := namespace(t)
		cps := pb.AgentsV1alpha1().Checkpoints(ns)
		cp, err := cps.Create(ctx, newCheckpoint("occ", "pod-o"), metav1.CreateOptions{})
		require.NoError(t, err)
		stale := cp.DeepCopy()

		cp.Labels["writer"] = "one"
		_, err = cps.Update(ctx, cp, metav1.UpdateOptions{})
		require.NoError(t, err)

		stale.Labels["writer"] = "two"
		_, err = cps.Update(ctx, stale, metav1.UpdateOptions{})
		assert.True(t, apierrors.IsConflict(err), "stale update: %v", err)

		stale.Status.Phase = v1alpha1.PhaseCreating
		_, err = cps.UpdateStatus(ctx, stale, metav1.UpdateOptions{})
		assert.True(t, apierrors.IsConflict(err), "stale status update: %v", err)

		got, err := cps.Get(ctx, "occ", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, "one", got.Labels["writer"])
		assert.Equal(t, v1alpha1.PhasePending, got.Status.Phase)
	})

	t.Run("ProtobufAndJSON", func(t *testing.T) {
		ns := namespace(t)
		viaPB, err := pb.AgentsV1alpha1().Checkpoints(ns).Create(ctx, newCheckpoint("p", "pod-p"), metav1.CreateOptions{})
		require.NoError(t, err)
		viaJSON, err := js.AgentsV1alpha1().Checkpoints(ns).Create(ctx, newCheckpoint("j", "pod-j"), metav1.CreateOptions{})
		require.NoError(t, err)
		succeed(t, pb.AgentsV1alpha1().Checkpoints(ns), "p")

		for _, name := range []string{viaPB.Name, viaJSON.Name} {
			a, err := pb.AgentsV1alpha1().Checkpoints(ns).Get(ctx, name, metav1.GetOptions{})
			require.NoError(t, err)
			b, err := js.AgentsV1alpha1().Checkpoints(ns).Get(ctx, name, metav1.GetOptions{})
			require.NoError(t, err)
			assert.Equal(t, a, b, "the same object read as protobuf and as JSON")
		}

		for _, accept := range []string{runtime.ContentTypeProtobuf, runtime.ContentTypeJSON,
			"application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json"} {
			res := pb.AgentsV1alpha1().RESTClient().Get().Namespace(ns).Resource("checkpoints").
				SetHeader("Accept", accept).Do(ctx)
			var status int
			res.StatusCode(&status)
			require.NoError(t, res.Error(), accept)
			assert.Equal(t, 200, status, accept)
			var ct string
			res.ContentType(&ct)
			if accept == runtime.ContentTypeProtobuf {
				assert.Equal(t, runtime.ContentTypeProtobuf, ct)
			}
		}
	})

	t.Run("ServerSideApply", func(t *testing.T) {
		ns := namespace(t)
		cps := pb.AgentsV1alpha1().Checkpoints(ns)
		apply := func(cfg *applyv1alpha1.CheckpointApplyConfiguration) (*v1alpha1.Checkpoint, error) {
			return cps.Apply(ctx, cfg, metav1.ApplyOptions{FieldManager: "gitops", Force: true})
		}
		base := func() *applyv1alpha1.CheckpointApplyConfiguration {
			return applyv1alpha1.Checkpoint("applied", ns).
				WithLabels(map[string]string{"env": "dev"}).
				WithSpec(applyv1alpha1.CheckpointSpec().WithPodName("pod-apply").WithTTLAfterFinished("1d12h").
					WithPersistentContents(v1alpha1.ContentMemory))
		}
		cp, err := apply(base())
		require.NoError(t, err)
		assert.Equal(t, v1alpha1.PhasePending, cp.Status.Phase)
		assert.Equal(t, []v1alpha1.ContentType{v1alpha1.ContentMemory}, cp.Spec.PersistentContents)
		assert.Equal(t, "pod-apply", cp.Labels[labelSandboxName])
		assert.NotEmpty(t, cp.ManagedFields)

		cp, err = apply(base().WithLabels(map[string]string{"env": "prod"}))
		require.NoError(t, err)
		assert.Equal(t, "prod", cp.Labels["env"])

		_, err = apply(base().WithSpec(applyv1alpha1.CheckpointSpec().WithPodName("pod-apply").
			WithTTLAfterFinished("2h").WithPersistentContents(v1alpha1.ContentMemory)))
		assertInvalid(t, err, "spec.ttlAfterFinished")

		cp, err = apply(base().WithStatus(applyv1alpha1.CheckpointStatus().WithPhase(v1alpha1.PhaseSucceeded)))
		require.NoError(t, err)
		assert.Equal(t, v1alpha1.PhasePending, cp.Status.Phase, "status applied to the main resource is dropped")

		cp, err = cps.ApplyStatus(ctx, applyv1alpha1.Checkpoint("applied", ns).
			WithStatus(applyv1alpha1.CheckpointStatus().WithPhase(v1alpha1.PhaseCreating)),
			metav1.ApplyOptions{FieldManager: "capturer", Force: true})
		require.NoError(t, err)
		assert.Equal(t, v1alpha1.PhaseCreating, cp.Status.Phase)

		_, err = apply(applyv1alpha1.Checkpoint("applied-bad", ns).WithSpec(applyv1alpha1.CheckpointSpec().WithTTLAfterFinished("30x")))
		assertInvalid(t, err, "spec.podName", "spec.ttlAfterFinished")
	})

	t.Run("Validation", func(t *testing.T) {
		ns := namespace(t)
		cps := js.AgentsV1alpha1().Checkpoints(ns)
		cases := map[string]struct {
			spec   v1alpha1.CheckpointSpec
			fields []string
		}{
			"no target":         {v1alpha1.CheckpointSpec{}, []string{"spec.podName"}},
			"pod not DNS-1123":  {v1alpha1.CheckpointSpec{PodName: "Pod_1"}, []string{"spec.podName"}},
			"sandbox not DNS":   {v1alpha1.CheckpointSpec{SandboxName: "sb..x"}, []string{"spec.sandboxName"}},
			"unknown content":   {v1alpha1.CheckpointSpec{PodName: "p", PersistentContents: []v1alpha1.ContentType{"memory", "gpu"}}, []string{"spec.persistentContents[1]"}},
			"duplicate content": {v1alpha1.CheckpointSpec{PodName: "p", PersistentContents: []v1alpha1.ContentType{"filesystem", "filesystem"}}, []string{"spec.persistentContents[1]"}},
			"ttl unit":          {v1alpha1.CheckpointSpec{PodName: "p", TTLAfterFinished: "30x"}, []string{"spec.ttlAfterFinished"}},
			"ttl negative":      {v1alpha1.CheckpointSpec{PodName: "p", TTLAfterFinished: "-5m"}, []string{"spec.ttlAfterFinished"}},
			"ttl zero":          {v1alpha1.CheckpointSpec{PodName: "p", TTLAfterFinished: "0s"}, []string{"spec.ttlAfterFinished"}},
			"ttl bare d":        {v1alpha1.CheckpointSpec{PodName: "p", TTLAfterFinished: "d"}, []string{"spec.ttlAfterFinished"}},
			"several at once":   {v1alpha1.CheckpointSpec{PodName: "X", TTLAfterFinished: "d"}, []string{"spec.podName", "spec.ttlAfterFinished"}},
		}
		for name, tc := range cases {
			t.Run(name, func(t *testing.T) {
				_, err := cps.Create(ctx, &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: "bad"}, Spec: tc.spec}, metav1.CreateOptions{})
				assertInvalid(t, err, tc.fields...)
			})
		}
		for _, ttl := range []string{"30m", "24h", "30d", "1d12h"} {
			_, err := cps.Create(ctx, &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{GenerateName: "ttl-"},
				Spec: v1alpha1.CheckpointSpec{PodName: "p", TTLAfterFinished: ttl}}, metav1.CreateOptions{})
			assert.NoError(t, err, "ttl %s", ttl)
		}
		list, err := cps.List(ctx, metav1.ListOptions{})
		require.NoError(t, err)
		assert.Len(t, list.Items, 4, "only the valid checkpoints were stored")
	})
}

// assertInvalid checks err is a 422 Invalid whose causes name exactly fields.
func assertInvalid(t *testing.T, err error, fields ...string) {
	t.Helper()
	require.Error(t, err)
	require.True(t, apierrors.IsInvalid(err), "want Invalid, got %v", err)
	status, ok := err.(apierrors.APIStatus)
	require.True(t, ok)
	var got []string
	for _, c := range status.Status().Details.Causes {
		got = append(got, c.Field)
	}
	sort.Strings(got)
	want := append([]string(nil), fields...)
	sort.Strings(want)
	assert.Equal(t, want, got, "field paths of %v", err)
}

type checkpoints interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*v1alpha1.Checkpoint, error)
	UpdateStatus(ctx context.Context, cp *v1alpha1.Checkpoint, opts metav1.UpdateOptions) (*v1alpha1.Checkpoint, error)
}

func creating(t *testing.T, cps checkpoints, name string) *v1alpha1.Checkpoint {
	t.Helper()
	cp, err := cps.Get(context.Background(), name, metav1.GetOptions{})
	require.NoError(t, err)
	cp.Status.Phase = v1alpha1.PhaseCreating
	cp, err = cps.UpdateStatus(context.Background(), cp, metav1.UpdateOptions{})
	require.NoError(t, err)
	return cp
}

// succeed moves a Checkpoint through Creating to Succeeded, as a capture
// would, with the checkpoint ID derived from its UID (the only one it may
// have), written as an admin may (the test's user is one).
func succeed(t *testing.T, cps checkpoints, name string) *v1alpha1.Checkpoint {
	t.Helper()
	cp := creating(t, cps, name)
	now := metav1.Now()
	cp.Status = v1alpha1.CheckpointStatus{
		Phase: v1alpha1.PhaseSucceeded, CheckpointID: agents.CheckpointID(cp.UID), CompletionTime: &now, SizeBytes: 12345,
		Contents:        []v1alpha1.ContentType{v1alpha1.ContentMemory},
		CaptureDuration: &metav1.Duration{Duration: 1500 * time.Millisecond},
		Conditions: []metav1.Condition{{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Captured",
			LastTransitionTime: now}},
	}
	cp, err := cps.UpdateStatus(context.Background(), cp, metav1.UpdateOptions{})
	require.NoError(t, err)
	return cp
}

func names(items []v1alpha1.Checkpoint) []string {
	out := []string{}
	for _, cp := range items {
		out = append(out, cp.Name)
	}
	sort.Strings(out)
	return out
}

func collect(t *testing.T, w watch.Interface, n int) []string {
	t.Helper()
	var got []string
	timeout := time.After(15 * time.Second)
	for len(got) < n {
		select {
		case ev, ok := <-w.ResultChan():
			require.True(t, ok, "watch closed after %v", got)
			cp, isCP := ev.Object.(*v1alpha1.Checkpoint)
			require.True(t, isCP, "event object %T: %v", ev.Object, ev.Object)
			got = append(got, fmt.Sprintf("%s %s %s", ev.Type, cp.Name, cp.Status.Phase))
		case <-timeout:
			t.Fatalf("only %v after 15s", got)
		}
	}
	select {
	case ev := <-w.ResultChan():
		t.Errorf("unexpected extra event %s", ev.Type)
	case <-time.After(300 * time.Millisecond):
	}
	return got
}

// noDeclarativeCapture keeps the lifecycle controller from capturing Pending
// Checkpoints during a test, and points the driver at a socket that is not there.
func noDeclarativeCapture(t *testing.T) []string {
	return []string{"--declarative-capture-delay=24h", "--containerd-address=" + filepath.Join(t.TempDir(), "no-containerd.sock")}
}

func waitGone(t *testing.T, cps checkpoints, name string) {
	t.Helper()
	require.Eventually(t, func() bool {
		_, err := cps.Get(context.Background(), name, metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	}, 15*time.Second, 50*time.Millisecond, "%s still there after delete", name)
}
