package snapshot

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/watch"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/registry/checkpoint"
)

// Checkpoints is where snapshots come from: this server's checkpoints
// store, or in crd mode the Checkpoint custom resources (checkpoint.CRDREST).
type Checkpoints interface {
	rest.Getter
	rest.Lister
	rest.Watcher
	rest.GracefulDeleter
}

// REST serves snapshots from the checkpoints store.
type REST struct {
	checkpoints Checkpoints
	adminGroups sets.Set[string]
}

var (
	_ rest.Getter               = &REST{}
	_ rest.Lister               = &REST{}
	_ rest.Watcher              = &REST{}
	_ rest.GracefulDeleter      = &REST{}
	_ rest.Scoper               = &REST{}
	_ rest.SingularNameProvider = &REST{}
)

// NewREST returns the snapshots view over the checkpoints store.
func NewREST(checkpoints Checkpoints, adminGroups []string) *REST {
	return &REST{checkpoints: checkpoints, adminGroups: sets.New(adminGroups...)}
}

// New returns an empty Snapshot.
func (r *REST) New() runtime.Object { return &agents.Snapshot{} }

// NewList returns an empty SnapshotList.
func (r *REST) NewList() runtime.Object { return &agents.SnapshotList{} }

// Destroy does nothing: the checkpoints store owns the storage.
func (r *REST) Destroy() {}

// NamespaceScoped is true, like Checkpoints.
func (r *REST) NamespaceScoped() bool { return true }

// GetSingularName is "snapshot".
func (r *REST) GetSingularName() string { return "snapshot" }

// owner returns the caller, and whether the caller sees everything.
func (r *REST) owner(ctx context.Context) (string, bool, error) {
	u, ok := genericapirequest.UserFrom(ctx)
	if !ok || u.GetName() == "" {
		return "", false, apierrors.NewUnauthorized("snapshots need an authenticated user")
	}
	return u.GetName(), r.adminGroups.HasAny(u.GetGroups()...), nil
}

func notFound(name string) error {
	return apierrors.NewNotFound(agents.Resource("snapshots"), name)
}

// get returns the caller's Checkpoint name, or NotFound: another owner's
// Checkpoint is indistinguishable from none.
func (r *REST) get(ctx context.Context, name string, opts *metav1.GetOptions) (*agents.Checkpoint, error) {
	owner, admin, err := r.owner(ctx)
	if err != nil {
		return nil, err
	}
	obj, err := r.checkpoints.Get(ctx, name, opts)
	if apierrors.IsNotFound(err) {
		return nil, notFound(name)
	}
	if err != nil {
		return nil, err
	}
	cp := obj.(*agents.Checkpoint)
	if !admin && cp.Annotations[agents.AnnotationOwner] != owner {
		return nil, notFound(name)
	}
	return cp, nil
}

// Get returns the caller's Snapshot.
func (r *REST) Get(ctx context.Context, name string, opts *metav1.GetOptions) (runtime.Object, error) {
	cp, err := r.get(ctx, name, opts)
	if err != nil {
		return nil, err
	}
	return toSnapshot(cp), nil
}

// scoped narrows the options to the caller's own Checkpoints. The client's
// selectors still apply: they can narrow, never widen.
func (r *REST) scoped(ctx context.Context, options *metainternalversion.ListOptions) (*metainternalversion.ListOptions, error) {
	owner, admin, err := r.owner(ctx)
	if err != nil {
		return nil, err
	}
	out := &metainternalversion.ListOptions{}
	if options != nil {
		out = options.DeepCopy()
	}
	if admin {
		return out, nil
	}
	mine := fields.OneTermEqualSelector(checkpoint.FieldOwner, owner)
	if out.FieldSelector == nil || out.FieldSelector.Empty() {
		out.FieldSelector = mine
	} else {
		out.FieldSelector = fields.AndSelectors(out.FieldSelector, mine)
	}
	return out, nil
}

