package e2b

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/agents-kruise/checkpoint-apiserver/access"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/generated/clientset/versioned"
)

// Checkpoints is what the front does with Checkpoints for one key's user.
type Checkpoints interface {
	Create(ctx context.Context, namespace string, cp *v1alpha1.Checkpoint) (*v1alpha1.Checkpoint, error)
	Capture(ctx context.Context, namespace, name string, opts *v1alpha1.CaptureOptions) (*v1alpha1.Checkpoint, error)
	Restore(ctx context.Context, namespace, name string, req *v1alpha1.CheckpointRestore) (*v1alpha1.CheckpointRestore, error)
	ListSnapshots(ctx context.Context, namespace string, opts metav1.ListOptions) (*v1alpha1.SnapshotList, error)
	GetSnapshot(ctx context.Context, namespace, name string) (*v1alpha1.Snapshot, error)
	DeleteSnapshot(ctx context.Context, namespace, name string, opts metav1.DeleteOptions) error
}

// apiCheckpoints are this server's own Checkpoints (aggregated mode),
// reached as the key's user through the impersonating loopback client.
type apiCheckpoints struct{ c versioned.Interface }

func (a apiCheckpoints) Create(ctx context.Context, ns string, cp *v1alpha1.Checkpoint) (*v1alpha1.Checkpoint, error) {
	return a.c.AgentsV1alpha1().Checkpoints(ns).Create(ctx, cp, metav1.CreateOptions{})
}

func (a apiCheckpoints) Capture(ctx context.Context, ns, name string, opts *v1alpha1.CaptureOptions) (*v1alpha1.Checkpoint, error) {
	return a.c.AgentsV1alpha1().Checkpoints(ns).Capture(ctx, name, opts, metav1.CreateOptions{})
}

func (a apiCheckpoints) Restore(ctx context.Context, ns, name string, req *v1alpha1.CheckpointRestore) (*v1alpha1.CheckpointRestore, error) {
	return a.c.AgentsV1alpha1().Checkpoints(ns).Restore(ctx, name, req, metav1.CreateOptions{})
}

func (a apiCheckpoints) ListSnapshots(ctx context.Context, ns string, opts metav1.ListOptions) (*v1alpha1.SnapshotList, error) {
	return a.c.AgentsV1alpha1().Snapshots(ns).List(ctx, opts)
}

func (a apiCheckpoints) GetSnapshot(ctx context.Context, ns, name string) (*v1alpha1.Snapshot, error) {
	return a.c.AgentsV1alpha1().Snapshots(ns).Get(ctx, name, metav1.GetOptions{})
}

func (a apiCheckpoints) DeleteSnapshot(ctx context.Context, ns, name string, opts metav1.DeleteOptions) error {
	return a.c.AgentsV1alpha1().Snapshots(ns).Delete(ctx, name, opts)
}

// CRDBackend is what the front needs in crd mode, where Checkpoints are
// OpenKruise Agents' custom resources in the kube-apiserver.
type CRDBackend struct {
	// Kube creates Checkpoint CRs with the server's rights, once
	// Authorizer said the key's user may.
	Kube       versioned.Interface
	Authorizer authorizer.Authorizer
	// Pods and Templates, when set, give each snapshot a SandboxTemplate of
	// its name, controller-owned by it, holding its sandbox's Pod template,
	// as OpenKruise's sandbox-manager does: OpenKruise's own clone (a
	// Sandbox from that template) then works on our snapshots too.
	Pods      kubernetes.Interface
	Templates dynamic.Interface
}

// crdCheckpoints acts for one key's user in crd mode: it creates the CR
// after asking RBAC (SubjectAccessReview) whether the user may, stamping
// the user as owner (nothing else does for a CR); capture, restore and
// snapshots go to this server's subresources group as the user.
type crdCheckpoints struct {
	user    user.Info
	backend *CRDBackend
	sub     rest.Interface
}

var subScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(v1alpha1.AddToSchemeAsSubresources(s))
	return s
}()

// subresourcesClient reaches this server's subresources group with cfg.
func subresourcesClient(cfg *rest.Config) (rest.Interface, error) {
	c := rest.CopyConfig(cfg)
	c.APIPath = "/apis"
	c.GroupVersion = &v1alpha1.SubresourcesGroupVersion
	c.ContentType = runtime.ContentTypeJSON
	c.NegotiatedSerializer = serializer.NewCodecFactory(subScheme).WithoutConversion()
	return rest.RESTClientFor(c)
}

