package webhook

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	admissionv1 "k8s.io/api/admission/v1"
	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

const podID = "ckpt-0123456789abcdef01234567"

// restorers may create checkpoints/restore in namespace team-a.
type restorers map[string]bool

func (r restorers) authorizer() authorizer.Authorizer {
	return authorizer.AuthorizerFunc(r.authorize)
}

func (r restorers) authorize(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	if r[a.GetUser().GetName()] && a.GetVerb() == "create" && a.GetResource() == "checkpoints" && a.GetSubresource() == "restore" &&
		a.GetNamespace() == "team-a" && a.GetAPIGroup() == "agents.kruise.io" && a.GetName() == "cp" {
		return authorizer.DecisionAllow, "", nil
	}
	return authorizer.DecisionDeny, "no RBAC rule", nil
}

func podReview(t *testing.T, p *RestorePods, op admissionv1.Operation, who string, groups []string, ns, annotation, oldAnnotation, runtimeClass string) *admissionv1.AdmissionResponse {
	t.Helper()
	pod := func(a string) []byte {
		if a == "" {
			return []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}`)
		}
		return []byte(fmt.Sprintf(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","annotations":{"agents.kruise.io/restore-from":%q}},"spec":{"runtimeClassName":%q}}`,
			a, runtimeClass))
	}
	req := &admissionv1.AdmissionRequest{Operation: op, Namespace: ns, Name: "p",
		UserInfo: authnv1.UserInfo{Username: who, Groups: groups}, Object: runtime.RawExtension{Raw: pod(annotation)}}
	if op == admissionv1.Update {
		req.OldObject = runtime.RawExtension{Raw: pod(oldAnnotation)}
	}
	return p.review(req)
}

func TestRestorePods(t *testing.T) {
	p := &RestorePods{
		Authorizer: restorers{"alice": true, "bob": true, "root": true}.authorizer(), AdminGroups: []string{"admins"},
		Restore:      schema.GroupVersionResource{Group: "agents.kruise.io", Version: "v1alpha1", Resource: "checkpoints"},
		Self:         func(context.Context) string { return "system:serviceaccount:checkpoint-system:checkpoint-apiserver" },
		RuntimeClass: "checkpoint",
		Lookup: func(_ context.Context, ns, id string) (Checkpoint, error) {
			if ns == "team-a" && id == podID {
				return Checkpoint{Name: "cp", Owner: "alice"}, nil
			}
			return Checkpoint{}, errors.New("namespace " + ns + " has no Checkpoint with ID " + id)
		},
	}
	for name, tc := range map[string]struct {
		op          admissionv1.Operation
		who         string
		groups      []string
		ns, id, old string
		runc        bool
		allowed     bool
		says        string
	}{
		"under runc":             {op: admissionv1.Create, who: "alice", ns: "team-a", id: podID, runc: true, says: "must set runtimeClassName: checkpoint"},
		"unmarked":               {op: admissionv1.Create, who: "mallory", ns: "team-a", allowed: true},
		"the owner":              {op: admissionv1.Create, who: "alice", ns: "team-a", id: podID, allowed: true},
		"an admin":               {op: admissionv1.Create, who: "root", groups: []string{"admins"}, ns: "team-a", id: podID, allowed: true},
		"the server itself":      {op: admissionv1.Create, who: "system:serviceaccount:checkpoint-system:checkpoint-apiserver", ns: "team-a", id: podID, allowed: true},
		"no restore right":       {op: admissionv1.Create, who: "mallory", ns: "team-a", id: podID, says: `may not create checkpoints.agents.kruise.io/restore`},
		"not the owner":          {op: admissionv1.Create, who: "bob", ns: "team-a", id: podID, says: "only the owner"},
		"another namespace":      {op: admissionv1.Create, who: "alice", ns: "team-b", id: podID, says: "namespace team-b has no Checkpoint"},
		"not an ID":              {op: admissionv1.Create, who: "alice", ns: "team-a", id: "../../etc", says: "not a checkpoint ID"},
		"mark added on update":   {op: admissionv1.Update, who: "mallory", ns: "team-a", id: podID, says: "may not create"},
		"mark changed on update": {op: admissionv1.Update, who: "mallory", ns: "team-a", id: podID, old: "ckpt-ffffffffffffffffffffffff", says: "may not create"},
		"mark kept on update":    {op: admissionv1.Update, who: "mallory", ns: "team-a", id: podID, old: podID, allowed: true},
	} {
		class := "checkpoint"
		if tc.runc {
			class = "runc"
		}
		resp := podReview(t, p, tc.op, tc.who, tc.groups, tc.ns, tc.id, tc.old, class)
		assert.Equal(t, tc.allowed, resp.Allowed, name)
		if !tc.allowed && resp.Result != nil {
			assert.Contains(t, resp.Result.Message, tc.says, name)
			assert.Contains(t, resp.Result.Message, "agents.kruise.io/restore-from", name)
			assert.EqualValues(t, 403, resp.Result.Code, name)
		}
	}
}
