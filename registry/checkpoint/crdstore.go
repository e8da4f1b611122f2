package checkpoint

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/validation"
	"github.com/agents-kruise/checkpoint-apiserver/generated/clientset/versioned"
)

// CRDFinalizer is OpenKruise Agents' name for the finalizer that keeps a
// Checkpoint until its captured state is deleted.
const CRDFinalizer = "agents.kruise.io/checkpoint"

// ContentPodInfo is OpenKruise's content kind for the Pod's definition
// alone: a Checkpoint of only that succeeds at once, capturing nothing.
const ContentPodInfo = validation.ContentPodInfo

// crdStore keeps Checkpoints as custom resources of OpenKruise Agents'
// Checkpoint CRD in the kube-apiserver (crd mode), through the same typed
// client as this server's own API: the CRD serves the same group, version
// and resource, in JSON. The CRD's schema prunes what it does not know
// (conditions, sizes), and its status subresource ignores metadata, so
// UpdateStatus writes the metadata first. Writes are merge patches of what
// this server owns, never whole objects: nothing it does not model is lost.
type crdStore struct {
	client versioned.Interface
}

// NewCRDStore returns the Store over Checkpoint CRs that client reaches.
func NewCRDStore(client versioned.Interface) Store { return crdStore{client: client} }

func toInternal(in *v1alpha1.Checkpoint) (*agents.Checkpoint, error) {
	out := &agents.Checkpoint{}
	if err := v1alpha1.Convert_v1alpha1_Checkpoint_To_agents_Checkpoint(in, out, nil); err != nil {
		return nil, err
	}
	if out.Status.Image == "" && out.Status.ImageDigest == "" {
		out.Status.Image, out.Status.ImageDigest = in.Annotations[agents.AnnotationImage], in.Annotations[agents.AnnotationImageDigest]
	}
	if out.Status.SizeBytes == 0 {
		out.Status.SizeBytes, _ = strconv.ParseInt(in.Annotations[agents.AnnotationSizeBytes], 10, 64)
	}
	return out, nil
}

func toExternal(in *agents.Checkpoint) (*v1alpha1.Checkpoint, error) {
	out := &v1alpha1.Checkpoint{}
	if err := v1alpha1.Convert_agents_Checkpoint_To_v1alpha1_Checkpoint(in, out, nil); err != nil {
		return nil, err
	}
	out.APIVersion, out.Kind = v1alpha1.SchemeGroupVersion.String(), "Checkpoint"
	return out, nil
}

func (s crdStore) Get(ctx context.Context, namespace, name string) (*agents.Checkpoint, error) {
	cp, err := s.client.AgentsV1alpha1().Checkpoints(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return toInternal(cp)
}

// UpdateStatus writes, when they changed, the metadata that goes with the
// status (the capture marker; the finalizer once a capture starts, since
// nothing adds it at creation; the checkpoint-id label on success), then
// the status, each against the resourceVersion the last write returned.
// Both are merge patches of what this server owns: whatever else the CR
// holds (status.podTemplateDelta, another controller's annotations, fields
// of a newer OpenKruise) survives.
func (s crdStore) UpdateStatus(ctx context.Context, cp *agents.Checkpoint) (*agents.Checkpoint, error) {
	want := cp.DeepCopy()
	if want.Status.Phase == agents.PhaseCreating && !hasFinalizer(want.Finalizers, CRDFinalizer) {
		want.Finalizers = append(want.Finalizers, CRDFinalizer)
	}
	if want.Status.Phase == agents.PhaseSucceeded && want.Status.CheckpointID != "" {
		setLabel(want, agents.LabelCheckpointID, want.Status.CheckpointID)
	}
	// The CRD prunes these status fields: they live in annotations.
	setAnnotation(want, agents.AnnotationImage, want.Status.Image)
	setAnnotation(want, agents.AnnotationImageDigest, want.Status.ImageDigest)
	size := ""
	if want.Status.SizeBytes > 0 {
		size = strconv.FormatInt(want.Status.SizeBytes, 10)
	}
	setAnnotation(want, agents.AnnotationSizeBytes, size)
	current, err := s.current(ctx, cp)
	if err != nil {
		return nil, err
	}
	if current, err = s.patchMetadata(ctx, current, want); err != nil {
		return nil, err
	}
	out, err := toExternal(want)
	if err != nil {
		return nil, err
	}
	status, err := json.Marshal(out.Status)
	if err != nil {
		return nil, err
	}
	fields := map[string]any{}
	if err := json.Unmarshal(status, &fields); err != nil {
		return nil, err
	}
	for _, f := range crdStatusFields {
		if _, set := fields[f]; !set {
			fields[f] = nil // cleared
		}
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"resourceVersion": current.ResourceVersion}, "status": fields})
	if err != nil {
		return nil, err
	}
	updated, err := s.client.AgentsV1alpha1().Checkpoints(cp.Namespace).Patch(ctx, cp.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil {
		return nil, err
	}
	return toInternal(updated)
}

