package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"

	"github.com/agents-kruise/checkpoint-apiserver/access"
	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
)

// RestorePodsPath is where Pods marked for restore are reviewed.
const RestorePodsPath = "/validate-restore-pods"

// Checkpoint is what the review needs of the Checkpoint a Pod names.
type Checkpoint struct {
	Name, Owner string
	// Sandbox is the sandbox it captured (spec.sandboxName, else spec.podName).
	Sandbox string
	// Created is when it was created.
	Created time.Time
	// FilesystemOnly: it holds writable layers and no memory.
	FilesystemOnly bool
}

// CheckpointLookup finds the Succeeded Checkpoint with checkpoint ID id
// in namespace ns (an error when there is none).
type CheckpointLookup func(ctx context.Context, ns, id string) (Checkpoint, error)

// RestorePods admits a Pod marked agents.kruise.io/restore-from only when
// its creator may restore that Checkpoint, by the restore subresource's
// rule: create on checkpoints/restore in the Pod's namespace, and owner of
// the Checkpoint (or in an admin group). The Checkpoint must be in the
// Pod's own namespace.
type RestorePods struct {
	Authorizer authorizer.Authorizer
	Lookup     CheckpointLookup
	// Restore is the resource whose "restore" subresource a restore needs
	// (checkpoints of agents.kruise.io, or of the subresources group in crd mode).
	Restore     schema.GroupVersionResource
	AdminGroups []string
	// RuntimeClass is the restore runtime's: a marked Pod under any other
	// runtime would start fresh, so it is refused.
	RuntimeClass string
	// Self is the server's own identity ("" when unknown): it creates clones
	// after checking their caller by the same rule.
	Self func(ctx context.Context) string
	// Clones, when set (crd mode), restores the Pods of OpenKruise's clone
	// Sandboxes by the Sandbox's owner rule (SandboxPodsPath).
	Clones *SandboxClones
}

func (p *RestorePods) review(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Operation != admissionv1.Create && req.Operation != admissionv1.Update {
		return allow
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny(fmt.Errorf("not a Pod: %v", err))
	}
	id, marked := pod.Annotations[api.AnnotationRestoreFrom]
	if !marked {
		return allow
	}
	if req.Operation == admissionv1.Update {
		var old corev1.Pod
		if err := json.Unmarshal(req.OldObject.Raw, &old); err != nil {
			return deny(fmt.Errorf("the old object is not a Pod: %v", err))
		}
		if prev, ok := old.Annotations[api.AnnotationRestoreFrom]; ok && prev == id {
			return allow
		}
	}
	ns := req.Namespace
	forbid := func(format string, args ...any) *admissionv1.AdmissionResponse {
		return deny(apierrors.NewForbidden(corev1.Resource("pods"), req.Name, fmt.Errorf("%s=%s: "+format,
			append([]any{api.AnnotationRestoreFrom, id}, args...)...)))
	}
	if !api.ValidCheckpointID(id) {
		return forbid("not a checkpoint ID this server makes (ckpt-<24 hex>)")
	}
	if p.RuntimeClass != "" && (pod.Spec.RuntimeClassName == nil || *pod.Spec.RuntimeClassName != p.RuntimeClass) {
		return forbid("a Pod marked for restore must set runtimeClassName: %s (the restore runtime); under another runtime it would start fresh", p.RuntimeClass)
	}
	ctx := context.Background()
	// A clone Sandbox's Pod, marked by SandboxPodsPath, is its Sandbox's.
	if sr, resp := p.sandboxRestore(ctx, req, &pod); resp != nil {
		return resp
	} else if sr.id != "" {
		if sr.id != id {
			return forbid("its Sandbox restores %s", sr.id)
		}
		return allow
	}
	u := &user.DefaultInfo{Name: req.UserInfo.Username, UID: req.UserInfo.UID, Groups: req.UserInfo.Groups}
	if p.Self != nil && u.Name != "" && p.Self(ctx) == u.Name {
		return allow
	}
	cp, err := p.Lookup(ctx, ns, id)
	if err != nil {
		return forbid("%v", err)
	}
	if err := access.CheckSubresource(ctx, p.Authorizer, u, "create", p.Restore, "restore", ns, cp.Name); err != nil {
		return forbid("restoring Checkpoint %s/%s needs what its restore subresource needs: %v", ns, cp.Name, err)
	}
	admin := false
	for _, g := range u.Groups {
		admin = admin || slices.Contains(p.AdminGroups, g)
	}
	if !admin && cp.Owner != u.Name {
		return forbid("only the owner of Checkpoint %s/%s (%s) may restore it", ns, cp.Name, cp.Owner)
	}
	return allow
}
