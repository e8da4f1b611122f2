package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	admissionv1 "k8s.io/api/admission/v1"
	authnv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
)

func review(t *testing.T, path string, op admissionv1.Operation, obj, old string) *admissionv1.AdmissionResponse {
	t.Helper()
	in := admissionv1.AdmissionReview{Request: &admissionv1.AdmissionRequest{UID: types.UID("u1"), Operation: op,
		Object: runtime.RawExtension{Raw: []byte(obj)}, UserInfo: authnv1.UserInfo{Username: "alice", Groups: []string{"team-a"}}}}
	if old != "" {
		in.Request.OldObject = runtime.RawExtension{Raw: []byte(old)}
	}
	in.APIVersion, in.Kind = "admission.k8s.io/v1", "AdmissionReview"
	body, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	Handler(&Checkpoints{}, nil).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
	if rec.Code != http.StatusOK {
		t.Fatalf("%s: %d %s", path, rec.Code, rec.Body)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
		t.Fatalf("%s: %v %s", path, err, rec.Body)
	}
	if out.Response.UID != "u1" || out.Kind != "AdmissionReview" {
		t.Errorf("the answer names another review: %+v", out)
	}
	return out.Response
}

const cp = `{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"c","namespace":"ns"},"spec":%s}`

func spec(s string) string { return strings.Replace(cp, "%s", s, 1) }

// aliceCreated is spec(s) as the mutating webhook stamps alice's create.
func aliceCreated(s string) string {
	return strings.Replace(spec(s), `"namespace":"ns"`, `"namespace":"ns","annotations":{"agents.kruise.io/owner":"alice","agents.kruise.io/creator":`+
		strconv.Quote(`{"name":"alice","groups":["team-a"]}`)+`}`, 1)
}

func TestValidate(t *testing.T) {
	for s, field := range map[string]string{
		`{"podName":"p","ttlAfterFinished":"30x"}`:     "spec.ttlAfterFinished",
		`{"podName":"p","persistentContents":["cpu"]}`: "spec.persistentContents[0]",
		`{}`: "spec.podName",
		`{"podName":"p","persistentContents":["memory","memory"]}`: "spec.persistentContents[1]",
	} {
		resp := review(t, ValidatePath, admissionv1.Create, spec(s), "")
		if resp.Allowed || resp.Result == nil || !strings.Contains(resp.Result.Message, field) || resp.Result.Code != 422 {
			t.Errorf("%s: %+v, want a 422 naming %s", s, resp.Result, field)
		}
	}
	for _, s := range []string{`{"podName":"p","ttlAfterFinished":"2d"}`, `{"podName":"p","persistentContents":["podInfo"]}`} {
		if resp := review(t, ValidatePath, admissionv1.Create, aliceCreated(s), ""); !resp.Allowed {
			t.Errorf("%s refused: %+v", s, resp.Result)
		}
		// Without the creator's stamp (another mutating webhook took it
		// off), or with another's, a create is refused.
		if resp := review(t, ValidatePath, admissionv1.Create, spec(s), ""); resp.Allowed || !strings.Contains(resp.Result.Message, agents.AnnotationCreator) {
			t.Errorf("%s admitted without its creator: %+v", s, resp.Result)
		}
		forged := strings.Replace(aliceCreated(s), `{\"name\":\"alice\"`, `{\"name\":\"root\"`, 1)
		if resp := review(t, ValidatePath, admissionv1.Create, forged, ""); resp.Allowed || !strings.Contains(resp.Result.Message, agents.AnnotationCreator) {
			t.Errorf("%s admitted with another creator: %+v", s, resp.Result)
		}
	}
	resp := review(t, ValidatePath, admissionv1.Update, spec(`{"podName":"q"}`), spec(`{"podName":"p"}`))
	if resp.Allowed || !strings.Contains(resp.Result.Message, "spec.podName") {
		t.Errorf("a spec change: %+v", resp.Result)
	}
	if resp := review(t, ValidatePath, admissionv1.Update, spec(`{"podName":"p"}`), spec(`{"podName":"p"}`)); !resp.Allowed {
		t.Errorf("a metadata update refused: %+v", resp.Result)
	}
}

