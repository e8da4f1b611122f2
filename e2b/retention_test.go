package e2b

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
)

func TestPausedRetention(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	checkpoint := func(name, sandbox, phase string, pausedFor time.Duration) runtime.Object {
		labels := map[string]any{}
		if sandbox != "" {
			labels[LabelPausedSandbox] = sandbox
		}
		return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "agents.kruise.io/v1alpha1", "kind": "Checkpoint",
			"metadata": map[string]any{"name": name, "namespace": "team-a", "uid": "uid-" + name, "labels": labels},
			"spec":     map[string]any{"sandboxName": sandbox},
			"status":   map[string]any{"phase": phase, "completionTime": now.Add(-pausedFor).Format(time.RFC3339)}}}
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{v1alpha1.SchemeGroupVersion.WithResource("checkpoints"): "CheckpointList"},
		checkpoint("expired", "sb-expired", "Succeeded", 2*time.Hour),
		checkpoint("fresh", "sb-fresh", "Succeeded", 10*time.Minute),
		checkpoint("resumed", "sb-resumed", "Succeeded", 2*time.Hour),
		checkpoint("capturing", "sb-capturing", "Creating", 2*time.Hour),
		checkpoint("snapshot", "", "Succeeded", 2*time.Hour))
	pods := kubefake.NewSimpleClientset(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "sb-resumed", Namespace: "team-a"}})
	require.NoError(t, PausedRetention{Checkpoints: dyn, Pods: pods, TTL: time.Hour}.Sweep(context.Background(), now))

	left, err := dyn.Resource(v1alpha1.SchemeGroupVersion.WithResource("checkpoints")).Namespace("team-a").List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	var names []string
	for _, cp := range left.Items {
		names = append(names, cp.GetName())
	}
	assert.ElementsMatch(t, []string{
		"fresh",     // paused for less than the TTL
		"resumed",   // its sandbox runs on it again
		"capturing", // not paused yet
		"snapshot",  // no pause: a snapshot is not the retention's
	}, names, "only the sandbox paused longer than the TTL is deleted")
}
