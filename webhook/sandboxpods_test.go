package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	admissionv1 "k8s.io/api/admission/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

const controller = "system:serviceaccount:sandbox-system:sandbox-controller-manager"

// sandboxPod is a Pod as OpenKruise's sandbox controller makes it: the
// Sandbox's name, controller-owned by it (uid), the template's spec.
func sandboxPod(uid, restoreFrom string) []byte {
	annotations := `{"agents.kruise.io/created-by":"sandbox"}`
	if restoreFrom != "" {
		annotations = fmt.Sprintf(`{"agents.kruise.io/created-by":"sandbox","agents.kruise.io/restore-from":%q}`, restoreFrom)
	}
	owner := ""
	if uid != "" {
		owner = fmt.Sprintf(`,"ownerReferences":[{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Sandbox","name":"sb","uid":%q,"controller":true}]`, uid)
	}
	return fmt.Appendf(nil, `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"sb","annotations":%s%s},"spec":{"containers":[{"name":"main","image":"busybox"}]}}`,
		annotations, owner)
}

// patched applies an admission response's JSON patch to raw.
func patched(t *testing.T, resp *admissionv1.AdmissionResponse, raw []byte) ([]byte, corev1.Pod) {
	t.Helper()
	require.True(t, resp.Allowed, "%v", resp.Result)
	patch, err := jsonpatch.DecodePatch(resp.Patch)
	require.NoError(t, err)
	out, err := patch.Apply(raw)
	require.NoError(t, err)
	var pod corev1.Pod
	require.NoError(t, json.Unmarshal(out, &pod))
	return out, pod
}

