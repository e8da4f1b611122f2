package registration

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/tools/record"
)

const pem1 = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"

func crd(name, group, version string, served bool) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]interface{}{"name": name},
		"spec": map[string]interface{}{"group": group, "versions": []interface{}{
			map[string]interface{}{"name": version, "served": served, "storage": true}}},
	}}
}

func automanaged() *unstructured.Unstructured {
	u := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
		"metadata": map[string]interface{}{"name": "v1alpha1.agents.kruise.io", "labels": map[string]interface{}{AutomanagedLabel: "onstart"}},
		"spec":     map[string]interface{}{"group": "agents.kruise.io", "version": "v1alpha1"},
	}}
	return u
}

// The client is client-go's fake dynamic client and the recorder a fake:
// these test the registrar's decisions; the aggregator acting on them is
// tested with a real kube-apiserver (test/e2e TestCoexistence).
func setup(t *testing.T, objects ...runtime.Object) (*Registrar, *dynamicfake.FakeDynamicClient, *record.FakeRecorder, string) {
	ca := filepath.Join(t.TempDir(), "ca.crt")
	require.NoError(t, os.WriteFile(ca, []byte(pem1), 0o600))
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		crdResource: "CustomResourceDefinitionList", apiServiceResource: "APIServiceList"}, objects...)
	rec := record.NewFakeRecorder(20)
	r := New(Config{Client: client, Recorder: rec, Group: "agents.kruise.io", Version: "v1alpha1",
		ServiceNamespace: "checkpoint-system", ServiceName: "checkpoint-apiserver", ServicePort: 443, CAFile: ca,
		GroupPriorityMinimum: 1000, VersionPriority: 15})
	return r, client, rec, ca
}

func apiService(t *testing.T, client *dynamicfake.FakeDynamicClient) *unstructured.Unstructured {
	t.Helper()
	u, err := client.Resource(apiServiceResource).Get(context.Background(), "v1alpha1.agents.kruise.io", metav1.GetOptions{})
	require.NoError(t, err)
	return u
}

func TestRegistersWithoutCRDs(t *testing.T) {
	// A CRD of another group, and one of ours not served, are no conflict.
	r, client, _, ca := setup(t, crd("others.example.com", "example.com", "v1alpha1", true),
		crd("old.agents.kruise.io", "agents.kruise.io", "v1alpha1", false))
	require.NoError(t, r.Reconcile(context.Background()))
	u := apiService(t, client)
	caBundle, _, _ := unstructured.NestedString(u.Object, "spec", "caBundle")
	assert.Equal(t, base64.StdEncoding.EncodeToString([]byte(pem1)), caBundle)
	name, _, _ := unstructured.NestedString(u.Object, "spec", "service", "name")
	assert.Equal(t, "checkpoint-apiserver", name)
	assert.NoError(t, r.Check(nil))

	// A rotated CA, or a hand edit, is put right on the next pass.
	pem2 := strings.Replace(pem1, "AAAA", "BBBB", 1)
	require.NoError(t, os.WriteFile(ca, []byte(pem2), 0o600))
	require.NoError(t, unstructured.SetNestedField(u.Object, int64(1), "spec", "groupPriorityMinimum"))
	_, err := client.Resource(apiServiceResource).Update(context.Background(), u, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.NoError(t, r.Reconcile(context.Background()))
	u = apiService(t, client)
	caBundle, _, _ = unstructured.NestedString(u.Object, "spec", "caBundle")
	assert.Equal(t, base64.StdEncoding.EncodeToString([]byte(pem2)), caBundle)
	prio, _, _ := unstructured.NestedInt64(u.Object, "spec", "groupPriorityMinimum")
	assert.Equal(t, int64(1000), prio)
}

func TestDoesNotRegisterOverCRDs(t *testing.T) {
	r, client, rec, _ := setup(t, crd("sandboxes.agents.kruise.io", "agents.kruise.io", "v1alpha1", true),
		crd("checkpoints.agents.kruise.io", "agents.kruise.io", "v1alpha1", true), automanaged())
	require.NoError(t, r.Reconcile(context.Background()))
	u := apiService(t, client)
	assert.Equal(t, "onstart", u.GetLabels()[AutomanagedLabel], "the aggregator's APIService for the CRDs is left alone")
	_, hasService, _ := unstructured.NestedMap(u.Object, "spec", "service")
	assert.False(t, hasService)

	err := r.Check(nil)
	require.Error(t, err, "not ready: the group-version is not ours")
	assert.Contains(t, err.Error(), "checkpoints.agents.kruise.io, sandboxes.agents.kruise.io")
	assert.Contains(t, err.Error(), "--mode=crd")
	assert.Len(t, rec.Events, 2, "one Event on each conflicting CRD")
	ev := <-rec.Events
	assert.Contains(t, ev, "Warning "+ReasonNotRegistered)
	assert.Contains(t, ev, "--mode=crd")
	// The same conflict is not reported again.
	<-rec.Events
	require.NoError(t, r.Reconcile(context.Background()))
	assert.Empty(t, rec.Events)
}

func TestReportsCRDsAfterRegistering(t *testing.T) {
	r, client, rec, _ := setup(t)
	require.NoError(t, r.Reconcile(context.Background()))
	<-rec.Events // Registered
	require.NoError(t, client.Tracker().Add(crd("sandboxes.agents.kruise.io", "agents.kruise.io", "v1alpha1", true)))
	require.NoError(t, r.Reconcile(context.Background()))

	assert.NoError(t, r.Check(nil), "still serving its own checkpoints")
	ev := <-rec.Events
	assert.Contains(t, ev, "Warning "+ReasonShadowsCRDs)
	assert.Contains(t, ev, "sandboxes.agents.kruise.io")
	u := apiService(t, client)
	name, _, _ := unstructured.NestedString(u.Object, "spec", "service", "name")
	assert.Equal(t, "checkpoint-apiserver", name, "it keeps its APIService: it moves nothing behind the user's back")
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	require.Len(t, conds, 1)
	assert.Equal(t, ConditionCRDConflict, conds[0].(map[string]interface{})["type"])
	assert.Equal(t, "True", conds[0].(map[string]interface{})["status"])

	// The CRD gone, the condition goes.
	require.NoError(t, client.Tracker().Delete(crdResource, "", "sandboxes.agents.kruise.io"))
	require.NoError(t, r.Reconcile(context.Background()))
	conds, _, _ = unstructured.NestedSlice(apiService(t, client).Object, "status", "conditions")
	assert.Empty(t, conds)
}
