package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/access"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/driver"
	"github.com/agents-kruise/checkpoint-apiserver/encryption"
)

// Reasons of the Ready condition, also the reasons a capture failed.
const (
	ReasonCapturing         = "Capturing"
	ReasonCaptured          = "Captured"
	ReasonTargetNotFound    = "TargetNotFound"
	ReasonDriverUnavailable = "DriverUnavailable"
	ReasonCaptureFailed     = "CaptureFailed"
	ReasonTimeout           = "Timeout"
	ReasonInterrupted       = "Interrupted"
	// ReasonForbidden: the Checkpoint's creator may no longer capture its
	// Pod (the declarative capture checks again when it runs).
	ReasonForbidden = "Forbidden"
	// ReasonQuotaExceeded: the namespace's checkpoints would hold more
	// bytes than its limit.
	ReasonQuotaExceeded = "QuotaExceeded"
)

// MaxCaptureTimeout keeps a synchronous capture under the aggregator's 60 s limit.
const MaxCaptureTimeout = 55 * time.Second

// Capturer runs captures: the capture subresource and the declarative
// controller both go through it, so a Checkpoint is captured at most once.
type Capturer struct {
	store          Store
	driver         driver.Driver
	resolver       driver.Resolver
	stopper        driver.Stopper
	restorer       driver.Restorer
	recorder       record.EventRecorder
	defaultTimeout time.Duration
	// replica and incarnation go into the marker of the captures this process runs.
	replica, incarnation string
	// liveness, when set, tells whether another replica's process still runs.
	liveness ReplicaLiveness
	// authorizer, when set, is asked whether a capture's caller may capture its Pod.
	authorizer authorizer.Authorizer
	// kek, when set, wraps each capture's data key, which keys keeps.
	kek  encryption.Wrapper
	keys Keys
	// bytesLimit, when set, bounds a namespace's checkpoint bytes.
	bytesLimit BytesLimit
	// nsLocks serialize, per namespace, the count of its bytes and the
	// write that adds a capture's.
	nsLocks sync.Map

	// inflight holds the UIDs of the captures this process is running;
	// perNamespace counts them by namespace.
	inflight     sync.Map
	nsMu         sync.Mutex
	perNamespace map[string]int
}

// InFlightIn is how many captures of namespace ns this process is running.
func (c *Capturer) InFlightIn(ns string) int {
	c.nsMu.Lock()
	defer c.nsMu.Unlock()
	return c.perNamespace[ns]
}

func (c *Capturer) countIn(ns string, delta int) {
	c.nsMu.Lock()
	defer c.nsMu.Unlock()
	if c.perNamespace == nil {
		c.perNamespace = map[string]int{}
	}
	c.perNamespace[ns] += delta
	if c.perNamespace[ns] <= 0 {
		delete(c.perNamespace, ns)
	}
}

// driverReady asks the driver, when it can tell, whether it can capture now.
func (c *Capturer) driverReady(ctx context.Context) error {
	if p, ok := c.driver.(interface{ Ping(context.Context) error }); ok {
		return p.Ping(ctx)
	}
	return nil
}

// InFlight says whether this process is capturing the Checkpoint with uid.
func (c *Capturer) InFlight(uid types.UID) bool {
	_, ok := c.inflight.Load(uid)
	return ok
}

func (c *Capturer) get(ctx context.Context, namespace, name string) (*agents.Checkpoint, error) {
	return c.store.Get(ctx, namespace, name)
}

// writeStatus writes status through the status store: conflict-checked
// against cp's resourceVersion.
func (c *Capturer) writeStatus(ctx context.Context, cp *agents.Checkpoint) (*agents.Checkpoint, error) {
	return c.store.UpdateStatus(ctx, cp)
}

// finishBackoff retries a final status write for about two minutes: long
// enough to ride out an etcd restart, so that a capture that ran is recorded.
var finishBackoff = wait.Backoff{Duration: 50 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 70, Cap: 2 * time.Second}

