package checkpoint

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"

	"github.com/agents-kruise/checkpoint-apiserver/access"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/driver"
	"github.com/agents-kruise/checkpoint-apiserver/generated/clientset/versioned/fake"
	listers "github.com/agents-kruise/checkpoint-apiserver/generated/listers/agents/v1alpha1"
)

// groupAuthorizer is a fake RBAC: members of group may do anything in
// namespace ns; nobody else may do anything.
func groupAuthorizer(group, ns string) authorizer.Authorizer {
	return authorizer.AuthorizerFunc(func(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
		if a.GetNamespace() == ns && slices.Contains(a.GetUser().GetGroups(), group) {
			return authorizer.DecisionAllow, "", nil
		}
		return authorizer.DecisionNoOpinion, "no rule", nil
	})
}

// countingDriver counts what reaches the driver; its Resolve is the first
// thing a capture does to a Pod.
type countingDriver struct {
	driver.Driver
	resolves, captures, deletes atomic.Int32
	size                        int64
}

func (d *countingDriver) Delete(context.Context, string) error {
	d.deletes.Add(1)
	return nil
}

func (d *countingDriver) Resolve(_ context.Context, ns, name string) (driver.Target, error) {
	d.resolves.Add(1)
	return driver.Target{Namespace: ns, Name: name, Containers: []driver.Container{{ID: "c1", Name: "main"}}}, nil
}

func (d *countingDriver) Capture(_ context.Context, _ driver.Target, req driver.CaptureRequest) (driver.CaptureResult, error) {
	d.captures.Add(1)
	return driver.CaptureResult{ID: req.ID, Contents: req.Contents, SizeBytes: d.size}, nil
}

// TestTheServersCaptureChecksTheCreatorAgain: a Checkpoint's own
// (declarative) capture acts for its recorded creator, whose rights on the
// Pod (groups included) are checked again when it runs: one who lost them
// gets Failed, Forbidden, and the driver is never reached; one who has
// them through a group is captured.
func TestTheServersCaptureChecksTheCreatorAgain(t *testing.T) {
	ctx := context.Background()
	created := func(name string, creator user.Info) *v1alpha1.Checkpoint {
		return &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name), ResourceVersion: "1",
			Annotations: map[string]string{agents.AnnotationOwner: creator.GetName(), agents.AnnotationCreator: access.EncodeUser(creator)}},
			Spec: v1alpha1.CheckpointSpec{PodName: "p"}}
	}
	member := &user.DefaultInfo{Name: "alice", Groups: []string{"team-a", "system:authenticated"}}
	revoked := &user.DefaultInfo{Name: "alice", Groups: []string{"system:authenticated"}} // her group membership is gone
	client := fake.NewSimpleClientset(created("allowed", member), created("revoked", revoked))
	d := &countingDriver{}
	c, err := NewCRDCapturer(NewCRDStore(client), Options{Driver: d, Resolver: d, CaptureTimeout: 30 * time.Second,
		Authorizer: groupAuthorizer("team-a", "ns")})
	require.NoError(t, err)

	cp, err := c.Capture(ctx, "ns", "revoked", 0, false)
	require.NoError(t, err)
	assert.Equal(t, agents.PhaseFailed, cp.Status.Phase)
	ready := meta.FindStatusCondition(cp.Status.Conditions, agents.ConditionReady)
	require.NotNil(t, ready)
	assert.Equal(t, ReasonForbidden, ready.Reason)
	assert.Contains(t, cp.Status.Message, `user "alice" may not get pods`)
	assert.Zero(t, d.resolves.Load()+d.captures.Load(), "a refused capture reaches nothing")

	cp, err = c.Capture(ctx, "ns", "allowed", 0, false)
	require.NoError(t, err)
	assert.Equal(t, agents.PhaseSucceeded, cp.Status.Phase, cp.Status.Message)
	assert.Equal(t, int32(1), d.captures.Load())

	// A caller of the capture subresource is checked as themselves: the
	// Checkpoint stays Pending for one who may.
	_, err = c.Capture(genericapirequest.WithUser(ctx, revoked), "ns", "allowed", 0, false)
	assert.Error(t, err)
}

