package registration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// The DELETE review of Sandboxes' Pods (crd mode) is registered for
// DELETE only, matched to Pods a Sandbox controls that are not going yet
// (oldObject: a DELETE has no object), fails closed, and declares its side
// effect (it may start a capture), none on a dry run.
func TestSandboxPodDeletesWebhook(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.crt")
	require.NoError(t, os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), 0o600))
	client := fake.NewSimpleClientset()
	cfg := WebhookConfig{Client: client, Name: "checkpoint-apiserver", Group: "agents.kruise.io", Version: "v1alpha1", Resource: "checkpoints",
		ServiceNamespace: "checkpoint-system", ServiceName: "checkpoint-apiserver", ServicePort: 9443, CAFile: ca,
		RestorePodsPath: "/validate-restore-pods", SandboxPodsPath: "/mutate-sandbox-pods", SandboxPodDeletesPath: "/validate-sandbox-pod-deletes"}
	require.NoError(t, ReconcileWebhooks(context.Background(), cfg))
	v, err := client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(context.Background(), "checkpoint-apiserver", metav1.GetOptions{})
	require.NoError(t, err)
	find := func(name string) *admissionregistrationv1.ValidatingWebhook {
		for i := range v.Webhooks {
			if v.Webhooks[i].Name == name {
				return &v.Webhooks[i]
			}
		}
		t.Fatalf("%s is not registered", name)
		return nil
	}
	hook := find("hibernate-sandbox-pods.agents.kruise.io")
	assert.Equal(t, "/validate-sandbox-pod-deletes", *hook.ClientConfig.Service.Path)
	require.Len(t, hook.Rules, 1)
	assert.Equal(t, []admissionregistrationv1.OperationType{admissionregistrationv1.Delete}, hook.Rules[0].Operations)
	assert.Equal(t, []string{"pods"}, hook.Rules[0].Resources)
	assert.Equal(t, admissionregistrationv1.Fail, *hook.FailurePolicy)
	assert.Equal(t, admissionregistrationv1.SideEffectClassNoneOnDryRun, *hook.SideEffects)
	require.Len(t, hook.MatchConditions, 1)
	expr := hook.MatchConditions[0].Expression
	assert.Contains(t, expr, "!has(oldObject.metadata.deletionTimestamp)")
	assert.Contains(t, expr, "r.kind == 'Sandbox'")
	assert.NotContains(t, strings.ReplaceAll(expr, "oldObject.", ""), "object.", "a DELETE is matched on oldObject only (it has no object)")

	// An eviction deletes without the DELETE review: it is reviewed too,
	// on the same path, ignoring failures (every eviction of the cluster
	// reaches it: a server down must not stop every drain).
	evictions := find("hibernate-sandbox-evictions.agents.kruise.io")
	assert.Equal(t, "/validate-sandbox-pod-deletes", *evictions.ClientConfig.Service.Path)
	require.Len(t, evictions.Rules, 1)
	assert.Equal(t, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, evictions.Rules[0].Operations)
	assert.Equal(t, []string{"pods/eviction"}, evictions.Rules[0].Resources)
	assert.Equal(t, admissionregistrationv1.Ignore, *evictions.FailurePolicy)
	assert.Equal(t, admissionregistrationv1.SideEffectClassNoneOnDryRun, *evictions.SideEffects)

	// Without the path (aggregated mode) it is not registered.
	client = fake.NewSimpleClientset()
	cfg.Client, cfg.SandboxPodDeletesPath = client, ""
	require.NoError(t, ReconcileWebhooks(context.Background(), cfg))
	v, err = client.AdmissionregistrationV1().ValidatingWebhookConfigurations().Get(context.Background(), "checkpoint-apiserver", metav1.GetOptions{})
	require.NoError(t, err)
	for _, w := range v.Webhooks {
		assert.NotContains(t, w.Name, "hibernate-sandbox")
	}
}