func TestMutate(t *testing.T) {
	resp := review(t, MutatePath, admissionv1.Create, spec(`{"podName":"p"}`), "")
	if !resp.Allowed || resp.PatchType == nil {
		t.Fatalf("%+v", resp)
	}
	var patch []map[string]interface{}
	if err := json.Unmarshal(resp.Patch, &patch); err != nil {
		t.Fatal(err)
	}
	paths := map[string]interface{}{}
	for _, op := range patch {
		paths[op["path"].(string)] = op["value"]
	}
	if paths["/spec/keepRunning"] != true || paths["/metadata/labels/agents.kruise.io~1sandbox-name"] != "p" {
		t.Errorf("patch %s", resp.Patch)
	}
	if _, ok := paths["/spec/persistentContents"]; !ok {
		t.Errorf("no default contents: %s", resp.Patch)
	}
	if paths["/metadata/annotations/agents.kruise.io~1creator"] != `{"name":"alice","groups":["team-a"]}` {
		t.Errorf("the creator is not stamped: %s", resp.Patch)
	}
	if paths["/metadata/annotations/agents.kruise.io~1owner"] != "alice" {
		t.Errorf("a creator who names no owner is not its owner: %s", resp.Patch)
	}
	// A creator who names another is stamped over.
	resp = review(t, MutatePath, admissionv1.Create, strings.Replace(aliceCreated(`{"podName":"p"}`), `{\"name\":\"alice\"`, `{\"name\":\"root\"`, 1), "")
	if !strings.Contains(string(resp.Patch), `"path":"/metadata/annotations/agents.kruise.io~1creator","value":"{\"name\":\"alice\"`) {
		t.Errorf("a forged creator stays: %s", resp.Patch)
	}
	// Updates are never defaulted: that would change an immutable spec.
	if resp := review(t, MutatePath, admissionv1.Update, spec(`{"podName":"p"}`), spec(`{"podName":"p"}`)); resp.Patch != nil {
		t.Errorf("an update was patched: %s", resp.Patch)
	}
}

