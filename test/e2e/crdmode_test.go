package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// TestCRDMode: beside OpenKruise Agents' CRDs, --mode=crd captures its
// Checkpoint custom resources on a real node, keeping the contract its
// sandbox-manager and sandbox-controller rely on.
// upgradeKey is the --checkpoint-id-annotation-key the tests give the
// server and OpenKruise's fake controller, as artifacts/crd-mode does.
const upgradeKey = "agents.kruise.io/checkpoint-id"

func TestCRDMode(t *testing.T) {
	// Declarative captures wait 6 s: long enough for the capture
	// subresource's calls to come first where a subtest makes them.
	const ns = "sandboxes"
	keys := filepath.Join(t.TempDir(), "e2b-keys.yaml")
	require.NoError(t, os.WriteFile(keys, []byte(fmt.Sprintf("keys:\n- {key: %s, user: alice, team: %s}\n- {key: %s, user: bob, team: %s}\n",
		keyAlice, ns, keyBob, ns)), 0o600))
	e2bAddr := fmt.Sprintf("127.0.0.1:%d", framework.FreePort(t))
	// The server's authorizer caches an allowed decision 1 s (10 s by
	// default), so that a capture checks a creator's revoked rights anew.
	c := framework.LocalUpNodesCRDMode(t, 1, "--declarative-capture-delay=6s", "--e2b-bind-address="+e2bAddr, "--e2b-api-keys-file="+keys,
		"--checkpoint-id-annotation-key="+upgradeKey, "--authorization-webhook-cache-authorized-ttl=1s")
	c.Must("create", "namespace", ns)
	c.Eventually("the namespace's default ServiceAccount", func() bool {
		_, err := c.Kubectl("get", "serviceaccount", "default", "-n", ns)
		return err == nil
	})
	get := func(kind, name, path string) string {
		out, _ := c.Kubectl("get", kind, name, "-n", ns, "-o", "jsonpath="+path)
		return out
	}
	c.Apply(podYAML(ns, "src", framework.SecretCounterScript))
	c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/src", "--timeout=120s")
	c.Eventually("the counter counts", func() bool { return lastCount(t, c, ns, "src") >= 3 })

	// OpenKruise's other kinds stay served: the server registered no APIService.
	_, err := c.Kubectl("get", "apiservice", "v1alpha1.agents.kruise.io", "-o", "jsonpath={.spec.service}")
	require.NoError(t, err)
	assert.Empty(t, get("apiservice", "v1alpha1.agents.kruise.io", "{.spec.service}"))
	c.Must("get", "sandboxes", "-n", ns)

	var name, id string
	t.Run("AsTheSandboxManagerCreatesIt", func(t *testing.T) {
		// generateName <sandbox>-, podName, the API key's ID as owner, then a
		// SandboxTemplate of the same name owned by the Checkpoint.
		out, err := c.KubectlStdin(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint",
"metadata":{"generateName":"src-","namespace":%q,"annotations":{"agents.kruise.io/owner":"key-0123"}},
"spec":{"podName":"src","keepRunning":true}}`, ns), "create", "-f", "-", "-o", "jsonpath={.metadata.name} {.metadata.uid}")
		require.NoError(t, err, out)
		fields := strings.Fields(out)
		require.Len(t, fields, 2, out)
		name = fields[0]
		// What this server does not model survives its writes: OpenKruise's
		// status.podTemplateDelta, another controller's annotation.
		c.Must("patch", "cp", name, "-n", ns, "--subresource=status", "--type=merge", "-p", `{"status":{"podTemplateDelta":{"metadata":{"labels":{"delta":"kept"}}}}}`)
		c.Must("annotate", "cp", name, "-n", ns, "example.com/kept=yes")
		c.Apply(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"SandboxTemplate","metadata":{"name":%q,"namespace":%q,
"ownerReferences":[{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","name":%q,"uid":%q,"controller":true}]},"spec":{}}`,
			name, ns, name, fields[1]))

		c.Eventually("the Checkpoint CR Succeeded", func() bool { return get("cp", name, "{.status.phase}") == "Succeeded" })
		id = get("cp", name, "{.status.checkpointId}")
		assert.NotEmpty(t, id)
		assert.NotEmpty(t, get("cp", name, "{.status.completionTime}"))
		assert.Equal(t, "1", get("cp", name, "{.status.observedGeneration}"))
		assert.Contains(t, get("cp", name, "{.status.message}"), "captured")
		assert.Equal(t, id, get("cp", name, `{.metadata.labels.agents\.kruise\.io/checkpoint-id}`))
		assert.Equal(t, "key-0123", get("cp", name, `{.metadata.annotations.agents\.kruise\.io/owner}`), "the owner is kept as it is")
		assert.Equal(t, "kept", get("cp", name, "{.status.podTemplateDelta.metadata.labels.delta}"), "status.podTemplateDelta survives the server's writes")
		assert.Equal(t, "yes", get("cp", name, `{.metadata.annotations.example\.com/kept}`), "another controller's annotation survives")
		assert.Contains(t, get("cp", name, "{.metadata.finalizers}"), "agents.kruise.io/checkpoint")
		images, err := c.NodeCtr(1, "images", "ls", "-q")
		require.NoError(t, err, images)
		assert.Contains(t, images, "checkpoint.agents.kruise.io/"+id+"/main", "the state is on the node")
		// keepRunning: the source goes on.
		after := lastCount(t, c, ns, "src")
		c.Eventually("the source keeps counting", func() bool { return lastCount(t, c, ns, "src") > after+2 })
	})

	t.Run("DeleteRemovesTheStateAndTheTemplate", func(t *testing.T) {
		require.NotEmpty(t, name)
		watch := exec.Command("kubectl", "get", "cp", name, "-n", ns, "-w", "--no-headers")
		watch.Env = c.Env
		var buf framework.SafeBuffer
		watch.Stdout, watch.Stderr = &buf, &buf
		require.NoError(t, watch.Start())
		defer func() { _ = watch.Process.Kill(); _ = watch.Wait() }()
		c.Eventually("the watch shows the Checkpoint", func() bool { return strings.Contains(buf.String(), "Succeeded") })
		c.Must("delete", "cp", name, "-n", ns, "--wait=false")
		c.Eventually("the Checkpoint is gone", func() bool {
			out, err := c.Kubectl("get", "cp", name, "-n", ns)
			return err != nil && strings.Contains(out, "NotFound")
		})
		images, err := c.NodeCtr(1, "images", "ls", "-q")
		require.NoError(t, err, images)
		assert.NotContains(t, images, id, "the finalizer deleted the state")
		c.Eventually("the SandboxTemplate is garbage-collected", func() bool {
			out, err := c.Kubectl("get", "sandboxtemplate", name, "-n", ns)
			return err != nil && strings.Contains(out, "NotFound")
		})
		assert.Contains(t, buf.String(), "Terminating", "the Checkpoint went through phase Terminating")
	})

	t.Run("TheWebhookChecksAndDefaults", func(t *testing.T) {
		cr := func(name, spec string) string {
			return fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":%q,"namespace":%q},"spec":%s}`, name, ns, spec)
		}
		for _, bad := range []struct{ spec, field string }{
			{`{"podName":"src","ttlAfterFinished":"30x"}`, "spec.ttlAfterFinished"},
			{`{"podName":"src","persistentContents":["cpu"]}`, "spec.persistentContents[0]"},
			{`{"podName":"Not_A_Name"}`, "spec.podName"},
		} {
			out, err := c.KubectlStdin(cr("bad", bad.spec), "create", "-f", "-")
			require.Error(t, err, bad.spec)
			assert.Contains(t, out, `The Checkpoint "bad" is invalid`, bad.spec)
			assert.Contains(t, out, bad.field, bad.spec)
		}
		_, err := c.Kubectl("get", "cp", "bad", "-n", ns)
		assert.Error(t, err, "nothing was created")
		// A good one gets the API's defaults and its sandbox's label.
		c.Apply(cr("good", `{"podName":"src","ttlAfterFinished":"1d"}`))
		assert.Equal(t, "true", get("cp", "good", "{.spec.keepRunning}"))
		assert.Equal(t, `["memory","filesystem"]`, get("cp", "good", "{.spec.persistentContents}"))
		assert.Equal(t, "src", get("cp", "good", `{.metadata.labels.agents\.kruise\.io/sandbox-name}`))
		// Its spec cannot change.
		out, err := c.Kubectl("patch", "cp", "good", "-n", ns, "--type=merge", "-p", `{"spec":{"podName":"other"}}`)
		require.Error(t, err)
		assert.Contains(t, out, "spec.podName")
		assert.Contains(t, out, "immutable")
		c.Eventually("the good one Succeeded", func() bool { return get("cp", "good", "{.status.phase}") == "Succeeded" })
		c.Must("delete", "cp", "good", "-n", ns, "--timeout=60s")
	})

	t.Run("ServerWrittenFieldsAndTheOwner", func(t *testing.T) {
		// What the server alone writes (status.checkpointId, the image and
		// the capture marker) nobody else sets; only an admin changes the owner.
		c.Apply(fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"cp-admin","namespace":%q},"rules":[
{"apiGroups":["agents.kruise.io"],"resources":["checkpoints","checkpoints/status"],"verbs":["get","list","create","update","patch"]}]}`, ns))
		c.Must("create", "rolebinding", "cp-admin", "-n", ns, "--role=cp-admin", "--user=ns-admin")
		c.Apply(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"guarded","namespace":%q,
"annotations":{"agents.kruise.io/owner":"ns-admin"}},"spec":{"podName":"src","persistentContents":["podInfo"]}}`, ns))
		c.Eventually("it Succeeded", func() bool { return get("cp", "guarded", "{.status.phase}") == "Succeeded" })
		own := get("cp", "guarded", "{.status.checkpointId}")
		require.Equal(t, agents.CheckpointID(types.UID(get("cp", "guarded", "{.metadata.uid}"))), own, "the server's ID is its UID's")
		for what, p := range map[string][]string{
			"derived from the Checkpoint's own UID": {"--subresource=status", "-p", `{"status":{"checkpointId":"` + agents.CheckpointID("another-namespaces-uid") + `"}}`},
			"checkpoint-image-digest":               {"-p", `{"metadata":{"annotations":{"agents.kruise.io/checkpoint-image-digest":"sha256:` + strings.Repeat("0", 64) + `"}}}`},
			"captured-by":                           {"-p", `{"metadata":{"annotations":{"agents.kruise.io/captured-by":"replica-x/1"}}}`},
			"only an admin changes the owner":       {"-p", `{"metadata":{"annotations":{"agents.kruise.io/owner":"key-victim"}}}`},
		} {
			out, err := c.Kubectl(append([]string{"--as=ns-admin", "patch", "cp", "guarded", "-n", ns, "--type=merge"}, p...)...)
			require.Error(t, err, what)
			assert.Contains(t, out, what)
		}
		assert.Equal(t, own, get("cp", "guarded", "{.status.checkpointId}"))
		assert.Equal(t, "ns-admin", get("cp", "guarded", `{.metadata.annotations.agents\.kruise\.io/owner}`))
		c.Must("--as=ns-admin", "annotate", "cp", "guarded", "-n", ns, "note=a label of mine is fine")
		c.Must("annotate", "cp", "guarded", "-n", ns, "--overwrite", "agents.kruise.io/owner=migrated") // an admin migrates it
		assert.Equal(t, "migrated", get("cp", "guarded", `{.metadata.annotations.agents\.kruise\.io/owner}`))
		c.Must("delete", "cp", "guarded", "-n", ns)

		// A creator owns what they create: naming another owner (planting a
		// checkpoint in a victim's list) is refused; naming none, they are stamped.
		planted := fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"planted","namespace":%q,
