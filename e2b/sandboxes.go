package e2b

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/client-go/kubernetes"

	"github.com/agents-kruise/checkpoint-apiserver/access"
)

// Owner and origin annotations a clone Pod carries (set by the restore).
const (
	AnnotationOwner       = "agents.kruise.io/owner"
	AnnotationRestoreFrom = "agents.kruise.io/restore-from"
)

// Sandbox is what the front shows of one sandbox.
type Sandbox struct {
	Namespace, Name string
	// TemplateID is the snapshot the sandbox was cloned from ("" if none).
	TemplateID string
	Running    bool
	// CPUMillis and MemoryBytes are the sandbox's resources, 0 when unknown.
	CPUMillis   int64
	MemoryBytes int64
	StartedAt   time.Time
	Labels      map[string]string
}

// Errors a Sandboxes implementation returns.
var (
	// ErrSandboxNotFound: no such sandbox, or one the caller may not see.
	ErrSandboxNotFound = errors.New("sandbox not found")
	// ErrSandboxForbidden: RBAC does not let the caller do it.
	ErrSandboxForbidden = errors.New("forbidden")
)

// Sandboxes finds and ends sandboxes on behalf of a caller.
type Sandboxes interface {
	// Get finds sandbox name for u (where u's sandboxes are: namespace).
	Get(ctx context.Context, u user.Info, admin bool, namespace, name string) (Sandbox, error)
	// Delete ends it.
	Delete(ctx context.Context, u user.Info, admin bool, namespace, name string) error
	// List lists u's sandboxes in namespace.
	List(ctx context.Context, u user.Info, admin bool, namespace string) ([]Sandbox, error)
	// Pods says whether sandboxes are Pods, which a pause removes and a
	// connect restores under the same name.
	Pods() bool
}

// PodSandboxes are sandboxes that are Pods. A Pod annotated with another
// user as its owner is not found, except by admins, as OpenKruise Agents
// does. Every call first asks the API (SubjectAccessReview through
// Authorizer) whether the caller may do it to Pods in that namespace, so
// RBAC applies to the key's user; the Pod is then read or deleted with the
// server's own rights, which need no impersonation of anyone.
type PodSandboxes struct {
	Client     kubernetes.Interface
	Authorizer authorizer.Authorizer
}

var _ Sandboxes = &PodSandboxes{}

func (p *PodSandboxes) authorize(ctx context.Context, u user.Info, verb, namespace, name string) error {
	if err := access.Check(ctx, p.Authorizer, u, verb, corev1.SchemeGroupVersion.WithResource("pods"), namespace, name); err != nil {
		return fmt.Errorf("%w: %v", ErrSandboxForbidden, err)
	}
	return nil
}

// find reads the Pod, in namespace, or for an admin in any namespace when
// its name is unique there.
func (p *PodSandboxes) find(ctx context.Context, u user.Info, admin bool, verb, namespace, name string) (*corev1.Pod, error) {
	if err := p.authorize(ctx, u, verb, namespace, name); err != nil {
		return nil, err
	}
	pod, err := p.Client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && admin {
		pod, err = p.findAnywhere(ctx, u, verb, name)
	}
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("%w: %s", ErrSandboxNotFound, name)
	}
	if err != nil {
		return nil, fmt.Errorf("read pod %s/%s: %w", namespace, name, err)
	}
	if owner := pod.Annotations[AnnotationOwner]; owner != "" && owner != u.GetName() && !admin {
		return nil, fmt.Errorf("%w: %s", ErrSandboxNotFound, name)
	}
	return pod, nil
}

func (p *PodSandboxes) findAnywhere(ctx context.Context, u user.Info, verb, name string) (*corev1.Pod, error) {
	list, err := p.Client.CoreV1().Pods(metav1.NamespaceAll).List(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()})
	if err != nil {
		return nil, err
	}
	if len(list.Items) != 1 {
		return nil, apierrors.NewNotFound(corev1.Resource("pods"), name)
	}
	pod := &list.Items[0]
	if err := p.authorize(ctx, u, verb, pod.Namespace, name); err != nil {
		return nil, err
	}
	return pod, nil
}

// Get reads the sandbox's Pod.
func (p *PodSandboxes) Get(ctx context.Context, u user.Info, admin bool, namespace, name string) (Sandbox, error) {
	pod, err := p.find(ctx, u, admin, "get", namespace, name)
	if err != nil {
		return Sandbox{}, err
	}
	return sandboxOf(pod), nil
}

// List lists the Pods of namespace that u may see: those annotated with
// no owner or with u (every one for an admin).
func (p *PodSandboxes) List(ctx context.Context, u user.Info, admin bool, namespace string) ([]Sandbox, error) {
	if err := p.authorize(ctx, u, "list", namespace, ""); err != nil {
		return nil, err
	}
	pods, err := p.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods of %s: %w", namespace, err)
	}
	var out []Sandbox
	for i := range pods.Items {
		pod := &pods.Items[i]
		if owner := pod.Annotations[AnnotationOwner]; owner != "" && owner != u.GetName() && !admin {
			continue
		}
		out = append(out, sandboxOf(pod))
	}
	return out, nil
}

// Pods: they are.
func (p *PodSandboxes) Pods() bool { return true }

// killGrace bounds the grace period of the Pod of a sandbox killed or
// paused through the front: E2B's kill ends a sandbox at once, and a
// paused sandbox's state is captured already, so nothing it does on
// SIGTERM counts. A PID 1 that ignores SIGTERM would otherwise hold a
// pause for the Pod's whole grace period (30 s by default).
const killGrace int64 = 1

// Delete deletes the sandbox's Pod (that very Pod: its UID is a
// precondition), with a grace period of at most killGrace (shortening
// that of a Pod already going).
func (p *PodSandboxes) Delete(ctx context.Context, u user.Info, admin bool, namespace, name string) error {
	pod, err := p.find(ctx, u, admin, "delete", namespace, name)
	if err != nil {
		return err
	}
	grace := killGrace
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil && *g < grace {
		grace = *g
	}
	err = p.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &grace, Preconditions: &metav1.Preconditions{UID: &pod.UID}})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return fmt.Errorf("%w: %s", ErrSandboxNotFound, name)
	}
	if err != nil {
		return fmt.Errorf("delete pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// sandboxOf reads a sandbox from its Pod: its resources are its app
// containers' limits (requests where a container has no limit).
func sandboxOf(pod *corev1.Pod) Sandbox {
	sb := Sandbox{
		Namespace: pod.Namespace, Name: pod.Name, TemplateID: pod.Annotations[AnnotationRestoreFrom],
		Running: pod.Status.Phase == corev1.PodRunning && pod.DeletionTimestamp == nil, Labels: pod.Labels,
	}
	if pod.Status.StartTime != nil {
		sb.StartedAt = pod.Status.StartTime.Time
	}
	for _, c := range pod.Spec.Containers {
		sb.CPUMillis += quantity(c.Resources, corev1.ResourceCPU).MilliValue()
		sb.MemoryBytes += quantity(c.Resources, corev1.ResourceMemory).Value()
	}
	return sb
}

func quantity(r corev1.ResourceRequirements, name corev1.ResourceName) *resource.Quantity {
	if q, ok := r.Limits[name]; ok {
		return &q
	}
	if q, ok := r.Requests[name]; ok {
		return &q
	}
	return resource.NewQuantity(0, resource.DecimalSI)
}
