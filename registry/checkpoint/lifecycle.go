package checkpoint

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/driver"
	informers "github.com/agents-kruise/checkpoint-apiserver/generated/informers/externalversions/agents/v1alpha1"
	listers "github.com/agents-kruise/checkpoint-apiserver/generated/listers/agents/v1alpha1"
)

// Finalizer keeps a Checkpoint until the driver's captured state is deleted.
const Finalizer = "agents.kruise.io/captured-state"

// Lifecycle is the controller inside the server that drives Checkpoints
// nobody drives by hand: it captures Pending ones created without a call to
// capture (the declarative path), fails captures a restart interrupted,
// deletes the captured state of deleted Checkpoints (the finalizer), and
// deletes Checkpoints whose ttlAfterFinished has passed.
type Lifecycle struct {
	capturer *Capturer
	lister   listers.CheckpointLister
	synced   cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[cache.ObjectName]
	// captureDelay leaves a just-created Checkpoint to an imperative
	// capture call for a moment before the controller takes it.
	captureDelay time.Duration
	// sweepInterval is how often orphaned driver state is swept (0: never),
	// and how old it must be to go.
	sweepInterval time.Duration
	// perNamespace bounds the captures of one namespace this controller
	// runs at once (half its workers): one namespace's storm of Checkpoints
	// leaves workers to the others' captures.
	perNamespace int
	now          func() time.Time
}

// NewLifecycle makes the controller over the Checkpoints the informer sees.
func (c *Capturer) NewLifecycle(informer informers.CheckpointInformer, captureDelay, sweepInterval time.Duration) (*Lifecycle, error) {
	l := &Lifecycle{
		capturer:      c,
		sweepInterval: sweepInterval,
		lister:        informer.Lister(),
		synced:        informer.Informer().HasSynced,
		queue:         workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[cache.ObjectName](), workqueue.TypedRateLimitingQueueConfig[cache.ObjectName]{Name: "checkpoint-lifecycle"}),
		captureDelay:  captureDelay,
		now:           time.Now,
	}
	enqueue := func(obj interface{}) {
		if name, err := cache.DeletionHandlingObjectToName(obj); err == nil {
			l.queue.Add(name)
		}
	}
	_, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj interface{}) { enqueue(obj) },
	})
	return l, err
}

// Run recovers interrupted captures, then works the queue until ctx ends.
func (l *Lifecycle) Run(ctx context.Context, workers int) {
	defer utilruntime.HandleCrash()
	defer l.queue.ShutDown()
	logger := klog.FromContext(ctx).WithName("checkpoint-lifecycle")
	ctx = klog.NewContext(ctx, logger)

	if err := wait.PollUntilContextCancel(ctx, time.Second, true, func(ctx context.Context) (bool, error) {
		if err := l.recoverInterrupted(ctx); err != nil {
			logger.Error(err, "Recovering interrupted captures")
			return false, nil
		}
		return true, nil
	}); err != nil {
		return
	}
	if !cache.WaitForCacheSync(ctx.Done(), l.synced) {
		return
	}
	l.perNamespace = max(1, workers/2)
	for i := 0; i < workers; i++ {
		go wait.UntilWithContext(ctx, l.work, time.Second)
	}
	if l.sweepInterval > 0 {
		go wait.UntilWithContext(ctx, func(ctx context.Context) {
			if err := l.sweep(ctx, l.sweepInterval); err != nil {
				logger.Error(err, "Sweeping orphaned checkpoint state")
			}
		}, l.sweepInterval)
	}
	<-ctx.Done()
}

// recoverInterrupted fails the Checkpoints left Creating by a capture whose
// process is gone, and removes whatever state that capture wrote. Captures
// another live replica may still be running are looked at again later.
func (l *Lifecycle) recoverInterrupted(ctx context.Context) error {
	creating, err := l.capturer.store.ListCreating(ctx)
	if err != nil {
		return err
	}
	for i := range creating {
		cp := &creating[i]
		if err := l.checkCreating(ctx, cache.ObjectName{Namespace: cp.Namespace, Name: cp.Name}); err != nil {
			return err
		}
	}
	return nil
}

