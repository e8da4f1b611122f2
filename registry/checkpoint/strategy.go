package checkpoint

import (
	"context"
	"fmt"
	"maps"

	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation/field"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/generic"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/names"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	"github.com/agents-kruise/checkpoint-apiserver/access"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/validation"
)

// Strategy is how the main checkpoints resource is created, updated and deleted.
type Strategy struct {
	runtime.ObjectTyper
	names.NameGenerator
	// adminGroups may set the owner annotation explicitly (for migration).
	adminGroups sets.Set[string]
}

var (
	_ rest.RESTCreateStrategy              = Strategy{}
	_ rest.RESTUpdateStrategy              = Strategy{}
	_ rest.RESTDeleteStrategy              = Strategy{}
	_ rest.ResetFieldsStrategy             = Strategy{}
	_ rest.RESTUpdateStrategy              = StatusStrategy{}
	_ rest.ResetFieldsStrategy             = StatusStrategy{}
	_ rest.GarbageCollectionDeleteStrategy = Strategy{}
)

// NewStrategy returns the strategies of the main resource and of checkpoints/status.
func NewStrategy(typer runtime.ObjectTyper, adminGroups []string) (Strategy, StatusStrategy) {
	s := Strategy{ObjectTyper: typer, NameGenerator: names.SimpleNameGenerator, adminGroups: sets.New(adminGroups...)}
	return s, StatusStrategy{Strategy: s}
}

// NamespaceScoped is true: Checkpoints live beside the Pods they capture.
func (Strategy) NamespaceScoped() bool { return true }

// DefaultGarbageCollectionPolicy lets owner references clean up Checkpoints.
func (Strategy) DefaultGarbageCollectionPolicy(context.Context) rest.GarbageCollectionPolicy {
	return rest.DeleteDependents
}

// GetResetFields says that the main resource never writes status.
func (Strategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return map[fieldpath.APIVersion]*fieldpath.Set{
		"agents.kruise.io/v1alpha1": fieldpath.NewSet(fieldpath.MakePathOrDie("status")),
	}
}

// PrepareForCreate starts every Checkpoint Pending, whatever status the
// client sent, and stamps the labels and owner the server maintains.
func (s Strategy) PrepareForCreate(ctx context.Context, obj runtime.Object) {
	cp := obj.(*agents.Checkpoint)
	cp.Status = agents.CheckpointStatus{Phase: agents.PhasePending}
	cp.Generation = 1
	setLabel(cp, agents.LabelSandboxName, sandboxName(&cp.Spec))
	delete(cp.Labels, agents.LabelCheckpointID)
	if !hasFinalizer(cp.Finalizers, Finalizer) {
		cp.Finalizers = append(cp.Finalizers, Finalizer)
	}
	s.stampOwner(ctx, cp)
	// Who created it, groups and all, for the capture to check again when
	// it runs; only the request's authenticated user, never what was sent.
	creator := ""
	if u, ok := genericapirequest.UserFrom(ctx); ok {
		creator = access.EncodeUser(u)
	}
	setAnnotation(cp, agents.AnnotationCreator, creator)
}

// stampOwner records who created the Checkpoint. Only members of an admin
// group may name another owner; everyone else is the owner of what they create.
func (s Strategy) stampOwner(ctx context.Context, cp *agents.Checkpoint) {
	u, ok := genericapirequest.UserFrom(ctx)
	if !ok {
		return
	}
	if s.isAdmin(u.GetGroups()) && cp.Annotations[agents.AnnotationOwner] != "" {
		return
	}
	if cp.Annotations == nil {
		cp.Annotations = map[string]string{}
	}
	cp.Annotations[agents.AnnotationOwner] = u.GetName()
}

func (s Strategy) isAdmin(groups []string) bool {
	return s.adminGroups.HasAny(groups...)
}

// PrepareForUpdate keeps status and the server-maintained metadata: they
// change only through checkpoints/status or by an admin (the owner).
func (s Strategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	cp, oldCp := obj.(*agents.Checkpoint), old.(*agents.Checkpoint)
	cp.Status = oldCp.Status
	keepServerMetadata(ctx, s, cp, oldCp)
}

func keepServerMetadata(ctx context.Context, s Strategy, cp, old *agents.Checkpoint) {
	setLabel(cp, agents.LabelSandboxName, old.Labels[agents.LabelSandboxName])
	setLabel(cp, agents.LabelCheckpointID, old.Labels[agents.LabelCheckpointID])
	setAnnotation(cp, agents.AnnotationCreator, old.Annotations[agents.AnnotationCreator]) // nobody's to change
	if !isServerWrite(ctx) {
		// The capture marker is the server's: a forged one would make the
		// leader take a running capture for an abandoned one.
		setAnnotation(cp, agents.AnnotationCapturedBy, old.Annotations[agents.AnnotationCapturedBy])
	}
	if u, ok := genericapirequest.UserFrom(ctx); ok && s.isAdmin(u.GetGroups()) && cp.Annotations[agents.AnnotationOwner] != "" {
		return
	}
	setAnnotation(cp, agents.AnnotationOwner, old.Annotations[agents.AnnotationOwner])
}

// Validate checks a new Checkpoint.
func (Strategy) Validate(_ context.Context, obj runtime.Object) field.ErrorList {
	return validation.ValidateCheckpoint(obj.(*agents.Checkpoint))
}

// WarningsOnCreate has nothing to warn about yet.
func (Strategy) WarningsOnCreate(context.Context, runtime.Object) []string { return nil }

// Canonicalize has nothing to normalize.
func (Strategy) Canonicalize(runtime.Object) {}

// AllowCreateOnUpdate is false: a Checkpoint is created by POST only.
func (Strategy) AllowCreateOnUpdate(context.Context) bool { return false }

