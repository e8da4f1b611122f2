// Package webhook validates and defaults the Checkpoint custom resources of
// OpenKruise Agents' CRD in crd mode, applying the rules this server's own
// API applies, and admits a Pod marked for restore only when its creator
// may restore that Checkpoint: the admission webhooks the kube-apiserver calls.
package webhook

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/validation"
)

// Paths the webhook serves.
const (
	ValidatePath = "/validate-checkpoints"
	MutatePath   = "/mutate-checkpoints"
)

const maxReview = 3 << 20

// Handler serves the Checkpoint custom resources' paths (crd mode) and,
// when pods is set, RestorePodsPath (and SandboxPodsPath with pods.Clones).
func Handler(checkpoints bool, pods *RestorePods) http.Handler {
	mux := http.NewServeMux()
	if checkpoints {
		mux.HandleFunc("POST "+ValidatePath, serve(validate))
		mux.HandleFunc("POST "+MutatePath, serve(mutate))
	}
	if pods != nil {
		mux.HandleFunc("POST "+RestorePodsPath, serve(pods.review))
		if pods.Clones != nil {
			mux.HandleFunc("POST "+SandboxPodsPath, serve(pods.markClone))
		}
	}
	return mux
}

type reviewer func(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse

func serve(review reviewer) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				klog.ErrorS(fmt.Errorf("%v", p), "Admission webhook panicked")
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		body, err := io.ReadAll(io.LimitReader(r.Body, maxReview))
		if err != nil {
			http.Error(w, "cannot read the body", http.StatusBadRequest)
			return
		}
		var in admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &in); err != nil || in.Request == nil {
			http.Error(w, "the body is not an AdmissionReview", http.StatusBadRequest)
			return
		}
		resp := review(in.Request)
		resp.UID = in.Request.UID
		out := admissionv1.AdmissionReview{TypeMeta: in.TypeMeta, Response: resp}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	}
}

func decode(raw []byte) (*agents.Checkpoint, *v1alpha1.Checkpoint, error) {
	var ext v1alpha1.Checkpoint
	if err := json.Unmarshal(raw, &ext); err != nil {
		return nil, nil, err
	}
	var in agents.Checkpoint
	if err := v1alpha1.Convert_v1alpha1_Checkpoint_To_agents_Checkpoint(&ext, &in, nil); err != nil {
		return nil, nil, err
	}
	return &in, &ext, nil
}

func deny(err error) *admissionv1.AdmissionResponse {
	status := apierrors.NewBadRequest(err.Error()).ErrStatus
	if s, ok := err.(apierrors.APIStatus); ok {
		status = s.Status()
	}
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &status}
}

// validate: a new Checkpoint obeys the API's rules (targets, contents,
// TTL), and an update leaves the spec as it was.
func validate(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	cp, _, err := decode(req.Object.Raw)
	if err != nil {
		return deny(fmt.Errorf("not a Checkpoint: %v", err))
	}
	var errs field.ErrorList
	if req.Operation == admissionv1.Create {
		errs = validation.ValidateCheckpointCR(cp)
	} else {
		old, _, err := decode(req.OldObject.Raw)
		if err != nil {
			return deny(fmt.Errorf("the old object is not a Checkpoint: %v", err))
		}
		errs = validation.ValidateCheckpointCRUpdate(cp, old)
	}
	if len(errs) > 0 {
		return deny(apierrors.NewInvalid(agents.Kind("Checkpoint"), cp.Name, errs))
	}
	return &admissionv1.AdmissionResponse{Allowed: true}
}

// mutate defaults a new Checkpoint as the API does (keepRunning true, both
// contents when none are named) and labels it with its sandbox's name.
// Only creates: defaulting an update would change an immutable spec.
func mutate(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Operation != admissionv1.Create {
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	_, ext, err := decode(req.Object.Raw)
	if err != nil {
		return deny(fmt.Errorf("not a Checkpoint: %v", err))
	}
	var patch []map[string]interface{}
	if ext.Spec.KeepRunning == nil {
		patch = append(patch, map[string]interface{}{"op": "add", "path": "/spec/keepRunning", "value": true})
	}
	if len(ext.Spec.PersistentContents) == 0 {
		patch = append(patch, map[string]interface{}{"op": "add", "path": "/spec/persistentContents",
			"value": []string{string(agents.ContentMemory), string(agents.ContentFilesystem)}})
	}
	sandbox := ext.Spec.SandboxName
	if sandbox == "" {
		sandbox = ext.Spec.PodName
	}
	if sandbox != "" && ext.Labels[agents.LabelSandboxName] != sandbox {
		if ext.Labels == nil {
			patch = append(patch, map[string]interface{}{"op": "add", "path": "/metadata/labels", "value": map[string]string{}})
		}
		patch = append(patch, map[string]interface{}{"op": "add", "path": "/metadata/labels/" + escape(agents.LabelSandboxName), "value": sandbox})
	}
	resp := &admissionv1.AdmissionResponse{Allowed: true}
	if len(patch) > 0 {
		data, err := json.Marshal(patch)
		if err != nil {
			return deny(err)
		}
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = data, &pt
	}
	return resp
}

// escape makes a JSON pointer token (RFC 6901).
func escape(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '~':
			out = append(out, '~', '0')
		case '/':
			out = append(out, '~', '1')
		default:
			out = append(out, s[i])
		}
	}
	return string(out)
}