// finish writes a final status, retrying on conflicts with writers of
// metadata and on storage errors, and never cancelled by the caller going away.
func (c *Capturer) finish(ctx context.Context, namespace, name string, set func(*agents.CheckpointStatus)) (*agents.Checkpoint, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	var out *agents.Checkpoint
	err := retry.OnError(finishBackoff, func(err error) bool {
		// Only answers that another try cannot change end it.
		return ctx.Err() == nil && !apierrors.IsNotFound(err) && !apierrors.IsInvalid(err) &&
			!apierrors.IsBadRequest(err) && !apierrors.IsForbidden(err)
	}, func() error {
		cp, err := c.get(ctx, namespace, name)
		if err != nil {
			return err
		}
		set(&cp.Status)
		out, err = c.writeStatus(ctx, cp)
		return err
	})
	return out, err
}

// refuse ends the Pending cp Failed for reason, having captured nothing.
func (c *Capturer) refuse(ctx context.Context, cp *agents.Checkpoint, reason string, why error) (*agents.Checkpoint, error) {
	msg := fmt.Sprintf("not captured: %v", why)
	if status, ok := why.(apierrors.APIStatus); ok {
		msg = "not captured: " + status.Status().Message
	}
	out, err := c.finish(ctx, cp.Namespace, cp.Name, func(s *agents.CheckpointStatus) {
		if s.Phase != agents.PhasePending && s.Phase != "" {
			return
		}
		now := metav1.Now()
		s.Phase, s.Message, s.CompletionTime, s.ObservedGeneration = agents.PhaseFailed, msg, &now, cp.Generation
		meta.SetStatusCondition(&s.Conditions, condition(metav1.ConditionFalse, reason, msg, cp.Generation))
	})
	if err != nil {
		return nil, err
	}
	c.event(cp, corev1.EventTypeWarning, reason, "%s", msg)
	return out, nil
}

// overBytes says why cp's namespace may not hold adding more bytes of
// checkpoints ("": it may). With adding 0 (before a capture), a namespace
// at its limit may not.
func (c *Capturer) overBytes(ctx context.Context, cp *agents.Checkpoint, adding int64) (string, error) {
	if c.bytesLimit == nil {
		return "", nil
	}
	limit, source, err := c.bytesLimit(ctx, cp.Namespace)
	if err != nil || limit <= 0 {
		return "", err
	}
	list, err := c.store.ListSucceeded(ctx, cp.Namespace)
	if err != nil {
		return "", err
	}
	var used int64
	for _, other := range list {
		if other.UID != cp.UID {
			used += other.Status.SizeBytes
		}
	}
	q := func(n int64) string { return resource.NewQuantity(n, resource.BinarySI).String() }
	switch {
	case adding == 0 && used >= limit:
		return fmt.Sprintf("exceeded quota: namespace %s's checkpoints hold %s, its limit is %s (%s)", cp.Namespace, q(used), q(limit), source), nil
	case adding > 0 && used+adding > limit:
		return fmt.Sprintf("exceeded quota: this capture holds %s; with the %s namespace %s's checkpoints hold, that is over its limit of %s (%s)",
			q(adding), q(used), cp.Namespace, q(limit), source), nil
	}
	return "", nil
}