// AllowUnconditionalUpdate lets clients update without a resourceVersion.
func (Strategy) AllowUnconditionalUpdate(context.Context) bool { return true }

// ValidateUpdate rejects any change of spec, naming the field.
func (Strategy) ValidateUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	return validation.ValidateCheckpointUpdate(obj.(*agents.Checkpoint), old.(*agents.Checkpoint))
}

// WarningsOnUpdate has nothing to warn about yet.
func (Strategy) WarningsOnUpdate(context.Context, runtime.Object, runtime.Object) []string {
	return nil
}

// StatusStrategy is how checkpoints/status is updated.
type StatusStrategy struct {
	Strategy
}

// GetResetFields says that the status subresource never writes spec.
func (StatusStrategy) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return map[fieldpath.APIVersion]*fieldpath.Set{
		"agents.kruise.io/v1alpha1": fieldpath.NewSet(fieldpath.MakePathOrDie("spec")),
	}
}

// PrepareForUpdate keeps spec and metadata, and keeps the checkpoint-id label
// in step with status.checkpointId once the capture has succeeded.
func (s StatusStrategy) PrepareForUpdate(ctx context.Context, obj, old runtime.Object) {
	cp, oldCp := obj.(*agents.Checkpoint), old.(*agents.Checkpoint)
	cp.Spec = oldCp.Spec
	marker, marked := cp.Annotations[agents.AnnotationCapturedBy]
	if !isServerWrite(ctx) {
		marker, marked = oldCp.Annotations[agents.AnnotationCapturedBy]
	}
	cp.Labels, cp.Annotations = maps.Clone(oldCp.Labels), maps.Clone(oldCp.Annotations)
	// The capture marker is the one annotation status writes carry: it is
	// set with Creating and goes when the capture ends.
	switch {
	case cp.Status.Phase == agents.PhaseCreating && marked:
		setAnnotation(cp, agents.AnnotationCapturedBy, marker)
	case cp.Status.Phase != agents.PhaseCreating:
		delete(cp.Annotations, agents.AnnotationCapturedBy)
	}
	if cp.Status.Phase == agents.PhaseSucceeded && cp.Status.CheckpointID != "" {
		setLabel(cp, agents.LabelCheckpointID, cp.Status.CheckpointID)
	}
}

// ValidateUpdate checks the status and that its phase only moves forward.
// status.checkpointId is the server's: always the one derived from the
// object's UID, and set through the API by an admin alone (migration).
func (s StatusStrategy) ValidateUpdate(ctx context.Context, obj, old runtime.Object) field.ErrorList {
	cp, oldCp := obj.(*agents.Checkpoint), old.(*agents.Checkpoint)
	errs := validation.ValidateCheckpointStatusUpdate(cp, oldCp)
	idPath := field.NewPath("status", "checkpointId")
	if id := cp.Status.CheckpointID; id != "" && id != agents.CheckpointID(cp.UID) {
		errs = append(errs, field.Forbidden(idPath, "is the server's: derived from the Checkpoint's own UID"))
	}
	u, ok := genericapirequest.UserFrom(ctx)
	admin := ok && s.isAdmin(u.GetGroups())
	if !isServerWrite(ctx) && !admin && cp.Status.CheckpointID != oldCp.Status.CheckpointID {
		errs = append(errs, field.Forbidden(idPath, "is written by the server only"))
	}
	return errs
}

// WarningsOnUpdate has nothing to warn about yet.
func (StatusStrategy) WarningsOnUpdate(context.Context, runtime.Object, runtime.Object) []string {
	return nil
}

func sandboxName(spec *agents.CheckpointSpec) string {
	if spec.SandboxName != "" {
		return spec.SandboxName
	}
	return spec.PodName
}

func setLabel(cp *agents.Checkpoint, key, value string) {
	if value == "" {
		delete(cp.Labels, key)
		return
	}
	if cp.Labels == nil {
		cp.Labels = map[string]string{}
	}
	cp.Labels[key] = value
}

func setAnnotation(cp *agents.Checkpoint, key, value string) {
	if value == "" {
		delete(cp.Annotations, key)
		return
	}
	if cp.Annotations == nil {
		cp.Annotations = map[string]string{}
	}
	cp.Annotations[key] = value
}

// Fields that can be selected on, and the ones the watch cache indexes
// because the server and E2B look Checkpoints up by them.
var indexedFields = []string{"spec.sandboxName", "status.checkpointId", FieldOwner}

// FieldOwner selects Checkpoints by their agents.kruise.io/owner annotation.
const FieldOwner = "owner"

// GetAttrs returns the labels and selectable fields of a Checkpoint.
func GetAttrs(obj runtime.Object) (labels.Set, fields.Set, error) {
	cp, ok := obj.(*agents.Checkpoint)
	if !ok {
		return nil, nil, fmt.Errorf("not a Checkpoint: %T", obj)
	}
	return cp.Labels, SelectableFields(cp), nil
}

// SelectableFields returns the field set that field selectors match against.
func SelectableFields(cp *agents.Checkpoint) fields.Set {
	return generic.AddObjectMetaFieldsSet(fields.Set{
		"spec.podName":        cp.Spec.PodName,
		"spec.sandboxName":    cp.Spec.SandboxName,
		"status.phase":        string(cp.Status.Phase),
		"status.checkpointId": cp.Status.CheckpointID,
		FieldOwner:            cp.Annotations[agents.AnnotationOwner],
	}, &cp.ObjectMeta, true)
}

// Match returns the predicate a list or watch filters with.
func Match(label labels.Selector, field fields.Selector) storage.SelectionPredicate {
	return storage.SelectionPredicate{
		Label:       label,
		Field:       field,
		GetAttrs:    GetAttrs,
		IndexFields: indexedFields,
	}
}
