package checkpoint

import (
	"context"
	"fmt"
	"k8s.io/apimachinery/pkg/util/uuid"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/structured-merge-diff/v6/fieldpath"

	"github.com/agents-kruise/checkpoint-apiserver/access"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/driver"
	"github.com/agents-kruise/checkpoint-apiserver/encryption"
)

// Storage holds the REST storages of checkpoints and its subresources.
type Storage struct {
	Checkpoint *REST
	Status     *StatusREST
	Capture    *CaptureREST
	Restore    *RestoreREST
	// Capturer runs captures, for the subresource and the lifecycle controller.
	Capturer *Capturer
}

// Options are what the storage needs besides etcd.
type Options struct {
	// AdminGroups may set a Checkpoint's owner explicitly.
	AdminGroups []string
	// Driver captures, restores and deletes state; Resolver finds targets.
	Driver   driver.Driver
	Resolver driver.Resolver
	// Stopper stops the source of a keepRunning=false capture (the Driver when nil).
	Stopper driver.Stopper
	// Restorer makes clones (the Driver when nil).
	Restorer driver.Restorer
	// Recorder, when set, records Events on Checkpoints.
	Recorder record.EventRecorder
	// CaptureTimeout bounds a capture whose request names no timeout.
	CaptureTimeout time.Duration
	// Replica names this server among replicas sharing one etcd; it must
	// stay the same across restarts of one replica (a pod name does).
	Replica string
	// Incarnation names this process of the replica in its captures' markers
	// (a new UUID when empty); Liveness, when set, tells whether another
	// replica's incarnation still runs.
	Incarnation string
	Liveness    ReplicaLiveness
	// Authorizer, when set (with a kube-apiserver), is asked whether a
	// Checkpoint's creator, and a capture's caller, may capture its Pod.
	Authorizer authorizer.Authorizer
	// Quota, when set (with a kube-apiserver), is a namespace's bound on
	// its count of Checkpoints from its ResourceQuotas, which the
	// kube-apiserver does not enforce for an aggregated API.
	Quota QuotaLimit
	// BytesLimit, when set, bounds the bytes a namespace's Succeeded
	// Checkpoints hold together.
	BytesLimit BytesLimit
	// KEK, when set, wraps each capture's data key, which Keys keeps where
	// no tenant reads it: what the driver publishes is encrypted with it.
	KEK  encryption.Wrapper
	Keys Keys
}

// Keys keeps the checkpoints' records: wrapped data keys and templates
// (encryption.SecretKeys).
type Keys interface {
	Put(ctx context.Context, b encryption.Binding, rec encryption.Record) error
	Get(ctx context.Context, b encryption.Binding) (encryption.Record, error)
	Delete(ctx context.Context, id string) error
	List(ctx context.Context) (map[string]time.Time, error)
}

// QuotaResource is the object-count quota of Checkpoints.
const QuotaResource = "count/checkpoints.agents.kruise.io"

// QuotaLimit says namespace ns's tightest hard limit on QuotaResource and
// the ResourceQuota that sets it (ok false: none).
type QuotaLimit func(ctx context.Context, ns string) (limit int64, quota string, ok bool, err error)

// BytesLimit says namespace ns's bound on the bytes its Succeeded
// Checkpoints hold together, and what sets it (limit 0: none).
type BytesLimit func(ctx context.Context, ns string) (limit int64, source string, err error)

// REST is the checkpoints resource, stored in etcd.
type REST struct {
	*genericregistry.Store
	authorizer authorizer.Authorizer
	quota      QuotaLimit
	creating   sync.Mutex // one quota-checked create at a time
}

