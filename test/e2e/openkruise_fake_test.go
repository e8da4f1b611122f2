package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// fakeSandboxController is who OpenKruise's sandbox controller is in the
// fake below: its service account under OpenKruise's kustomization
// (namespace sandbox-system, prefix sandbox-), the server's default
// --sandbox-controllers.
const fakeSandboxController = "system:serviceaccount:sandbox-system:sandbox-controller-manager"

// fakeOpenKruise is a FAKE of OpenKruise Agents' sandbox-manager and
// sandbox controller, not their code: it makes the objects they make, as
// openkruise/agents at 0b72c83a makes them (../shared/docs/design.md), on
// OpenKruise's real CRDs. The sandbox-manager acts as the cluster admin
// here (it is trusted with the owner annotation); the sandbox controller
// as its own service account, as in a real installation.
type fakeOpenKruise struct {
	c  *framework.Cluster
	ns string
}

// install gives the fake sandbox controller's identity OpenKruise's rights
// on Pods (and on its Sandboxes' finalizers, for blockOwnerDeletion).
func (k fakeOpenKruise) install() {
	k.c.Apply(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"fake-sandbox-controller"},"rules":[
{"apiGroups":[""],"resources":["pods"],"verbs":["get","list","create","delete"]},
{"apiGroups":["agents.kruise.io"],"resources":["sandboxes","sandboxes/finalizers"],"verbs":["get","update"]}]}`)
	k.c.Apply(fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRoleBinding","metadata":{"name":"fake-sandbox-controller"},
"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"fake-sandbox-controller"},
"subjects":[{"kind":"User","name":%q}]}`, fakeSandboxController))
}

