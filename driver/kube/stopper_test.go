package kube

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/agents-kruise/checkpoint-apiserver/driver"
)

// The client is client-go's fake clientset: this tests what PodStopper asks
// of the API; the kubelet stopping the deleted Pod is tested on a real node
// (test/e2e TestRealNode).
func TestPodStopper(t *testing.T) {
	src := pod("src", running("main", "containerd://aaa"))
	src.UID = "uid-src"
	other := pod("renamed", running("main", "containerd://bbb"))
	other.UID = "uid-new"
	client := fake.NewSimpleClientset(src, other)
	s := &PodStopper{Client: client}
	ctx := context.Background()

	if err := s.Stop(ctx, driver.Target{Namespace: "ns", Name: "src", UID: "uid-src"}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Pods("ns").Get(ctx, "src", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the captured Pod is not deleted: %v", err)
	}
	// A Pod of the same name that is not the one captured stays; a Pod gone is no error.
	if err := s.Stop(ctx, driver.Target{Namespace: "ns", Name: "renamed", UID: "uid-old"}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Pods("ns").Get(ctx, "renamed", metav1.GetOptions{}); err != nil {
		t.Errorf("another Pod of that name was deleted: %v", err)
	}
	if err := s.Stop(ctx, driver.Target{Namespace: "ns", Name: "gone"}); err != nil {
		t.Errorf("pod gone: %v", err)
	}
}

// fakeProcesses stands in for the containerd driver's Terminate.
type fakeProcesses struct{ ended []string }

func (f *fakeProcesses) Terminate(_ context.Context, t driver.Target) error {
	f.ended = append(f.ended, t.Name)
	return nil
}

// A Pod that is not restarted has its processes ended (the kubelet then
// ends the Pod by their exit); one with restartPolicy Always is deleted.
func TestPodStopperByRestartPolicy(t *testing.T) {
	never := pod("never", running("main", "containerd://aaa"))
	never.Spec.RestartPolicy = corev1.RestartPolicyNever
	always := pod("always", running("main", "containerd://bbb"))
	always.Spec.RestartPolicy = corev1.RestartPolicyAlways
	client := fake.NewSimpleClientset(never, always)
	procs := &fakeProcesses{}
	s := &PodStopper{Client: client, Processes: procs}
	ctx := context.Background()
	for _, name := range []string{"never", "always"} {
		if err := s.Stop(ctx, driver.Target{Namespace: "ns", Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	if len(procs.ended) != 1 || procs.ended[0] != "never" {
		t.Errorf("processes ended: %v, want only never's", procs.ended)
	}
	if _, err := client.CoreV1().Pods("ns").Get(ctx, "never", metav1.GetOptions{}); err != nil {
		t.Errorf("the Never Pod was deleted: %v", err)
	}
	if _, err := client.CoreV1().Pods("ns").Get(ctx, "always", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the Always Pod is not deleted: %v", err)
	}
}

// A Pod an OpenKruise Sandbox controls is paused through its Sandbox
// (spec.paused, as OpenKruise pauses one), never deleted under it; a
// Sandbox replaced since (another UID) is not paused.
func TestPodStopperPausesSandboxes(t *testing.T) {
	owned := func(name, sandbox, uid string) *corev1.Pod {
		p := pod(name, running("main", "containerd://"+name))
		p.Spec.RestartPolicy = corev1.RestartPolicyAlways
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "agents.kruise.io/v1alpha1", Kind: "Sandbox", Name: sandbox,
			UID: types.UID(uid), Controller: ptr.To(true)}}
		return p
	}
	sandbox := func(name, uid string) *unstructured.Unstructured {
		u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "agents.kruise.io/v1alpha1", "kind": "Sandbox",
			"metadata": map[string]any{"name": name, "namespace": "ns", "uid": uid}, "spec": map[string]any{}}}
		return u
	}
	client := fake.NewSimpleClientset(owned("sbx", "sb", "u-sb"), owned("stale", "sb2", "u-old"))
	gvr := schema.GroupVersionResource{Group: "agents.kruise.io", Version: "v1alpha1", Resource: "sandboxes"}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{gvr: "SandboxList"})
	for _, sb := range []*unstructured.Unstructured{sandbox("sb", "u-sb"), sandbox("sb2", "u-sb2")} {
		if err := dyn.Tracker().Create(gvr, sb, "ns"); err != nil { // "sandboxes", which no guess from the kind gives
			t.Fatal(err)
		}
	}
	s := &PodStopper{Client: client, Processes: &fakeProcesses{}, Sandboxes: dyn}
	ctx := context.Background()

	if err := s.Stop(ctx, driver.Target{Namespace: "ns", Name: "sbx"}); err != nil {
		t.Fatal(err)
	}
	sb, err := dyn.Resource(gvr).Namespace("ns").Get(ctx, "sb", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if paused, _, _ := unstructured.NestedBool(sb.Object, "spec", "paused"); !paused {
		t.Errorf("the Sandbox is not paused: %v", sb.Object["spec"])
	}
	if _, err := client.CoreV1().Pods("ns").Get(ctx, "sbx", metav1.GetOptions{}); err != nil {
		t.Errorf("the Sandbox's Pod was deleted under it: %v", err)
	}
	if err := s.Stop(ctx, driver.Target{Namespace: "ns", Name: "stale"}); err == nil {
		t.Error("a Sandbox replaced since (another UID) was paused")
	}
	sb2, _ := dyn.Resource(gvr).Namespace("ns").Get(ctx, "sb2", metav1.GetOptions{})
	if paused, _, _ := unstructured.NestedBool(sb2.Object, "spec", "paused"); paused {
		t.Error("the replaced Sandbox was paused")
	}
}