// Create creates a Checkpoint only when its creator may capture its Pod
// (access.CapturePod), since creating one is what starts its capture, and
// within the namespace's ResourceQuota on QuotaResource.
func (r *REST) Create(ctx context.Context, obj runtime.Object, createValidation rest.ValidateObjectFunc, options *metav1.CreateOptions) (runtime.Object, error) {
	if cp, ok := obj.(*agents.Checkpoint); ok {
		if err := mayCapture(ctx, r.authorizer, cp); err != nil {
			return nil, err
		}
	}
	if r.quota == nil {
		return r.Store.Create(ctx, obj, createValidation, options)
	}
	ns, _ := genericapirequest.NamespaceFrom(ctx)
	limit, quota, ok, err := r.quota(ctx, ns)
	if err != nil {
		return nil, apierrors.NewInternalError(fmt.Errorf("read the ResourceQuotas of namespace %s: %w", ns, err))
	}
	if !ok {
		return r.Store.Create(ctx, obj, createValidation, options)
	}
	// Counted and created under one lock: two creates in this process
	// cannot both take the last place. (Replicas each hold their own.)
	r.creating.Lock()
	defer r.creating.Unlock()
	list, err := r.Store.List(ctx, &metainternalversion.ListOptions{})
	if err != nil {
		return nil, err
	}
	used := int64(len(list.(*agents.CheckpointList).Items))
	if used >= limit {
		return nil, apierrors.NewForbidden(agents.Resource("checkpoints"), objectName(obj),
			fmt.Errorf("exceeded quota: %s, requested: %s=1, used: %s=%d, limited: %s=%d", quota, QuotaResource, QuotaResource, used, QuotaResource, limit))
	}
	return r.Store.Create(ctx, obj, createValidation, options)
}

func objectName(obj runtime.Object) string {
	if cp, ok := obj.(*agents.Checkpoint); ok {
		return cp.Name
	}
	return ""
}

// mayCapture: the request's user may capture cp's Pod (its sandbox's, any
// of the namespace when only a sandbox names it), unless cp captures
// nothing (pod info only). In-process calls, with no user, are the server's.
func mayCapture(ctx context.Context, a authorizer.Authorizer, cp *agents.Checkpoint) error {
	u, ok := genericapirequest.UserFrom(ctx)
	if !ok || a == nil || podInfoOnly(cp.Spec.PersistentContents) {
		return nil
	}
	ns := cp.Namespace
	if ns == "" {
		ns, _ = genericapirequest.NamespaceFrom(ctx)
	}
	keep := cp.Spec.KeepRunning == nil || *cp.Spec.KeepRunning
	if err := access.CapturePod(ctx, a, u, ns, cp.Spec.PodName, keep); err != nil {
		return apierrors.NewForbidden(agents.Resource("checkpoints"), cp.Name,
			fmt.Errorf("a capture reads its Pod's memory, as exec does: %w", err))
	}
	return nil
}

var (
	_ rest.ShortNamesProvider = &REST{}
	_ rest.CategoriesProvider = &REST{}
	_ rest.StandardStorage    = &REST{}
)

// NewStorage builds the etcd-backed storage of checkpoints and checkpoints/status.
func NewStorage(scheme *runtime.Scheme, optsGetter generic.RESTOptionsGetter, opts Options) (*Storage, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	strategy, statusStrategy := NewStrategy(scheme, opts.AdminGroups)
	store := &genericregistry.Store{
		NewFunc:                   func() runtime.Object { return &agents.Checkpoint{} },
		NewListFunc:               func() runtime.Object { return &agents.CheckpointList{} },
		PredicateFunc:             Match,
		DefaultQualifiedResource:  agents.Resource("checkpoints"),
		SingularQualifiedResource: agents.Resource("checkpoint"),

		CreateStrategy:      strategy,
		UpdateStrategy:      strategy,
		DeleteStrategy:      strategy,
		ResetFieldsStrategy: strategy,

		TableConvertor: TableConvertor{},
	}
	options := &generic.StoreOptions{
		RESTOptions: optsGetter,
		AttrFunc:    GetAttrs,
		TriggerFunc: triggerFuncs(),
		Indexers:    indexers(),
	}
	if err := store.CompleteWithOptions(options); err != nil {
		return nil, fmt.Errorf("checkpoints storage: %w", err)
	}

	statusStore := *store
	statusStore.UpdateStrategy = statusStrategy
	statusStore.ResetFieldsStrategy = statusStrategy

	capturer := newCapturer(registryStore{store: store, status: &statusStore}, opts)
	return &Storage{
		Checkpoint: &REST{Store: store, authorizer: opts.Authorizer, quota: opts.Quota},
		Status:     &StatusREST{store: &statusStore},
		Capture:    &CaptureREST{capturer: capturer},
		Restore:    &RestoreREST{capturer: capturer, isAdmin: strategy.isAdmin},
		Capturer:   capturer,
	}, nil
}

