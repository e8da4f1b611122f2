package checkpoint

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/watch"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/generated/clientset/versioned"
)

// CRDREST reads the Checkpoint custom resources (crd mode) for this
// server's own group of subresources: it is the parent the capture and
// restore subresources hang on, and what the snapshots view filters. It
// reads with the server's rights; RBAC on the subresources group decides
// who may. Field selectors (owner, status.phase ...) are applied here, as
// a CRD offers none of them.
type CRDREST struct {
	client versioned.Interface
}

var (
	_ rest.Getter               = &CRDREST{}
	_ rest.Lister               = &CRDREST{}
	_ rest.Watcher              = &CRDREST{}
	_ rest.GracefulDeleter      = &CRDREST{}
	_ rest.Scoper               = &CRDREST{}
	_ rest.SingularNameProvider = &CRDREST{}
)

// NewCRDREST returns the reader of the Checkpoint CRs client reaches.
func NewCRDREST(client versioned.Interface) *CRDREST { return &CRDREST{client: client} }

// New returns an empty Checkpoint.
func (r *CRDREST) New() runtime.Object { return &agents.Checkpoint{} }

// NewList returns an empty CheckpointList.
func (r *CRDREST) NewList() runtime.Object { return &agents.CheckpointList{} }

// Destroy does nothing.
func (r *CRDREST) Destroy() {}

// NamespaceScoped is true.
func (r *CRDREST) NamespaceScoped() bool { return true }

// GetSingularName is "checkpoint".
func (r *CRDREST) GetSingularName() string { return "checkpoint" }

// ConvertToTable prints as the aggregated API does.
func (r *CRDREST) ConvertToTable(ctx context.Context, obj runtime.Object, tableOptions runtime.Object) (*metav1.Table, error) {
	return TableConvertor{}.ConvertToTable(ctx, obj, tableOptions)
}

func (r *CRDREST) checkpoints(ctx context.Context) interface {
	Get(context.Context, string, metav1.GetOptions) (*v1alpha1.Checkpoint, error)
	List(context.Context, metav1.ListOptions) (*v1alpha1.CheckpointList, error)
	Watch(context.Context, metav1.ListOptions) (watch.Interface, error)
	Delete(context.Context, string, metav1.DeleteOptions) error
} {
	ns, _ := genericapirequest.NamespaceFrom(ctx)
	return r.client.AgentsV1alpha1().Checkpoints(ns)
}

func notFoundCR(name string) error {
	return apierrors.NewNotFound(agents.Resource("checkpoints"), name)
}

// Get reads one Checkpoint CR.
func (r *CRDREST) Get(ctx context.Context, name string, _ *metav1.GetOptions) (runtime.Object, error) {
	cp, err := r.checkpoints(ctx).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, notFoundCR(name)
	}
	if err != nil {
		return nil, err
	}
	return toInternal(cp)
}

// selectors splits the options into what the kube-apiserver can select
// (labels, metadata.name and .namespace) and the predicate applied here.
func selectors(options *metainternalversion.ListOptions) (metav1.ListOptions, func(*agents.Checkpoint) bool, error) {
	out := metav1.ListOptions{}
	label, field := labels.Everything(), fields.Everything()
	if options != nil {
		if options.LabelSelector != nil {
			label = options.LabelSelector
			out.LabelSelector = label.String()
		}
		if options.FieldSelector != nil {
			field = options.FieldSelector
		}
		out.ResourceVersion = options.ResourceVersion
		out.AllowWatchBookmarks = options.AllowWatchBookmarks
		out.TimeoutSeconds = options.TimeoutSeconds
	}
	known := SelectableFields(&agents.Checkpoint{})
	for _, req := range field.Requirements() {
		if _, ok := known[req.Field]; !ok {
			return out, nil, apierrors.NewBadRequest(fmt.Sprintf("field selector on %q is not supported", req.Field))
		}
	}
	pred := Match(label, field)
	return out, func(cp *agents.Checkpoint) bool {
		ok, err := pred.Matches(cp)
		return err == nil && ok
	}, nil
}

// List lists the Checkpoint CRs that match the selectors.
func (r *CRDREST) List(ctx context.Context, options *metainternalversion.ListOptions) (runtime.Object, error) {
	opts, match, err := selectors(options)
	if err != nil {
		return nil, err
	}
	opts.ResourceVersion, opts.TimeoutSeconds = "", nil
	list, err := r.checkpoints(ctx).List(ctx, opts)
	if err != nil {
		return nil, err
	}
	out := &agents.CheckpointList{ListMeta: list.ListMeta}
	for i := range list.Items {
		cp, err := toInternal(&list.Items[i])
		if err != nil {
			return nil, err
		}
		if match(cp) {
			out.Items = append(out.Items, *cp)
		}
	}
	return out, nil
}

// Watch streams the matching Checkpoint CRs' changes.
func (r *CRDREST) Watch(ctx context.Context, options *metainternalversion.ListOptions) (watch.Interface, error) {
	opts, match, err := selectors(options)
	if err != nil {
		return nil, err
	}
	w, err := r.checkpoints(ctx).Watch(ctx, opts)
	if err != nil {
		return nil, err
	}
	return watch.Filter(w, func(ev watch.Event) (watch.Event, bool) {
		ext, ok := ev.Object.(*v1alpha1.Checkpoint)
		if !ok {
			return ev, ev.Type == watch.Error || ev.Type == watch.Bookmark
		}
		cp, err := toInternal(ext)
		if err != nil || !match(cp) {
			return ev, false
		}
		ev.Object = cp
		return ev, true
	}), nil
}

// Delete deletes a Checkpoint CR (its finalizer then deletes the state).
func (r *CRDREST) Delete(ctx context.Context, name string, _ rest.ValidateObjectFunc, options *metav1.DeleteOptions) (runtime.Object, bool, error) {
	obj, err := r.Get(ctx, name, nil)
	if err != nil {
		return nil, false, err
	}
	opts := metav1.DeleteOptions{}
	if options != nil {
		opts = *options.DeepCopy()
	}
	if err := r.checkpoints(ctx).Delete(ctx, name, opts); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, false, notFoundCR(name)
		}
		return nil, false, err
	}
	return obj, false, nil
}

// CaptureREST is the capture subresource over this capturer.
func (c *Capturer) CaptureREST() *CaptureREST { return &CaptureREST{capturer: c} }

// RestoreREST is the restore subresource over this capturer; members of
// adminGroups may restore Checkpoints they do not own.
func (c *Capturer) RestoreREST(adminGroups []string) *RestoreREST {
	admins := sets.New(adminGroups...)
	return &RestoreREST{capturer: c, isAdmin: func(groups []string) bool { return admins.HasAny(groups...) }}
}
