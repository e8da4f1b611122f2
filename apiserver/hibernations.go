package apiserver

import (
	"context"
	"errors"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
	"github.com/agents-kruise/checkpoint-apiserver/webhook"
)

var (
	checkpointsResource = v1alpha1.SchemeGroupVersion.WithResource("checkpoints")
	sandboxesResource   = v1alpha1.SchemeGroupVersion.WithResource("sandboxes")
)

// hibernations keeps OpenKruise's Hibernate Sandboxes' memory through a
// pause (crd mode): their captures are Checkpoint custom resources the
// server makes, annotated agents.kruise.io/hibernation-of, owned (for the
// garbage collector) by their Sandbox.
type hibernations struct {
	dyn  dynamic.Interface
	kube kubernetes.Interface
}

var _ webhook.Hibernations = hibernations{}

// sandbox reads Sandbox name of namespace ns as the webhook needs it.
func (h hibernations) sandbox(ctx context.Context, ns, name string) (webhook.Sandbox, error) {
	sb, err := h.dyn.Resource(sandboxesResource).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return webhook.Sandbox{}, err
	}
	return sandboxOf(sb), nil
}

// sandboxOf is what the webhook needs of Sandbox sb.
func sandboxOf(sb *unstructured.Unstructured) webhook.Sandbox {
	a := sb.GetAnnotations()
	paused, _, _ := unstructured.NestedBool(sb.Object, "spec", "paused")
	strategy, _, _ := unstructured.NestedString(sb.Object, "spec", "pauseStrategy", "type")
	medium, _, _ := unstructured.NestedString(sb.Object, "spec", "pauseStrategy", "hibernateStrategy", "type")
	if strategy == "" {
		strategy = webhook.PauseStop
	}
	return webhook.Sandbox{UID: string(sb.GetUID()), Created: sb.GetCreationTimestamp().Time,
		RestoreFrom: a[api.AnnotationRestoreFrom], Owner: a[agents.AnnotationOwner],
		Paused: paused, Deleting: sb.GetDeletionTimestamp() != nil, PauseStrategy: strategy, HibernateMedium: medium}
}

// hibernationOf is cp as a hibernation (ok false: not one the server made).
func hibernationOf(cp *unstructured.Unstructured) (webhook.Hibernation, bool) {
	sbUID, podUID, ok := strings.Cut(cp.GetAnnotations()[agents.AnnotationHibernationOf], "/")
	if !ok || sbUID == "" || podUID == "" {
		return webhook.Hibernation{}, false
	}
	phase, _, _ := unstructured.NestedString(cp.Object, "status", "phase")
	msg, _, _ := unstructured.NestedString(cp.Object, "status", "message")
	id, _, _ := unstructured.NestedString(cp.Object, "status", "checkpointId")
	if cp.GetDeletionTimestamp() != nil {
		phase = string(agents.PhaseTerminating)
	}
	return webhook.Hibernation{Name: cp.GetName(), ID: id, Phase: agents.CheckpointPhase(phase), Message: msg,
		SandboxUID: sbUID, PodUID: podUID, Created: cp.GetCreationTimestamp().Time}, true
}