// snapshot is the sandbox-manager's E2B snapshot of Pod pod for API key
// owner: a Checkpoint (generateName <sandbox>-, the owner annotation),
// then a SandboxTemplate of the same name, controller-owned by it, whose
// template is the sandbox's. It waits for the Checkpoint to succeed with
// an ID, as the sandbox-manager does, and returns its name and ID.
func (k fakeOpenKruise) snapshot(t *testing.T, pod, owner string) (string, string) {
	t.Helper()
	out, err := k.c.KubectlStdin(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint",
"metadata":{"generateName":"%s-","namespace":%q,"annotations":{"agents.kruise.io/owner":%q}},
"spec":{"podName":%q,"keepRunning":true,"persistentContents":["memory","filesystem"]}}`, pod, k.ns, owner, pod),
		"create", "-f", "-", "-o", "jsonpath={.metadata.name} {.metadata.uid}")
	require.NoError(t, err, out)
	f := strings.Fields(out)
	require.Len(t, f, 2, out)
	name, uid := f[0], f[1]
	var src struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
		Spec map[string]any `json:"spec"`
	}
	require.NoError(t, json.Unmarshal([]byte(k.c.MustStdout("get", "pod", pod, "-n", k.ns, "-o", "json")), &src))
	delete(src.Spec, "nodeName") // a template names no node: the scheduler picks
	tmpl := map[string]any{"metadata": map[string]any{"labels": src.Metadata.Labels}, "spec": src.Spec}
	k.c.Apply(mustJSON(t, map[string]any{"apiVersion": "agents.kruise.io/v1alpha1", "kind": "SandboxTemplate",
		"metadata": map[string]any{"name": name, "namespace": k.ns, "ownerReferences": []any{map[string]any{
			"apiVersion": "agents.kruise.io/v1alpha1", "kind": "Checkpoint", "name": name, "uid": uid, "controller": true}}},
		"spec": map[string]any{"template": tmpl}}))
	return name, k.checkpointID(t, name)
}

// checkpointID waits, as OpenKruise's controllers do, for Checkpoint name
// to succeed, and returns its ID; it fails the test if it fails.
func (k fakeOpenKruise) checkpointID(t *testing.T, name string) string {
	t.Helper()
	var id string
	k.c.Eventually("Checkpoint "+name+" succeeds with an ID", func() bool {
		out, _ := k.c.Kubectl("get", "cp", name, "-n", k.ns, "-o", "jsonpath={.status.phase} {.status.checkpointId}")
		f := strings.Fields(out)
		if len(f) == 2 && f[0] == "Succeeded" {
			id = f[1]
		}
		return id != "" || (len(f) > 0 && f[0] == "Failed")
	})
	require.NotEmpty(t, id, "Checkpoint %s failed: %s", name, k.c.MustStdout("get", "cp", name, "-n", k.ns, "-o", "jsonpath={.status.message}"))
	return id
}

// clone is E2B POST /sandboxes with templateID=id for API key owner, in
// namespace ns: the sandbox-manager finds the Checkpoint by its ID (in
// k.ns) and its SandboxTemplate, and creates a Sandbox (generateName
// <id>-, the template's spec, the sandbox-template and sandbox-claimed
// labels, the owner and restore-from annotations); the sandbox controller
// creates its Pod: the Sandbox's name, controller-owned by it, created-by
// sandbox, the template's spec verbatim. It returns the Sandbox's name and
// the Pod's create's output and error.
func (k fakeOpenKruise) clone(t *testing.T, ns, id, owner string) (string, string, error) {
	t.Helper()
	return k.sandbox(t, ns, id, owner, true, fakeSandboxController, "")
}

// cloneOn is clone with the template's Pod bound to node (nodeName).
func (k fakeOpenKruise) cloneOn(t *testing.T, ns, id, owner, node string) (string, string, error) {
	t.Helper()
	return k.sandbox(t, ns, id, owner, true, fakeSandboxController, node)
}

// sandbox is clone, or with restore false the same Sandbox without
// restore-from (a sandbox of that template, not a clone), its Pod created
// as user as, on node when set.
func (k fakeOpenKruise) sandbox(t *testing.T, ns, id, owner string, restore bool, as, node string) (string, string, error) {
	t.Helper()
	cp := k.c.MustStdout("get", "cp", "-n", k.ns, "-o", `jsonpath={.items[?(@.status.checkpointId=="`+id+`")].metadata.name}`)
	require.NotEmpty(t, cp, "no Checkpoint has ID %s", id)
	template := k.template(t, "sandboxtemplate", cp)
	if node != "" {
		template.Spec["nodeName"] = node
	}
	annotations := map[string]string{"agents.kruise.io/owner": owner}
	if restore {
		annotations["agents.kruise.io/restore-from"] = id
	}
	out, err := k.c.KubectlStdin(mustJSON(t, map[string]any{"apiVersion": "agents.kruise.io/v1alpha1", "kind": "Sandbox",
		"metadata": map[string]any{"generateName": id + "-", "namespace": ns,
			"labels":      map[string]string{"agents.kruise.io/sandbox-template": cp, "agents.kruise.io/sandbox-claimed": "true"},
			"annotations": annotations},
		"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{"labels": template.Metadata.Labels}, "spec": template.Spec}}}),
		"create", "-f", "-", "-o", "jsonpath={.metadata.name} {.metadata.uid}")
	require.NoError(t, err, out)
	f := strings.Fields(out)
	require.Len(t, f, 2, out)
	out, err = k.sandboxPod(t, as, ns, f[0], f[1], template.Metadata.Labels, template.Spec, nil)
	return f[0], out, err
}

// plainSandbox is a Sandbox name of k.ns (no clone) whose template is the
// spec of podYAML, and its Pod, made by the sandbox controller. It
// returns the Sandbox's UID.
func (k fakeOpenKruise) plainSandbox(t *testing.T, name, owner, podYAML string) string {
	t.Helper()
	return k.sandboxWith(t, name, owner, podYAML, map[string]any{"persistentContents": []string{"filesystem"}})
}

// sandboxWith is plainSandbox with spec (besides the template) as given.
func (k fakeOpenKruise) sandboxWith(t *testing.T, name, owner, podYAML string, spec map[string]any) string {
	t.Helper()
	var pod struct {
		Spec map[string]any `json:"spec"`
	}
	require.NoError(t, json.Unmarshal([]byte(k.c.MustStdin(podYAML, "create", "--dry-run=client", "-o", "json", "-f", "-")), &pod))
	sbSpec := map[string]any{"template": map[string]any{"spec": pod.Spec}}
	for key, v := range spec {
		sbSpec[key] = v
	}
	uid := k.c.MustStdin(mustJSON(t, map[string]any{"apiVersion": "agents.kruise.io/v1alpha1", "kind": "Sandbox",
		"metadata": map[string]any{"name": name, "namespace": k.ns, "annotations": map[string]string{"agents.kruise.io/owner": owner}},
		"spec":     sbSpec}),
		"create", "-f", "-", "-o", "jsonpath={.metadata.uid}")
	out, err := k.sandboxPod(t, fakeSandboxController, k.ns, name, uid, nil, pod.Spec, nil)
	require.NoError(t, err, out)
	return uid
}

// upgrade is the sandbox controller's CheckpointRestore upgrade of Sandbox
// name (uid), run with --checkpoint-id-annotation-key=key: a filesystem
// Checkpoint of the sandbox, then its Pod deleted, then a new Pod of the
// Sandbox's template with env changed by the upgrade, annotated
// key=<checkpoint ID>. It returns the ID and the new Pod's create's output
// and error.
func (k fakeOpenKruise) upgrade(t *testing.T, name, uid, key string) (string, string, error) {
	t.Helper()
	cp := k.c.MustStdin(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint",
"metadata":{"generateName":"%s-upgrade-","namespace":%q,"labels":{"agents.kruise.io/sandbox-name":%q}},
"spec":{"sandboxName":%q,"podName":%q,"keepRunning":true,"persistentContents":["filesystem"]}}`, name, k.ns, name, name, name),
		"create", "-f", "-", "-o", "jsonpath={.metadata.name}")
	id := k.checkpointID(t, cp)
	k.c.Must("delete", "pod", name, "-n", k.ns, "--timeout=60s")
	spec := k.template(t, "sandbox", name).Spec
	for _, c := range spec["containers"].([]any) {
		c.(map[string]any)["env"] = []any{map[string]any{"name": "UPGRADED", "value": "yes"}}
	}
	out, err := k.sandboxPod(t, fakeSandboxController, k.ns, name, uid, nil, spec, map[string]string{key: id})
	return id, out, err
}

