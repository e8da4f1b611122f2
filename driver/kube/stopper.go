package kube

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

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
}

var _ driver.Stopper = &PodStopper{}

// Stop ends Pod target.Namespace/target.Name as above; a Pod already gone,
// or replaced by another of the same name, is left alone.
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
	if pod.Spec.RestartPolicy != corev1.RestartPolicyAlways && s.Processes != nil {
		return s.Processes.Terminate(ctx, target)
	}
	err = pods.Delete(ctx, target.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete pod %s/%s: %w", target.Namespace, target.Name, err)
	}
	return nil
}