// NewCRDCapturer returns the Capturer of crd mode: the same captures, on
// the Checkpoint custom resources of store (NewCRDStore).
func NewCRDCapturer(store Store, opts Options) (*Capturer, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	return newCapturer(store, opts), nil
}

func (opts Options) check() error {
	if opts.Driver == nil || opts.Resolver == nil {
		return fmt.Errorf("checkpoints need a driver and a resolver")
	}
	if opts.CaptureTimeout <= 0 || opts.CaptureTimeout > MaxCaptureTimeout {
		return fmt.Errorf("capture timeout %s must be in (0, %s]", opts.CaptureTimeout, MaxCaptureTimeout)
	}
	return nil
}

func newCapturer(store Store, opts Options) *Capturer {
	if opts.Stopper == nil {
		opts.Stopper = opts.Driver
	}
	if opts.Restorer == nil {
		opts.Restorer = opts.Driver
	}
	if opts.Incarnation == "" {
		opts.Incarnation = string(uuid.NewUUID())
	}
	registerMetrics()
	return &Capturer{
		store: store, driver: opts.Driver, resolver: opts.Resolver, stopper: opts.Stopper, restorer: opts.Restorer, recorder: opts.Recorder,
		defaultTimeout: opts.CaptureTimeout, replica: opts.Replica, incarnation: opts.Incarnation, liveness: opts.Liveness,
		authorizer: opts.Authorizer, kek: opts.KEK, keys: opts.Keys, bytesLimit: opts.BytesLimit,
	}
}

// ShortNames lets kubectl say "cp".
func (*REST) ShortNames() []string { return []string{"cp"} }

// Categories puts checkpoints in "kubectl get agents".
func (*REST) Categories() []string { return []string{"agents"} }

func fieldValue(name string) func(obj runtime.Object) string {
	return func(obj runtime.Object) string {
		cp, ok := obj.(*agents.Checkpoint)
		if !ok {
			return ""
		}
		return SelectableFields(cp)[name]
	}
}

// triggerFuncs lets the watch cache send an event only to the watchers of
// one sandbox. The cacher takes a single trigger field.
func triggerFuncs() storage.IndexerFuncs {
	return storage.IndexerFuncs{"spec.sandboxName": fieldValue("spec.sandboxName")}
}

func indexers() *cache.Indexers {
	idx := cache.Indexers{}
	for _, f := range indexedFields {
		value := fieldValue(f)
		idx[storage.FieldIndex(f)] = func(obj interface{}) ([]string, error) {
			cp, ok := obj.(*agents.Checkpoint)
			if !ok {
				return nil, fmt.Errorf("not a Checkpoint: %T", obj)
			}
			return []string{value(cp)}, nil
		}
	}
	return &idx
}

// StatusREST is checkpoints/status: the same objects, another update strategy.
type StatusREST struct {
	store *genericregistry.Store
}

var (
	_ rest.Patcher             = &StatusREST{}
	_ rest.Storage             = &StatusREST{}
	_ rest.ResetFieldsStrategy = &StatusREST{}
	_ rest.TableConvertor      = &StatusREST{}
)

// New returns an empty Checkpoint.
func (r *StatusREST) New() runtime.Object { return &agents.Checkpoint{} }

// Destroy does nothing: the main store owns the storage.
func (r *StatusREST) Destroy() {}

// Get returns the Checkpoint, for patches of its status.
func (r *StatusREST) Get(ctx context.Context, name string, options *metav1.GetOptions) (runtime.Object, error) {
	return r.store.Get(ctx, name, options)
}

// Update writes the status of a Checkpoint. It never creates one.
func (r *StatusREST) Update(ctx context.Context, name string, objInfo rest.UpdatedObjectInfo, createValidation rest.ValidateObjectFunc, updateValidation rest.ValidateObjectUpdateFunc, forceAllowCreate bool, options *metav1.UpdateOptions) (runtime.Object, bool, error) {
	return r.store.Update(ctx, name, objInfo, createValidation, updateValidation, false, options)
}

// GetResetFields says which fields a status write leaves alone.
func (r *StatusREST) GetResetFields() map[fieldpath.APIVersion]*fieldpath.Set {
	return r.store.GetResetFields()
}

// ConvertToTable prints status responses like the main resource.
func (r *StatusREST) ConvertToTable(ctx context.Context, object runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	return r.store.ConvertToTable(ctx, object, tableOptions)
}
