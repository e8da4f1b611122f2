package e2b

import (
	"context"
	"errors"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// The clientset is client-go's fake and the authorizer a fake RBAC that
// lets team-a's users at team-a's Pods: these test what PodSandboxes decides;
// the SDK against real Pods is tested in test/e2e (TestRealNode).
func TestPodSandboxes(t *testing.T) {
	started := metav1.NewTime(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	clone := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "sbx-1", Namespace: "team-a", UID: "u1",
			Annotations: map[string]string{AnnotationOwner: "alice", AnnotationRestoreFrom: "ckpt-1"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{
			{Name: "a", Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{
				corev1.ResourceCPU: resource.MustParse("1500m"), corev1.ResourceMemory: resource.MustParse("256Mi")}}},
			{Name: "b", Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("64Mi")}}},
		}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, StartTime: &started},
	}
	client := fake.NewSimpleClientset(clone)
	rbac := authorizer.AuthorizerFunc(func(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
		for _, g := range a.GetUser().GetGroups() {
			if g == TeamGroupPrefix+a.GetNamespace() || g == "admins" {
				return authorizer.DecisionAllow, "", nil
			}
		}
		return authorizer.DecisionNoOpinion, "no binding", nil
	})
	s := &PodSandboxes{Client: client, Authorizer: rbac}
	ctx := context.Background()
	alice := &user.DefaultInfo{Name: "alice", Groups: []string{TeamGroupPrefix + "team-a"}}
	bob := &user.DefaultInfo{Name: "bob", Groups: []string{TeamGroupPrefix + "team-a"}}
	carol := &user.DefaultInfo{Name: "carol", Groups: []string{TeamGroupPrefix + "team-b"}}
	root := &user.DefaultInfo{Name: "root", Groups: []string{TeamGroupPrefix + "admin", "admins"}}

	sb, err := s.Get(ctx, alice, false, "team-a", "sbx-1")
	if err != nil {
		t.Fatal(err)
	}
	want := Sandbox{Namespace: "team-a", Name: "sbx-1", TemplateID: "ckpt-1", Running: true,
		CPUMillis: 1500, MemoryBytes: 320 << 20, StartedAt: started.Time}
	if sb.Name != want.Name || sb.TemplateID != want.TemplateID || !sb.Running || sb.CPUMillis != want.CPUMillis ||
		sb.MemoryBytes != want.MemoryBytes || !sb.StartedAt.Equal(want.StartedAt) {
		t.Errorf("Get = %+v, want %+v", sb, want)
	}
	// Another user of the team: RBAC allows, the owner annotation does not.
	if _, err := s.Get(ctx, bob, false, "team-a", "sbx-1"); !errors.Is(err, ErrSandboxNotFound) {
		t.Errorf("bob's Get: %v, want not found", err)
	}
	if err := s.Delete(ctx, bob, false, "team-a", "sbx-1"); !errors.Is(err, ErrSandboxNotFound) {
		t.Errorf("bob's Delete: %v, want not found", err)
	}
	// Outside one's namespace, RBAC says no.
	if _, err := s.Get(ctx, carol, false, "team-a", "sbx-1"); !errors.Is(err, ErrSandboxForbidden) {
		t.Errorf("carol's Get in team-a: %v, want forbidden", err)
	}
	// An admin finds it from its own namespace.
	if _, err := s.Get(ctx, root, true, "admin", "sbx-1"); err != nil {
		t.Errorf("admin's Get: %v", err)
	}
	if _, err := client.CoreV1().Pods("team-a").Get(ctx, "sbx-1", metav1.GetOptions{}); err != nil {
		t.Fatalf("refused calls changed nothing, yet: %v", err)
	}
	var grace *int64
	client.PrependReactor("delete", "pods", func(action k8stesting.Action) (bool, runtime.Object, error) {
		grace = action.(k8stesting.DeleteAction).GetDeleteOptions().GracePeriodSeconds
		return false, nil, nil
	})
	if err := s.Delete(ctx, alice, false, "team-a", "sbx-1"); err != nil {
		t.Fatal(err)
	}
	if grace == nil || *grace != killGrace {
		t.Errorf("the Pod (30 s of grace by default) is deleted with a grace period of %v, want %d: a kill or pause ends it at once", grace, killGrace)
	}
	if _, err := client.CoreV1().Pods("team-a").Get(ctx, "sbx-1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the owner's Delete left the Pod: %v", err)
	}
}
