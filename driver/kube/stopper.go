package kube

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/agents-kruise/checkpoint-apiserver/driver"
)

// PodStopper ends a captured Pod for keepRunning=false by deleting it
// through the API (gracefully, and only the Pod that was captured: its UID
// is a precondition). The kubelet then stops its containers.
//
// Why not stop the containers, or end the Pod in phase Succeeded: a kubelet
// restarts a killed container of a Pod whose restartPolicy is Always (and,
// with OnFailure, one that exited non-zero, as a killed one does), starting
// it afresh; and a phase written through pods/status is overwritten by the
// kubelet's status manager, since the kubelet does not sync a Pod whose only
// change is its status (tried on kubelet v1.37.2: Succeeded was back to
// Running within the second, the container still running).
type PodStopper struct {
	Client kubernetes.Interface
}

var _ driver.Stopper = &PodStopper{}

// Stop deletes Pod target.Namespace/target.Name; a Pod already gone, or
// replaced by another of the same name, is left alone.
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
	err = pods.Delete(ctx, target.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete pod %s/%s: %w", target.Namespace, target.Name, err)
	}
	return nil
}
