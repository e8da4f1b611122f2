package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
)

// SandboxPodDeletesPath is where the DELETEs of Sandboxes' Pods are
// reviewed: a paused Hibernate Sandbox's Pod goes only once its memory is
// captured.
const SandboxPodDeletesPath = "/validate-sandbox-pod-deletes"

// OpenKruise's Sandbox pause strategies (spec.pauseStrategy).
const (
	PauseStop      = "Stop"
	PauseHibernate = "Hibernate"
	// HibernateSnapshot is the one hibernateStrategy.type (storage medium)
	// this server hibernates to: a Checkpoint.
	HibernateSnapshot = "Snapshot"
)

// maxHibernationAttempts is how many failed captures of one Pod's
// hibernation are tried before the delete is refused until someone acts.
const maxHibernationAttempts = 3

// Hibernation is the server's capture of a Hibernate Sandbox's Pod.
type Hibernation struct {
	// Name is the Checkpoint's; ID its status.checkpointId once Succeeded.
	Name, ID string
	Phase    agents.CheckpointPhase
	Message  string
	// SandboxUID and PodUID are what it captured (its
	// agents.kruise.io/hibernation-of annotation).
	SandboxUID, PodUID string
	Created            time.Time
}

// Hibernations are the server's hibernation Checkpoints.
type Hibernations interface {
	// Of lists those of Sandbox sandbox in namespace ns, newest first: the
	// ones the server made (its annotation) only.
	Of(ctx context.Context, ns, sandbox string) ([]Hibernation, error)
	// Start creates the capture of Pod pod of Sandbox sb (named sandbox),
	// owned by the Sandbox's owner, and returns the Checkpoint's name.
	Start(ctx context.Context, sandbox string, sb Sandbox, pod *corev1.Pod) (string, error)
}

// HibernationOf is the agents.kruise.io/hibernation-of annotation's value.
func HibernationOf(sandboxUID, podUID string) string { return sandboxUID + "/" + podUID }

// reviewDelete holds a paused Hibernate Sandbox's Pod until its memory is
// captured: the first DELETE (or eviction) starts the capture and is
// refused, as is every one until it succeeded; OpenKruise's controller
// deletes again.
// Every other Pod, and a Pod whose Sandbox is Stop, unpaused, gone or
// being deleted, goes as before.
func (p *RestorePods) reviewDelete(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	s := p.Clones
	eviction := req.Operation == admissionv1.Create && req.SubResource == "eviction"
	if (req.Operation != admissionv1.Delete && !eviction) || s == nil || s.Hibernations == nil {
		return allow
	}
	var pod corev1.Pod
	if eviction {
		// An eviction (a node drain) deletes the Pod without the DELETE
		// review (tried on v1.37.2): it is held the same way, and answered
		// 429 so that a drain tries again.
		if s.Pods == nil {
			return allow
		}
		got, err := s.Pods(context.Background(), req.Namespace, req.Name)
		if apierrors.IsNotFound(err) {
			return allow
		}
		if err != nil {
			return deny(apierrors.NewServiceUnavailable(fmt.Sprintf("cannot read Pod %s/%s: %v", req.Namespace, req.Name, err)))
		}
		pod = *got
	} else if err := json.Unmarshal(req.OldObject.Raw, &pod); err != nil {
		return deny(fmt.Errorf("the old object is not a Pod: %v", err))
	}
	wait := func(err error) *admissionv1.AdmissionResponse {
		if eviction {
			return deny(apierrors.NewTooManyRequests(err.Error(), 2))
		}
		return deny(apierrors.NewConflict(corev1.Resource("pods"), pod.Name, err))
	}
	ref, owned := agents.SandboxController(pod.OwnerReferences)
	if !owned || pod.DeletionTimestamp != nil {
		return allow
	}
	ns := req.Namespace
	ctx := context.Background()
	sb, err := s.Sandboxes(ctx, ns, ref.Name)
	if apierrors.IsNotFound(err) {
		return allow
	}
	if err != nil {
		return deny(apierrors.NewServiceUnavailable(fmt.Sprintf("cannot tell whether Sandbox %s/%s hibernates: %v", ns, ref.Name, err)))
	}
	if sb.UID != string(ref.UID) || sb.Deleting || !sb.Paused || sb.PauseStrategy != PauseHibernate {
		return allow
	}
	what := fmt.Sprintf("Sandbox %s/%s hibernates (pauseStrategy Hibernate)", ns, ref.Name)
	if sb.HibernateMedium != "" && sb.HibernateMedium != HibernateSnapshot {
		return deny(apierrors.NewForbidden(corev1.Resource("pods"), pod.Name, fmt.Errorf(
			"%s to hibernateStrategy.type %q, which this server does not keep (only %s): the Pod stays until the strategy is changed or the Sandbox unpaused",
			what, sb.HibernateMedium, HibernateSnapshot)))
	}
	list, err := s.Hibernations.Of(ctx, ns, ref.Name)
	if err != nil {
		return deny(apierrors.NewServiceUnavailable(fmt.Sprintf("cannot list the hibernations of Sandbox %s/%s: %v", ns, ref.Name, err)))
	}
	failed := 0
	var last Hibernation
	for _, h := range list {
		if h.SandboxUID != sb.UID || h.PodUID != string(pod.UID) {
			continue
		}
		switch h.Phase {
		case agents.PhaseSucceeded:
			return allow
		case agents.PhaseFailed, agents.PhaseTerminating:
			if failed == 0 {
				last = h
			}
			failed++
		default:
			return wait(fmt.Errorf("%s: its memory is being captured (Checkpoint %s), and the Pod goes once that succeeded", what, h.Name))
		}
	}
	if failed >= maxHibernationAttempts {
		return deny(apierrors.NewForbidden(corev1.Resource("pods"), pod.Name, fmt.Errorf(
			"%s: capturing its memory failed %d times (the last, Checkpoint %s: %s); the Pod stays until the Sandbox is unpaused, "+
				"or its pauseStrategy is Stop (its memory then lost)", what, failed, last.Name, last.Message)))
	}
	if req.DryRun != nil && *req.DryRun {
		return wait(fmt.Errorf("%s: its memory is not captured yet, and a dry run starts no capture", what))
	}
	name, err := s.Hibernations.Start(ctx, ref.Name, sb, &pod)
	if err != nil {
		return deny(apierrors.NewServiceUnavailable(fmt.Sprintf("%s: cannot start the capture of its memory: %v", what, err)))
	}
	return wait(fmt.Errorf("%s: its memory is being captured (Checkpoint %s), and the Pod goes once that succeeded", what, name))
}

// resumed is the hibernation a new Pod of Sandbox sb (named sandbox)
// resumes: its newest Succeeded one (found false: none).
func (s *SandboxClones) resumed(ctx context.Context, ns, sandbox string, sb Sandbox) (Hibernation, bool, error) {
	if s.Hibernations == nil {
		return Hibernation{}, false, nil
	}
	list, err := s.Hibernations.Of(ctx, ns, sandbox)
	if err != nil {
		return Hibernation{}, false, err
	}
	for _, h := range list {
		if h.SandboxUID == sb.UID && h.Phase == agents.PhaseSucceeded && h.ID != "" {
			return h, true, nil
		}
	}
	return Hibernation{}, false, nil
}