// crdStatusFields are the status fields of OpenKruise's Checkpoint CRD that
// this server writes: a status patch sets each, or clears it. The CRD's
// schema prunes the rest of this server's status (conditions, sizes).
var crdStatusFields = []string{"observedGeneration", "phase", "message", "checkpointId", "completionTime"}

// current reads cp as it is, refusing a write from a stale read.
func (s crdStore) current(ctx context.Context, cp *agents.Checkpoint) (*v1alpha1.Checkpoint, error) {
	current, err := s.client.AgentsV1alpha1().Checkpoints(cp.Namespace).Get(ctx, cp.Name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	if current.ResourceVersion != cp.ResourceVersion || current.UID != cp.UID {
		return nil, apierrors.NewConflict(v1alpha1.Resource("checkpoints"), cp.Name, fmt.Errorf("the checkpoint changed since it was read"))
	}
	return current, nil
}

// patchMetadata makes current's labels, annotations and finalizers want's,
// by a merge patch against current's resourceVersion (only the keys that
// differ; nothing else of the object).
func (s crdStore) patchMetadata(ctx context.Context, current *v1alpha1.Checkpoint, want *agents.Checkpoint) (*v1alpha1.Checkpoint, error) {
	if sameMetadata(current, want) {
		return current, nil
	}
	diff := func(have, want map[string]string) map[string]any {
		out := map[string]any{}
		for k, v := range want {
			if have[k] != v {
				out[k] = v
			}
		}
		for k := range have {
			if _, kept := want[k]; !kept {
				out[k] = nil
			}
		}
		return out
	}
	meta := map[string]any{"resourceVersion": current.ResourceVersion,
		"labels": diff(current.Labels, want.Labels), "annotations": diff(current.Annotations, want.Annotations)}
	if !sets.New(current.Finalizers...).Equal(sets.New(want.Finalizers...)) {
		meta["finalizers"] = want.Finalizers
		if len(want.Finalizers) == 0 {
			meta["finalizers"] = nil
		}
	}
	patch, err := json.Marshal(map[string]any{"metadata": meta})
	if err != nil {
		return nil, err
	}
	return s.client.AgentsV1alpha1().Checkpoints(current.Namespace).Patch(ctx, current.Name, types.MergePatchType, patch, metav1.PatchOptions{})
}

func sameMetadata(have *v1alpha1.Checkpoint, want *agents.Checkpoint) bool {
	return maps.Equal(have.Labels, want.Labels) && maps.Equal(have.Annotations, want.Annotations) &&
		sets.New(have.Finalizers...).Equal(sets.New(want.Finalizers...))
}

// Update writes cp's metadata (a finalizer removed): the spec of a CR is
// immutable, and nothing else of it is this server's.
func (s crdStore) Update(ctx context.Context, cp *agents.Checkpoint) (*agents.Checkpoint, error) {
	current, err := s.current(ctx, cp)
	if err != nil {
		return nil, err
	}
	updated, err := s.patchMetadata(ctx, current, cp)
	if err != nil {
		return nil, err
	}
	return toInternal(updated)
}

func (s crdStore) Delete(ctx context.Context, namespace, name string, uid types.UID) error {
	return s.client.AgentsV1alpha1().Checkpoints(namespace).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
}

// ListCreating lists every Checkpoint and keeps the Creating ones: a CRD
// offers no field selector on status.phase.
func (s crdStore) ListCreating(ctx context.Context) ([]agents.Checkpoint, error) {
	return s.listIn(ctx, metav1.NamespaceAll, v1alpha1.PhaseCreating)
}

func (s crdStore) ListSucceeded(ctx context.Context, namespace string) ([]agents.Checkpoint, error) {
	return s.listIn(ctx, namespace, v1alpha1.PhaseSucceeded)
}

// listIn lists namespace's Checkpoints in phase.
func (s crdStore) listIn(ctx context.Context, namespace string, phase v1alpha1.CheckpointPhase) ([]agents.Checkpoint, error) {
	list, err := s.client.AgentsV1alpha1().Checkpoints(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []agents.Checkpoint
	for i := range list.Items {
		if list.Items[i].Status.Phase != phase {
			continue
		}
		cp, err := toInternal(&list.Items[i])
		if err != nil {
			return nil, err
		}
		out = append(out, *cp)
	}
	return out, nil
}

func (s crdStore) Finalizer() string { return CRDFinalizer }