"annotations":{"agents.kruise.io/owner":"key-victim"}},"spec":{"podName":"src","persistentContents":["podInfo"]}}`, ns)
		out, err := c.KubectlStdin(planted, "--as=ns-admin", "create", "-f", "-")
		require.Error(t, err, "a Checkpoint planted in another's name")
		assert.Contains(t, out, "only an admin or an owner stamper")
		c.MustStdin(strings.Replace(planted, `"agents.kruise.io/owner":"key-victim"`, `"note":"mine"`, 1), "--as=ns-admin", "create", "-f", "-")
		assert.Equal(t, "ns-admin", get("cp", "planted", `{.metadata.annotations.agents\.kruise\.io/owner}`), "the creator is its owner")
		c.Must("delete", "cp", "planted", "-n", ns)
	})

	t.Run("ResourceQuotaCountsCheckpoints", func(t *testing.T) {
		// The kube-apiserver's own quota admission, on OpenKruise's CRD.
		quotaCount(t, c, "quota-crd", `{"podName":"nothing","persistentContents":["podInfo"]}`)
	})

	t.Run("CaptureNeedsRightsOnThePod", func(t *testing.T) {
		// A user who may create Checkpoints and call capture, but has no
		// right on Pods, captures nothing: a capture reads a Pod's memory
		// as exec does.
		c.Apply(fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"cp-only","namespace":%q},"rules":[
{"apiGroups":["agents.kruise.io"],"resources":["checkpoints"],"verbs":["get","list","create"]},
{"apiGroups":["subresources.agents.kruise.io"],"resources":["checkpoints/capture"],"verbs":["create"]}]}`, ns))
		c.Must("create", "rolebinding", "cp-only", "-n", ns, "--role=cp-only", "--user=no-pod-rights")
		before := lastCount(t, c, ns, "src")
		var out string
		var err error
		c.Eventually("refused for want of rights on Pods (once the Role is seen)", func() bool {
			out, err = c.KubectlStdin(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"steal","namespace":%q},
"spec":{"podName":"src"}}`, ns), "--as=no-pod-rights", "create", "-f", "-")
			require.Error(t, err, "a Checkpoint of a Pod its creator may not exec into")
			return strings.Contains(out, `user "no-pod-rights" may not get pods`)
		})
		assert.Contains(t, out, "Forbidden")
		_, err = c.Kubectl("get", "cp", "steal", "-n", ns)
		assert.Error(t, err, "nothing was created")
		// keepRunning false needs delete too.
		c.Apply(fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"pod-exec","namespace":%q},"rules":[
{"apiGroups":[""],"resources":["pods"],"verbs":["get"]},{"apiGroups":[""],"resources":["pods/exec"],"verbs":["create"]}]}`, ns))
		c.Must("create", "rolebinding", "pod-exec", "-n", ns, "--role=pod-exec", "--user=no-pod-rights")
		// (The server's authorizer caches decisions for a few seconds.)
		c.Eventually("refused for want of delete pods alone", func() bool {
			out, err = c.KubectlStdin(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"stop","namespace":%q},
"spec":{"podName":"src","keepRunning":false}}`, ns), "--as=no-pod-rights", "create", "-f", "-")
			require.Error(t, err, "keepRunning false ends the Pod: delete pods is needed")
			return strings.Contains(out, `may not delete pods`)
		})
		assert.GreaterOrEqual(t, lastCount(t, c, ns, "src"), before, "the source ran on, untouched")
		c.Must("delete", "rolebinding", "pod-exec", "cp-only", "-n", ns)
	})

	t.Run("TheServersCaptureChecksTheCreatorAgain", func(t *testing.T) { theServersCaptureChecksTheCreatorAgain(t, c, ns) })
	t.Run("ANamespacesCheckpointBytesAreBounded", func(t *testing.T) { aNamespacesCheckpointBytesAreBounded(t, c) })

	t.Run("WebhookDownFailsClosed", func(t *testing.T) {
		require.NoError(t, c.Script("stop-server"))
		out, err := c.KubectlStdin(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"unchecked","namespace":%q},"spec":{"podName":"src"}}`, ns),
			"create", "-f", "-")
		assert.Error(t, err, "no Checkpoint is written unchecked")
		assert.Contains(t, out, "failed calling webhook")
		// Other kinds do not depend on the server.
		c.Apply(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Sandbox","metadata":{"name":"still","namespace":%q},"spec":{}}`, ns))
		require.NoError(t, c.Script("start-server"))
	})

	t.Run("SubresourcesGroup", func(t *testing.T) {
		base := "/apis/subresources.agents.kruise.io/v1alpha1/namespaces/" + ns + "/checkpoints/"
		c.Apply(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"sync","namespace":%q,
"annotations":{"agents.kruise.io/owner":"alice"}},"spec":{"podName":"src"}}`, ns))
		// Two capture calls at once: one captures and answers with the
		// finished Checkpoint; the other gets 409.
		var wg sync.WaitGroup
		outs, errs := make([]string, 2), make([]error, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				outs[i], errs[i] = c.KubectlStdin(`{"timeoutSeconds":30}`, "create", "--raw", base+"sync/capture", "-f", "-")
			}()
		}
		wg.Wait()
		succeeded, conflicts := 0, 0
		for i := range 2 {
			switch {
			case errs[i] == nil && strings.Contains(outs[i], `"phase":"Succeeded"`):
				succeeded++
			case errs[i] != nil && strings.Contains(outs[i], "Conflict"):
				conflicts++
			default:
				t.Errorf("capture call %d: %v %s", i, errs[i], outs[i])
			}
		}
		assert.Equal(t, 1, succeeded, "one call captured, synchronously")
		assert.Equal(t, 1, conflicts, "the other got 409")
		assert.Equal(t, "Succeeded", get("cp", "sync", "{.status.phase}"), "the CR says so too")

		// The captured state clones into a Pod.
		out, err := c.KubectlStdin(`{"spec":{"sandboxName":"sync-clone"}}`, "create", "--raw", base+"sync/restore", "-f", "-")
		require.NoError(t, err, out)
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/sync-clone", "--timeout=60s")
		assert.Greater(t, firstCount(t, c, ns, "sync-clone"), 3, "the clone counts on from the capture")

		// snapshots shows each caller only their own.
		c.Apply(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"ClusterRole","metadata":{"name":"snapshot-reader"},
"rules":[{"apiGroups":["subresources.agents.kruise.io"],"resources":["snapshots"],"verbs":["get","list"]}]}`)
		c.Must("create", "clusterrolebinding", "snapshot-readers", "--clusterrole=snapshot-reader", "--user=alice", "--user=bob")
		snaps := "/apis/subresources.agents.kruise.io/v1alpha1/namespaces/" + ns + "/snapshots"
		c.Eventually("alice sees her snapshot", func() bool {
			out, err := c.Kubectl("get", "--raw", snaps, "--as=alice")
			return err == nil && strings.Contains(out, `"name":"sync"`)
		})
		out, err = c.Kubectl("get", "--raw", snaps, "--as=bob")
		require.NoError(t, err, out)
		assert.NotContains(t, out, `"name":"sync"`, "bob does not see alice's")
		out, err = c.Kubectl("get", "--raw", snaps+"/sync", "--as=bob")
		assert.Error(t, err)
		assert.Contains(t, out, "NotFound")
	})

	t.Run("MarkedPodsNeedTheRightToRestore", func(t *testing.T) {
		// A Pod marked by hand is admitted only if its creator may restore
		// that Checkpoint (the restore subresource's rule), in the Pod's own
		// namespace; then the restore runtime restores it.
		id := get("cp", "sync", "{.status.checkpointId}")
		require.NotEmpty(t, id)
		c.Apply(fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"pod-maker","namespace":%q},"rules":[
{"apiGroups":[""],"resources":["pods"],"verbs":["get","create"]}]}`, ns))
		c.Apply(fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"restorer","namespace":%q},"rules":[
{"apiGroups":["subresources.agents.kruise.io"],"resources":["checkpoints/restore"],"verbs":["create"]}]}`, ns))
		c.Must("create", "rolebinding", "pod-makers", "-n", ns, "--role=pod-maker", "--user=alice", "--user=bob", "--user=mallory")
		c.Must("create", "rolebinding", "restorers", "-n", ns, "--role=restorer", "--user=alice", "--user=bob")
		marked := func(name string) string {
			return framework.MarkForRestore(podYAML(ns, name, framework.CounterScript), id)
		}
		for who, says := range map[string]string{
			"mallory": "may not create checkpoints.subresources.agents.kruise.io/restore",
			"bob":     "only the owner",
		} {
			out, err := c.KubectlStdin(marked("by-"+who), "create", "-f", "-", "--as="+who)
			require.Error(t, err, "%s's marked Pod is refused", who)
			assert.Contains(t, out, says, who)
			assert.Contains(t, out, "agents.kruise.io/restore-from", who)
		}
		c.Must("create", "namespace", "elsewhere")
		c.Must("create", "rolebinding", "pod-makers", "-n", "elsewhere", "--clusterrole=admin", "--user=alice")
		out, err := c.KubectlStdin(framework.MarkForRestore(podYAML("elsewhere", "stolen", framework.CounterScript), id), "create", "-f", "-", "--as=alice")
		require.Error(t, err, "a Checkpoint of another namespace is not restored")
		assert.Contains(t, out, "namespace elsewhere has no Checkpoint")
		// Unmarked Pods never reach the webhook.
		c.Apply(podYAML(ns, "plain", "sleep 1000"))

		out, err = c.KubectlStdin(marked("by-alice"), "create", "-f", "-", "--as=alice")
		require.NoError(t, err, out)
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/by-alice", "--timeout=60s")
		assert.Greater(t, firstCount(t, c, ns, "by-alice"), 3, "the Pod counts on from the capture")
		c.Must("delete", "pod", "by-alice", "plain", "-n", ns, "--wait=false")
	})

	t.Run("OpenKruiseClonesAreRestored", func(t *testing.T) {
		// OpenKruise's own clone path, played by a fake of its
		// sandbox-manager and sandbox controller on its real CRDs: the
		// controller's Pod of a clone Sandbox carries no mark; admission
		// marks it by the Sandbox's owner rule, and the restore runtime
		// restores every container of it.
		kruise := fakeOpenKruise{c: c, ns: ns}
		kruise.install()
		c.Apply(sidecarPodYAML(ns, "sbx"))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/sbx", "--timeout=120s")
		c.Must("exec", "-n", ns, "sbx", "-c", "proxy", "--", "sh", "-c", "echo kept by the sidecar > /tmp/note")
		c.Eventually("both containers count", func() bool {
			return countIn(c, ns, "sbx", "proxy", true) >= 3 && countIn(c, ns, "sbx", "main", true) >= 3
		})
		_, id := kruise.snapshot(t, "sbx", "key-alice")

		clone, out, err := kruise.clone(t, ns, id, "key-alice")
		require.NoError(t, err, out)
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/"+clone, "--timeout=60s")
		assert.Equal(t, id, get("pod", clone, `{.metadata.annotations.agents\.kruise\.io/restore-from}`), "marked at admission")
		assert.Equal(t, "checkpoint", get("pod", clone, "{.spec.runtimeClassName}"))
		assert.Equal(t, "sandbox", get("pod", clone, `{.metadata.annotations.agents\.kruise\.io/created-by}`), "the controller's own annotations are kept")
		for _, ctr := range []string{"proxy", "main"} {
			c.Eventually(clone+"/"+ctr+" logs", func() bool { return countIn(c, ns, clone, ctr, false) >= 0 })
			assert.Greater(t, countIn(c, ns, clone, ctr, false), 3, "container %s of the clone counts on from the capture", ctr)
		}
		assert.Equal(t, "kept by the sidecar", strings.TrimSpace(c.MustStdout("exec", "-n", ns, clone, "-c", "proxy", "--", "cat", "/tmp/note")))
		assert.Equal(t, "captured", strings.TrimSpace(c.MustStdout("exec", "-n", ns, clone, "-c", "main", "--", "cat", "/data/marker")))

		// Refused, never fresh: another owner's clone, a clone of another
		// namespace's checkpoint, a clone's Pod made by someone else.
		other, out, err := kruise.clone(t, ns, id, "key-bob")
		require.Error(t, err, "another owner's clone is refused")
		assert.Contains(t, out, `the Sandbox's owner ("key-bob") is not the owner`)
		_, err = c.Kubectl("get", "pod", other, "-n", ns)
		assert.Error(t, err, "no Pod of the refused clone")
		c.Must("create", "namespace", "kruise-elsewhere")
		_, out, err = kruise.clone(t, "kruise-elsewhere", id, "key-alice")
		require.Error(t, err, "a checkpoint of another namespace is not cloned")
		assert.Contains(t, out, "namespace kruise-elsewhere has no Checkpoint")
		_, out, err = kruise.sandbox(t, ns, id, "key-alice", true, "alice", "")
		require.Error(t, err, "only the sandbox controller makes a clone's Pod")
		assert.Contains(t, out, "created by its controller")

		// A Sandbox that is no clone: its Pod starts fresh, unmarked.
		fresh, out, err := kruise.sandbox(t, ns, id, "key-alice", false, fakeSandboxController, "")
		require.NoError(t, err, out)
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/"+fresh, "--timeout=60s")
		assert.Empty(t, get("pod", fresh, `{.metadata.annotations.agents\.kruise\.io/restore-from}`))
		c.Eventually("the fresh sandbox counts", func() bool { return countIn(c, ns, fresh, "main", false) >= 0 })
		assert.Equal(t, 1, countIn(c, ns, fresh, "main", false), "a sandbox that is no clone starts from 1")

		// keepRunning false on a Sandbox's Pod pauses the Sandbox, as
		// OpenKruise pauses one (its controller then takes the Pod away),
		// instead of deleting the Pod under it (which OpenKruise calls Failed).
		c.Apply(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"pause-%s","namespace":%q},
"spec":{"podName":%q,"keepRunning":false}}`, fresh, ns, fresh))
		c.Eventually("the capture Succeeded", func() bool { return get("cp", "pause-"+fresh, "{.status.phase}") == "Succeeded" })
		c.Eventually("the Sandbox is paused", func() bool { return get("sandbox", fresh, "{.spec.paused}") == "true" })
		assert.NotEmpty(t, get("pod", fresh, "{.metadata.uid}"), "the Pod is left to OpenKruise's controller")
		assert.Empty(t, get("pod", fresh, "{.metadata.deletionTimestamp}"), "the Pod is not deleted under its Sandbox")
		assert.Equal(t, "Paused", kruise.reconcile(t, fresh), "OpenKruise's controller then takes the Pod away: Paused, not Failed")
		assert.Equal(t, "Paused", get("sandbox", fresh, "{.status.phase}"))

		// With the server down, Pods unrelated to sandboxes are admitted;
		// a clone Sandbox's Pod is not.
		require.NoError(t, c.Script("stop-server"))
		started := false
		defer func() {
			if !started {
				_ = c.Script("start-server")
			}
		}()
		c.Apply(podYAML(ns, "unrelated", "sleep 1000"))
		_, out, err = kruise.clone(t, ns, id, "key-alice")
		require.NoError(t, c.Script("start-server"))
		started = true
		require.Error(t, err, "a clone's Pod is not created unchecked")
		assert.Contains(t, out, "failed calling webhook")
		c.Must("delete", "pod", clone, fresh, "unrelated", "-n", ns, "--wait=false", "--ignore-not-found")
	})

	t.Run("OpenKruiseUpgradeRestoresTheWritableLayer", func(t *testing.T) {
		// OpenKruise's CheckpointRestore upgrade, played by its fake: a
		// filesystem Checkpoint of the Sandbox, its Pod deleted, a new Pod
		// of the (changed) template naming the Checkpoint under the key
		// both are given. Every container gets its writable layer back, on
		// a fresh start: init containers run, counts start over.
		kruise := fakeOpenKruise{c: c, ns: ns}
		kruise.install()
		uid := kruise.plainSandbox(t, "upg", "key-alice", sidecarPodYAML(ns, "upg"))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/upg", "--timeout=120s")
		for _, ctr := range []string{"main", "proxy"} {
			c.Must("exec", "-n", ns, "upg", "-c", ctr, "--", "sh", "-c", "echo "+ctr+" before the upgrade > /tmp/kept")
		}
		c.Eventually("it counts", func() bool { return countIn(c, ns, "upg", "main", true) >= 3 })
		id, out, err := kruise.upgrade(t, "upg", uid, upgradeKey)
		require.NoError(t, err, out)
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/upg", "--timeout=120s")
		assert.Equal(t, id, get("pod", "upg", `{.metadata.annotations.agents\.kruise\.io/restore-from}`), "marked at admission")
		assert.Equal(t, "checkpoint", get("pod", "upg", "{.spec.runtimeClassName}"))
		for _, ctr := range []string{"main", "proxy"} {
			assert.Equal(t, ctr+" before the upgrade", strings.TrimSpace(c.MustStdout("exec", "-n", ns, "upg", "-c", ctr, "--", "cat", "/tmp/kept")),
				"container %s has its writable layer back", ctr)
		}
		assert.Equal(t, "yes", strings.TrimSpace(c.MustStdout("exec", "-n", ns, "upg", "-c", "main", "--", "sh", "-c", "echo $UPGRADED")), "on the upgraded template")
		c.Eventually("the upgraded sandbox counts", func() bool { return countIn(c, ns, "upg", "main", false) >= 0 })
		assert.Equal(t, 1, countIn(c, ns, "upg", "main", false), "its processes start afresh")
		assert.Contains(t, c.Must("logs", "-n", ns, "upg", "-c", "setup"), "set up", "its init container ran again")

		// Another Sandbox's Pod naming this upgrade's checkpoint is refused.
		thief := c.MustStdin(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Sandbox","metadata":{"name":"thief","namespace":%q},"spec":{}}`, ns),
			"create", "-f", "-", "-o", "jsonpath={.metadata.uid}")
		out, err = kruise.sandboxPod(t, fakeSandboxController, ns, "thief", thief, nil,
			map[string]any{"containers": []any{map[string]any{"name": "main", "image": framework.BusyboxImage, "imagePullPolicy": "Never"}}},
			map[string]string{upgradeKey: id})
		require.Error(t, err, "only its own Sandbox's upgrade restores a checkpoint's layers")
		assert.Contains(t, out, `is of sandbox "upg"`)
		c.Must("delete", "pod", "upg", "-n", ns, "--wait=false")
	})

	t.Run("OpenKruiseHibernateKeepsTheMemory", func(t *testing.T) {
		kruise := fakeOpenKruise{c: c, ns: ns}
		kruise.install()
		hibernateAndResume(t, kruise, "hib", podYAML(ns, "hib", framework.SecretCounterScript), "")

		// A Stop Sandbox pauses as before: its Pod goes at once, and it
		// resumes fresh.
		stop := kruise.sandboxWith(t, "stop", "key-alice", podYAML(ns, "stop", framework.CounterScript),
			map[string]any{"pauseStrategy": map[string]any{"type": "Stop"}})
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/stop", "--timeout=120s")
		c.Eventually("the Stop sandbox counts", func() bool { return countIn(c, ns, "stop", "main", true) >= 3 })
		assert.Empty(t, kruise.pause(t, "stop"), "a Stop Sandbox's Pod goes at once")
		assert.Empty(t, c.MustStdout("get", "cp", "-n", ns, "-l", "agents.kruise.io/sandbox-name=stop", "-o", "name"), "nothing is captured")
		out, err := kruise.resume(t, "stop", stop)
		require.NoError(t, err, out)
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/stop", "--timeout=120s")
		assert.Empty(t, get("pod", "stop", `{.metadata.annotations.agents\.kruise\.io/restore-from}`))
		c.Eventually("the resumed Stop sandbox counts", func() bool { return countIn(c, ns, "stop", "main", false) >= 0 })
		assert.Equal(t, 1, countIn(c, ns, "stop", "main", false), "a Stop Sandbox starts fresh")
		c.Must("delete", "sandbox", "stop", "-n", ns, "--wait=false")
		c.Must("delete", "pod", "stop", "-n", ns, "--wait=false", "--ignore-not-found")
	})

	t.Run("E2BSDK", func(t *testing.T) {
		// The team may create Checkpoint CRs, use the subresources group and Pods
		// (list them too: the SDK lists sandboxes).
		c.Apply(fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"e2b-team","namespace":%q},"rules":[
{"apiGroups":["agents.kruise.io"],"resources":["checkpoints"],"verbs":["get","list","create"]},
{"apiGroups":["subresources.agents.kruise.io"],"resources":["checkpoints/capture","checkpoints/restore"],"verbs":["create"]},
{"apiGroups":["subresources.agents.kruise.io"],"resources":["snapshots"],"verbs":["get","list","delete"]},
{"apiGroups":[""],"resources":["pods"],"verbs":["get","list","create","delete"]},
{"apiGroups":[""],"resources":["pods/exec"],"verbs":["create"]}]}`, ns))
		c.Must("create", "rolebinding", "e2b-team", "-n", ns, "--role=e2b-team", "--group=agents.kruise.io:e2b-team:"+ns)
		front := e2bFront{url: "http://" + e2bAddr}
		var made struct{ SnapshotID, CloneID, TemplateID string }
		e2bStep(t, front, "e2b", keyAlice, "create", "src", &made)
		// The snapshot is a Checkpoint CR of alice's; the clone a Pod.
		out := c.Must("get", "cp", "-n", ns, "-l", "agents.kruise.io/checkpoint-id="+made.SnapshotID,
			"-o", `jsonpath={.items[0].metadata.annotations.agents\.kruise\.io/owner}`)
		assert.Equal(t, "e2b:alice", out, "E2B users are prefixed: a keys file names no Kubernetes user")
		assert.Equal(t, "Running", get("pod", made.CloneID, "{.status.phase}"))
		assert.Greater(t, firstCount(t, c, ns, made.CloneID), 3, "the clone counts on from the capture")
		// The snapshot has a SandboxTemplate of its name, as OpenKruise's
		// sandbox-manager makes one: OpenKruise's own clone works on it too.
		cpName := c.MustStdout("get", "cp", "-n", ns, "-l", "agents.kruise.io/checkpoint-id="+made.SnapshotID, "-o", "jsonpath={.items[0].metadata.name}")
		assert.Equal(t, cpName, get("sandboxtemplate", cpName, "{.metadata.ownerReferences[0].name}"), "the template is the snapshot's")
		kruise := fakeOpenKruise{c: c, ns: ns}
		kruise.install()
		sandbox, out, err := kruise.clone(t, ns, made.SnapshotID, "e2b:alice")
		require.NoError(t, err, out)
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/"+sandbox, "--timeout=60s")
		assert.Greater(t, firstCount(t, c, ns, sandbox), 3, "OpenKruise's clone of our snapshot counts on from the capture")
		c.Must("delete", "pod", sandbox, "-n", ns, "--wait=false")

		// Pause keeps the memory in crd mode too: the Pod goes, bob can do
		// nothing to the paused sandbox, alice's connect resumes it.
		before := lastCount(t, c, ns, made.CloneID)
		var step struct{ Paused, Resumed, Refused bool }
		e2bStep(t, front, "e2b", keyAlice, "pause", made.CloneID, &step)
		require.True(t, step.Paused)
		out, err = c.Kubectl("get", "pod", made.CloneID, "-n", ns)
		require.Error(t, err, "a paused sandbox has no Pod: %s", out)
		e2bStep(t, front, "e2b", keyBob, "other-paused", made.CloneID, &step)
		require.True(t, step.Refused)
		e2bStep(t, front, "e2b", keyAlice, "resume", made.CloneID, &step)
		require.True(t, step.Resumed)
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/"+made.CloneID, "--timeout=120s")
		c.Eventually("the resumed sandbox counts", func() bool { return firstCount(t, c, ns, made.CloneID) > 0 })
		assert.GreaterOrEqual(t, firstCount(t, c, ns, made.CloneID), before, "it counts on from its pause")
		assert.Equal(t, c.Secret(ns, "src"), c.Secret(ns, made.CloneID), "the clone of src, paused and resumed, keeps the secret src's memory alone held")

		var refused struct{ Refused bool }
		e2bStep(t, front, "e2b", keyBob, "other", made.CloneID, &refused)
		assert.True(t, refused.Refused)
		var killed struct{ Killed bool }
		e2bStep(t, front, "e2b", keyAlice, "kill", made.CloneID, &killed)
		assert.True(t, killed.Killed)
	})

	t.Run("TTLDeletesIt", func(t *testing.T) {
		c.Apply(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"short","namespace":%q},
"spec":{"podName":"src","ttlAfterFinished":"3s"}}`, ns))
		c.Eventually("it Succeeded, then expired", func() bool {
			out, err := c.Kubectl("get", "cp", "short", "-n", ns)
			return err != nil && strings.Contains(out, "NotFound")
		})
	})

	t.Run("PodInfoOnlySucceedsAtOnce", func(t *testing.T) {
		c.Apply(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"info","namespace":%q},
"spec":{"podName":"src","persistentContents":["podInfo"]}}`, ns))
		c.Eventually("it Succeeded", func() bool { return get("cp", "info", "{.status.phase}") == "Succeeded" })
		assert.NotEmpty(t, get("cp", "info", "{.status.checkpointId}"))
		assert.Empty(t, get("cp", "info", "{.metadata.finalizers}"), "nothing captured, nothing to finalize")
		c.Must("delete", "cp", "info", "-n", ns, "--timeout=30s")
	})

	t.Run("KeepRunningFalseEndsThePod", func(t *testing.T) {
		c.Apply(podYAML(ns, "once", framework.CounterScript))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/once", "--timeout=120s")
		c.Apply(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"last","namespace":%q},
"spec":{"podName":"once","keepRunning":false}}`, ns))
		c.Eventually("it Succeeded", func() bool { return get("cp", "last", "{.status.phase}") == "Succeeded" })
		c.Eventually("the source Pod is deleted", func() bool {
			out, err := c.Kubectl("get", "pod", "once", "-n", ns)
			return err != nil && strings.Contains(out, "NotFound")
		})
		// restartPolicy Never: the Pod ends Succeeded (its process exits 0 on SIGTERM).
		c.Apply(neverPodYAML(ns, "done"))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/done", "--timeout=120s")
		c.Apply(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"fin","namespace":%q},
