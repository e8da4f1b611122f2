package agents

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels and annotations the server maintains on every Checkpoint.
const (
	// LabelSandboxName carries spec.sandboxName, else spec.podName; set on create.
	LabelSandboxName = "agents.kruise.io/sandbox-name"
	// LabelCheckpointID carries status.checkpointId once the capture succeeded
	// (the label OpenKruise Agents looks checkpoints up by).
	LabelCheckpointID = "agents.kruise.io/checkpoint-id"
	// AnnotationOwner names the authenticated creator of the Checkpoint.
	AnnotationOwner = "agents.kruise.io/owner"
	// AnnotationCreator records the authenticated creator of the
	// Checkpoint as a user (JSON: name, uid, groups, extra), written by the
	// server (or, in crd mode, its webhook) at create and changed by nobody:
	// a capture that runs later checks the creator's rights on the Pod again.
	AnnotationCreator = "agents.kruise.io/creator"
	// AnnotationCapturedBy marks a Creating Checkpoint with the replica
	// capturing it, that process's incarnation and when it started
	// ("<replica>/<incarnation>/<unix seconds>"), so that a capture whose
	// process died can be told from one still running elsewhere.
	AnnotationCapturedBy = "agents.kruise.io/captured-by"
	// AnnotationImage and AnnotationImageDigest carry status.image and
	// status.imageDigest in crd mode, where OpenKruise's CRD schema prunes
	// those status fields: the node agents find the checkpoint by them.
	AnnotationImage       = "agents.kruise.io/checkpoint-image"
	AnnotationImageDigest = "agents.kruise.io/checkpoint-image-digest"
	// AnnotationSizeBytes carries status.sizeBytes in crd mode: a
	// namespace's checkpoint bytes are counted by it.
	AnnotationSizeBytes = "agents.kruise.io/checkpoint-size-bytes"
	// AnnotationBytesLimit, on a Namespace (set by whoever may edit
	// Namespaces), bounds the bytes its Succeeded Checkpoints hold
	// together (a quantity: 20Gi); it overrides --namespace-checkpoint-bytes.
	AnnotationBytesLimit = "agents.kruise.io/checkpoint-bytes-limit"
	// AnnotationHibernationOf marks the server's capture of a Hibernate
	// Sandbox's Pod before that Pod goes ("<Sandbox UID>/<Pod UID>"),
	// written by the server alone (crd mode): the Sandbox's next Pod is
	// restored from it, then it is deleted.
	AnnotationHibernationOf = "agents.kruise.io/hibernation-of"
	// LabelHibernation ("true") selects those captures; the annotation,
	// not the label, says whose they are.
	LabelHibernation = "agents.kruise.io/hibernation"
)

// ContentType names one part of a sandbox's state that a Checkpoint persists.
type ContentType string

const (
	// ContentMemory is the process memory of the sandbox's containers (CRIU task state).
	ContentMemory ContentType = "memory"
	// ContentFilesystem is the writable layer of the sandbox's containers.
	ContentFilesystem ContentType = "filesystem"
)

// AllContents is what an empty spec.persistentContents means.
var AllContents = []ContentType{ContentMemory, ContentFilesystem}

// CheckpointPhase is where a Checkpoint is in its life.
type CheckpointPhase string

const (
	PhasePending     CheckpointPhase = "Pending"
	PhaseCreating    CheckpointPhase = "Creating"
	PhaseSucceeded   CheckpointPhase = "Succeeded"
	PhaseFailed      CheckpointPhase = "Failed"
	PhaseTerminating CheckpointPhase = "Terminating"
)

// ConditionReady is the condition that says whether the captured state can be restored from.
const ConditionReady = "Ready"

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// Checkpoint is a point-in-time capture of a sandbox Pod's memory and/or filesystem.
type Checkpoint struct {
	metav1.TypeMeta
	metav1.ObjectMeta

	Spec   CheckpointSpec
	Status CheckpointStatus
}

// CheckpointSpec says what to capture. It is immutable after create.
type CheckpointSpec struct {
	// PodName is the Pod to capture.
	PodName string
	// SandboxName is the sandbox to capture.
	SandboxName string
	// KeepRunning false stops the source after the capture succeeds.
	KeepRunning *bool
	// PersistentContents lists what to capture; empty means everything.
	PersistentContents []ContentType
	// TTLAfterFinished is how long after completion the Checkpoint is deleted:
	// a Go duration that also accepts a d (days) unit.
	TTLAfterFinished string
}

// CheckpointStatus is what the server observed of the capture.
type CheckpointStatus struct {
	Phase              CheckpointPhase
	CheckpointID       string
	CompletionTime     *metav1.Time
	Message            string
	ObservedGeneration int64
	Conditions         []metav1.Condition
	Contents           []ContentType
	SizeBytes          int64
	CaptureDuration    *metav1.Duration
	// PauseDuration is how long the sandbox's processes were frozen.
	PauseDuration *metav1.Duration
	// Image is the checkpoint image in the registry, by digest; ImageDigest its digest.
	Image       string
	ImageDigest string
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// CheckpointList is a list of Checkpoints.
type CheckpointList struct {
	metav1.TypeMeta
	metav1.ListMeta

	Items []Checkpoint
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// CaptureOptions is the body of a POST to checkpoints/{name}/capture.
type CaptureOptions struct {
	metav1.TypeMeta

	// TimeoutSeconds bounds the capture; the server's default applies when nil.
	TimeoutSeconds *int64
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// CheckpointRestore asks, through checkpoints/{name}/restore, for a new
// sandbox cloned from the Checkpoint, and reports the sandbox made.
type CheckpointRestore struct {
	metav1.TypeMeta
	metav1.ObjectMeta

	Spec   CheckpointRestoreSpec
	Status CheckpointRestoreStatus
}

// CheckpointRestoreSpec names the sandbox to create.
type CheckpointRestoreSpec struct {
	// SandboxName is the new sandbox's name, in the Checkpoint's namespace.
	SandboxName string
	// Labels are put on the new sandbox's containers.
	Labels map[string]string
	// NodeName is the node to restore on ("": the scheduler's choice, or the node holding the checkpoint).
	NodeName string
}

// CheckpointRestoreStatus is the sandbox that was made.
type CheckpointRestoreStatus struct {
	SandboxName string
	Node        string
	Containers  []RestoredContainer
}

// RestoredContainer is one container of a restored sandbox.
type RestoredContainer struct {
	Name        string
	ContainerID string
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// Snapshot is a Checkpoint as its owner sees it through the owner-scoped
// snapshots resource.
type Snapshot struct {
	metav1.TypeMeta
	metav1.ObjectMeta

	Spec   CheckpointSpec
	Status CheckpointStatus
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// SnapshotList is a list of Snapshots.
type SnapshotList struct {
	metav1.TypeMeta
	metav1.ListMeta

	Items []Snapshot
}
