package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
)

// SandboxPodsPath is where the Pods of OpenKruise Sandboxes are marked for
// restore when their Sandbox is a clone.
const SandboxPodsPath = "/mutate-sandbox-pods"

// Sandbox is what the review needs of an OpenKruise Sandbox.
type Sandbox struct {
	UID     string
	Created time.Time
	// RestoreFrom and Owner are its agents.kruise.io/restore-from and
	// agents.kruise.io/owner annotations (the sandbox-manager's: the
	// checkpoint ID it clones, and the API key it acts for).
	RestoreFrom, Owner string
	// Paused is spec.paused; Deleting, that it has a deletionTimestamp.
	Paused, Deleting bool
	// PauseStrategy is spec.pauseStrategy.type (Stop when unset), and
	// HibernateMedium its hibernateStrategy.type.
	PauseStrategy, HibernateMedium string
}

// SandboxLookup reads Sandbox name of namespace ns.
type SandboxLookup func(ctx context.Context, ns, name string) (Sandbox, error)

// SandboxClones restores OpenKruise's clones: a Pod controller-owned by a
// Sandbox that carries agents.kruise.io/restore-from is marked for restore
// (that annotation and the restore runtime's RuntimeClass) when it is
// created, by the Sandbox's owner rule. OpenKruise's sandbox controller
// creates that Pod from the template verbatim, with no mark, so without
// this the clone would start fresh.
type SandboxClones struct {
	Sandboxes SandboxLookup
	// Controllers are who create Sandboxes' Pods (OpenKruise's sandbox
	// controller). A Pod of a clone Sandbox made by anyone else is refused:
	// owning a Pod by a Sandbox is no right to that Sandbox's checkpoint.
	Controllers []string
	// AdminOwners are Sandbox owners (API key IDs or users of the admin
	// team) whose clones may restore any Checkpoint of their namespace;
	// anyone else's only a Checkpoint of the same owner.
	AdminOwners []string
	// CheckpointIDKey is the Pod annotation OpenKruise's sandbox controller
	// writes the checkpoint ID of a CheckpointRestore upgrade under (its
	// --checkpoint-id-annotation-key; "": no upgrade is restored). Such a
	// Pod gets its Sandbox's writable layers back from that filesystem
	// Checkpoint, its processes starting afresh.
	CheckpointIDKey string
	// Hibernations, when set, keeps the memory of Hibernate Sandboxes
	// through a pause: their Pod's DELETE waits for a capture
	// (SandboxPodDeletesPath), and their next Pod is restored from it.
	Hibernations Hibernations
	// Pods reads a Pod: an eviction's review names its Pod only.
	Pods func(ctx context.Context, ns, name string) (*corev1.Pod, error)
}

// sandboxRestore is what a Sandbox's Pod restores: a clone's checkpoint,
// or (upgrade) the writable layers of its own Sandbox's checkpoint.
type sandboxRestore struct {
	id      string
	upgrade bool
}