// reconcile is the sandbox controller's answer to Sandbox name's state, as
// OpenKruise's plays it: paused, its Pod is deleted and it is Paused; its
// Pod gone while not paused, it is Failed. It returns the phase it set.
func (k fakeOpenKruise) reconcile(t *testing.T, name string) string {
	t.Helper()
	paused := k.c.MustStdout("get", "sandbox", name, "-n", k.ns, "-o", "jsonpath={.spec.paused}") == "true"
	podGone := true
	if out, err := k.c.Kubectl("get", "pod", name, "-n", k.ns, "-o", "jsonpath={.metadata.deletionTimestamp}"); err == nil {
		podGone = out != ""
	}
	phase := ""
	switch {
	case paused:
		k.c.Must("delete", "pod", name, "-n", k.ns, "--ignore-not-found", "--timeout=60s")
		phase = "Paused"
	case podGone:
		phase = "Failed"
	default:
		return ""
	}
	k.c.Must("patch", "sandbox", name, "-n", k.ns, "--subresource=status", "--type=merge", "-p", `{"status":{"phase":"`+phase+`"}}`)
	return phase
}

// pause is OpenKruise's pause of Sandbox name: spec.paused true, then its
// controller deletes the Sandbox's Pod, requeueing (every second here)
// while the delete is refused, until the Pod went, and the Sandbox is
// Paused. It returns the refusals the deletes met.
func (k fakeOpenKruise) pause(t *testing.T, name string) []string {
	t.Helper()
	k.c.Must("patch", "sandbox", name, "-n", k.ns, "--type=merge", "-p", `{"spec":{"paused":true}}`)
	var refusals []string
	require.Eventually(t, func() bool {
		out, err := k.c.Kubectl("delete", "pod", name, "-n", k.ns, "--ignore-not-found", "--timeout=60s")
		if err != nil {
			refusals = append(refusals, out)
			return false
		}
		return true
	}, 3*time.Minute, time.Second, "OpenKruise's controller deletes the Pod of paused Sandbox %s: %v", name, refusals)
	k.c.Must("patch", "sandbox", name, "-n", k.ns, "--subresource=status", "--type=merge", "-p", `{"status":{"phase":"Paused"}}`)
	return refusals
}

// resume is OpenKruise's resume of Sandbox name (uid): spec.paused false,
// then its controller creates the Pod again from the Sandbox's template,
// of the same name (CreatePod with IsResume), with nothing to mark it for
// restore. It returns the create's output and error.
func (k fakeOpenKruise) resume(t *testing.T, name, uid string) (string, error) {
	t.Helper()
	k.c.Must("patch", "sandbox", name, "-n", k.ns, "--type=merge", "-p", `{"spec":{"paused":false}}`)
	template := k.template(t, "sandbox", name)
	out, err := k.sandboxPod(t, fakeSandboxController, k.ns, name, uid, template.Metadata.Labels, template.Spec, nil)
	if err == nil {
		k.c.Must("patch", "sandbox", name, "-n", k.ns, "--subresource=status", "--type=merge", "-p", `{"status":{"phase":"Running"}}`)
	}
	return out, err
}

// podTemplate is the spec.template of a Sandbox or a SandboxTemplate.
type podTemplate struct {
	Metadata struct {
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec map[string]any `json:"spec"`
}

// template reads spec.template of object name of kind (sandbox or sandboxtemplate) in k.ns.
func (k fakeOpenKruise) template(t *testing.T, kind, name string) podTemplate {
	t.Helper()
	var obj struct {
		Spec struct {
			Template podTemplate `json:"template"`
		} `json:"spec"`
	}
	require.NoError(t, json.Unmarshal([]byte(k.c.MustStdout("get", kind, name, "-n", k.ns, "-o", "json")), &obj))
	return obj.Spec.Template
}

// sandboxPod is the sandbox controller's Pod of Sandbox name (uid),
// created as user as, with annotations besides its own.
func (k fakeOpenKruise) sandboxPod(t *testing.T, as, ns, name, uid string, labels map[string]string, spec map[string]any, annotations map[string]string) (string, error) {
	t.Helper()
	l := map[string]string{"agents.kruise.io/created-by": "sandbox"}
	for key, v := range labels {
		l[key] = v
	}
	a := map[string]string{"agents.kruise.io/created-by": "sandbox"}
	for key, v := range annotations {
		a[key] = v
	}
	return k.c.KubectlStdin(mustJSON(t, map[string]any{"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": name, "namespace": ns, "labels": l,
			"annotations": a,
			"ownerReferences": []any{map[string]any{"apiVersion": "agents.kruise.io/v1alpha1", "kind": "Sandbox", "name": name, "uid": uid,
				"controller": true, "blockOwnerDeletion": true}}},
		"spec": spec}), "create", "-f", "-", "--as="+as)
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}
