package apiserver

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
	"github.com/agents-kruise/checkpoint-apiserver/webhook"
)

func sandboxObject(name, uid string, paused bool, strategy string) *unstructured.Unstructured {
	sb := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "agents.kruise.io/v1alpha1", "kind": "Sandbox",
		"metadata": map[string]any{"name": name, "namespace": "team-a", "uid": uid, "annotations": map[string]any{agents.AnnotationOwner: "key-alice"}},
		"spec":     map[string]any{"paused": paused}}}
	if strategy != "" {
		_ = unstructured.SetNestedField(sb.Object, strategy, "spec", "pauseStrategy", "type")
	}
	return sb
}

// hibernationObject is a hibernation Checkpoint of Sandbox sandbox (sbUID),
// Pod podUID ("" for no annotation: not the server's).
func hibernationObject(name, sandbox, sbUID, podUID, phase, id string) *unstructured.Unstructured {
	annotations := map[string]any{}
	if podUID != "" {
		annotations[agents.AnnotationHibernationOf] = webhook.HibernationOf(sbUID, podUID)
	}
	return &unstructured.Unstructured{Object: map[string]any{"apiVersion": "agents.kruise.io/v1alpha1", "kind": "Checkpoint",
		"metadata": map[string]any{"name": name, "namespace": "team-a", "uid": "uid-" + name,
			"labels":      map[string]any{agents.LabelHibernation: "true", agents.LabelSandboxName: sandbox},
			"annotations": annotations},
		"status": map[string]any{"phase": phase, "checkpointId": id}}}
}

func sandboxPodObject(name, uid, restoreFrom string, ready bool) *corev1.Pod {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "team-a", UID: types.UID(uid)},
		Status: corev1.PodStatus{Phase: corev1.PodRunning}}
	if restoreFrom != "" {
		pod.Annotations = map[string]string{api.AnnotationRestoreFrom: restoreFrom}
	}
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}
	return pod
}

// fakeDynamic is a FAKE dynamic client holding objects, Sandboxes under
// their real resource name (the fake would guess "sandboxs").
func fakeDynamic(t *testing.T, objects ...*unstructured.Unstructured) *dynamicfake.FakeDynamicClient {
	t.Helper()
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		checkpointsResource: "CheckpointList", sandboxesResource: "SandboxList"})
	for _, o := range objects {
		gvr := checkpointsResource
		if o.GetKind() == "Sandbox" {
			gvr = sandboxesResource
		}
		require.NoError(t, dyn.Tracker().Create(gvr, o, o.GetNamespace()))
	}
	return dyn
}

func TestHibernationsSweep(t *testing.T) {
	const id = "ckpt-aaaaaaaaaaaaaaaaaaaaaaaa"
	objects := []*unstructured.Unstructured{
		sandboxObject("paused", "u-paused", true, "Hibernate"),
		hibernationObject("paused-h", "paused", "u-paused", "p-old", "Succeeded", id),
		sandboxObject("resumed", "u-resumed", false, "Hibernate"),
		hibernationObject("resumed-h", "resumed", "u-resumed", "p-old", "Succeeded", id),
		sandboxObject("starting", "u-starting", false, "Hibernate"),
		hibernationObject("starting-h", "starting", "u-starting", "p-old", "Succeeded", id),
		sandboxObject("waiting", "u-waiting", false, "Hibernate"),
		hibernationObject("waiting-h", "waiting", "u-waiting", "p-old", "Succeeded", id),
		hibernationObject("gone-h", "gone", "u-gone", "p-old", "Succeeded", id),
		sandboxObject("renamed", "u-new", true, "Hibernate"),
		hibernationObject("renamed-h", "renamed", "u-earlier", "p-old", "Succeeded", id),
		sandboxObject("failed", "u-failed", false, "Hibernate"),
		hibernationObject("failed-h", "failed", "u-failed", "p-old", "Failed", ""),
		sandboxObject("pausedfail", "u-pausedfail", true, "Hibernate"),
		hibernationObject("pausedfail-h", "pausedfail", "u-pausedfail", "p-old", "Failed", ""),
		sandboxObject("unpaused", "u-unpaused", false, "Hibernate"),
		hibernationObject("unpaused-h", "unpaused", "u-unpaused", "p-old", "Succeeded", id),
		sandboxObject("forged", "u-forged", false, "Hibernate"),
		hibernationObject("forged-h", "forged", "u-forged", "", "Succeeded", id),
	}
	pods := []runtime.Object{
		sandboxPodObject("resumed", "p-new", id, true),
		sandboxPodObject("starting", "p-new", id, false),
		sandboxPodObject("unpaused", "p-old", "", true),
		sandboxPodObject("forged", "p-new", id, true),
	}
	dyn := fakeDynamic(t, objects...)
	h := hibernations{dyn: dyn, kube: kubefake.NewSimpleClientset(pods...)}
	require.NoError(t, h.sweep(context.Background()))

	left, err := dyn.Resource(checkpointsResource).Namespace("team-a").List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	var names []string
	for _, cp := range left.Items {
		names = append(names, cp.GetName())
	}
	assert.ElementsMatch(t, []string{
		"paused-h",     // its Sandbox is paused: the resume needs it
		"starting-h",   // the resumed Pod is not Ready yet
		"waiting-h",    // unpaused, its Pod not yet created
		"pausedfail-h", // failed, but the Sandbox still paused: it counts the attempts
		"forged-h",     // not the server's: not its to delete
	}, names, "deleted: the resumed one, one of a Sandbox gone or replaced, a failed one once unpaused, one whose Pod never went")
}