"spec":{"podName":"done","keepRunning":false}}`, ns))
		c.Eventually("it Succeeded", func() bool { return get("cp", "fin", "{.status.phase}") == "Succeeded" })
		c.Eventually("the source Pod ends Succeeded", func() bool { return get("pod", "done", "{.status.phase}") == "Succeeded" })
	})
}

// theServersCaptureChecksTheCreatorAgain: carol may capture Pod src
// through her group when she creates a Checkpoint; her group's RoleBinding
// is deleted before the server's own capture runs, which checks her rights
// (groups and all, as recorded at create) again: it ends Failed, saying
// Forbidden, and nothing of a capture happened (no marker, no data key, no
// ID; the source's counter ran on without a stop).
func theServersCaptureChecksTheCreatorAgain(t *testing.T, c *framework.Cluster, ns string) {
	c.Apply(fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"capturer","namespace":%q},"rules":[
{"apiGroups":["agents.kruise.io"],"resources":["checkpoints"],"verbs":["get","create"]},
{"apiGroups":[""],"resources":["pods"],"verbs":["get"]},{"apiGroups":[""],"resources":["pods/exec"],"verbs":["create"]}]}`, ns))
	binding := fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"capturers","namespace":%q},
"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"capturer"},
"subjects":[{"apiGroup":"rbac.authorization.k8s.io","kind":"Group","name":"capturers"}]}`, ns)
	get := func(name, path string) string {
		out, _ := c.Kubectl("get", "cp", name, "-n", ns, "-o", "jsonpath="+path)
		return out
	}
	// The declarative capture waits 6 s: the revocation almost always comes
	// first. Where it did not (a slow machine), the attempt proves nothing
	// and another is made.
	for attempt := range 3 {
		name := fmt.Sprintf("revoked-%d", attempt)
		c.Apply(binding)
		var out string
		var err error
		c.Eventually("carol creates a Checkpoint of src through her group", func() bool {
			out, err = c.KubectlStdin(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":%q,"namespace":%q},
"spec":{"podName":"src"}}`, name, ns), "--as=carol", "--as-group=capturers", "create", "-f", "-")
			return err == nil
		})
		since := time.Now()
		creator := get(name, `{.metadata.annotations.agents\.kruise\.io/creator}`)
		assert.Contains(t, creator, `"name":"carol"`)
		assert.Contains(t, creator, `"capturers"`, "the creator is recorded with her groups")
		c.Must("delete", "rolebinding", "capturers", "-n", ns)
		c.Eventually("the kube-apiserver sees the revocation", func() bool {
			out, _ := c.Kubectl("auth", "can-i", "get", "pods/src", "-n", ns, "--as=carol", "--as-group=capturers")
			return strings.TrimSpace(out) == "no"
		})
		if phase := get(name, "{.status.phase}"); phase != "" && phase != "Pending" {
			t.Logf("attempt %d: the capture started before the revocation was seen (%s); again", attempt, phase)
			c.Must("delete", "cp", name, "-n", ns, "--wait=true", "--timeout=60s")
			continue
		}
		c.Eventually("the server's capture ends", func() bool { return get(name, "{.status.phase}") == "Failed" })
		msg := get(name, "{.status.message}")
		assert.Contains(t, msg, `user "carol" may not get pods`, "it says why")
		assert.Contains(t, c.Must("get", "events", "-n", ns, "--field-selector", "involvedObject.name="+name, "-o", "jsonpath={.items[*].reason}"),
			"Forbidden")
		assert.Empty(t, get(name, `{.metadata.annotations.agents\.kruise\.io/captured-by}`), "no capture started")
		assert.Empty(t, get(name, "{.status.checkpointId}"))
		uid := get(name, "{.metadata.uid}")
		out, _ = c.Kubectl("get", "secrets", "-A", "--field-selector", "metadata.name=checkpoint-key-"+agents.CheckpointID(types.UID(uid)), "-o", "name")
		assert.Empty(t, strings.TrimSpace(out), "no data key was made")
		// The source's own stamps (its log lines, every 0.1 s, as the runtime
		// received them) show no stop over the whole time.
		gap := longestLogGap(t, c, ns, "src", since.Add(-10*time.Second))
		t.Logf("the source's longest gap between two counts since the create: %s", gap)
		assert.Less(t, gap, 2*time.Second, "the source was not stopped")
		c.Must("delete", "cp", name, "-n", ns, "--wait=true", "--timeout=60s")
		return
	}
	t.Fatal("in three attempts the server's capture always started before the revocation was seen")
}

