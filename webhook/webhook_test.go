package webhook

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

func review(t *testing.T, path string, op admissionv1.Operation, obj, old string) *admissionv1.AdmissionResponse {
	t.Helper()
	in := admissionv1.AdmissionReview{Request: &admissionv1.AdmissionRequest{UID: types.UID("u1"), Operation: op,
		Object: runtime.RawExtension{Raw: []byte(obj)}}}
	if old != "" {
		in.Request.OldObject = runtime.RawExtension{Raw: []byte(old)}
	}
	in.APIVersion, in.Kind = "admission.k8s.io/v1", "AdmissionReview"
	body, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	Handler(true, nil).ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
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
		if resp := review(t, ValidatePath, admissionv1.Create, spec(s), ""); !resp.Allowed {
			t.Errorf("%s refused: %+v", s, resp.Result)
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
	// Updates are never defaulted: that would change an immutable spec.
	if resp := review(t, MutatePath, admissionv1.Update, spec(`{"podName":"p"}`), spec(`{"podName":"p"}`)); resp.Patch != nil {
		t.Errorf("an update was patched: %s", resp.Patch)
	}
}
