package e2b

import (
	"context"
	"errors"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
)

// PausedRetention deletes the sandboxes that stayed paused longer than TTL,
// as E2B's retention of paused sandboxes does: a pause whose sandbox has
// no Pod, Succeeded more than TTL ago, is deleted, and with it the paused
// sandbox. A resumed sandbox's pause is never deleted by it: the lazily
// restored Pod and the node's copy are the pause's.
type PausedRetention struct {
	// Checkpoints reads and deletes Checkpoints (the server's own rights:
	// its loopback, or the kube-apiserver in crd mode).
	Checkpoints dynamic.Interface
	Pods        kubernetes.Interface
	TTL         time.Duration
}

// Run sweeps every interval until ctx ends.
func (p PausedRetention) Run(ctx context.Context, interval time.Duration) {
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := p.Sweep(ctx, time.Now()); err != nil {
			klog.FromContext(ctx).Error(err, "Deleting the sandboxes paused longer than their retention")
		}
	}, interval)
}

// Sweep is one pass at time now.
func (p PausedRetention) Sweep(ctx context.Context, now time.Time) error {
	res := p.Checkpoints.Resource(v1alpha1.SchemeGroupVersion.WithResource("checkpoints"))
	list, err := res.List(ctx, metav1.ListOptions{LabelSelector: LabelPausedSandbox})
	if err != nil {
		return err
	}
	var errs []error
	for i := range list.Items {
		cp := &list.Items[i]
		sandbox := cp.GetLabels()[LabelPausedSandbox]
		phase, _, _ := unstructured.NestedString(cp.Object, "status", "phase")
		done, _, _ := unstructured.NestedString(cp.Object, "status", "completionTime")
		at, perr := time.Parse(time.RFC3339, done)
		if cp.GetDeletionTimestamp() != nil || phase != string(v1alpha1.PhaseSucceeded) || perr != nil || now.Sub(at) < p.TTL {
			continue
		}
		_, err := p.Pods.CoreV1().Pods(cp.GetNamespace()).Get(ctx, sandbox, metav1.GetOptions{})
		if err == nil {
			continue // resumed: it runs on this pause
		}
		if !apierrors.IsNotFound(err) {
			errs = append(errs, err)
			continue
		}
		uid := cp.GetUID()
		err = res.Namespace(cp.GetNamespace()).Delete(ctx, cp.GetName(), metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, err)
			continue
		}
		klog.InfoS("Deleted a sandbox paused longer than its retention", "checkpoint", klog.KObj(cp), "sandbox", sandbox,
			"pausedFor", now.Sub(at).Round(time.Second), "ttl", p.TTL)
	}
	return errors.Join(errs...)
}
