package checkpoint

import (
	"context"
	"fmt"
	"maps"

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
// UpdateStatus writes the metadata first.
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
func (s crdStore) UpdateStatus(ctx context.Context, cp *agents.Checkpoint) (*agents.Checkpoint, error) {
	want := cp.DeepCopy()
	if want.Status.Phase == agents.PhaseCreating && !hasFinalizer(want.Finalizers, CRDFinalizer) {
		want.Finalizers = append(want.Finalizers, CRDFinalizer)
	}
	if want.Status.Phase == agents.PhaseSucceeded && want.Status.CheckpointID != "" {
		setLabel(want, agents.LabelCheckpointID, want.Status.CheckpointID)
	}
	cps := s.client.AgentsV1alpha1().Checkpoints(cp.Namespace)
	current, err := cps.Get(ctx, cp.Name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	if current.ResourceVersion != cp.ResourceVersion || current.UID != cp.UID {
		return nil, apierrors.NewConflict(v1alpha1.Resource("checkpoints"), cp.Name, fmt.Errorf("the checkpoint changed since it was read"))
	}
	if !sameMetadata(current, want) {
		current.Labels, current.Annotations, current.Finalizers = want.Labels, want.Annotations, want.Finalizers
		if current, err = cps.Update(ctx, current, metav1.UpdateOptions{}); err != nil {
			return nil, err
		}
	}
	out, err := toExternal(want)
	if err != nil {
		return nil, err
	}
	out.ObjectMeta = current.ObjectMeta
	updated, err := cps.UpdateStatus(ctx, out, metav1.UpdateOptions{})
	if err != nil {
		return nil, err
	}
	return toInternal(updated)
}

func sameMetadata(have *v1alpha1.Checkpoint, want *agents.Checkpoint) bool {
	return maps.Equal(have.Labels, want.Labels) && maps.Equal(have.Annotations, want.Annotations) &&
		sets.New(have.Finalizers...).Equal(sets.New(want.Finalizers...))
}

func (s crdStore) Update(ctx context.Context, cp *agents.Checkpoint) (*agents.Checkpoint, error) {
	out, err := toExternal(cp)
	if err != nil {
		return nil, err
	}
	updated, err := s.client.AgentsV1alpha1().Checkpoints(cp.Namespace).Update(ctx, out, metav1.UpdateOptions{})
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
	list, err := s.client.AgentsV1alpha1().Checkpoints(metav1.NamespaceAll).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []agents.Checkpoint
	for i := range list.Items {
		if list.Items[i].Status.Phase != v1alpha1.PhaseCreating {
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