func TestSandboxClones(t *testing.T) {
	sandboxes := map[string]Sandbox{
		"team-a/sb":      {UID: "u-clone", RestoreFrom: podID, Owner: "key-alice"},
		"team-a/other":   {UID: "u-other", RestoreFrom: podID, Owner: "key-bob"},
		"team-a/admin":   {UID: "u-admin", RestoreFrom: podID, Owner: "key-admin"},
		"team-a/fresh":   {UID: "u-fresh", Owner: "key-alice"},
		"team-a/foreign": {UID: "u-foreign", RestoreFrom: "ckpt-ffffffffffffffffffffffff", Owner: "key-alice"},
	}
	p := &RestorePods{
		Authorizer: restorers{}.authorizer(), RuntimeClass: "checkpoint",
		Restore: schema.GroupVersionResource{Group: "subresources.agents.kruise.io", Version: "v1alpha1", Resource: "checkpoints"},
		Lookup: func(_ context.Context, ns, id string) (Checkpoint, error) {
			if ns == "team-a" && id == podID {
				return Checkpoint{Name: "cp", Owner: "key-alice"}, nil
			}
			return Checkpoint{}, errors.New("namespace " + ns + " has no Checkpoint with ID " + id)
		},
		Clones: &SandboxClones{
			Controllers: []string{controller}, AdminOwners: []string{"key-admin"},
			Sandboxes: func(_ context.Context, ns, name string) (Sandbox, error) {
				if name == "broken" {
					return Sandbox{}, errors.New("the kube-apiserver did not answer")
				}
				if sb, ok := sandboxes[ns+"/"+name]; ok {
					return sb, nil
				}
				return Sandbox{}, fmt.Errorf("sandboxes.agents.kruise.io %q not found", name)
			},
		},
	}
	// The Sandbox a Pod points at is the name in its owner reference.
	podOf := func(sandbox, uid, restoreFrom string) []byte {
		raw := sandboxPod(uid, restoreFrom)
		var pod corev1.Pod
		require.NoError(t, json.Unmarshal(raw, &pod))
		if len(pod.OwnerReferences) > 0 {
			pod.OwnerReferences[0].Name = sandbox
		}
		out, err := json.Marshal(&pod)
		require.NoError(t, err)
		return out
	}
	request := func(who string, raw []byte) *admissionv1.AdmissionRequest {
		return &admissionv1.AdmissionRequest{Operation: admissionv1.Create, Namespace: "team-a", Name: "sb",
			UserInfo: authnv1.UserInfo{Username: who}, Object: runtime.RawExtension{Raw: raw}}
	}

	for name, tc := range map[string]struct {
		who, sandbox, uid, restoreFrom string
		marked                         bool // the Pod comes out marked, and the review admits it
		untouched                      bool // admitted as it is
		says                           string
	}{
		"a clone by OpenKruise's controller":  {who: controller, sandbox: "sb", uid: "u-clone", marked: true},
		"a clone of the admin team":           {who: controller, sandbox: "admin", uid: "u-admin", marked: true},
		"a Pod of a Sandbox that is no clone": {who: controller, sandbox: "fresh", uid: "u-fresh", untouched: true},
		"a Pod no Sandbox owns":               {who: "mallory", untouched: true},
		"a clone's Pod made by someone else":  {who: "mallory", sandbox: "sb", uid: "u-clone", says: "created by its controller"},
		"another owner's checkpoint":          {who: controller, sandbox: "other", uid: "u-other", says: `the Sandbox's owner ("key-bob") is not the owner`},
		"another namespace's checkpoint":      {who: controller, sandbox: "foreign", uid: "u-foreign", says: "namespace team-a has no Checkpoint"},
		"the Sandbox cannot be read":          {who: controller, sandbox: "broken", uid: "u-x", says: "cannot tell whether it is a clone"},
		"no such Sandbox":                     {who: controller, sandbox: "gone", uid: "u-x", says: "not found"},
		"a stale owner reference":             {who: controller, sandbox: "sb", uid: "u-old", says: "has UID u-clone"},
		"a Pod naming another checkpoint":     {who: controller, sandbox: "sb", uid: "u-clone", restoreFrom: "ckpt-ffffffffffffffffffffffff", says: "where its Sandbox restores"},
	} {
		raw := podOf(tc.sandbox, tc.uid, tc.restoreFrom)
		resp := p.markClone(request(tc.who, raw))
		switch {
		case tc.marked:
			require.NotNil(t, resp.Patch, name)
			out, pod := patched(t, resp, raw)
			assert.Equal(t, podID, pod.Annotations["agents.kruise.io/restore-from"], name)
			assert.Equal(t, "sandbox", pod.Annotations["agents.kruise.io/created-by"], "%s: the rest is kept", name)
			require.NotNil(t, pod.Spec.RuntimeClassName, name)
			assert.Equal(t, "checkpoint", *pod.Spec.RuntimeClassName, name)
			// The review of marked Pods then admits it by the Sandbox's rule,
			// though the controller has no right on the Checkpoint itself.
			review := p.review(request(tc.who, out))
			assert.True(t, review.Allowed, "%s: %v", name, review.Result)
		case tc.untouched:
			assert.True(t, resp.Allowed, "%s: %v", name, resp.Result)
			assert.Nil(t, resp.Patch, name)
		default:
			assert.False(t, resp.Allowed, name)
			require.NotNil(t, resp.Result, name)
			assert.Contains(t, resp.Result.Message, tc.says, name)
			assert.EqualValues(t, 403, resp.Result.Code, name)
		}
	}

	t.Run("plain init containers and postStart hooks do not run again", func(t *testing.T) {
		raw := []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"sb","ownerReferences":[{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Sandbox","name":"sb","uid":"u-clone","controller":true}]},
"spec":{"initContainers":[{"name":"setup","image":"busybox"},{"name":"envd","image":"envd","restartPolicy":"Always","lifecycle":{"postStart":{"exec":{"command":["init"]}}}}],
"containers":[{"name":"main","image":"busybox","lifecycle":{"postStart":{"exec":{"command":["hello"]}},"preStop":{"exec":{"command":["bye"]}}}}]}}`)
		out, pod := patched(t, p.markClone(request(controller, raw)), raw)
		require.Len(t, pod.Spec.InitContainers, 1, "only the native sidecar stays")
		assert.Equal(t, "envd", pod.Spec.InitContainers[0].Name)
		assert.Nil(t, pod.Spec.InitContainers[0].Lifecycle.PostStart)
		require.Len(t, pod.Spec.Containers, 1)
		assert.Nil(t, pod.Spec.Containers[0].Lifecycle.PostStart)
		assert.NotNil(t, pod.Spec.Containers[0].Lifecycle.PreStop, "preStop still runs when the clone stops")
		assert.True(t, p.review(request(controller, out)).Allowed)
	})

	t.Run("the review refuses what the marking would", func(t *testing.T) {
		// Marked by hand, a clone's Pod by someone else, or naming
		// another checkpoint than its Sandbox, is refused at review too.
		for who, raw := range map[string][]byte{
			"mallory":  podOf("sb", "u-clone", podID),
			controller: podOf("sb", "u-clone", "ckpt-ffffffffffffffffffffffff"),
		} {
			var pod corev1.Pod
			require.NoError(t, json.Unmarshal(raw, &pod))
			class := "checkpoint"
			pod.Spec.RuntimeClassName = &class
			raw, _ = json.Marshal(&pod)
			resp := p.review(request(who, raw))
			assert.False(t, resp.Allowed, who)
		}
	})
}

// TestSandboxUpgrades: OpenKruise's CheckpointRestore upgrade. The Pod its
// controller recreates carries the configured key naming a filesystem
// Checkpoint of its own Sandbox; it is marked for restore, its init
// containers and hooks kept (its processes start afresh), and nothing else
// passes.
func TestSandboxUpgrades(t *testing.T) {
	const key = "example.com/checkpoint-id"
	const fsID, memID, oldID, otherID = "ckpt-000000000000000000000f5f", "ckpt-000000000000000000000aaa",
		"ckpt-000000000000000000000b0b", "ckpt-000000000000000000000c0c"
	born := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	checkpoints := map[string]Checkpoint{
		fsID:    {Name: "up", Sandbox: "sb", Created: born.Add(time.Hour), FilesystemOnly: true},
		memID:   {Name: "mem", Sandbox: "sb", Created: born.Add(time.Hour), Owner: "key-alice"},
		oldID:   {Name: "old", Sandbox: "sb", Created: born.Add(-time.Hour), FilesystemOnly: true},
		otherID: {Name: "theirs", Sandbox: "victim", Created: born.Add(time.Hour), FilesystemOnly: true},
	}
	p := &RestorePods{
		Authorizer: restorers{}.authorizer(), RuntimeClass: "checkpoint",
		Restore: schema.GroupVersionResource{Group: "subresources.agents.kruise.io", Version: "v1alpha1", Resource: "checkpoints"},
		Lookup: func(_ context.Context, ns, id string) (Checkpoint, error) {
			if cp, ok := checkpoints[id]; ok && ns == "team-a" {
				return cp, nil
			}
			return Checkpoint{}, errors.New("namespace " + ns + " has no Checkpoint with ID " + id)
		},
		Clones: &SandboxClones{
			Controllers: []string{controller}, CheckpointIDKey: key,
			Sandboxes: func(_ context.Context, ns, name string) (Sandbox, error) {
				// A clone Sandbox, upgraded: its upgrade's checkpoint wins.
				return Sandbox{UID: "u-sb", Created: born, RestoreFrom: memID, Owner: "key-alice"}, nil
			},
		},
	}
	upgradePod := func(id string) []byte {
		return fmt.Appendf(nil, `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"sb","annotations":{%q:%q},
"ownerReferences":[{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Sandbox","name":"sb","uid":"u-sb","controller":true}]},
"spec":{"initContainers":[{"name":"setup","image":"busybox"}],"containers":[{"name":"main","image":"busybox:new","lifecycle":{"postStart":{"exec":{"command":["hello"]}}}}]}}`, key, id)
	}
	request := func(who string, raw []byte) *admissionv1.AdmissionRequest {
		return &admissionv1.AdmissionRequest{Operation: admissionv1.Create, Namespace: "team-a", Name: "sb",
			UserInfo: authnv1.UserInfo{Username: who}, Object: runtime.RawExtension{Raw: raw}}
	}

	raw := upgradePod(fsID)
	out, pod := patched(t, p.markClone(request(controller, raw)), raw)
	assert.Equal(t, fsID, pod.Annotations["agents.kruise.io/restore-from"], "the upgrade's checkpoint, not the clone's")
	require.NotNil(t, pod.Spec.RuntimeClassName)
	assert.Equal(t, "checkpoint", *pod.Spec.RuntimeClassName)
	assert.Len(t, pod.Spec.InitContainers, 1, "an upgrade's init containers run")
	assert.NotNil(t, pod.Spec.Containers[0].Lifecycle.PostStart, "and its hooks")
	assert.Equal(t, "busybox:new", pod.Spec.Containers[0].Image, "on the upgrade's image")
	review := p.review(request(controller, out))
	assert.True(t, review.Allowed, "%v", review.Result)

	for name, tc := range map[string]struct {
		who, id, says string
	}{
		"made by someone else":              {who: "mallory", id: fsID, says: "created by its controller"},
		"a checkpoint holding memory":       {who: controller, id: memID, says: "holds memory"},
		"an earlier sandbox's of that name": {who: controller, id: oldID, says: "taken before this Sandbox was created"},
		"another sandbox's checkpoint":      {who: controller, id: otherID, says: `is of sandbox "victim"`},
		"another namespace's (or none)":     {who: controller, id: "ckpt-0000000000000000000dead0", says: "has no Checkpoint"},
		"not an ID this server makes":       {who: controller, id: "../../etc", says: "not a checkpoint ID"},
	} {
		resp := p.markClone(request(tc.who, upgradePod(tc.id)))
		assert.False(t, resp.Allowed, name)
		require.NotNil(t, resp.Result, name)
		assert.Contains(t, resp.Result.Message, tc.says, name)
		assert.EqualValues(t, 403, resp.Result.Code, name)
	}

	// Without the key configured, the annotation means nothing: the Pod
	// restores as its Sandbox says (here the clone's memory).
	p.Clones.CheckpointIDKey = ""
	resp := p.markClone(request(controller, upgradePod(fsID)))
	require.True(t, resp.Allowed, "%v", resp.Result)
	assert.Contains(t, string(resp.Patch), memID)
}