func TestHibernationsStartAndOf(t *testing.T) {
	dyn := fakeDynamic(t, sandboxObject("hib", "u-hib", true, "Hibernate"), sandboxObject("plain", "u-plain", false, ""),
		hibernationObject("forged", "hib", "u-hib", "", "Succeeded", "ckpt-aaaaaaaaaaaaaaaaaaaaaaaa"))
	h := hibernations{dyn: dyn, kube: kubefake.NewSimpleClientset()}
	ctx := context.Background()
	sb, err := h.sandbox(ctx, "team-a", "hib")
	require.NoError(t, err)
	assert.Equal(t, webhook.Sandbox{UID: "u-hib", Owner: "key-alice", Paused: true, PauseStrategy: webhook.PauseHibernate}, sb)
	plain, err := h.sandbox(ctx, "team-a", "plain")
	require.NoError(t, err)
	assert.Equal(t, webhook.PauseStop, plain.PauseStrategy, "no pauseStrategy is Stop")
	assert.False(t, plain.Paused)

	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "hib", Namespace: "team-a", UID: "p-1"}}
	_, err = h.Start(ctx, "hib", sb, pod)
	require.NoError(t, err)
	list, err := h.Of(ctx, "team-a", "hib")
	require.NoError(t, err)
	require.Len(t, list, 1, "only the server's hibernations are listed")
	assert.Equal(t, "u-hib", list[0].SandboxUID)
	assert.Equal(t, "p-1", list[0].PodUID)

	made, err := dyn.Resource(checkpointsResource).Namespace("team-a").List(ctx, metav1.ListOptions{LabelSelector: agents.LabelHibernation + "=true"})
	require.NoError(t, err)
	var cp *unstructured.Unstructured
	for i := range made.Items {
		if made.Items[i].GetName() != "forged" {
			cp = &made.Items[i]
		}
	}
	require.NotNil(t, cp)
	assert.Equal(t, "key-alice", cp.GetAnnotations()[agents.AnnotationOwner], "owned by the Sandbox's owner")
	assert.Equal(t, "hib", cp.GetLabels()[agents.LabelSandboxName])
	require.Len(t, cp.GetOwnerReferences(), 1)
	assert.Equal(t, types.UID("u-hib"), cp.GetOwnerReferences()[0].UID, "garbage-collected with its Sandbox")
	keep, _, _ := unstructured.NestedBool(cp.Object, "spec", "keepRunning")
	assert.True(t, keep, "the Pod's removal is OpenKruise's")
	contents, _, _ := unstructured.NestedStringSlice(cp.Object, "spec", "persistentContents")
	assert.Equal(t, []string{"memory", "filesystem"}, contents)
	pn, _, _ := unstructured.NestedString(cp.Object, "spec", "podName")
	assert.Equal(t, "hib", pn)
}