func (c crdCheckpoints) Create(ctx context.Context, ns string, cp *v1alpha1.Checkpoint) (*v1alpha1.Checkpoint, error) {
	if err := access.Check(ctx, c.backend.Authorizer, c.user, "create", v1alpha1.SchemeGroupVersion.WithResource("checkpoints"), ns, ""); err != nil {
		return nil, apierrors.NewForbidden(v1alpha1.Resource("checkpoints"), "", err)
	}
	cp = cp.DeepCopy()
	if cp.Annotations == nil {
		cp.Annotations = map[string]string{}
	}
	cp.Annotations[AnnotationOwner] = c.user.GetName()
	// The server creates it for the key's user: that user is its creator,
	// whose rights its capture checks again when it runs.
	cp.Annotations[agents.AnnotationCreator] = access.EncodeUser(c.user)
	var pod *corev1.Pod
	sandbox := cp.Spec.PodName // the sandbox is its Pod, as a capture resolves it
	if sandbox == "" {
		sandbox = cp.Spec.SandboxName
	}
	// The server creates it, so the webhook sees the server: the key's
	// user needs the rights on the Pod a capture needs, checked here.
	if err := access.CapturePod(ctx, c.backend.Authorizer, c.user, ns, cp.Spec.PodName, cp.Spec.KeepRunning == nil || *cp.Spec.KeepRunning); err != nil {
		return nil, apierrors.NewForbidden(v1alpha1.Resource("checkpoints"), "", fmt.Errorf("a capture reads its Pod's memory, as exec does: %w", err))
	}
	if c.backend.Templates != nil && sandbox != "" {
		// Read before anything is made: a snapshot of no Pod makes nothing.
		// The template copies the Pod's spec, so only for a user who may read it.
		if err := access.Check(ctx, c.backend.Authorizer, c.user, "get", corev1.SchemeGroupVersion.WithResource("pods"), ns, sandbox); err != nil {
			return nil, apierrors.NewForbidden(corev1.Resource("pods"), sandbox, err)
		}
		var err error
		if pod, err = c.backend.Pods.CoreV1().Pods(ns).Get(ctx, sandbox, metav1.GetOptions{}); err != nil {
			return nil, err
		}
	}
	made, err := c.backend.Kube.AgentsV1alpha1().Checkpoints(ns).Create(ctx, cp, metav1.CreateOptions{})
	if err != nil || pod == nil {
		return made, err
	}
	if err := c.backend.template(ctx, made, pod); err != nil {
		// All or nothing: OpenKruise could not clone it without its template.
		_ = c.backend.Kube.AgentsV1alpha1().Checkpoints(ns).Delete(context.WithoutCancel(ctx), made.Name,
			metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &made.UID}})
		return nil, err
	}
	return made, nil
}

// template creates cp's SandboxTemplate: pod's labels and spec (no node:
// the scheduler places a clone), controller-owned by cp, so it goes with it.
func (b *CRDBackend) template(ctx context.Context, cp *v1alpha1.Checkpoint, pod *corev1.Pod) error {
	spec := pod.Spec.DeepCopy()
	spec.NodeName = ""
	tmpl, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels}, Spec: *spec})
	if err != nil {
		return err
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": "SandboxTemplate",
		"metadata": map[string]any{"name": cp.Name, "namespace": cp.Namespace, "ownerReferences": []any{map[string]any{
			"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": "Checkpoint", "name": cp.Name, "uid": string(cp.UID),
			"controller": true}}},
		"spec": map[string]any{"template": tmpl},
	}}
	_, err = b.Templates.Resource(v1alpha1.SchemeGroupVersion.WithResource("sandboxtemplates")).Namespace(cp.Namespace).
		Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create the snapshot's SandboxTemplate %s/%s: %w", cp.Namespace, cp.Name, err)
	}
	return nil
}

func (c crdCheckpoints) Capture(ctx context.Context, ns, name string, opts *v1alpha1.CaptureOptions) (*v1alpha1.Checkpoint, error) {
	out := &v1alpha1.Checkpoint{}
	err := c.sub.Post().Namespace(ns).Resource("checkpoints").Name(name).SubResource("capture").Body(opts).Do(ctx).Into(out)
	return out, err
}

func (c crdCheckpoints) Restore(ctx context.Context, ns, name string, req *v1alpha1.CheckpointRestore) (*v1alpha1.CheckpointRestore, error) {
	out := &v1alpha1.CheckpointRestore{}
	err := c.sub.Post().Namespace(ns).Resource("checkpoints").Name(name).SubResource("restore").Body(req).Do(ctx).Into(out)
	return out, err
}

func (c crdCheckpoints) ListSnapshots(ctx context.Context, ns string, opts metav1.ListOptions) (*v1alpha1.SnapshotList, error) {
	out := &v1alpha1.SnapshotList{}
	err := c.sub.Get().Namespace(ns).Resource("snapshots").VersionedParams(&opts, metav1.ParameterCodec).Do(ctx).Into(out)
	return out, err
}

func (c crdCheckpoints) GetSnapshot(ctx context.Context, ns, name string) (*v1alpha1.Snapshot, error) {
	out := &v1alpha1.Snapshot{}
	err := c.sub.Get().Namespace(ns).Resource("snapshots").Name(name).Do(ctx).Into(out)
	return out, err
}

func (c crdCheckpoints) DeleteSnapshot(ctx context.Context, ns, name string, opts metav1.DeleteOptions) error {
	return c.sub.Delete().Namespace(ns).Resource("snapshots").Name(name).Body(&opts).Do(ctx).Error()
}