// lockNamespace holds ns's lock until the returned func is called.
func (c *Capturer) lockNamespace(ns string) func() {
	mu, _ := c.nsLocks.LoadOrStore(ns, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	return mu.(*sync.Mutex).Unlock
}

func condition(status metav1.ConditionStatus, reason, message string, generation int64) metav1.Condition {
	return metav1.Condition{
		Type: agents.ConditionReady, Status: status, Reason: reason, Message: message,
		ObservedGeneration: generation, LastTransitionTime: metav1.Now(),
	}
}

// Capture captures the Pending Checkpoint namespace/name and returns it
// finished (Succeeded or Failed). A Checkpoint that is not Pending gets a
// 409 Conflict, and so does the loser of two concurrent calls: it is never
// captured twice. dryRun checks all that and returns the Checkpoint as the
// capture would start it, capturing nothing.
func (c *Capturer) Capture(ctx context.Context, namespace, name string, timeout time.Duration, dryRun bool) (*agents.Checkpoint, error) {
	if timeout <= 0 {
		timeout = c.defaultTimeout
	}
	cp, err := c.get(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	if cp.DeletionTimestamp != nil {
		return nil, apierrors.NewConflict(agents.Resource("checkpoints"), name, errors.New("the checkpoint is being deleted"))
	}
	// A custom resource starts with no status at all (crd mode): that is Pending.
	if cp.Status.Phase != agents.PhasePending && cp.Status.Phase != "" {
		return nil, apierrors.NewConflict(agents.Resource("checkpoints"), name,
			fmt.Errorf("the checkpoint is %s: only a Pending checkpoint can be captured", cp.Status.Phase))
	}
	if podInfoOnly(cp.Spec.PersistentContents) {
		return c.podInfoOnly(ctx, cp, dryRun)
	}
	// The caller (not only the creator) may capture the Pod; refused, the
	// Checkpoint stays as it was, for one who may. The server's own
	// (declarative) capture acts for the Checkpoint's creator, whose rights
	// are checked again now: refused, it ends Failed, Forbidden, and
	// nothing was touched.
	_, imperative := genericapirequest.UserFrom(ctx)
	if !imperative {
		if creator, err := access.DecodeUser(cp.Annotations[agents.AnnotationCreator]); err == nil {
			ctx = genericapirequest.WithUser(ctx, creator)
		}
	}
	if err := mayCapture(ctx, c.authorizer, cp); err != nil {
		if imperative || !apierrors.IsForbidden(err) || dryRun {
			return nil, err
		}
		return c.refuse(ctx, cp, ReasonForbidden, err)
	}
	// A namespace that holds its limit of bytes captures nothing more.
	if over, err := c.overBytes(ctx, cp, 0); err != nil {
		return nil, apierrors.NewServiceUnavailable(fmt.Sprintf("cannot count the checkpoint bytes of namespace %s: %v", cp.Namespace, err))
	} else if over != "" {
		if dryRun {
			return nil, apierrors.NewForbidden(agents.Resource("checkpoints"), name, errors.New(over))
		}
		return c.refuse(ctx, cp, ReasonQuotaExceeded, errors.New(over))
	}
	cp.Status = agents.CheckpointStatus{
		Phase:              agents.PhaseCreating,
		ObservedGeneration: cp.Generation,
		Message:            "capturing",
		Conditions:         []metav1.Condition{condition(metav1.ConditionFalse, ReasonCapturing, "capture in progress", cp.Generation)},
	}
	if dryRun {
		return cp, nil
	}
	if cp.Annotations == nil {
		cp.Annotations = map[string]string{}
	}
	cp.Annotations[agents.AnnotationCapturedBy] = fmt.Sprintf("%s/%s/%d", c.replica, c.incarnation, time.Now().Unix())
	// Mark in flight before the write that others will see.
	if _, loaded := c.inflight.LoadOrStore(cp.UID, struct{}{}); loaded {
		return nil, apierrors.NewConflict(agents.Resource("checkpoints"), name, errors.New("a capture of this checkpoint is already running"))
	}
	defer c.inflight.Delete(cp.UID)
	c.countIn(cp.Namespace, 1)
	defer c.countIn(cp.Namespace, -1)
	creating, err := c.writeStatus(ctx, cp)
	if err != nil {
		return nil, err
	}
	capturesInFlight.Inc()
	defer capturesInFlight.Dec()
	c.event(creating, corev1.EventTypeNormal, EventCapturing, "Capturing %s of %s/%s",
		joinContents(contentsOf(creating)), creating.Namespace, targetOf(creating))
	return c.run(ctx, creating, timeout)
}

// newKey makes cp's data key and keeps it wrapped, with the target's
// template, as the checkpoint's record (nil: no encryption). It is kept
// before the capture, and so before anything is encrypted with it: a
// capture that succeeds can always be decrypted. A record left by a
// capture that never started is replaced.
func (c *Capturer) newKey(ctx context.Context, cp *agents.Checkpoint, template []byte) ([]byte, error) {
	if c.kek == nil {
		return nil, nil
	}
	dek, err := encryption.NewDEK()
	if err != nil {
		return nil, err
	}
	b := KeyBinding(cp)
	wrapped, err := c.kek.Wrap(ctx, dek, b)
	if err != nil {
		return nil, err
	}
	rec := encryption.Record{Wrapped: wrapped, Template: template}
	err = c.keys.Put(ctx, b, rec)
	if apierrors.IsAlreadyExists(err) {
		if err = c.keys.Delete(ctx, b.CheckpointID); err == nil {
			err = c.keys.Put(ctx, b, rec)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %v", driver.ErrUnavailable, err)
	}
	return dek, nil
}

// recordedTemplate is the template the server recorded of cp's source
// (nil when it keeps no records: the driver's own copy is on the node).
func (c *Capturer) recordedTemplate(ctx context.Context, cp *agents.Checkpoint) ([]byte, error) {
	if c.keys == nil {
		return nil, nil
	}
	rec, err := c.keys.Get(ctx, KeyBinding(cp))
	if errors.Is(err, encryption.ErrNoKey) {
		return nil, apierrors.NewConflict(agents.Resource("checkpoints"), cp.Name,
			fmt.Errorf("the server keeps no record of this checkpoint (its key and template): it cannot be restored"))
	}
	if err != nil {
		return nil, apierrors.NewServiceUnavailable(err.Error())
	}
	if len(rec.Template) == 0 {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("checkpoint %s was not captured from a Pod, so it cannot be restored into one", cp.Name))
	}
	return rec.Template, nil
}

// destroyKey deletes the data key of the Checkpoint with uid, if any.
func (c *Capturer) destroyKey(ctx context.Context, uid types.UID) error {
	if c.keys == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return c.keys.Delete(ctx, agents.CheckpointID(uid))
}

// KeyBinding is what a Checkpoint's data key is bound to.
func KeyBinding(cp *agents.Checkpoint) encryption.Binding {
	return encryption.Binding{Namespace: cp.Namespace, UID: string(cp.UID), CheckpointID: agents.CheckpointID(cp.UID)}
}

// contentsOf is what a Checkpoint captures (both, when it names none).
func contentsOf(cp *agents.Checkpoint) []agents.ContentType {
	if len(cp.Spec.PersistentContents) == 0 {
		return agents.AllContents
	}
	return cp.Spec.PersistentContents
}

// targetOf is the Pod or sandbox a Checkpoint captures.
func targetOf(cp *agents.Checkpoint) string {
	if cp.Spec.PodName != "" {
		return cp.Spec.PodName
	}
	return cp.Spec.SandboxName
}

// podInfoOnly says whether contents are OpenKruise's podInfo alone.
func podInfoOnly(contents []agents.ContentType) bool {
	for _, ct := range contents {
		if ct != ContentPodInfo {
			return false
		}
	}
	return len(contents) > 0
}

// podInfoOnly ends a Checkpoint of podInfo alone Succeeded at once: there
// is no state to capture (the Pod's definition is the Pod's), and so no
// finalizer.
func (c *Capturer) podInfoOnly(ctx context.Context, cp *agents.Checkpoint, dryRun bool) (*agents.Checkpoint, error) {
	now := metav1.Now()
	msg := "podInfo only: nothing to capture"
	cp.Status = agents.CheckpointStatus{
		Phase: agents.PhaseSucceeded, ObservedGeneration: cp.Generation, CheckpointID: agents.CheckpointID(cp.UID),
		CompletionTime: &now, Message: msg, Contents: []agents.ContentType{ContentPodInfo},
		CaptureDuration: &metav1.Duration{},
		Conditions:      []metav1.Condition{condition(metav1.ConditionTrue, ReasonCaptured, msg, cp.Generation)},
	}
	if dryRun {
		return cp, nil
	}
	return c.writeStatus(ctx, cp)
}

// run does the capture of a Checkpoint already moved to Creating.
func (c *Capturer) run(ctx context.Context, cp *agents.Checkpoint, timeout time.Duration) (*agents.Checkpoint, error) {
	logger := klog.FromContext(ctx).WithValues("checkpoint", klog.KObj(cp))
	// The capture goes on if the client goes away: only its own timeout stops it.
	captureCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	start := time.Now()

	contents := contentsOf(cp)
	req := driver.CaptureRequest{ID: agents.CheckpointID(cp.UID)}
	for _, ct := range contents {
		if ct != ContentPodInfo {
			req.Contents = append(req.Contents, driver.Content(ct))
		}
	}
	targetName := targetOf(cp)

	target, err := c.resolver.Resolve(captureCtx, cp.Namespace, targetName)
	if err == nil {
		req.Key, err = c.newKey(captureCtx, cp, target.Template)
	}
	var result driver.CaptureResult
	if err == nil {
		result, err = c.driver.Capture(captureCtx, target, req)
	}
	elapsed := time.Since(start)
	if err != nil {
		reason := failureReason(captureCtx, err)
		logger.Info("Capture failed", "reason", reason, "err", err)
		msg := fmt.Sprintf("capture of %s/%s failed: %v", cp.Namespace, targetName, err)
		captureDuration.WithLabelValues(string(agents.PhaseFailed), reason).Observe(elapsed.Seconds())
		driverErrors.WithLabelValues("capture", reason).Inc()
		c.event(cp, corev1.EventTypeWarning, EventCaptureFailed, "%s: %s", reason, msg)
		return c.finish(ctx, cp.Namespace, cp.Name, func(s *agents.CheckpointStatus) {
			now := metav1.Now()
			s.Phase = agents.PhaseFailed
			s.Message = msg
			s.CompletionTime = &now
			s.CaptureDuration = &metav1.Duration{Duration: elapsed}
			meta.SetStatusCondition(&s.Conditions, condition(metav1.ConditionFalse, reason, msg, cp.Generation))
		})
	}

	// Counted, and (below) recorded, under the namespace's lock: two
	// captures in this process cannot both take its last bytes. Before the
	// source is stopped: a capture over the limit ends nothing.
	unlock := c.lockNamespace(cp.Namespace)
	defer unlock()
	over, err := c.overBytes(ctx, cp, max(result.SizeBytes, 1))
	if over != "" || err != nil {
		reason := ReasonQuotaExceeded
		msg := fmt.Sprintf("capture of %s/%s not kept: %s", cp.Namespace, targetName, over)
		if err != nil {
			reason, msg = ReasonCaptureFailed, fmt.Sprintf("capture of %s/%s not kept: cannot count the namespace's checkpoint bytes: %v", cp.Namespace, targetName, err)
		}
		dctx := context.WithoutCancel(ctx)
		if delErr := c.driver.Delete(dctx, result.ID); delErr != nil {
			logger.Error(delErr, "Could not remove the state of a capture over its namespace's bytes", "id", result.ID)
		}
		if keyErr := c.destroyKey(dctx, cp.UID); keyErr != nil {
			logger.Error(keyErr, "Could not destroy the data key of a capture over its namespace's bytes", "id", result.ID)
		}
		c.event(cp, corev1.EventTypeWarning, reason, "%s", msg)
		return c.finish(ctx, cp.Namespace, cp.Name, func(s *agents.CheckpointStatus) {
			now := metav1.Now()
			s.Phase, s.Message, s.CompletionTime = agents.PhaseFailed, msg, &now
			s.CaptureDuration = &metav1.Duration{Duration: elapsed}
			meta.SetStatusCondition(&s.Conditions, condition(metav1.ConditionFalse, reason, msg, cp.Generation))
		})
	}

	msg := fmt.Sprintf("captured %s of %s/%s", joinContents(contents), cp.Namespace, targetName)
	// keepRunning false: the source is stopped only once the capture is
	// recorded Succeeded, so a server that dies in between leaves the
	// source running beside its checkpoint, never a source gone with no
	// checkpoint of it (a pause's sandbox would be lost).
	stop := cp.Spec.KeepRunning != nil && !*cp.Spec.KeepRunning
	recorded := msg
	if stop {
		recorded += "; stopping the source"
	}
	// The pause is CRIU's count, the capture the server's: never report
	// more of one than of the other.
	pause := min(result.Pause, elapsed)
	logger.Info("Captured", "id", result.ID, "bytes", result.SizeBytes, "pause", pause, "duration", elapsed)
	captureDuration.WithLabelValues(string(agents.PhaseSucceeded), ReasonCaptured).Observe(elapsed.Seconds())
	captureSize.WithLabelValues(string(agents.PhaseSucceeded), ReasonCaptured).Observe(float64(result.SizeBytes))
	paused := ""
	if pause > 0 {
		capturePause.WithLabelValues(string(agents.PhaseSucceeded), ReasonCaptured).Observe(pause.Seconds())
		paused = fmt.Sprintf(" (paused %s)", pause.Round(time.Millisecond))
	}
	out, err := c.finish(ctx, cp.Namespace, cp.Name, func(s *agents.CheckpointStatus) {
		now := metav1.Now()
		s.Phase = agents.PhaseSucceeded
		s.CheckpointID = result.ID
		s.CompletionTime = &now
		s.Message = recorded
		s.SizeBytes = result.SizeBytes
		s.CaptureDuration = &metav1.Duration{Duration: elapsed}
		s.PauseDuration = nil
		if pause > 0 {
			s.PauseDuration = &metav1.Duration{Duration: pause}
		}
		s.Image, s.ImageDigest = "", ""
		if p := result.Published; p != nil {
			s.Image, s.ImageDigest = p.Image, p.Digest
		}
		s.Contents = nil
		for _, ct := range result.Contents {
			s.Contents = append(s.Contents, agents.ContentType(ct))
		}
		meta.SetStatusCondition(&s.Conditions, condition(metav1.ConditionTrue, ReasonCaptured, recorded, cp.Generation))
	})
	if err == nil && stop {
		if stopErr := c.stopper.Stop(context.WithoutCancel(ctx), target); stopErr != nil {
			msg += fmt.Sprintf("; stopping the source failed: %v", stopErr)
		} else {
			msg += "; the source was stopped"
		}
		if stopped, werr := c.finish(ctx, cp.Namespace, cp.Name, func(s *agents.CheckpointStatus) {
			s.Message = msg
			meta.SetStatusCondition(&s.Conditions, condition(metav1.ConditionTrue, ReasonCaptured, msg, cp.Generation))
		}); werr == nil {
			out = stopped
		}
	}
	if err == nil {
		c.event(cp, corev1.EventTypeNormal, EventCaptured, "%s: %s in %s%s, checkpoint %s", msg,
			resource.NewQuantity(result.SizeBytes, resource.BinarySI), elapsed.Round(time.Millisecond), paused, result.ID)
	}
	if err != nil {
		// The state exists but no Checkpoint records it: remove it rather than leak it.
		if delErr := c.driver.Delete(context.WithoutCancel(ctx), result.ID); delErr != nil {
			logger.Error(delErr, "Could not remove the state of an unrecorded capture", "id", result.ID)
		}
	}
	return out, err
}

// ReplicaLiveness tells whether the process that started a capture still
// runs (Leases each replica renews, for example).
type ReplicaLiveness interface {
	// Alive reports whether replica's process incarnation runs, for a
	// capture it started at started; known is false when it cannot tell.
	// why says what told that it does not run.
	Alive(ctx context.Context, replica, incarnation string, started time.Time) (alive, known bool, why string)
}

// livenessRecheck is how often another replica's capture is looked at again
// while its process is known to run.
const livenessRecheck = 10 * time.Second

// abandoned says whether the Creating Checkpoint cp is captured by nobody:
// its marker names this replica in an earlier incarnation (this process
// restarted), or another replica's process that is known to be gone (it
// restarted, or stopped renewing its liveness), or its capture (or,
// without a marker, its move to Creating) started longer ago than any
// capture may run; why says which. Otherwise it returns how long to wait
// before asking again.
func (c *Capturer) abandoned(ctx context.Context, cp *agents.Checkpoint, now time.Time) (gone bool, why string, wait time.Duration) {
	if c.InFlight(cp.UID) {
		return false, "", MaxCaptureTimeout
	}
	var started time.Time
	parts := strings.Split(cp.Annotations[agents.AnnotationCapturedBy], "/")
	known, alive := false, false
	if len(parts) == 3 {
		if parts[0] == c.replica && parts[1] == c.incarnation {
			// This very process started it and it is no longer in flight:
			// its last write is landing (a read can see Creating just
			// before it), unless that write gave up long ago.
			secs, _ := strconv.ParseInt(parts[2], 10, 64)
			if now.After(time.Unix(secs, 0).Add(MaxCaptureTimeout + 2*time.Minute + 30*time.Second)) {
				return true, "its capture's last status write never landed", 0
			}
			return false, "", 10 * time.Second
		}
		if parts[0] == c.replica {
			// This replica is capturing it only if it is in flight here.
			return true, "this replica restarted", 0
		}
		if secs, err := strconv.ParseInt(parts[2], 10, 64); err == nil {
			started = time.Unix(secs, 0)
		}
		if c.liveness != nil {
			var why string
			alive, known, why = c.liveness.Alive(ctx, parts[0], parts[1], started)
			if known && !alive {
				return true, why, 0
			}
		}
	}
	if started.IsZero() {
		// Moved to Creating by someone else than a capture (a status write
		// by hand): from when its Ready condition last changed, or its creation.
		started = cp.CreationTimestamp.Time
		if ready := meta.FindStatusCondition(cp.Status.Conditions, agents.ConditionReady); ready != nil {
			started = ready.LastTransitionTime.Time
		}
	}
	// Another replica (or a hand-written status): a capture ends within MaxCaptureTimeout and
	// the final write's retries; past that, it is gone.
	deadline := started.Add(MaxCaptureTimeout + 2*time.Minute + 30*time.Second)
	if now.After(deadline) {
		return true, "no capture runs this long", 0
	}
	wait = deadline.Sub(now)
	if known && wait > livenessRecheck {
		// Its process runs now; it may stop before the deadline.
		wait = livenessRecheck
	}
	return false, "", wait
}

func failureReason(ctx context.Context, err error) string {
	switch {
	case errors.Is(err, driver.ErrTargetNotFound):
		return ReasonTargetNotFound
	case errors.Is(err, driver.ErrUnavailable):
		return ReasonDriverUnavailable
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil:
		return ReasonTimeout
	default:
		return ReasonCaptureFailed
	}
}

// CaptureREST is checkpoints/capture: POST captures synchronously and
// returns the finished Checkpoint.
type CaptureREST struct {
	capturer *Capturer
}

var _ rest.NamedCreater = &CaptureREST{}

// New returns the body type of a capture request.
func (r *CaptureREST) New() runtime.Object { return &agents.CaptureOptions{} }

// Destroy does nothing: the capturer belongs to the main storage.
func (r *CaptureREST) Destroy() {}

// Create runs the capture of the named Checkpoint.
func (r *CaptureREST) Create(ctx context.Context, name string, obj runtime.Object, createValidation rest.ValidateObjectFunc, options *metav1.CreateOptions) (runtime.Object, error) {
	opts, ok := obj.(*agents.CaptureOptions)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("not a CaptureOptions: %T", obj))
	}
	timeout := r.capturer.defaultTimeout
	if opts.TimeoutSeconds != nil {
		t := time.Duration(*opts.TimeoutSeconds) * time.Second
		if t <= 0 || t > MaxCaptureTimeout {
			return nil, apierrors.NewInvalid(agents.Kind("CaptureOptions"), name, field.ErrorList{
				field.Invalid(field.NewPath("timeoutSeconds"), *opts.TimeoutSeconds,
					fmt.Sprintf("must be between 1 and %d", int(MaxCaptureTimeout.Seconds()))),
			})
		}
		timeout = t
	}
	namespace, err := admit(ctx, obj, createValidation)
	if err != nil {
		return nil, err
	}
	return r.capturer.Capture(ctx, namespace, name, timeout, len(options.DryRun) > 0)
}

// admit runs the admission chain on an action's body and returns the
// request's namespace, which every action on a Checkpoint needs.
func admit(ctx context.Context, obj runtime.Object, createValidation rest.ValidateObjectFunc) (string, error) {
	if createValidation != nil {
		if err := createValidation(ctx, obj.DeepCopyObject()); err != nil {
			return "", err
		}
	}
	namespace, ok := genericapirequest.NamespaceFrom(ctx)
	if !ok || namespace == "" {
		return "", apierrors.NewBadRequest("a namespace is required")
	}
	return namespace, nil
}
