package checkpoint

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/authentication/user"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
)

func asUser(name string, groups ...string) context.Context {
	return genericapirequest.WithUser(context.Background(), &user.DefaultInfo{Name: name, Groups: groups})
}

func newCheckpoint() *agents.Checkpoint {
	return &agents.Checkpoint{
		ObjectMeta: metav1.ObjectMeta{Name: "cp", Namespace: "ns"},
		Spec:       agents.CheckpointSpec{PodName: "pod-a"},
	}
}

func TestPrepareForCreate(t *testing.T) {
	s, _ := NewStrategy(runtime.NewScheme(), []string{"admins"})

	cp := newCheckpoint()
	cp.Status = agents.CheckpointStatus{Phase: agents.PhaseSucceeded, CheckpointID: "forged"}
	cp.Labels = map[string]string{agents.LabelCheckpointID: "forged"}
	cp.Annotations = map[string]string{agents.AnnotationOwner: "someone-else"}
	s.PrepareForCreate(asUser("alice"), cp)

	if cp.Status.Phase != agents.PhasePending || cp.Status.CheckpointID != "" {
		t.Errorf("status not reset: %+v", cp.Status)
	}
	if got := cp.Labels[agents.LabelSandboxName]; got != "pod-a" {
		t.Errorf("sandbox-name label = %q, want pod-a", got)
	}
	if _, ok := cp.Labels[agents.LabelCheckpointID]; ok {
		t.Errorf("checkpoint-id label kept on create: %v", cp.Labels)
	}
	if got := cp.Annotations[agents.AnnotationOwner]; got != "alice" {
		t.Errorf("owner = %q, want alice (a non-admin cannot name another owner)", got)
	}

	withSandbox := newCheckpoint()
	withSandbox.Spec.SandboxName = "sb-1"
	withSandbox.Annotations = map[string]string{agents.AnnotationOwner: "migrated-user"}
	s.PrepareForCreate(asUser("root", "admins"), withSandbox)
	if got := withSandbox.Labels[agents.LabelSandboxName]; got != "sb-1" {
		t.Errorf("sandbox-name label = %q, want sb-1 (sandboxName wins over podName)", got)
	}
	if got := withSandbox.Annotations[agents.AnnotationOwner]; got != "migrated-user" {
		t.Errorf("owner = %q, want the admin's explicit migrated-user", got)
	}
}

func TestPrepareForUpdateKeepsStatusAndServerMetadata(t *testing.T) {
	s, _ := NewStrategy(runtime.NewScheme(), []string{"admins"})
	old := newCheckpoint()
	s.PrepareForCreate(asUser("alice"), old)
	old.Status = agents.CheckpointStatus{Phase: agents.PhaseSucceeded, CheckpointID: "ck-1"}
	old.Labels[agents.LabelCheckpointID] = "ck-1"

	cp := old.DeepCopy()
	cp.Status = agents.CheckpointStatus{Phase: agents.PhaseFailed}
	cp.Labels = map[string]string{"team": "x"}
	cp.Annotations = map[string]string{agents.AnnotationOwner: "mallory"}
	s.PrepareForUpdate(asUser("mallory"), cp, old)

	if cp.Status.Phase != agents.PhaseSucceeded {
		t.Errorf("status changed through the main resource: %+v", cp.Status)
	}
	want := map[string]string{"team": "x", agents.LabelSandboxName: "pod-a", agents.LabelCheckpointID: "ck-1"}
	for k, v := range want {
		if cp.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, cp.Labels[k], v)
		}
	}
	if got := cp.Annotations[agents.AnnotationOwner]; got != "alice" {
		t.Errorf("owner = %q, want alice kept", got)
	}
	if got := cp.Annotations[agents.AnnotationCreator]; got != `{"name":"alice"}` {
		t.Errorf("creator = %q, want alice's kept", got)
	}
}

// The creator is the request's user, whatever the client sent, and stays.
func TestTheCreatorIsRecorded(t *testing.T) {
	s, _ := NewStrategy(runtime.NewScheme(), []string{"admins"})
	cp := newCheckpoint()
	cp.Annotations = map[string]string{agents.AnnotationCreator: `{"name":"root","groups":["system:masters"]}`}
	s.PrepareForCreate(genericapirequest.WithUser(context.Background(), &user.DefaultInfo{Name: "alice", UID: "1", Groups: []string{"team-a"}}), cp)
	if got := cp.Annotations[agents.AnnotationCreator]; got != `{"name":"alice","uid":"1","groups":["team-a"]}` {
		t.Errorf("creator = %q", got)
	}
	old := cp.DeepCopy()
	cp.Annotations[agents.AnnotationCreator] = `{"name":"root"}`
	s.PrepareForUpdate(genericapirequest.WithUser(context.Background(), &user.DefaultInfo{Name: "root", Groups: []string{"admins"}}), cp, old)
	if cp.Annotations[agents.AnnotationCreator] != old.Annotations[agents.AnnotationCreator] {
		t.Errorf("even an admin changed the creator: %q", cp.Annotations[agents.AnnotationCreator])
	}
}