// sandboxRestore says which checkpoint pod restores as its Sandbox's clone
// or upgrade: none when its Sandbox is neither (or it has none), a response
// when it may not.
func (p *RestorePods) sandboxRestore(ctx context.Context, req *admissionv1.AdmissionRequest, pod *corev1.Pod) (sandboxRestore, *admissionv1.AdmissionResponse) {
	s := p.Clones
	if s == nil {
		return sandboxRestore{}, nil
	}
	ref, owned := agents.SandboxController(pod.OwnerReferences)
	if !owned {
		return sandboxRestore{}, nil
	}
	ns := req.Namespace
	forbid := func(format string, args ...any) *admissionv1.AdmissionResponse {
		return deny(apierrors.NewForbidden(corev1.Resource("pods"), req.Name, fmt.Errorf("Pod of Sandbox %s/%s: "+format,
			append([]any{ns, ref.Name}, args...)...)))
	}
	sb, err := s.Sandboxes(ctx, ns, ref.Name)
	if err != nil {
		// Undecided is refused: a clone's Pod never starts fresh, and
		// OpenKruise's controller creates it again.
		return sandboxRestore{}, forbid("cannot tell whether it is a clone: %v", err)
	}
	if sb.UID != string(ref.UID) {
		return sandboxRestore{}, forbid("the Sandbox of that name has UID %s, the Pod's owner reference %s", sb.UID, ref.UID)
	}
	// A Sandbox that hibernated resumes its own memory, whatever it was
	// made from. An upgrade's Pod names its checkpoint itself; it comes
	// next, since a clone Sandbox too is upgraded from a checkpoint of its own.
	what, id, upgrade := "is a clone of", sb.RestoreFrom, false
	h, resumes, err := s.resumed(ctx, ns, ref.Name, sb)
	if err != nil {
		return sandboxRestore{}, forbid("cannot tell whether it resumes a hibernation: %v", err)
	}
	switch {
	case resumes:
		what, id = "resumes its hibernation", h.ID
	case s.CheckpointIDKey != "" && pod.Annotations[s.CheckpointIDKey] != "":
		what, id, upgrade = "is upgraded from", pod.Annotations[s.CheckpointIDKey], true
	}
	if id == "" {
		return sandboxRestore{}, nil
	}
	if !slices.Contains(s.Controllers, req.UserInfo.Username) {
		return sandboxRestore{}, forbid("the Sandbox %s %s, and its Pod is created by its controller (%s), not by %s",
			what, id, strings.Join(s.Controllers, ", "), req.UserInfo.Username)
	}
	if !api.ValidCheckpointID(id) {
		return sandboxRestore{}, forbid("the Sandbox %s %s: not a checkpoint ID this server makes (ckpt-<24 hex>)", what, id)
	}
	cp, err := p.Lookup(ctx, ns, id)
	if err != nil {
		return sandboxRestore{}, forbid("the Sandbox %s %s: %v", what, id, err)
	}
	if upgrade {
		// Its own writable layers only: a checkpoint of this very Sandbox
		// (not of an earlier one of that name), holding no memory (the
		// upgraded Pod's processes start afresh, maybe on a new image).
		switch {
		case cp.Sandbox != ref.Name:
			return sandboxRestore{}, forbid("Checkpoint %s/%s (%s) is of sandbox %q: an upgrade restores its own Sandbox's checkpoint only", ns, cp.Name, id, cp.Sandbox)
		case cp.Created.Before(sb.Created):
			return sandboxRestore{}, forbid("Checkpoint %s/%s (%s) was taken before this Sandbox was created: it is an earlier sandbox's of that name", ns, cp.Name, id)
		case !cp.FilesystemOnly:
			return sandboxRestore{}, forbid("Checkpoint %s/%s (%s) holds memory: an upgrade restores the writable layers of a filesystem Checkpoint "+
				"(persistentContents [filesystem]), its processes starting afresh", ns, cp.Name, id)
		}
		return sandboxRestore{id: id, upgrade: true}, nil
	}
	if resumes {
		// The server's own capture of this very Sandbox (its UID, in an
		// annotation the server alone writes): no owner rule to apply.
		return sandboxRestore{id: id}, nil
	}
	if sb.Owner != cp.Owner && !slices.Contains(s.AdminOwners, sb.Owner) {
		return sandboxRestore{}, forbid("the Sandbox's owner (%q) is not the owner of Checkpoint %s/%s (%q) nor of the admin team", sb.Owner, ns, cp.Name, cp.Owner)
	}
	return sandboxRestore{id: id}, nil
}

// markClone marks a new Pod of a clone Sandbox, or of an upgrade, for restore.
func (p *RestorePods) markClone(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Operation != admissionv1.Create {
		return allow
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny(fmt.Errorf("not a Pod: %v", err))
	}
	sr, resp := p.sandboxRestore(context.Background(), req, &pod)
	if resp != nil {
		return resp
	}
	id := sr.id
	if id == "" {
		return allow
	}
	if have, ok := pod.Annotations[api.AnnotationRestoreFrom]; ok && have != id {
		return deny(apierrors.NewForbidden(corev1.Resource("pods"), req.Name,
			fmt.Errorf("%s=%s, where its Sandbox restores %s", api.AnnotationRestoreFrom, have, id)))
	}
	var patch []map[string]any
	if pod.Annotations == nil {
		patch = append(patch, map[string]any{"op": "add", "path": "/metadata/annotations", "value": map[string]string{}})
	}
	patch = append(patch, map[string]any{"op": "add", "path": "/metadata/annotations/" + escape(api.AnnotationRestoreFrom), "value": id})
	if p.RuntimeClass != "" {
		patch = append(patch, map[string]any{"op": "add", "path": "/spec/runtimeClassName", "value": p.RuntimeClass})
	}
	if !sr.upgrade { // an upgrade's processes start afresh: init containers and hooks run
		patch = append(patch, cloneSpec(&pod)...)
	}
	data, err := json.Marshal(patch)
	if err != nil {
		return deny(err)
	}
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{Allowed: true, Patch: data, PatchType: &pt}
}

// cloneSpec patches a Sandbox's template into a clone's spec, as the
// restore subresource builds one: plain init containers and postStart
// hooks ran in the source already, so they do not run again; native
// sidecars (restartPolicy Always) stay, to be restored with the rest.
func cloneSpec(pod *corev1.Pod) []map[string]any {
	var patch []map[string]any
	sidecars := []corev1.Container{}
	changed := false
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			changed = true
			continue
		}
		if c.Lifecycle != nil && c.Lifecycle.PostStart != nil {
			c.Lifecycle.PostStart, changed = nil, true
		}
		sidecars = append(sidecars, c)
	}
	switch {
	case changed && len(sidecars) == 0:
		patch = append(patch, map[string]any{"op": "remove", "path": "/spec/initContainers"})
	case changed:
		patch = append(patch, map[string]any{"op": "replace", "path": "/spec/initContainers", "value": sidecars})
	}
	for i, c := range pod.Spec.Containers {
		if c.Lifecycle != nil && c.Lifecycle.PostStart != nil {
			patch = append(patch, map[string]any{"op": "remove", "path": fmt.Sprintf("/spec/containers/%d/lifecycle/postStart", i)})
		}
	}
	return patch
}
