// Package validation checks Checkpoints on every write path: create, update
// of the main resource, and update through the status subresource.
package validation

import (
	"fmt"

	apimachineryvalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/util/sets"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
)

var (
	specPath   = field.NewPath("spec")
	statusPath = field.NewPath("status")

	contentValues = []string{string(agents.ContentMemory), string(agents.ContentFilesystem)}
	phaseValues   = []string{
		string(agents.PhasePending), string(agents.PhaseCreating), string(agents.PhaseSucceeded),
		string(agents.PhaseFailed), string(agents.PhaseTerminating),
	}
)

// ValidateCheckpoint checks a Checkpoint being created.
func ValidateCheckpoint(cp *agents.Checkpoint) field.ErrorList {
	allErrs := apimachineryvalidation.ValidateObjectMeta(&cp.ObjectMeta, true,
		apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	return append(allErrs, ValidateCheckpointSpec(&cp.Spec, specPath)...)
}

// ContentPodInfo is OpenKruise Agents' content kind for the Pod's
// definition alone; its Checkpoint CRD (crd mode) allows it.
const ContentPodInfo agents.ContentType = "podInfo"

// ValidateCheckpointCR checks a Checkpoint custom resource of OpenKruise
// Agents' CRD being created (the admission webhook of crd mode): the same
// rules, with podInfo among the contents.
func ValidateCheckpointCR(cp *agents.Checkpoint) field.ErrorList {
	allErrs := apimachineryvalidation.ValidateObjectMeta(&cp.ObjectMeta, true,
		apimachineryvalidation.NameIsDNSSubdomain, field.NewPath("metadata"))
	return append(allErrs, validateSpec(&cp.Spec, specPath, ContentPodInfo)...)
}

// ValidateCheckpointSpec checks the target, the contents and the TTL.
func ValidateCheckpointSpec(spec *agents.CheckpointSpec, fldPath *field.Path) field.ErrorList {
	return validateSpec(spec, fldPath)
}

func validateSpec(spec *agents.CheckpointSpec, fldPath *field.Path, extraContents ...agents.ContentType) field.ErrorList {
	var allErrs field.ErrorList
	if spec.PodName == "" && spec.SandboxName == "" {
		allErrs = append(allErrs, field.Required(fldPath.Child("podName"), "one of podName or sandboxName is required"))
	}
	allErrs = append(allErrs, validateDNSSubdomain(spec.PodName, fldPath.Child("podName"))...)
	allErrs = append(allErrs, validateDNSSubdomain(spec.SandboxName, fldPath.Child("sandboxName"))...)
	allErrs = append(allErrs, validateContents(spec.PersistentContents, fldPath.Child("persistentContents"), extraContents...)...)
	if spec.TTLAfterFinished != "" {
		if _, err := agents.ParseTTL(spec.TTLAfterFinished); err != nil {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("ttlAfterFinished"), spec.TTLAfterFinished,
				fmt.Sprintf("must be a positive duration such as 30m, 24h, 30d or 1d12h: %v", err)))
		}
	}
	return allErrs
}

func validateDNSSubdomain(name string, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if name == "" {
		return nil
	}
	for _, msg := range utilvalidation.IsDNS1123Subdomain(name) {
		allErrs = append(allErrs, field.Invalid(fldPath, name, msg))
	}
	return allErrs
}

func validateContents(contents []agents.ContentType, fldPath *field.Path, extra ...agents.ContentType) field.ErrorList {
	var allErrs field.ErrorList
	allowed := sets.New(agents.ContentMemory, agents.ContentFilesystem).Insert(extra...)
	values := append([]string(nil), contentValues...)
	for _, c := range extra {
		values = append(values, string(c))
	}
	seen := sets.New[agents.ContentType]()
	for i, c := range contents {
		switch {
		case !allowed.Has(c):
			allErrs = append(allErrs, field.NotSupported(fldPath.Index(i), c, values))
		case seen.Has(c):
			allErrs = append(allErrs, field.Duplicate(fldPath.Index(i), c))
		}
		seen.Insert(c)
	}
	return allErrs
}

// ValidateCheckpointUpdate checks an update of the main resource: metadata
// may change, spec may not.
func ValidateCheckpointUpdate(cp, old *agents.Checkpoint) field.ErrorList {
	allErrs := apimachineryvalidation.ValidateObjectMetaUpdate(&cp.ObjectMeta, &old.ObjectMeta, field.NewPath("metadata"))
	return append(allErrs, validateSpecUnchanged(&cp.Spec, &old.Spec)...)
}

// ValidateCheckpointCRUpdate checks an update of a Checkpoint custom
// resource (crd mode): its spec may not change. The kube-apiserver checks
// its metadata itself.
func ValidateCheckpointCRUpdate(cp, old *agents.Checkpoint) field.ErrorList {
	return validateSpecUnchanged(&cp.Spec, &old.Spec)
}

