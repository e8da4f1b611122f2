package kube

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/agents-kruise/checkpoint-apiserver/driver"
)

func pod(name string, statuses ...corev1.ContainerStatus) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"},
		Spec:       corev1.PodSpec{NodeName: "node-1"},
		Status:     corev1.PodStatus{ContainerStatuses: statuses},
	}
	for _, st := range statuses {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: st.Name})
	}
	return p
}

func running(name, id string) corev1.ContainerStatus {
	return corev1.ContainerStatus{Name: name, ContainerID: id, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}}
}

// The client here is client-go's fake clientset: this tests the mapping from
// Pod to target, not the API.
func TestPodResolver(t *testing.T) {
	client := fake.NewSimpleClientset(
		pod("two", running("main", "containerd://aaa"), running("sidecar", "containerd://bbb")),
		pod("stopped", corev1.ContainerStatus{Name: "main", ContainerID: "containerd://ccc"}),
		pod("crio", running("main", "cri-o://ddd")),
	)
	r := &PodResolver{Client: client, Runtime: "containerd"}
	ctx := context.Background()

	got, err := r.Resolve(ctx, "ns", "two")
	if err != nil {
		t.Fatal(err)
	}
	want := []driver.Container{{ID: "aaa", Name: "main"}, {ID: "bbb", Name: "sidecar"}}
	if got.Node != "node-1" || len(got.Containers) != 2 || got.Containers[0] != want[0] || got.Containers[1] != want[1] {
		t.Errorf("resolved %+v, want node-1 and %v", got, want)
	}
	for name, wantErr := range map[string]error{
		"missing": driver.ErrTargetNotFound,
		"stopped": driver.ErrTargetNotFound,
		"crio":    driver.ErrUnsupported,
	} {
		if _, err := r.Resolve(ctx, "ns", name); !errors.Is(err, wantErr) {
			t.Errorf("Resolve(%s) = %v, want %v", name, err, wantErr)
		}
	}
}