func TestStatusPrepareForUpdate(t *testing.T) {
	_, st := NewStrategy(runtime.NewScheme(), []string{"admins"})
	old := newCheckpoint()
	old.Labels = map[string]string{agents.LabelSandboxName: "pod-a"}
	old.Status.Phase = agents.PhaseCreating

	cp := old.DeepCopy()
	cp.Spec.PodName = "changed"
	cp.Labels["sneaky"] = "1"
	cp.Status = agents.CheckpointStatus{Phase: agents.PhaseSucceeded, CheckpointID: "ck-9"}
	st.PrepareForUpdate(withServerWrite(context.Background()), cp, old)

	if cp.Spec.PodName != "pod-a" {
		t.Errorf("spec changed through status: %q", cp.Spec.PodName)
	}
	if cp.Labels["sneaky"] != "" {
		t.Errorf("labels changed through status: %v", cp.Labels)
	}
	if cp.Labels[agents.LabelCheckpointID] != "ck-9" {
		t.Errorf("checkpoint-id label = %q, want ck-9", cp.Labels[agents.LabelCheckpointID])
	}
	if old.Labels[agents.LabelCheckpointID] != "" {
		t.Errorf("old object's labels were modified: %v", old.Labels)
	}
}

func TestSelectableFields(t *testing.T) {
	cp := newCheckpoint()
	cp.Spec.SandboxName = "sb"
	cp.Status = agents.CheckpointStatus{Phase: agents.PhaseSucceeded, CheckpointID: "ck"}
	got := SelectableFields(cp)
	want := map[string]string{
		"metadata.name": "cp", "metadata.namespace": "ns", "spec.podName": "pod-a",
		"spec.sandboxName": "sb", "status.phase": "Succeeded", "status.checkpointId": "ck", "owner": "",
	}
	if len(got) != len(want) {
		t.Errorf("fields = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("field %s = %q, want %q", k, got[k], v)
		}
	}
}

// status.checkpointId is the server's: no write through the API sets or
// changes it but an admin's (migration), and none, the server's included,
// names another object's; the capture marker is the server's too.
func TestServerWrittenStatus(t *testing.T) {
	s, st := NewStrategy(runtime.NewScheme(), []string{"admins"})
	old := newCheckpoint()
	old.UID, old.ResourceVersion = "uid-1", "1"
	old.Status.Phase = agents.PhasePending
	own, other := agents.CheckpointID("uid-1"), agents.CheckpointID("uid-of-another-namespace")
	for name, tc := range map[string]struct {
		ctx    context.Context
		id     string
		forbid bool
	}{
		"the server, its own ID":          {ctx: withServerWrite(context.Background()), id: own},
		"the server, another object's ID": {ctx: withServerWrite(context.Background()), id: other, forbid: true},
		"a namespace admin, another's ID": {ctx: asUser("ns-admin"), id: other, forbid: true},
		"a cluster admin, the right ID":   {ctx: asUser("root", "admins"), id: own},
		"a cluster admin, another's ID":   {ctx: asUser("root", "admins"), id: other, forbid: true},
	} {
		cp := old.DeepCopy()
		cp.Status = agents.CheckpointStatus{Phase: agents.PhaseSucceeded, CheckpointID: tc.id}
		st.PrepareForUpdate(tc.ctx, cp, old)
		errs := st.ValidateUpdate(tc.ctx, cp, old)
		if tc.forbid != (len(errs) > 0) {
			t.Errorf("%s: %v", name, errs)
		}
	}

	creating := old.DeepCopy()
	creating.Status.Phase = agents.PhaseCreating
	creating.Annotations = map[string]string{agents.AnnotationCapturedBy: "replica-a/7"}
	forged := creating.DeepCopy()
	forged.Annotations[agents.AnnotationCapturedBy] = "replica-b/1"
	st.PrepareForUpdate(asUser("ns-admin"), forged, creating)
	if got := forged.Annotations[agents.AnnotationCapturedBy]; got != "replica-a/7" {
		t.Errorf("a status write through the API moved the capture marker to %q", got)
	}
	forged = creating.DeepCopy()
	forged.Annotations[agents.AnnotationCapturedBy] = "replica-b/1"
	s.PrepareForUpdate(asUser("ns-admin"), forged, creating)
	if got := forged.Annotations[agents.AnnotationCapturedBy]; got != "replica-a/7" {
		t.Errorf("an update through the API moved the capture marker to %q", got)
	}
	ok := creating.DeepCopy()
	ok.Annotations[agents.AnnotationCapturedBy] = "replica-a/8"
	s.PrepareForUpdate(withServerWrite(context.Background()), ok, creating)
	if got := ok.Annotations[agents.AnnotationCapturedBy]; got != "replica-a/8" {
		t.Errorf("the server's own marker = %q", got)
	}
}