// TestANamespacesCheckpointBytesAreBounded: a namespace whose Succeeded
// Checkpoints hold its limit captures nothing more (the driver is never
// reached); a capture that would take it over its limit is not kept (its
// state is deleted, and it ends Failed, QuotaExceeded); under the limit, a
// capture succeeds. Another namespace's bytes do not count.
func TestANamespacesCheckpointBytesAreBounded(t *testing.T) {
	ctx := context.Background()
	held := func(ns, name string, size int64) *v1alpha1.Checkpoint {
		return &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-" + ns + name), ResourceVersion: "1",
			Annotations: map[string]string{agents.AnnotationSizeBytes: strconv.FormatInt(size, 10)}},
			Spec: v1alpha1.CheckpointSpec{PodName: "p"}, Status: v1alpha1.CheckpointStatus{Phase: v1alpha1.PhaseSucceeded}}
	}
	pending := func(name string) *v1alpha1.Checkpoint {
		return &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", UID: types.UID("uid-" + name), ResourceVersion: "1"},
			Spec: v1alpha1.CheckpointSpec{PodName: "p"}}
	}
	client := fake.NewSimpleClientset(held("ns", "old", 100), held("other", "big", 1<<40), pending("at-limit"), pending("over"), pending("fits"))
	limit := int64(100)
	d := &countingDriver{size: 80}
	c, err := NewCRDCapturer(NewCRDStore(client), Options{Driver: d, Resolver: d, CaptureTimeout: 30 * time.Second,
		BytesLimit: func(context.Context, string) (int64, string, error) { return limit, "the test's", nil }})
	require.NoError(t, err)
	reason := func(cp *agents.Checkpoint) string {
		if r := meta.FindStatusCondition(cp.Status.Conditions, agents.ConditionReady); r != nil {
			return r.Reason
		}
		return ""
	}

	cp, err := c.Capture(ctx, "ns", "at-limit", 0, false)
	require.NoError(t, err)
	assert.Equal(t, agents.PhaseFailed, cp.Status.Phase)
	assert.Equal(t, ReasonQuotaExceeded, reason(cp))
	assert.Contains(t, cp.Status.Message, "namespace ns's checkpoints hold 100, its limit is 100 (the test's)")
	assert.Zero(t, d.resolves.Load(), "nothing was captured")

	limit = 150
	cp, err = c.Capture(ctx, "ns", "over", 0, false)
	require.NoError(t, err)
	assert.Equal(t, agents.PhaseFailed, cp.Status.Phase)
	assert.Equal(t, ReasonQuotaExceeded, reason(cp))
	assert.Contains(t, cp.Status.Message, "this capture holds 80")
	assert.Empty(t, cp.Status.CheckpointID)
	assert.Equal(t, int32(1), d.deletes.Load(), "the capture over the limit is deleted")

	limit = 180
	cp, err = c.Capture(ctx, "ns", "fits", 0, false)
	require.NoError(t, err)
	assert.Equal(t, agents.PhaseSucceeded, cp.Status.Phase, cp.Status.Message)
	assert.Equal(t, int64(80), cp.Status.SizeBytes)
	stored, err := client.AgentsV1alpha1().Checkpoints("ns").Get(ctx, "fits", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, "80", stored.Annotations[agents.AnnotationSizeBytes], "crd mode keeps the size where the CRD does not prune it")
}

// blockingDriver holds every capture until release is closed.
type blockingDriver struct {
	countingDriver
	release chan struct{}
}

func (d *blockingDriver) Capture(ctx context.Context, t driver.Target, req driver.CaptureRequest) (driver.CaptureResult, error) {
	d.captures.Add(1)
	<-d.release
	return driver.CaptureResult{ID: req.ID, Contents: req.Contents}, nil
}