// checkCreating fails the Checkpoint key if it is Creating and its capture
// was abandoned (see Capturer.abandoned), and asks again later otherwise.
// It decides on the stored object, never on the informer's copy, which may
// be behind a capture that just finished.
func (l *Lifecycle) checkCreating(ctx context.Context, key cache.ObjectName) error {
	cp, err := l.capturer.get(ctx, key.Namespace, key.Name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if cp.Status.Phase != agents.PhaseCreating {
		return nil
	}
	gone, why, wait := l.capturer.abandoned(ctx, cp, l.now())
	if !gone {
		l.queue.AddAfter(key, wait)
		return nil
	}
	if err := l.deleteState(ctx, cp.Namespace, cp.UID); err != nil {
		// The orphan sweep removes it once the driver answers.
		klog.FromContext(ctx).Error(err, "Removing the state of an interrupted capture", "checkpoint", klog.KObj(cp))
	}
	marker := cp.Annotations[agents.AnnotationCapturedBy]
	msg := fmt.Sprintf("the server stopped during the capture (%s); capture again with a new Checkpoint", why)
	if replica, _, _ := strings.Cut(marker, "/"); marker != "" {
		msg = fmt.Sprintf("the server replica %s stopped during the capture (%s); capture again with a new Checkpoint", replica, why)
	}
	_, err = l.capturer.finish(ctx, cp.Namespace, cp.Name, func(s *agents.CheckpointStatus) {
		if s.Phase != agents.PhaseCreating {
			return
		}
		now := metav1.Now()
		s.Phase = agents.PhaseFailed
		s.Message = msg
		s.CompletionTime = &now
		meta.SetStatusCondition(&s.Conditions, condition(metav1.ConditionFalse, ReasonInterrupted, msg, cp.Generation))
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	klog.FromContext(ctx).Info("Failed an interrupted capture", "checkpoint", klog.KObj(cp), "capturedBy", marker)
	l.capturer.event(cp, corev1.EventTypeWarning, EventInterrupted, "%s (its capture was started by %s)", msg, marker)
	return nil
}

// stateLister is a driver that can list the state it holds (the containerd driver).
type stateLister interface {
	States(ctx context.Context) (map[string]time.Time, error)
}

// sweep deletes driver state that no live Checkpoint owns: state of
// Checkpoints deleted or Failed, and whatever a capture that died half way
// (server or driver) left. State younger than minAge is left alone, and so
// is the state of every Pending, Creating or Succeeded Checkpoint.
func (l *Lifecycle) sweep(ctx context.Context, minAge time.Duration) error {
	if err := l.sweepKeys(ctx, minAge); err != nil {
		return err
	}
	sl, ok := l.capturer.driver.(stateLister)
	if !ok {
		return nil
	}
	states, err := sl.States(ctx)
	if err != nil || len(states) == 0 {
		return err
	}
	cps, err := l.lister.List(labels.Everything())
	if err != nil {
		return err
	}
	keep := make(map[string]bool, len(cps))
	for _, cp := range cps {
		if cp.Status.Phase != v1alpha1.PhaseFailed && cp.Status.Phase != v1alpha1.PhaseTerminating {
			keep[agents.CheckpointID(cp.UID)] = true
		}
	}
	for id, made := range states {
		if keep[id] || l.now().Sub(made) < minAge {
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := l.capturer.driver.Delete(dctx, id)
		cancel()
		if err != nil {
			return fmt.Errorf("sweep %s: %w", id, err)
		}
		klog.FromContext(ctx).Info("Swept orphaned checkpoint state", "id", id, "age", l.now().Sub(made).Round(time.Second))
	}
	return nil
}

// sweepKeys destroys the data keys no Checkpoint owns (a capture whose
// Checkpoint went without its finalizer), once older than minAge.
func (l *Lifecycle) sweepKeys(ctx context.Context, minAge time.Duration) error {
	if l.capturer.keys == nil {
		return nil
	}
	keys, err := l.capturer.keys.List(ctx)
	if err != nil || len(keys) == 0 {
		return err
	}
	cps, err := l.lister.List(labels.Everything())
	if err != nil {
		return err
	}
	owned := make(map[string]bool, len(cps))
	for _, cp := range cps {
		owned[agents.CheckpointID(cp.UID)] = true
	}
	for id, made := range keys {
		if owned[id] || l.now().Sub(made) < minAge {
			continue
		}
		if err := l.capturer.keys.Delete(ctx, id); err != nil {
			return err
		}
		klog.FromContext(ctx).Info("Destroyed the data key of a checkpoint that is gone", "id", id)
	}
	return nil
}

// TrimForLifecycle is the informer's transform: it keeps of each Checkpoint
// only what the controller reads (identity, timestamps, finalizers, spec,
// phase and completion), so that its cache costs a fraction of the watch
// cache's copy. Whatever it acts on, it reads again from storage.
func TrimForLifecycle(obj interface{}) (interface{}, error) {
	cp, ok := obj.(*v1alpha1.Checkpoint)
	if !ok {
		return obj, nil // tombstones and the like pass unchanged
	}
	cp.ManagedFields = nil
	cp.Annotations = nil // the capture marker is read from storage
	cp.Labels = nil
	cp.Status.Conditions = nil
	cp.Status.Message = ""
	return cp, nil
}

func (l *Lifecycle) work(ctx context.Context) {
	for {
		key, quit := l.queue.Get()
		if quit {
			return
		}
		err := l.sync(ctx, key)
		if err != nil {
			klog.FromContext(ctx).Error(err, "Syncing checkpoint", "checkpoint", key)
			l.queue.AddRateLimited(key)
		} else {
			l.queue.Forget(key)
		}
		l.queue.Done(key)
	}
}

func (l *Lifecycle) sync(ctx context.Context, key cache.ObjectName) error {
	cp, err := l.lister.Checkpoints(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if cp.DeletionTimestamp != nil {
		return l.finalize(ctx, key, cp)
	}
	switch cp.Status.Phase {
	case v1alpha1.PhasePending, "": // a custom resource starts with no status (crd mode)
		if wait := cp.CreationTimestamp.Add(l.captureDelay).Sub(l.now()); wait > 0 {
			l.queue.AddAfter(key, wait)
			return nil
		}
		if l.perNamespace > 0 && l.capturer.InFlightIn(key.Namespace) >= l.perNamespace {
			// Its namespace has its share of captures running: the worker
			// goes to another namespace's meanwhile.
			l.queue.AddAfter(key, time.Second)
			return nil
		}
		if err := l.capturer.driverReady(ctx); err != nil {
			// A declarative Checkpoint waits for its driver rather than failing
			// for good; the queue retries with backoff. (An imperative capture
			// call fails with DriverUnavailable instead: its caller is waiting.)
			return l.waitForDriver(ctx, key, err)
		}
		_, err := l.capturer.Capture(ctx, key.Namespace, key.Name, 0, false)
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			return nil // someone else captured it, or it is gone
		}
		return err
	case v1alpha1.PhaseCreating:
		return l.checkCreating(ctx, key)
	case v1alpha1.PhaseSucceeded, v1alpha1.PhaseFailed:
		return l.expire(ctx, key, cp)
	}
	return nil
}

// waitForDriver says on a Pending Checkpoint why it is not captured yet,
// and returns the driver's error so that the key is retried with backoff.
func (l *Lifecycle) waitForDriver(ctx context.Context, key cache.ObjectName, driverErr error) error {
	msg := fmt.Sprintf("waiting for the checkpoint driver: %v", driverErr)
	_, err := l.capturer.finish(ctx, key.Namespace, key.Name, func(s *agents.CheckpointStatus) {
		if s.Phase != agents.PhasePending && s.Phase != "" {
			return
		}
		s.Message = msg
		meta.SetStatusCondition(&s.Conditions, condition(metav1.ConditionFalse, ReasonDriverUnavailable, msg, 0))
	})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return driverErr
}

// expire deletes a finished Checkpoint once its ttlAfterFinished has passed.
func (l *Lifecycle) expire(ctx context.Context, key cache.ObjectName, cp *v1alpha1.Checkpoint) error {
	if cp.Spec.TTLAfterFinished == "" || cp.Status.CompletionTime == nil {
		return nil
	}
	ttl, err := agents.ParseTTL(cp.Spec.TTLAfterFinished)
	if err != nil {
		return nil // validation keeps bad TTLs out; nothing to do with one that slipped in
	}
	if wait := cp.Status.CompletionTime.Add(ttl).Sub(l.now()); wait > 0 {
		l.queue.AddAfter(key, wait)
		return nil
	}
	err = l.capturer.store.Delete(ctx, key.Namespace, key.Name, cp.UID)
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	if err == nil {
		klog.FromContext(ctx).Info("Deleted an expired checkpoint", "checkpoint", key, "ttlAfterFinished", cp.Spec.TTLAfterFinished)
		l.capturer.event(internalRef(cp), corev1.EventTypeNormal, EventExpired, "Deleted: ttlAfterFinished %s passed", cp.Spec.TTLAfterFinished)
	}
	return err
}

// finalize deletes the driver's state of a deleted Checkpoint, then lets it go.
func (l *Lifecycle) finalize(ctx context.Context, key cache.ObjectName, cp *v1alpha1.Checkpoint) error {
	finalizer := l.capturer.store.Finalizer()
	if !hasFinalizer(cp.Finalizers, finalizer) {
		return nil
	}
	if l.capturer.InFlight(cp.UID) {
		l.queue.AddAfter(key, time.Second) // let the capture finish, then delete what it made
		return nil
	}
	// Its data key goes first: from then on nothing of it decrypts,
	// wherever its blobs are kept and whatever the rest of the delete does.
	if err := l.capturer.destroyKey(ctx, cp.UID); err != nil {
		return err
	}
	// Only a capture that got as far as Creating can have left state; a
	// Checkpoint that never did goes without asking the driver, which may be down.
	switch cp.Status.Phase {
	case v1alpha1.PhaseSucceeded, v1alpha1.PhaseCreating:
		_, err := l.capturer.finish(ctx, key.Namespace, key.Name, func(s *agents.CheckpointStatus) {
			s.Phase = agents.PhaseTerminating
			s.Message = "deleting the captured state"
		})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("mark terminating: %w", err)
		}
		fallthrough
	case v1alpha1.PhaseTerminating:
		if err := l.deleteState(ctx, cp.Namespace, cp.UID); err != nil {
			driverErrors.WithLabelValues("delete", failureReason(ctx, err)).Inc()
			return fmt.Errorf("delete captured state: %w", err)
		}
		l.capturer.event(internalRef(cp), corev1.EventTypeNormal, EventStateDeleted, "Deleted the captured state %s", agents.CheckpointID(cp.UID))
	}
	err := retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		latest, err := l.capturer.store.Get(ctx, key.Namespace, key.Name)
		if err != nil {
			return err
		}
		if latest.UID != cp.UID || !hasFinalizer(latest.Finalizers, finalizer) {
			return nil
		}
		latest.Finalizers = removeFinalizer(latest.Finalizers, finalizer)
		_, err = l.capturer.store.Update(ctx, latest)
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// deleteState asks the driver to delete a Checkpoint's state, bounded so a
// hung driver does not hold a worker.
func (l *Lifecycle) deleteState(ctx context.Context, namespace string, uid types.UID) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if d, ok := l.capturer.driver.(driver.NamespacedDeleter); ok {
		return d.DeleteIn(ctx, namespace, agents.CheckpointID(uid))
	}
	return l.capturer.driver.Delete(ctx, agents.CheckpointID(uid))
}

// internalRef is enough of an informer's Checkpoint to name it in an Event.
func internalRef(cp *v1alpha1.Checkpoint) *agents.Checkpoint {
	return &agents.Checkpoint{ObjectMeta: cp.ObjectMeta}
}

func hasFinalizer(fs []string, finalizer string) bool {
	for _, f := range fs {
		if f == finalizer {
			return true
		}
	}
	return false
}

func removeFinalizer(fs []string, finalizer string) []string {
	out := fs[:0:0]
	for _, f := range fs {
		if f != finalizer {
			out = append(out, f)
		}
	}
	return out
}