// What the server alone writes, nobody else sets or changes; the owner
// changes by an admin only; a checkpoint ID is always the object's own.
func TestServerWrittenFields(t *testing.T) {
	const uid = "0b6f5c1e-1111-4222-8333-944445555666"
	own := agents.CheckpointID(uid)
	other := agents.CheckpointID("another-object")
	c := &Checkpoints{Self: func(context.Context) string { return "system:serviceaccount:checkpoint-system:checkpoint-apiserver" },
		AdminGroups: []string{"checkpoint-admins"}, OwnerStampers: []string{"system:serviceaccount:sandbox-system:sandbox-manager"}}
	obj := func(annotations, status string) []byte {
		return fmt.Appendf(nil, `{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"c","namespace":"ns","uid":%q,"annotations":%s},
"spec":{"podName":"p"},"status":%s}`, uid, annotations, status)
	}
	pending := obj(`{"agents.kruise.io/owner":"alice"}`, `{"phase":"Pending"}`)
	request := func(who string, groups []string, sub string, op admissionv1.Operation, o, old []byte) *admissionv1.AdmissionRequest {
		return &admissionv1.AdmissionRequest{Operation: op, SubResource: sub, Namespace: "ns", Name: "c",
			UserInfo: authnv1.UserInfo{Username: who, Groups: groups}, Object: runtime.RawExtension{Raw: o}, OldObject: runtime.RawExtension{Raw: old}}
	}
	server := c.Self(context.Background())
	for name, tc := range map[string]struct {
		req  *admissionv1.AdmissionRequest
		says string // "": allowed
	}{
		"the server writes its ID": {req: request(server, nil, "status", admissionv1.Update,
			obj(`{"agents.kruise.io/owner":"alice"}`, fmt.Sprintf(`{"phase":"Succeeded","checkpointId":%q}`, own)), pending)},
		"a namespace admin forges another's ID": {req: request("ns-admin", []string{"system:authenticated"}, "status", admissionv1.Update,
			obj(`{"agents.kruise.io/owner":"alice"}`, fmt.Sprintf(`{"phase":"Succeeded","checkpointId":%q}`, other)), pending),
			says: "derived from the Checkpoint's own UID"},
		"even the server names no other object's ID": {req: request(server, nil, "status", admissionv1.Update,
			obj(`{"agents.kruise.io/owner":"alice"}`, fmt.Sprintf(`{"phase":"Succeeded","checkpointId":%q}`, other)), pending),
			says: "derived from the Checkpoint's own UID"},
		"a cluster admin sets the right ID by hand (migration)": {req: request("root", []string{"checkpoint-admins"}, "status", admissionv1.Update,
			obj(`{"agents.kruise.io/owner":"alice"}`, fmt.Sprintf(`{"phase":"Succeeded","checkpointId":%q}`, own)), pending)},
		"a cluster admin names another's": {req: request("root", []string{"checkpoint-admins"}, "status", admissionv1.Update,
			obj(`{"agents.kruise.io/owner":"alice"}`, fmt.Sprintf(`{"phase":"Succeeded","checkpointId":%q}`, other)), pending),
			says: "derived from the Checkpoint's own UID"},
		"a namespace admin sets even the right ID": {req: request("ns-admin", nil, "status", admissionv1.Update,
			obj(`{"agents.kruise.io/owner":"alice"}`, fmt.Sprintf(`{"phase":"Succeeded","checkpointId":%q}`, own)), pending),
			says: "written by the server only"},
		"an editor forges the capture marker": {req: request("bob", nil, "", admissionv1.Update,
			obj(`{"agents.kruise.io/owner":"alice","agents.kruise.io/captured-by":"replica-x/1"}`, `{"phase":"Pending"}`), pending),
			says: "captured-by"},
		"an editor points it at another image": {req: request("bob", nil, "", admissionv1.Update,
			obj(`{"agents.kruise.io/owner":"alice","agents.kruise.io/checkpoint-image-digest":"sha256:00"}`, `{"phase":"Pending"}`), pending),
			says: "checkpoint-image-digest"},
		"a creator names an image": {req: request("bob", nil, "", admissionv1.Create,
			obj(`{"agents.kruise.io/checkpoint-image":"registry/x@sha256:00"}`, `{}`), nil),
			says: "checkpoint-image"},
		"an editor takes it over": {req: request("bob", nil, "", admissionv1.Update, obj(`{"agents.kruise.io/owner":"bob"}`, `{"phase":"Pending"}`), pending),
			says: "only an admin changes the owner"},
		"an admin migrates it": {req: request("root", []string{"checkpoint-admins"}, "", admissionv1.Update,
			obj(`{"agents.kruise.io/owner":"bob"}`, `{"phase":"Pending"}`), pending)},
		"an editor labels it": {req: request("bob", nil, "", admissionv1.Update,
			obj(`{"agents.kruise.io/owner":"alice","note":"x"}`, `{"phase":"Pending"}`), pending)},
		"the server marks its capture": {req: request(server, nil, "", admissionv1.Update,
			obj(`{"agents.kruise.io/owner":"alice","agents.kruise.io/captured-by":"replica-a/1"}`, `{"phase":"Pending"}`), pending)},
		"an editor changes the creator": {req: request("bob", nil, "", admissionv1.Update,
			obj(`{"agents.kruise.io/owner":"alice","agents.kruise.io/creator":"{\"name\":\"bob\"}"}`, `{"phase":"Pending"}`), pending),
			says: "creator"},
		"an admin changes the creator": {req: request("root", []string{"checkpoint-admins"}, "", admissionv1.Update,
			obj(`{"agents.kruise.io/owner":"alice","agents.kruise.io/creator":"{\"name\":\"root\"}"}`, `{"phase":"Pending"}`), pending),
			says: "creator"},
		"the server creates for an E2B key's user": {req: request(server, nil, "", admissionv1.Create,
			obj(`{"agents.kruise.io/owner":"e2b:ann","agents.kruise.io/creator":"{\"name\":\"e2b:ann\"}"}`, `{}`), nil)},
		"a creator names another owner": {req: request("bob", nil, "", admissionv1.Create,
			obj(`{"agents.kruise.io/owner":"alice","agents.kruise.io/creator":"{\"name\":\"bob\"}"}`, `{}`), nil),
			says: "only an admin or an owner stamper"},
		"the sandbox-manager stamps a key's ID": {req: request("system:serviceaccount:sandbox-system:sandbox-manager", nil, "", admissionv1.Create,
			obj(`{"agents.kruise.io/owner":"key-0123","agents.kruise.io/creator":"{\"name\":\"system:serviceaccount:sandbox-system:sandbox-manager\"}"}`, `{}`), nil)},
		"an admin creates one for alice": {req: request("root", []string{"checkpoint-admins"}, "", admissionv1.Create,
			obj(`{"agents.kruise.io/owner":"alice","agents.kruise.io/creator":"{\"name\":\"root\",\"groups\":[\"checkpoint-admins\"]}"}`, `{}`), nil)},
	} {
		resp := c.validate(tc.req)
		if tc.says == "" {
			assert.True(t, resp.Allowed, "%s: %v", name, resp.Result)
			continue
		}
		if assert.False(t, resp.Allowed, name) {
			assert.Contains(t, resp.Result.Message, tc.says, name)
		}
	}
	// Who the server is unknown: nobody is the server.
	unknown := &Checkpoints{Self: func(context.Context) string { return "" }}
	resp := unknown.validate(request("", nil, "status", admissionv1.Update,
		obj(`{"agents.kruise.io/owner":"alice"}`, fmt.Sprintf(`{"phase":"Succeeded","checkpointId":%q}`, own)), pending))
	assert.False(t, resp.Allowed)
}