// TestOneNamespacesStormLeavesWorkersToOthers: with half the workers
// capturing one namespace's Checkpoints, the controller takes no more of
// that namespace (they wait their turn, requeued) and captures another
// namespace's at once.
func TestOneNamespacesStormLeavesWorkersToOthers(t *testing.T) {
	pending := func(ns, name string) *v1alpha1.Checkpoint {
		return &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-" + ns + name), ResourceVersion: "1",
			CreationTimestamp: metav1.NewTime(time.Now().Add(-time.Hour))}, Spec: v1alpha1.CheckpointSpec{PodName: "p"}}
	}
	objs := []*v1alpha1.Checkpoint{pending("storm", "a"), pending("storm", "b"), pending("storm", "c"), pending("quiet", "q")}
	client := fake.NewSimpleClientset()
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, o := range objs {
		_, err := client.AgentsV1alpha1().Checkpoints(o.Namespace).Create(context.Background(), o, metav1.CreateOptions{})
		require.NoError(t, err)
		require.NoError(t, indexer.Add(o))
	}
	d := &blockingDriver{release: make(chan struct{})}
	c, err := NewCRDCapturer(NewCRDStore(client), Options{Driver: d, Resolver: d, CaptureTimeout: 30 * time.Second})
	require.NoError(t, err)
	l := &Lifecycle{capturer: c, lister: listers.NewCheckpointLister(indexer), perNamespace: 2, now: time.Now,
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[cache.ObjectName]())}
	defer l.queue.ShutDown()
	ctx := context.Background()
	done := make(chan error, 4)
	syncKey := func(ns, name string) { done <- l.sync(ctx, cache.ObjectName{Namespace: ns, Name: name}) }

	go syncKey("storm", "a")
	go syncKey("storm", "b")
	require.Eventually(t, func() bool { return c.InFlightIn("storm") == 2 && d.captures.Load() == 2 }, time.Minute, 10*time.Millisecond)
	require.NoError(t, l.sync(ctx, cache.ObjectName{Namespace: "storm", Name: "c"}), "a third of the same namespace waits its turn")
	assert.Equal(t, int32(2), d.captures.Load(), "it was not captured")
	require.Eventually(t, func() bool { return l.queue.Len() == 1 }, time.Minute, 10*time.Millisecond, "it is requeued")
	go syncKey("quiet", "q")
	require.Eventually(t, func() bool { return c.InFlightIn("quiet") == 1 && d.captures.Load() == 3 }, time.Minute, 10*time.Millisecond,
		"another namespace's is captured meanwhile")
	close(d.release)
	for range 3 {
		require.NoError(t, <-done)
	}
	assert.Zero(t, c.InFlightIn("storm"))
}

// phaseAtStop is a FAKE stopper that records the Checkpoint's phase, as
// stored, when the source is stopped.
type phaseAtStop struct {
	client *fake.Clientset
	phase  v1alpha1.CheckpointPhase
	fail   error
}

func (s *phaseAtStop) Stop(ctx context.Context, _ driver.Target) error {
	cp, err := s.client.AgentsV1alpha1().Checkpoints("ns").Get(ctx, "pause", metav1.GetOptions{})
	if err != nil {
		return err
	}
	s.phase = cp.Status.Phase
	return s.fail
}

// TestTheSourceIsStoppedOnlyOnceTheCaptureIsRecorded: with keepRunning
// false, the source is stopped after the Checkpoint is stored Succeeded,
// so a server that dies in between leaves the source running beside its
// checkpoint, never gone with no checkpoint of it. A failed stop is said
// in the message; the capture stays Succeeded.
func TestTheSourceIsStoppedOnlyOnceTheCaptureIsRecorded(t *testing.T) {
	ctx := context.Background()
	for _, fail := range []error{nil, errors.New("the kube-apiserver did not answer")} {
		client := fake.NewSimpleClientset(&v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: "pause", Namespace: "ns", UID: "uid-pause", ResourceVersion: "1"},
			Spec: v1alpha1.CheckpointSpec{PodName: "p", KeepRunning: ptr.To(false)}})
		d := &countingDriver{}
		stopper := &phaseAtStop{client: client, fail: fail}
		c, err := NewCRDCapturer(NewCRDStore(client), Options{Driver: d, Resolver: d, Stopper: stopper, CaptureTimeout: 30 * time.Second})
		require.NoError(t, err)
		cp, err := c.Capture(ctx, "ns", "pause", 0, false)
		require.NoError(t, err)
		assert.Equal(t, v1alpha1.PhaseSucceeded, stopper.phase, "the source is stopped once the capture is stored Succeeded")
		assert.Equal(t, agents.PhaseSucceeded, cp.Status.Phase)
		if fail == nil {
			assert.Contains(t, cp.Status.Message, "the source was stopped")
		} else {
			assert.Contains(t, cp.Status.Message, "stopping the source failed: the kube-apiserver did not answer")
		}
	}
}
