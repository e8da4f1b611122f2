// Package kube resolves checkpoint targets through the Kubernetes core API:
// the Pod's container statuses name the runtime's containers and its node.
package kube

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/agents-kruise/checkpoint-apiserver/driver"
)

// PodResolver reads Pods from a kube-apiserver.
type PodResolver struct {
	Client kubernetes.Interface
	// Runtime is the container runtime scheme the driver can act on ("containerd").
	Runtime string
}

var _ driver.Resolver = &PodResolver{}

// runningContainers are the containers of pod that run beside each other,
// in their start order: its native sidecars (init containers that restart
// Always), then its app containers. A capture takes them all.
func runningContainers(pod *corev1.Pod) []corev1.Container {
	var out []corev1.Container
	for _, c := range pod.Spec.InitContainers {
		if isSidecar(c) {
			out = append(out, c)
		}
	}
	return append(out, pod.Spec.Containers...)
}

// runningStatuses are the statuses of runningContainers, as the kubelet
// reports them (the sidecars' among the init containers').
func runningStatuses(pod *corev1.Pod) []corev1.ContainerStatus {
	var out []corev1.ContainerStatus
	for _, st := range pod.Status.InitContainerStatuses {
		for _, c := range pod.Spec.InitContainers {
			if c.Name == st.Name && isSidecar(c) {
				out = append(out, st)
			}
		}
	}
	return append(out, pod.Status.ContainerStatuses...)
}

// Resolve returns the running containers (sidecars and app) of Pod namespace/name. Every
// container must be running on the runtime the driver speaks: a capture of
// part of a pod would be a silent partial capture.
func (r *PodResolver) Resolve(ctx context.Context, namespace, name string) (driver.Target, error) {
	pod, err := r.Client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return driver.Target{}, fmt.Errorf("%w: pod %s/%s", driver.ErrTargetNotFound, namespace, name)
	}
	if err != nil {
		return driver.Target{}, fmt.Errorf("%w: read pod %s/%s: %v", driver.ErrUnavailable, namespace, name, err)
	}
	t := driver.Target{Namespace: namespace, Name: name, UID: string(pod.UID), Node: pod.Spec.NodeName}
	statuses := map[string]string{}
	running := map[string]bool{}
	for _, st := range runningStatuses(pod) {
		statuses[st.Name] = st.ContainerID
		running[st.Name] = st.State.Running != nil
	}
	for _, c := range runningContainers(pod) {
		id, ok := statuses[c.Name]
		if !ok || id == "" || !running[c.Name] {
			return driver.Target{}, fmt.Errorf("%w: container %s of pod %s/%s is not running", driver.ErrTargetNotFound, c.Name, namespace, name)
		}
		scheme, rawID, found := strings.Cut(id, "://")
		if !found || (r.Runtime != "" && scheme != r.Runtime) {
			return driver.Target{}, fmt.Errorf("%w: container %s of pod %s/%s runs on %q, this driver speaks %s",
				driver.ErrUnsupported, c.Name, namespace, name, scheme, r.Runtime)
		}
		t.Containers = append(t.Containers, driver.Container{ID: rawID, Name: c.Name})
	}
	if len(t.Containers) == 0 {
		return driver.Target{}, fmt.Errorf("%w: pod %s/%s has no containers", driver.ErrTargetNotFound, namespace, name)
	}
	if t.Template, err = Template(pod); err != nil {
		return driver.Target{}, fmt.Errorf("template of pod %s/%s: %w", namespace, name, err)
	}
	return t, nil
}