// List returns the caller's Snapshots.
func (r *REST) List(ctx context.Context, options *metainternalversion.ListOptions) (runtime.Object, error) {
	scoped, err := r.scoped(ctx, options)
	if err != nil {
		return nil, err
	}
	obj, err := r.checkpoints.List(ctx, scoped)
	if err != nil {
		return nil, err
	}
	cps := obj.(*agents.CheckpointList)
	list := &agents.SnapshotList{ListMeta: cps.ListMeta, Items: make([]agents.Snapshot, 0, len(cps.Items))}
	for i := range cps.Items {
		list.Items = append(list.Items, *toSnapshot(&cps.Items[i]))
	}
	return list, nil
}

// Watch streams changes of the caller's Snapshots.
func (r *REST) Watch(ctx context.Context, options *metainternalversion.ListOptions) (watch.Interface, error) {
	scoped, err := r.scoped(ctx, options)
	if err != nil {
		return nil, err
	}
	w, err := r.checkpoints.Watch(ctx, scoped)
	if err != nil {
		return nil, err
	}
	return watch.Filter(w, func(ev watch.Event) (watch.Event, bool) {
		if cp, ok := ev.Object.(*agents.Checkpoint); ok {
			ev.Object = toSnapshot(cp)
		}
		return ev, true
	}), nil
}

// Delete deletes the caller's Checkpoint (and, through its finalizer, its captured state).
func (r *REST) Delete(ctx context.Context, name string, deleteValidation rest.ValidateObjectFunc, options *metav1.DeleteOptions) (runtime.Object, bool, error) {
	cp, err := r.get(ctx, name, &metav1.GetOptions{})
	if err != nil {
		return nil, false, err
	}
	if options == nil {
		options = &metav1.DeleteOptions{}
	}
	options = options.DeepCopy()
	uid := cp.UID
	if options.Preconditions == nil {
		options.Preconditions = &metav1.Preconditions{}
	}
	if options.Preconditions.UID != nil && *options.Preconditions.UID != uid {
		return nil, false, apierrors.NewConflict(agents.Resource("snapshots"), name, fmt.Errorf("UID precondition failed"))
	}
	options.Preconditions.UID = &uid // the object checked above, not a successor of the same name
	obj, deleted, err := r.checkpoints.Delete(ctx, name, deleteValidation, options)
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, false, notFound(name)
		}
		return nil, false, err
	}
	if cp, ok := obj.(*agents.Checkpoint); ok {
		return toSnapshot(cp), deleted, nil
	}
	return obj, deleted, nil
}

// ConvertToTable prints Snapshots as kubectl prints Checkpoints; the rows
// carry the Snapshots.
func (r *REST) ConvertToTable(ctx context.Context, obj runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	var snaps []*agents.Snapshot
	switch t := obj.(type) {
	case *agents.Snapshot:
		snaps = []*agents.Snapshot{t}
		obj = toCheckpoint(t)
	case *agents.SnapshotList:
		list := &agents.CheckpointList{ListMeta: t.ListMeta}
		for i := range t.Items {
			snaps = append(snaps, &t.Items[i])
			list.Items = append(list.Items, *toCheckpoint(&t.Items[i]))
		}
		obj = list
	}
	table, err := checkpoint.TableConvertor{}.ConvertToTable(ctx, obj, tableOptions)
	if err != nil {
		return nil, err
	}
	for i := range table.Rows {
		if i < len(snaps) {
			table.Rows[i].Object = runtime.RawExtension{Object: snaps[i]}
		}
	}
	return table, nil
}

func toSnapshot(cp *agents.Checkpoint) *agents.Snapshot {
	return &agents.Snapshot{ObjectMeta: cp.ObjectMeta, Spec: cp.Spec, Status: cp.Status}
}

func toCheckpoint(s *agents.Snapshot) *agents.Checkpoint {
	return &agents.Checkpoint{ObjectMeta: s.ObjectMeta, Spec: s.Spec, Status: s.Status}
}
