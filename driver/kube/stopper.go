package kube

import (
	"context"
	"encoding/json"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/driver"
)

// PodStopper ends a captured Pod for keepRunning=false.
//
// A Pod whose restartPolicy is Never or OnFailure has its processes ended
// (SIGTERM, then SIGKILL after the grace period) through Processes: the
// kubelet then ends the Pod by their exit, Succeeded when they exit 0 on
// SIGTERM, Failed otherwise (a process killed by a signal exits non-zero).
// A Pod whose restartPolicy is Always is deleted through the API instead
// (gracefully, its UID a precondition): the kubelet would only start killed
// containers afresh. (A phase written through pods/status is no way out:
// the kubelet's status manager puts it back within the second, tried on
// kubelet v1.37.2.)
type PodStopper struct {
	Client kubernetes.Interface
	// Processes ends the containers' processes and leaves their tasks to
	// the CRI (the containerd driver's Terminate). Without it every Pod is deleted.
	Processes interface {
		Terminate(ctx context.Context, target driver.Target) error
	}
	// Sandboxes, when set (crd mode, beside OpenKruise Agents), pauses a Pod
	// an OpenKruise Sandbox controls the way OpenKruise pauses one: its
	// Sandbox gets spec.paused true, and OpenKruise's controller takes the
	// Pod away. Deleting the Pod under it would make the Sandbox Failed.
	Sandboxes dynamic.Interface
}

var _ driver.Stopper = &PodStopper{}

// Stop ends Pod target.Namespace/target.Name as above (a Pod a Sandbox
// controls, with Sandboxes set, by pausing the Sandbox); a Pod already
// gone, or replaced by another of the same name, is left alone.
func (s *PodStopper) Stop(ctx context.Context, target driver.Target) error {
	pods := s.Client.CoreV1().Pods(target.Namespace)
	pod, err := pods.Get(ctx, target.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read pod %s/%s: %w", target.Namespace, target.Name, err)
	}
	if target.UID != "" && string(pod.UID) != target.UID {
		return nil
	}
	if ref, owned := agents.SandboxController(pod.OwnerReferences); owned && s.Sandboxes != nil {
		return s.pause(ctx, pod.Namespace, ref)
	}
	if pod.Spec.RestartPolicy != corev1.RestartPolicyAlways && s.Processes != nil {
		return s.Processes.Terminate(ctx, target)
	}
	err = pods.Delete(ctx, target.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete pod %s/%s: %w", target.Namespace, target.Name, err)
	}
	return nil
}

// pause sets spec.paused on the Sandbox ref names, if it is still that
// Sandbox (its UID tested in the same patch).
func (s *PodStopper) pause(ctx context.Context, ns string, ref metav1.OwnerReference) error {
	patch, err := json.Marshal([]map[string]any{
		{"op": "test", "path": "/metadata/uid", "value": string(ref.UID)},
		{"op": "add", "path": "/spec/paused", "value": true},
	})
	if err != nil {
		return err
	}
	_, err = s.Sandboxes.Resource(v1alpha1.SchemeGroupVersion.WithResource("sandboxes")).Namespace(ns).
		Patch(ctx, ref.Name, types.JSONPatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pause Sandbox %s/%s (keepRunning false on its Pod): %w", ns, ref.Name, err)
	}
	return nil
}
