package kube

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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

// A native sidecar is captured with the app, first (it starts first); a
// plain init container, done in the source, is not; a sidecar that does
// not run fails the capture rather than leave it out.
func TestPodResolverTakesNativeSidecars(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	withSidecar := func(name string, sidecar corev1.ContainerStatus) *corev1.Pod {
		p := pod(name, running("main", "containerd://app"))
		p.Spec.InitContainers = []corev1.Container{{Name: "setup"}, {Name: "proxy", RestartPolicy: &always}}
		p.Status.InitContainerStatuses = []corev1.ContainerStatus{
			{Name: "setup", ContainerID: "containerd://done", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{}}},
			sidecar,
		}
		return p
	}
	client := fake.NewSimpleClientset(
		withSidecar("sidecar", running("proxy", "containerd://side")),
		withSidecar("sidecar-down", corev1.ContainerStatus{Name: "proxy", ContainerID: "containerd://side"}),
	)
	r := &PodResolver{Client: client, Runtime: "containerd"}
	got, err := r.Resolve(context.Background(), "ns", "sidecar")
	require.NoError(t, err)
	assert.Equal(t, []driver.Container{{ID: "side", Name: "proxy"}, {ID: "app", Name: "main"}}, got.Containers)
	var tmpl template
	require.NoError(t, json.Unmarshal(got.Template, &tmpl))
	require.Len(t, tmpl.Spec.InitContainers, 1, "the clone runs the sidecar, not the finished init container")
	assert.Equal(t, "proxy", tmpl.Spec.InitContainers[0].Name)
	assert.Equal(t, &always, tmpl.Spec.InitContainers[0].RestartPolicy)

	_, err = r.Resolve(context.Background(), "ns", "sidecar-down")
	assert.ErrorIs(t, err, driver.ErrTargetNotFound)
}
