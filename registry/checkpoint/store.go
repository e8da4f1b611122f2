package checkpoint

import (
	"context"

	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
)

// Store is where the Capturer and the lifecycle controller read and write
// Checkpoints: this server's own storage (aggregated mode), or Checkpoint
// custom resources in the kube-apiserver (crd mode, crdStore). Every write
// is conflict-checked against the object's resourceVersion.
type Store interface {
	Get(ctx context.Context, namespace, name string) (*agents.Checkpoint, error)
	// UpdateStatus writes cp's status, with the metadata that goes with
	// it (the capture marker; in crd mode the finalizer and labels too).
	UpdateStatus(ctx context.Context, cp *agents.Checkpoint) (*agents.Checkpoint, error)
	// Update writes cp's metadata and spec (a finalizer removed).
	Update(ctx context.Context, cp *agents.Checkpoint) (*agents.Checkpoint, error)
	// Delete deletes the Checkpoint with uid.
	Delete(ctx context.Context, namespace, name string, uid types.UID) error
	// ListCreating lists the Checkpoints in phase Creating.
	ListCreating(ctx context.Context) ([]agents.Checkpoint, error)
	// ListSucceeded lists namespace's Checkpoints in phase Succeeded.
	ListSucceeded(ctx context.Context, namespace string) ([]agents.Checkpoint, error)
	// Finalizer is the finalizer that keeps a Checkpoint until its state is deleted.
	Finalizer() string
}

// registryStore is this server's own storage (etcd through genericregistry).
type registryStore struct {
	store, status *genericregistry.Store
}

var _ Store = registryStore{}

func (r registryStore) Get(ctx context.Context, namespace, name string) (*agents.Checkpoint, error) {
	obj, err := r.store.Get(genericapirequest.WithNamespace(ctx, namespace), name, &metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return obj.(*agents.Checkpoint), nil
}

func (r registryStore) UpdateStatus(ctx context.Context, cp *agents.Checkpoint) (*agents.Checkpoint, error) {
	return r.update(ctx, r.status, cp)
}

func (r registryStore) Update(ctx context.Context, cp *agents.Checkpoint) (*agents.Checkpoint, error) {
	return r.update(ctx, r.store, cp)
}

func (r registryStore) update(ctx context.Context, s *genericregistry.Store, cp *agents.Checkpoint) (*agents.Checkpoint, error) {
	obj, _, err := s.Update(withServerWrite(genericapirequest.WithNamespace(ctx, cp.Namespace)), cp.Name,
		rest.DefaultUpdatedObjectInfo(cp), rest.ValidateAllObjectFunc, rest.ValidateAllObjectUpdateFunc, false, &metav1.UpdateOptions{})
	if err != nil {
		return nil, err
	}
	return obj.(*agents.Checkpoint), nil
}

func (r registryStore) Delete(ctx context.Context, namespace, name string, uid types.UID) error {
	_, _, err := r.store.Delete(genericapirequest.WithNamespace(ctx, namespace), name,
		rest.ValidateAllObjectFunc, &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	return err
}

func (r registryStore) ListCreating(ctx context.Context) ([]agents.Checkpoint, error) {
	obj, err := r.store.List(ctx, &metainternalversion.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("status.phase", string(agents.PhaseCreating)),
	})
	if err != nil {
		return nil, err
	}
	return obj.(*agents.CheckpointList).Items, nil
}

func (r registryStore) ListSucceeded(ctx context.Context, namespace string) ([]agents.Checkpoint, error) {
	obj, err := r.store.List(genericapirequest.WithNamespace(ctx, namespace), &metainternalversion.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("status.phase", string(agents.PhaseSucceeded)),
	})
	if err != nil {
		return nil, err
	}
	return obj.(*agents.CheckpointList).Items, nil
}

func (r registryStore) Finalizer() string { return Finalizer }

type serverWriteKey struct{}

// withServerWrite marks ctx as the server's own write, in process: what
// only the server writes (status.checkpointId, the capture marker) it may
// write; through the API, whoever the user, nobody does.
func withServerWrite(ctx context.Context) context.Context {
	return context.WithValue(ctx, serverWriteKey{}, true)
}

func isServerWrite(ctx context.Context) bool {
	v, _ := ctx.Value(serverWriteKey{}).(bool)
	return v
}