// validateSpecUnchanged names each spec field that an update tried to change,
// so a client sees exactly what it cannot do rather than a silent revert.
func validateSpecUnchanged(spec, old *agents.CheckpointSpec) field.ErrorList {
	var allErrs field.ErrorList
	immutable := func(name string, now, was interface{}) {
		allErrs = append(allErrs, apimachineryvalidation.ValidateImmutableField(now, was, specPath.Child(name))...)
	}
	immutable("podName", spec.PodName, old.PodName)
	immutable("sandboxName", spec.SandboxName, old.SandboxName)
	immutable("keepRunning", spec.KeepRunning, old.KeepRunning)
	immutable("persistentContents", spec.PersistentContents, old.PersistentContents)
	immutable("ttlAfterFinished", spec.TTLAfterFinished, old.TTLAfterFinished)
	return allErrs
}

// phaseRank orders phases so that status can only move forward. Succeeded
// and Failed share a rank: one never turns into the other.
var phaseRank = map[agents.CheckpointPhase]int{
	agents.PhasePending:     0,
	agents.PhaseCreating:    1,
	agents.PhaseSucceeded:   2,
	agents.PhaseFailed:      2,
	agents.PhaseTerminating: 3,
}

// ValidateCheckpointStatusUpdate checks a write through checkpoints/status.
func ValidateCheckpointStatusUpdate(cp, old *agents.Checkpoint) field.ErrorList {
	allErrs := apimachineryvalidation.ValidateObjectMetaUpdate(&cp.ObjectMeta, &old.ObjectMeta, field.NewPath("metadata"))
	allErrs = append(allErrs, ValidateCheckpointStatus(&cp.Status, statusPath)...)

	phasePath := statusPath.Child("phase")
	now, was := cp.Status.Phase, old.Status.Phase
	if _, known := phaseRank[now]; known && now != was {
		if _, wasKnown := phaseRank[was]; wasKnown && phaseRank[now] <= phaseRank[was] {
			allErrs = append(allErrs, field.Forbidden(phasePath,
				fmt.Sprintf("may not move from %s to %s: phases only move forward (Pending -> Creating -> Succeeded|Failed; any -> Terminating)", was, now)))
		}
	}
	if old.Status.CheckpointID != "" && cp.Status.CheckpointID != old.Status.CheckpointID {
		allErrs = append(allErrs, field.Invalid(statusPath.Child("checkpointId"), cp.Status.CheckpointID, "may not change once set"))
	}
	return allErrs
}

// ValidateCheckpointStatus checks the status on its own.
func ValidateCheckpointStatus(status *agents.CheckpointStatus, fldPath *field.Path) field.ErrorList {
	var allErrs field.ErrorList
	if status.Phase == "" {
		allErrs = append(allErrs, field.Required(fldPath.Child("phase"), ""))
	} else if _, ok := phaseRank[status.Phase]; !ok {
		allErrs = append(allErrs, field.NotSupported(fldPath.Child("phase"), status.Phase, phaseValues))
	}
	if status.Phase == agents.PhaseSucceeded && status.CheckpointID == "" {
		allErrs = append(allErrs, field.Required(fldPath.Child("checkpointId"), "a Succeeded checkpoint names its captured state"))
	}
	if status.CheckpointID != "" {
		for _, msg := range utilvalidation.IsValidLabelValue(status.CheckpointID) {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("checkpointId"), status.CheckpointID, msg))
		}
	}
	if status.SizeBytes < 0 {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("sizeBytes"), status.SizeBytes, "must not be negative"))
	}
	if status.CaptureDuration != nil && status.CaptureDuration.Duration < 0 {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("captureDuration"), status.CaptureDuration.Duration.String(), "must not be negative"))
	}
	if status.PauseDuration != nil {
		if status.PauseDuration.Duration < 0 {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("pauseDuration"), status.PauseDuration.Duration.String(), "must not be negative"))
		} else if status.CaptureDuration != nil && status.PauseDuration.Duration > status.CaptureDuration.Duration {
			allErrs = append(allErrs, field.Invalid(fldPath.Child("pauseDuration"), status.PauseDuration.Duration.String(), "must not be larger than captureDuration"))
		}
	}
	if status.ObservedGeneration < 0 {
		allErrs = append(allErrs, field.Invalid(fldPath.Child("observedGeneration"), status.ObservedGeneration, "must not be negative"))
	}
	allErrs = append(allErrs, validateContents(status.Contents, fldPath.Child("contents"))...)
	allErrs = append(allErrs, metav1validation.ValidateConditions(status.Conditions, fldPath.Child("conditions"))...)
	return allErrs
}
