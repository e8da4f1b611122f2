package checkpoint

import (
	"context"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metainternalversion "k8s.io/apimachinery/pkg/apis/meta/internalversion"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/generated/clientset/versioned/fake"
)

// The client is the generated fake clientset: this tests what crdStore
// writes; the CRD's kube-apiserver keeping it is tested in test/e2e
// (TestCRDMode).
func TestCRDStoreWritesTheMetadataWithTheStatus(t *testing.T) {
	ctx := context.Background()
	client := fake.NewSimpleClientset(&v1alpha1.Checkpoint{
		ObjectMeta: metav1.ObjectMeta{Name: "cp", Namespace: "ns", UID: "u1", ResourceVersion: "1",
			Annotations: map[string]string{agents.AnnotationOwner: "key-1"}},
		Spec: v1alpha1.CheckpointSpec{PodName: "p"},
	})
	s := NewCRDStore(client)
	cp, err := s.Get(ctx, "ns", "cp")
	if err != nil {
		t.Fatal(err)
	}
	if cp.Status.Phase != "" {
		t.Fatalf("a new custom resource has no phase, got %q", cp.Status.Phase)
	}
	cp.Status.Phase = agents.PhaseCreating
	cp.Annotations[agents.AnnotationCapturedBy] = "r/i/1"
	creating, err := s.UpdateStatus(ctx, cp)
	if err != nil {
		t.Fatal(err)
	}
	if !hasFinalizer(creating.Finalizers, CRDFinalizer) || creating.Annotations[agents.AnnotationCapturedBy] != "r/i/1" ||
		creating.Annotations[agents.AnnotationOwner] != "key-1" || creating.Status.Phase != agents.PhaseCreating {
		t.Errorf("Creating: %+v %+v", creating.ObjectMeta, creating.Status)
	}
	creating.Status.Phase, creating.Status.CheckpointID = agents.PhaseSucceeded, "ckpt-1"
	done, err := s.UpdateStatus(ctx, creating)
	if err != nil {
		t.Fatal(err)
	}
	if done.Labels[agents.LabelCheckpointID] != "ckpt-1" {
		t.Errorf("the checkpoint-id label is not set: %v", done.Labels)
	}
	// A write from a stale read is refused (the fake keeps resourceVersions
	// as written, so the stale read is made by hand).
	stale := done.DeepCopy()
	stale.ResourceVersion = "0"
	if _, err := s.UpdateStatus(ctx, stale); !apierrors.IsConflict(err) {
		t.Errorf("stale write: %v, want a conflict", err)
	}
}

// The snapshots view's owner selector, and any other, is applied by
// CRDREST itself: a CRD has no field selectors but metadata's.
func TestCRDRESTSelectsFields(t *testing.T) {
	cr := func(name, owner string, phase v1alpha1.CheckpointPhase) *v1alpha1.Checkpoint {
		return &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns",
			Annotations: map[string]string{agents.AnnotationOwner: owner}}, Status: v1alpha1.CheckpointStatus{Phase: phase}}
	}
	r := NewCRDREST(fake.NewSimpleClientset(cr("a", "alice", v1alpha1.PhaseSucceeded), cr("b", "bob", v1alpha1.PhaseSucceeded),
		cr("c", "alice", v1alpha1.PhaseFailed)))
	ctx := genericapirequest.WithNamespace(context.Background(), "ns")
	names := func(sel string) []string {
		t.Helper()
		obj, err := r.List(ctx, &metainternalversion.ListOptions{FieldSelector: fields.ParseSelectorOrDie(sel)})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, cp := range obj.(*agents.CheckpointList).Items {
			out = append(out, cp.Name)
		}
		return out
	}
	if got := names("owner=alice"); len(got) != 2 || got[0] != "a" || got[1] != "c" {
		t.Errorf("owner=alice: %v", got)
	}
	if got := names("owner=alice,status.phase=Succeeded"); len(got) != 1 || got[0] != "a" {
		t.Errorf("owner=alice,status.phase=Succeeded: %v", got)
	}
	if _, err := r.List(ctx, &metainternalversion.ListOptions{FieldSelector: fields.ParseSelectorOrDie("spec.nope=x")}); !apierrors.IsBadRequest(err) {
		t.Errorf("an unknown field: %v, want 400", err)
	}
}
