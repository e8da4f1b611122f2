package checkpoint

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/runtime"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/driver"
)

// RestoreREST is checkpoints/restore: POST clones a new sandbox from a
// Succeeded Checkpoint and answers with the sandbox made.
type RestoreREST struct {
	capturer *Capturer
	// isAdmin says whether a user may restore Checkpoints it does not own.
	isAdmin func(groups []string) bool
}

var _ rest.NamedCreater = &RestoreREST{}

// New returns the body type of a restore request.
func (r *RestoreREST) New() runtime.Object { return &agents.CheckpointRestore{} }

// Destroy does nothing: the driver belongs to the main storage.
func (r *RestoreREST) Destroy() {}

func validateRestore(name string, req *agents.CheckpointRestore) field.ErrorList {
	var errs field.ErrorList
	if req.Name != "" && req.Name != name {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), req.Name, "must be empty or the checkpoint's name"))
	}
	p := field.NewPath("spec", "sandboxName")
	if req.Spec.SandboxName == "" {
		errs = append(errs, field.Required(p, "the new sandbox needs a name"))
	}
	for _, msg := range utilvalidation.IsDNS1123Subdomain(req.Spec.SandboxName) {
		if req.Spec.SandboxName != "" {
			errs = append(errs, field.Invalid(p, req.Spec.SandboxName, msg))
		}
	}
	if n := req.Spec.NodeName; n != "" {
		for _, msg := range utilvalidation.IsDNS1123Subdomain(n) {
			errs = append(errs, field.Invalid(field.NewPath("spec", "nodeName"), n, msg))
		}
	}
	return append(errs, metav1validation.ValidateLabels(req.Spec.Labels, field.NewPath("spec", "labels"))...)
}

// Create restores the named Checkpoint into a new sandbox.
func (r *RestoreREST) Create(ctx context.Context, name string, obj runtime.Object, createValidation rest.ValidateObjectFunc, options *metav1.CreateOptions) (runtime.Object, error) {
	req, ok := obj.(*agents.CheckpointRestore)
	if !ok {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("not a CheckpointRestore: %T", obj))
	}
	if errs := validateRestore(name, req); len(errs) > 0 {
		return nil, apierrors.NewInvalid(agents.Kind("CheckpointRestore"), name, errs)
	}
	namespace, err := admit(ctx, obj, createValidation)
	if err != nil {
		return nil, err
	}
	cp, err := r.capturer.get(ctx, namespace, name)
	if err != nil {
		return nil, err
	}
	if u, ok := genericapirequest.UserFrom(ctx); !ok || (!r.isAdmin(u.GetGroups()) && cp.Annotations[agents.AnnotationOwner] != u.GetName()) {
		return nil, apierrors.NewForbidden(agents.Resource("checkpoints/restore"), name,
			fmt.Errorf("only the checkpoint's owner (%s) may restore it", cp.Annotations[agents.AnnotationOwner]))
	}
	if cp.Status.Phase != agents.PhaseSucceeded || cp.DeletionTimestamp != nil {
		return nil, apierrors.NewConflict(agents.Resource("checkpoints"), name,
			fmt.Errorf("the checkpoint is %s: only a Succeeded checkpoint can be restored", cp.Status.Phase))
	}
	out := req.DeepCopy()
	out.Name, out.Namespace = name, namespace
	out.Status = agents.CheckpointRestoreStatus{SandboxName: req.Spec.SandboxName}
	if len(options.DryRun) > 0 {
		return out, nil
	}
	start := time.Now()
	template, err := r.capturer.recordedTemplate(ctx, cp)
	if err != nil {
		return nil, err
	}
	target, err := r.capturer.restorer.Restore(ctx, cp.Status.CheckpointID, driver.RestoreRequest{
		Namespace: namespace, Name: req.Spec.SandboxName, Labels: req.Spec.Labels, Node: req.Spec.NodeName,
		ImageDigest: cp.Status.ImageDigest, Template: template,
	})
	if err != nil {
		restoreDuration.WithLabelValues(string(agents.PhaseFailed)).Observe(time.Since(start).Seconds())
		driverErrors.WithLabelValues("restore", restoreErrorKind(err)).Inc()
		r.capturer.event(cp, corev1.EventTypeWarning, EventRestoreFailed, "Restore into %s failed: %v", req.Spec.SandboxName, err)
		return nil, restoreError(name, req.Spec.SandboxName, err)
	}
	restoreDuration.WithLabelValues(string(agents.PhaseSucceeded)).Observe(time.Since(start).Seconds())
	r.capturer.event(cp, corev1.EventTypeNormal, EventRestored, "Restored into %s/%s on node %q in %s",
		namespace, target.Name, target.Node, time.Since(start).Round(time.Millisecond))
	out.Status.Node = target.Node
	for _, c := range target.Containers {
		out.Status.Containers = append(out.Status.Containers, agents.RestoredContainer{Name: c.Name, ContainerID: c.ID})
	}
	return out, nil
}

// restoreErrorKind names a failed restore's kind for the error metric.
func restoreErrorKind(err error) string {
	var status apierrors.APIStatus
	switch {
	case errors.As(err, &status):
		return string(apierrors.ReasonForError(err))
	case errors.Is(err, driver.ErrUnavailable):
		return ReasonDriverUnavailable
	case errors.Is(err, driver.ErrCheckpointNotFound):
		return "CheckpointNotFound"
	case errors.Is(err, driver.ErrUnsupported):
		return "Unsupported"
	default:
		return "RestoreFailed"
	}
}

func restoreError(name, sandbox string, err error) error {
	msg := fmt.Sprintf("restore of %s into sandbox %s: %v", name, sandbox, err)
	var status apierrors.APIStatus
	switch {
	case errors.As(err, &status):
		return err // the API said why (the caller may not create the Pod, admission refused it)
	case errors.Is(err, driver.ErrUnsupported):
		return apierrors.NewBadRequest(msg)
	case errors.Is(err, driver.ErrUnavailable):
		return apierrors.NewServiceUnavailable(msg)
	case errors.Is(err, driver.ErrSandboxExists):
		return apierrors.NewAlreadyExists(agents.Resource("sandboxes"), sandbox)
	case errors.Is(err, driver.ErrCheckpointNotFound):
		return apierrors.NewGone(msg)
	default:
		return apierrors.NewInternalError(errors.New(msg))
	}
}