// longestLogGap is the longest time between two consecutive log lines of
// pod (the runtime's timestamps) from since on.
func longestLogGap(t *testing.T, c *framework.Cluster, ns, pod string, since time.Time) time.Duration {
	t.Helper()
	var longest time.Duration
	var prev time.Time
	for _, line := range strings.Split(c.Must("logs", "-n", ns, pod, "--timestamps", "--since-time="+since.UTC().Format(time.RFC3339)), "\n") {
		stamp, _, _ := strings.Cut(line, " ")
		at, err := time.Parse(time.RFC3339Nano, stamp)
		if err != nil {
			continue
		}
		if !prev.IsZero() && at.Sub(prev) > longest {
			longest = at.Sub(prev)
		}
		prev = at
	}
	require.False(t, prev.IsZero(), "pod %s logged nothing since %s", pod, since)
	return longest
}

// aNamespacesCheckpointBytesAreBounded: a Namespace annotated with a bound
// on its checkpoint bytes keeps no capture that would pass it (its state
// is deleted; it ends Failed, QuotaExceeded), keeps one under it, and once
// full captures nothing more.
func aNamespacesCheckpointBytesAreBounded(t *testing.T, c *framework.Cluster) {
	const ns = "capped"
	c.Must("create", "namespace", ns)
	c.Eventually("the namespace's default ServiceAccount", func() bool {
		_, err := c.Kubectl("get", "serviceaccount", "default", "-n", ns)
		return err == nil
	})
	c.Apply(podYAML(ns, "src", framework.CounterScript))
	c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/src", "--timeout=120s")
	limit := func(q string) {
		c.Must("annotate", "namespace", ns, "--overwrite", agents.AnnotationBytesLimit+"="+q)
	}
	get := func(name, path string) string {
		out, _ := c.Kubectl("get", "cp", name, "-n", ns, "-o", "jsonpath="+path)
		return out
	}
	capture := func(name string) string {
		c.Apply(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":%q,"namespace":%q},"spec":{"podName":"src"}}`, name, ns))
		var phase string
		c.Eventually("the capture of "+name+" ends", func() bool {
			phase = get(name, "{.status.phase}")
			return phase == "Succeeded" || phase == "Failed"
		})
		return phase
	}
	events := func(name string) string {
		return c.Must("get", "events", "-n", ns, "--field-selector", "involvedObject.name="+name, "-o", "jsonpath={.items[*].reason}")
	}

	limit("1")
	require.Equal(t, "Failed", capture("over"), "a capture over the bound is not kept")
	assert.Contains(t, get("over", "{.status.message}"), "exceeded quota: this capture holds")
	assert.Contains(t, get("over", "{.status.message}"), agents.AnnotationBytesLimit)
	assert.Contains(t, events("over"), "QuotaExceeded")
	assert.Empty(t, get("over", "{.status.checkpointId}"))
	c.Eventually("its state is gone from the node", func() bool {
		ls, err := c.NodeCtr(1, "leases", "ls")
		return err == nil && !strings.Contains(ls, agents.CheckpointID(types.UID(get("over", "{.metadata.uid}"))))
	})

	limit("1Gi")
	require.Equal(t, "Succeeded", capture("kept"), get("kept", "{.status.message}"))
	size := get("kept", `{.metadata.annotations.agents\.kruise\.io/checkpoint-size-bytes}`)
	require.NotEmpty(t, size, "crd mode keeps the size in an annotation")

	limit(size)
	require.Equal(t, "Failed", capture("full"), "a full namespace captures nothing more")
	assert.Contains(t, get("full", "{.status.message}"), "its limit is")
	assert.Contains(t, events("full"), "QuotaExceeded")
	assert.Empty(t, get("full", `{.metadata.annotations.agents\.kruise\.io/captured-by}`), "no capture started")
	c.Must("delete", "namespace", ns, "--wait=false")
}

// hibernateAndResume plays OpenKruise's pause and resume of a Hibernate
// Sandbox name, its template podYAML's counting Pod, through the fake of
// its controller: spec.paused, then the Pod deleted (again while
// refused); resume (its template bound to node resumeOn, when set), then
// a Pod of the Sandbox's name from its template, unmarked. The memory
// must come back, and the hibernation Checkpoint go once resumed. The
// Sandbox and its Pod are deleted at the end.
func hibernateAndResume(t *testing.T, kruise fakeOpenKruise, name, podYAML, resumeOn string) {
	t.Helper()
	c, ns := kruise.c, kruise.ns
	get := func(kind, obj, path string) string {
		out, _ := c.Kubectl("get", kind, obj, "-n", ns, "-o", "jsonpath="+path)
		return out
	}
	hibernate := map[string]any{"pauseStrategy": map[string]any{"type": "Hibernate", "hibernateStrategy": map[string]any{"type": "Snapshot"}}}
	uid := kruise.sandboxWith(t, name, "key-alice", podYAML, hibernate)
	c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/"+name, "--timeout=120s")
	c.Eventually("the sandbox counts", func() bool { return countIn(c, ns, name, "main", true) >= 3 })
	podUID := get("pod", name, "{.metadata.uid}")
	before := countIn(c, ns, name, "main", true)
	secret := c.Secret(ns, name)

	// Paused, the Pod is not evicted before its memory is captured either
	// (a node drain evicts): the eviction's delete meets the same review.
	c.Must("patch", "sandbox", name, "-n", ns, "--type=merge", "-p", `{"spec":{"paused":true}}`)
	out, err := c.KubectlStdin(fmt.Sprintf(`{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":%q,"namespace":%q}}`, name, ns),
		"create", "--raw", "/api/v1/namespaces/"+ns+"/pods/"+name+"/eviction", "-f", "-")
	require.Error(t, err, "the eviction is refused: %s", out)
	assert.Contains(t, out, "its memory is being captured")

	refusals := kruise.pause(t, name)
	require.NotEmpty(t, refusals, "the Pod's delete waits for the capture of its memory")
	assert.Contains(t, refusals[0], "its memory is being captured")
	_, err = c.Kubectl("get", "pod", name, "-n", ns)
	require.Error(t, err, "the Pod is gone once its memory is captured")
	hib := c.MustStdout("get", "cp", "-n", ns, "-l", "agents.kruise.io/hibernation=true,agents.kruise.io/sandbox-name="+name, "-o", "jsonpath={.items[*].metadata.name}")
	require.Len(t, strings.Fields(hib), 1, "one hibernation Checkpoint")
	require.Equal(t, "Succeeded", get("cp", hib, "{.status.phase}"))
	id := get("cp", hib, "{.status.checkpointId}")
	assert.Equal(t, uid+"/"+podUID, get("cp", hib, `{.metadata.annotations.agents\.kruise\.io/hibernation-of}`))
	assert.Equal(t, "key-alice", get("cp", hib, `{.metadata.annotations.agents\.kruise\.io/owner}`), "the Sandbox's owner owns it")
	assert.Equal(t, name, get("cp", hib, "{.metadata.ownerReferences[0].name}"), "it goes with its Sandbox")
	// Nobody else makes a hibernation: the annotation is the server's,
	// refused even to one who may capture the Pod.
	c.Apply(fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"Role","metadata":{"name":"forger","namespace":%q},"rules":[
{"apiGroups":["agents.kruise.io"],"resources":["checkpoints"],"verbs":["create"]},
{"apiGroups":[""],"resources":["pods"],"verbs":["get"]},{"apiGroups":[""],"resources":["pods/exec"],"verbs":["create"]}]}`, ns))
	c.Apply(fmt.Sprintf(`{"apiVersion":"rbac.authorization.k8s.io/v1","kind":"RoleBinding","metadata":{"name":"forger","namespace":%q},
"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"forger"},"subjects":[{"kind":"User","name":"forger"}]}`, ns))
	out, err = c.KubectlStdin(fmt.Sprintf(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"generateName":"forged-","namespace":%q,
"labels":{"agents.kruise.io/hibernation":"true"},"annotations":{"agents.kruise.io/hibernation-of":"%s/x"}},"spec":{"podName":"src","sandboxName":%q}}`, ns, uid, name),
		"create", "-f", "-", "--as=forger")
	require.Error(t, err, "a forged hibernation is refused")
	assert.Contains(t, out, "is written by the server only")

	if resumeOn != "" {
		c.Must("patch", "sandbox", name, "-n", ns, "--type=merge", "-p", `{"spec":{"template":{"spec":{"nodeName":"`+resumeOn+`"}}}}`)
	}
	out, err = kruise.resume(t, name, uid)
	require.NoError(t, err, out)
	c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/"+name, "--timeout=120s")
	if resumeOn != "" {
		assert.Equal(t, resumeOn, get("pod", name, "{.spec.nodeName}"))
	}
	assert.Equal(t, id, get("pod", name, `{.metadata.annotations.agents\.kruise\.io/restore-from}`), "the resumed Pod is restored from its hibernation")
	assert.Equal(t, "checkpoint", get("pod", name, "{.spec.runtimeClassName}"))
	assert.Greater(t, before, 2)
	assert.GreaterOrEqual(t, countIn(c, ns, name, "main", false), before, "its memory continues: the count goes on from before the pause")
	assert.Equal(t, secret, c.Secret(ns, name), "its memory continues: the secret it held in memory alone")
	c.Eventually("the hibernation Checkpoint is deleted once resumed (pause is one to one)", func() bool {
		_, err := c.Kubectl("get", "cp", hib, "-n", ns)
		return err != nil
	})
	after := countIn(c, ns, name, "main", true)
	c.Eventually("the resumed sandbox counts on without its checkpoint", func() bool { return countIn(c, ns, name, "main", true) > after+2 })
	c.Must("delete", "sandbox", name, "-n", ns, "--wait=false")
	c.Must("delete", "pod", name, "-n", ns, "--wait=false", "--ignore-not-found")
}
