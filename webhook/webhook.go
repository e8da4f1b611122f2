// Package webhook validates and defaults the Checkpoint custom resources of
// OpenKruise Agents' CRD in crd mode, applying the rules this server's own
// API applies, and admits a Pod marked for restore only when its creator
// may restore that Checkpoint: the admission webhooks the kube-apiserver calls.
package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"

	admissionv1 "k8s.io/api/admission/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/access"
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

// Checkpoints reviews writes of the Checkpoint custom resources (crd
// mode): the API's rules, and what only the server or an admin writes.
type Checkpoints struct {
	// Self is the server's own identity ("" while unknown).
	Self func(ctx context.Context) string
	// AdminGroups may change a Checkpoint's owner (for migration).
	AdminGroups []string
	// OwnerStampers are users who may name another owner when they create a
	// Checkpoint (OpenKruise's sandbox-manager stamps its API keys' IDs).
	// Everyone else owns what they create.
	OwnerStampers []string
	// Authorizer, when set, is asked whether a Checkpoint's creator may
	// capture its Pod (access.CapturePod).
	Authorizer authorizer.Authorizer
}

// Handler serves the Checkpoint custom resources' paths (crd mode, when
// checkpoints is set) and, when pods is set, RestorePodsPath (and
// SandboxPodsPath with pods.Clones).
func Handler(checkpoints *Checkpoints, pods *RestorePods) http.Handler {
	mux := http.NewServeMux()
	if checkpoints != nil {
		mux.HandleFunc("POST "+ValidatePath, serve(checkpoints.validate))
		mux.HandleFunc("POST "+MutatePath, serve(checkpoints.mutate))
	}
	if pods != nil {
		mux.HandleFunc("POST "+RestorePodsPath, serve(pods.review))
		if pods.Clones != nil {
			mux.HandleFunc("POST "+SandboxPodsPath, serve(pods.markClone))
			if pods.Clones.Hibernations != nil {
				mux.HandleFunc("POST "+SandboxPodDeletesPath, serve(pods.reviewDelete))
			}
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

// serverAnnotations are written by the server alone: the capture marker
// and where the captured state is, and whose hibernation a Checkpoint is.
var serverAnnotations = []string{agents.AnnotationCapturedBy, agents.AnnotationImage, agents.AnnotationImageDigest, agents.AnnotationSizeBytes,
	agents.AnnotationHibernationOf}

// validate: a new Checkpoint obeys the API's rules (targets, contents,
// TTL), and an update leaves the spec as it was. What the server alone
// writes (status.checkpointId, always its UID's, which an admin alone may
// also set; the capture marker; the image annotations) nobody else sets or
// changes, and only an admin changes the owner: on the Checkpoint and on
// checkpoints/status.
func (c *Checkpoints) validate(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return &admissionv1.AdmissionResponse{Allowed: true}
	}
	cp, _, err := decode(req.Object.Raw)
	if err != nil {
		return deny(fmt.Errorf("not a Checkpoint: %v", err))
	}
	var errs field.ErrorList
	old := &agents.Checkpoint{}
	if req.Operation == admissionv1.Create {
		if req.SubResource == "" {
			errs = validation.ValidateCheckpointCR(cp)
		}
		if err := c.mayCapture(req, cp); err != nil {
			return deny(apierrors.NewForbidden(agents.Resource("checkpoints"), cp.Name, err))
		}
	} else {
		if old, _, err = decode(req.OldObject.Raw); err != nil {
			return deny(fmt.Errorf("the old object is not a Checkpoint: %v", err))
		}
		if req.SubResource == "" {
			errs = validation.ValidateCheckpointCRUpdate(cp, old)
		}
	}
	if id := cp.Status.CheckpointID; id != "" && cp.UID != "" && id != agents.CheckpointID(cp.UID) {
		errs = append(errs, field.Forbidden(field.NewPath("status", "checkpointId"), "is the server's: derived from the Checkpoint's own UID"))
	}
	if !c.isServer(req) {
		if cp.Status.CheckpointID != old.Status.CheckpointID && !c.isAdmin(req) {
			errs = append(errs, field.Forbidden(field.NewPath("status", "checkpointId"), "is written by the server only"))
		}
		annotations := field.NewPath("metadata", "annotations")
		for _, k := range serverAnnotations {
			if cp.Annotations[k] != old.Annotations[k] {
				errs = append(errs, field.Forbidden(annotations.Key(k), "is written by the server only"))
			}
		}
		if req.Operation == admissionv1.Update && cp.Annotations[agents.AnnotationOwner] != old.Annotations[agents.AnnotationOwner] && !c.isAdmin(req) {
			errs = append(errs, field.Forbidden(annotations.Key(agents.AnnotationOwner), "only an admin changes the owner of a Checkpoint"))
		}
		if req.Operation == admissionv1.Create && req.SubResource == "" && cp.Annotations[agents.AnnotationOwner] != req.UserInfo.Username &&
			!c.isAdmin(req) && !slices.Contains(c.OwnerStampers, req.UserInfo.Username) {
			errs = append(errs, field.Forbidden(annotations.Key(agents.AnnotationOwner),
				"is the creator's own: only an admin or an owner stamper (--owner-stampers) names another owner"))
		}
		// The creator is the request's user at create (as the mutating
		// webhook stamped it), and nobody changes it after.
		switch {
		case req.Operation == admissionv1.Create && req.SubResource == "" && cp.Annotations[agents.AnnotationCreator] != creatorOf(req):
			errs = append(errs, field.Forbidden(annotations.Key(agents.AnnotationCreator), "is the creating request's user, stamped by the server"))
		case req.Operation == admissionv1.Update && cp.Annotations[agents.AnnotationCreator] != old.Annotations[agents.AnnotationCreator]:
			errs = append(errs, field.Forbidden(annotations.Key(agents.AnnotationCreator), "is written by the server only"))
		}
	}
	if len(errs) > 0 {
		return deny(apierrors.NewInvalid(agents.Kind("Checkpoint"), cp.Name, errs))
	}
	return &admissionv1.AdmissionResponse{Allowed: true}
}

// mayCapture: creating cp starts its capture, which reads its Pod's memory
// as exec does, so its creator needs the rights exec needs (and delete,
// when the capture ends the Pod). The server's own creates (E2B snapshots)
// were checked against their caller already.
func (c *Checkpoints) mayCapture(req *admissionv1.AdmissionRequest, cp *agents.Checkpoint) error {
	if c.Authorizer == nil || c.isServer(req) || podInfoOnly(cp.Spec.PersistentContents) {
		return nil
	}
	keep := cp.Spec.KeepRunning == nil || *cp.Spec.KeepRunning
	if err := access.CapturePod(context.Background(), c.Authorizer, requester(req), req.Namespace, cp.Spec.PodName, keep); err != nil {
		return fmt.Errorf("a capture reads its Pod's memory, as exec does: %w", err)
	}
	return nil
}

// requester is the user of an admission request.
func requester(req *admissionv1.AdmissionRequest) user.Info {
	extra := map[string][]string{}
	for k, v := range req.UserInfo.Extra {
		extra[k] = v
	}
	return &user.DefaultInfo{Name: req.UserInfo.Username, UID: req.UserInfo.UID, Groups: req.UserInfo.Groups, Extra: extra}
}

// creatorOf is the request's user as a Checkpoint records its creator.
func creatorOf(req *admissionv1.AdmissionRequest) string { return access.EncodeUser(requester(req)) }

// podInfoOnly: contents name OpenKruise's podInfo alone (nothing is captured).
func podInfoOnly(contents []agents.ContentType) bool {
	for _, ct := range contents {
		if ct == agents.ContentMemory || ct == agents.ContentFilesystem {
			return false
		}
	}
	return len(contents) > 0
}

// isServer: the request is the server's own (known by its SelfSubjectReview).
func (c *Checkpoints) isServer(req *admissionv1.AdmissionRequest) bool {
	if c.Self == nil || req.UserInfo.Username == "" {
		return false
	}
	return c.Self(context.Background()) == req.UserInfo.Username
}

func (c *Checkpoints) isAdmin(req *admissionv1.AdmissionRequest) bool {
	for _, g := range req.UserInfo.Groups {
		if slices.Contains(c.AdminGroups, g) {
			return true
		}
	}
	return false
}

// mutate defaults a new Checkpoint as the API does (keepRunning true, both
// contents when none are named) and labels it with its sandbox's name.
// Only creates: defaulting an update would change an immutable spec.
func (c *Checkpoints) mutate(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
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
	// The creator, for the capture to check again when it runs, and the
	// owner, when the creator names none. The server's own creates (E2B's)
	// name the key's user themselves.
	if !c.isServer(req) {
		stamp := map[string]string{}
		if want := creatorOf(req); ext.Annotations[agents.AnnotationCreator] != want {
			stamp[agents.AnnotationCreator] = want
		}
		if ext.Annotations[agents.AnnotationOwner] == "" {
			stamp[agents.AnnotationOwner] = req.UserInfo.Username
		}
		if ext.Annotations == nil && len(stamp) > 0 {
			patch = append(patch, map[string]interface{}{"op": "add", "path": "/metadata/annotations", "value": map[string]string{}})
		}
		for _, k := range []string{agents.AnnotationCreator, agents.AnnotationOwner} {
			if v, ok := stamp[k]; ok {
				patch = append(patch, map[string]interface{}{"op": "add", "path": "/metadata/annotations/" + escape(k), "value": v})
			}
		}
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