// list is every hibernation selected by selector in ns ("": all), newest first.
func (h hibernations) list(ctx context.Context, ns, selector string) ([]webhook.Hibernation, error) {
	list, err := h.dyn.Resource(checkpointsResource).Namespace(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	var out []webhook.Hibernation
	for i := range list.Items {
		if hb, ok := hibernationOf(&list.Items[i]); ok {
			out = append(out, hb)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.After(out[j].Created) })
	return out, nil
}

func (h hibernations) Of(ctx context.Context, ns, sandbox string) ([]webhook.Hibernation, error) {
	return h.list(ctx, ns, agents.LabelHibernation+"=true,"+agents.LabelSandboxName+"="+sandbox)
}

// Start captures memory and files with keepRunning true: the Pod's
// removal is OpenKruise's controller's, once the capture succeeded.
func (h hibernations) Start(ctx context.Context, sandbox string, sb webhook.Sandbox, pod *corev1.Pod) (string, error) {
	annotations := map[string]any{agents.AnnotationHibernationOf: webhook.HibernationOf(sb.UID, string(pod.UID))}
	if sb.Owner != "" {
		annotations[agents.AnnotationOwner] = sb.Owner
	}
	cp := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": "Checkpoint",
		"metadata": map[string]any{
			"generateName": sandbox + "-hibernation-", "namespace": pod.Namespace,
			"labels":      map[string]any{agents.LabelHibernation: "true", agents.LabelSandboxName: sandbox},
			"annotations": annotations,
			"ownerReferences": []any{map[string]any{"apiVersion": v1alpha1.SchemeGroupVersion.String(), "kind": agents.KindSandbox,
				"name": sandbox, "uid": sb.UID}},
		},
		"spec": map[string]any{"podName": pod.Name, "sandboxName": sandbox, "keepRunning": true,
			"persistentContents": []any{string(agents.ContentMemory), string(agents.ContentFilesystem)}},
	}}
	out, err := h.dyn.Resource(checkpointsResource).Namespace(pod.Namespace).Create(ctx, cp, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	klog.InfoS("Hibernating a Sandbox: capturing its Pod before it goes", "sandbox", klog.KRef(pod.Namespace, sandbox),
		"pod", pod.Name, "checkpoint", out.GetName())
	return out.GetName(), nil
}

// run sweeps the hibernations every interval until ctx ends.
func (h hibernations) run(ctx context.Context, interval time.Duration) {
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := h.sweep(ctx); err != nil {
			klog.FromContext(ctx).Error(err, "Sweeping the hibernation Checkpoints")
		}
	}, interval)
}

// sweep deletes the hibernations that are done: resumed (the Sandbox's
// new Pod, restored from it, is Ready: pause is one to one), of a Sandbox
// gone, or no longer needed (failed, or of a Pod still there, once the
// Sandbox is unpaused).
func (h hibernations) sweep(ctx context.Context) error {
	list, err := h.dyn.Resource(checkpointsResource).List(ctx, metav1.ListOptions{LabelSelector: agents.LabelHibernation + "=true"})
	if err != nil {
		return err
	}
	var errs []error
	for i := range list.Items {
		cp := &list.Items[i]
		hb, ok := hibernationOf(cp)
		if !ok || hb.Phase == agents.PhaseTerminating {
			continue
		}
		why, err := h.done(ctx, cp.GetNamespace(), cp.GetLabels()[agents.LabelSandboxName], hb)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if why == "" {
			continue
		}
		uid := cp.GetUID()
		err = h.dyn.Resource(checkpointsResource).Namespace(cp.GetNamespace()).Delete(ctx, cp.GetName(),
			metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			errs = append(errs, err)
			continue
		}
		klog.InfoS("Deleted a hibernation Checkpoint", "checkpoint", klog.KObj(cp), "id", hb.ID, "why", why)
	}
	return errors.Join(errs...)
}

// done says why hibernation hb of Sandbox name in ns is no longer needed
// ("": it still is).
func (h hibernations) done(ctx context.Context, ns, name string, hb webhook.Hibernation) (string, error) {
	sb, err := h.sandbox(ctx, ns, name)
	if apierrors.IsNotFound(err) || (err == nil && sb.UID != hb.SandboxUID) {
		return "its Sandbox is gone", nil
	}
	if err != nil {
		return "", err
	}
	if sb.Paused {
		return "", nil
	}
	if hb.Phase == agents.PhaseFailed {
		return "it failed, and the Sandbox is no longer paused", nil
	}
	if hb.Phase != agents.PhaseSucceeded {
		return "", nil
	}
	pod, err := h.kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", nil // to be resumed
	}
	if err != nil {
		return "", err
	}
	switch {
	case string(pod.UID) == hb.PodUID && pod.DeletionTimestamp == nil:
		return "the Sandbox was unpaused before its Pod went", nil
	case string(pod.UID) != hb.PodUID && pod.Annotations[api.AnnotationRestoreFrom] == hb.ID && podReady(pod):
		return "the Sandbox resumed from it", nil
	}
	return "", nil
}

func podReady(pod *corev1.Pod) bool {
	if pod.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
