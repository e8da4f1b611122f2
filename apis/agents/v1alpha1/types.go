package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ContentType names one part of a sandbox's state that a Checkpoint persists:
// memory or filesystem.
// +enum
type ContentType string

const (
	// ContentMemory is the process memory of the sandbox's containers (CRIU task state).
	ContentMemory ContentType = "memory"
	// ContentFilesystem is the writable layer of the sandbox's containers.
	ContentFilesystem ContentType = "filesystem"
)

// CheckpointPhase is where a Checkpoint is in its life: Pending, Creating,
// Succeeded, Failed or Terminating.
// +enum
type CheckpointPhase string

const (
	PhasePending     CheckpointPhase = "Pending"
	PhaseCreating    CheckpointPhase = "Creating"
	PhaseSucceeded   CheckpointPhase = "Succeeded"
	PhaseFailed      CheckpointPhase = "Failed"
	PhaseTerminating CheckpointPhase = "Terminating"
)

// +genclient
// +genclient:method=Capture,verb=create,subresource=capture,input=CaptureOptions,result=Checkpoint
// +genclient:method=Restore,verb=create,subresource=restore,input=CheckpointRestore,result=CheckpointRestore
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// Checkpoint is a point-in-time capture of a running sandbox Pod's memory
// and/or filesystem, from which new sandboxes can be cloned.
type Checkpoint struct {
	metav1.TypeMeta `json:",inline"`
	// Standard object metadata.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty" protobuf:"bytes,1,opt,name=metadata"`

	// Spec says what to capture. It is immutable after create.
	// +optional
	Spec CheckpointSpec `json:"spec,omitempty" protobuf:"bytes,2,opt,name=spec"`
	// Status is what the server observed of the capture. It is written only
	// through the status subresource or by the server itself.
	// +optional
	Status CheckpointStatus `json:"status,omitempty" protobuf:"bytes,3,opt,name=status"`
}

// CheckpointSpec says what to capture. At least one of podName and
// sandboxName is required.
type CheckpointSpec struct {
	// PodName is the name of the Pod to capture, in the Checkpoint's namespace.
	// +optional
	PodName string `json:"podName,omitempty" protobuf:"bytes,1,opt,name=podName"`
	// SandboxName is the name of the sandbox to capture, in the Checkpoint's namespace.
	// +optional
	SandboxName string `json:"sandboxName,omitempty" protobuf:"bytes,2,opt,name=sandboxName"`
	// KeepRunning false stops the source after the capture succeeds. Defaults to true.
	// +optional
	KeepRunning *bool `json:"keepRunning,omitempty" protobuf:"varint,3,opt,name=keepRunning"`
	// PersistentContents lists what to capture: memory, filesystem. Empty means both.
	// +optional
	// +listType=set
	PersistentContents []ContentType `json:"persistentContents,omitempty" protobuf:"bytes,4,rep,name=persistentContents,casttype=ContentType"`
	// TTLAfterFinished is how long after completionTime the Checkpoint is
	// deleted: a Go duration that also accepts d for days, such as 30m, 24h, 30d or 1d12h.
	// +optional
	TTLAfterFinished string `json:"ttlAfterFinished,omitempty" protobuf:"bytes,5,opt,name=ttlAfterFinished"`
}

// CheckpointStatus is what the server observed of the capture.
type CheckpointStatus struct {
	// Phase is Pending, Creating, Succeeded, Failed or Terminating.
	// +optional
	Phase CheckpointPhase `json:"phase,omitempty" protobuf:"bytes,1,opt,name=phase,casttype=CheckpointPhase"`
	// CheckpointID is the driver's identifier of the captured state, set when Succeeded.
	// +optional
	CheckpointID string `json:"checkpointId,omitempty" protobuf:"bytes,2,opt,name=checkpointId"`
	// CompletionTime is when the capture finished, successfully or not.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty" protobuf:"bytes,3,opt,name=completionTime"`
	// Message is a human-readable word on the last transition.
	// +optional
	Message string `json:"message,omitempty" protobuf:"bytes,4,opt,name=message"`
	// ObservedGeneration is the generation the status was written for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty" protobuf:"varint,5,opt,name=observedGeneration"`
	// Conditions holds the Ready condition, with its reason.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty" protobuf:"bytes,6,rep,name=conditions"`
	// Contents is what was actually captured.
	// +optional
	// +listType=set
	Contents []ContentType `json:"contents,omitempty" protobuf:"bytes,7,rep,name=contents,casttype=ContentType"`
	// SizeBytes is the size of the captured state.
	// +optional
	SizeBytes int64 `json:"sizeBytes,omitempty" protobuf:"varint,8,opt,name=sizeBytes"`
	// CaptureDuration is how long the capture took, until its checkpoint was
	// durable (in the checkpoint registry, when there is one).
	// +optional
	CaptureDuration *metav1.Duration `json:"captureDuration,omitempty" protobuf:"bytes,9,opt,name=captureDuration"`
	// Image is the checkpoint image in the checkpoint registry, by digest
	// (registry/repository@sha256:...), when the server ships checkpoints
	// through one: an OCI index of one CRI checkpoint image per container.
	// +optional
	Image string `json:"image,omitempty" protobuf:"bytes,10,opt,name=image"`
	// ImageDigest is the digest of Image.
	// +optional
	ImageDigest string `json:"imageDigest,omitempty" protobuf:"bytes,11,opt,name=imageDigest"`
	// PauseDuration is how long the sandbox's processes were frozen, by
	// CRIU's own count of its frozen time, summed over the containers (they
	// are dumped one after another); no larger than CaptureDuration. Unset
	// when no memory was captured.
	// +optional
	PauseDuration *metav1.Duration `json:"pauseDuration,omitempty" protobuf:"bytes,12,opt,name=pauseDuration"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// CheckpointList is a list of Checkpoints.
type CheckpointList struct {
	metav1.TypeMeta `json:",inline"`
	// Standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty" protobuf:"bytes,1,opt,name=metadata"`

	// Items are the Checkpoints.
	Items []Checkpoint `json:"items" protobuf:"bytes,2,rep,name=items"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// CaptureOptions is the body of POST .../checkpoints/{name}/capture, which
// captures a Pending Checkpoint synchronously and returns it finished.
type CaptureOptions struct {
	metav1.TypeMeta `json:",inline"`

	// TimeoutSeconds bounds the capture, from 1 to 55 seconds (under the
	// aggregator's 60 s request limit). Defaults to 50.
	// +optional
	TimeoutSeconds *int64 `json:"timeoutSeconds,omitempty" protobuf:"varint,1,opt,name=timeoutSeconds"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// CheckpointRestore is the body and the answer of POST
// .../checkpoints/{name}/restore: it names the sandbox to clone from a
// Succeeded Checkpoint, and reports the sandbox made.
type CheckpointRestore struct {
	metav1.TypeMeta `json:",inline"`
	// metadata.name, when set, must be the Checkpoint's name.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty" protobuf:"bytes,1,opt,name=metadata"`

	// Spec names the sandbox to create.
	Spec CheckpointRestoreSpec `json:"spec" protobuf:"bytes,2,opt,name=spec"`
	// Status is the sandbox that was made.
	// +optional
	Status CheckpointRestoreStatus `json:"status,omitempty" protobuf:"bytes,3,opt,name=status"`
}

// CheckpointRestoreSpec names the sandbox to create.
type CheckpointRestoreSpec struct {
	// SandboxName is the new sandbox's name, in the Checkpoint's namespace.
	SandboxName string `json:"sandboxName" protobuf:"bytes,1,opt,name=sandboxName"`
	// Labels are put on the new sandbox's containers.
	// +optional
	Labels map[string]string `json:"labels,omitempty" protobuf:"bytes,2,rep,name=labels"`
	// NodeName is the node to restore on. Unset, the scheduler places the
	// clone when the checkpoint is in a registry, and it goes to the node
	// that holds the checkpoint otherwise.
	// +optional
	NodeName string `json:"nodeName,omitempty" protobuf:"bytes,3,opt,name=nodeName"`
}

// CheckpointRestoreStatus is the sandbox that was made.
type CheckpointRestoreStatus struct {
	// SandboxName is the name of the new sandbox.
	// +optional
	SandboxName string `json:"sandboxName,omitempty" protobuf:"bytes,1,opt,name=sandboxName"`
	// Node is where the sandbox runs, when the driver knows.
	// +optional
	Node string `json:"node,omitempty" protobuf:"bytes,2,opt,name=node"`
	// Containers are the new sandbox's containers.
	// +optional
	// +listType=atomic
	Containers []RestoredContainer `json:"containers,omitempty" protobuf:"bytes,3,rep,name=containers"`
}

// RestoredContainer is one container of a restored sandbox.
type RestoredContainer struct {
	// Name is the container's name in its pod.
	Name string `json:"name" protobuf:"bytes,1,opt,name=name"`
	// ContainerID is the runtime's ID of the container.
	ContainerID string `json:"containerID" protobuf:"bytes,2,opt,name=containerID"`
}

// +genclient
// +genclient:onlyVerbs=get,list,watch,delete
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// Snapshot is a Checkpoint as its owner sees it: the snapshots resource
// shows each caller only the Checkpoints it created (admins see all), and
// deleting a Snapshot deletes the Checkpoint and its captured state.
type Snapshot struct {
	metav1.TypeMeta `json:",inline"`
	// Standard object metadata, the Checkpoint's.
	// +optional
	metav1.ObjectMeta `json:"metadata,omitempty" protobuf:"bytes,1,opt,name=metadata"`

	// Spec is the Checkpoint's spec.
	// +optional
	Spec CheckpointSpec `json:"spec,omitempty" protobuf:"bytes,2,opt,name=spec"`
	// Status is the Checkpoint's status.
	// +optional
	Status CheckpointStatus `json:"status,omitempty" protobuf:"bytes,3,opt,name=status"`
}

// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object

// SnapshotList is a list of Snapshots.
type SnapshotList struct {
	metav1.TypeMeta `json:",inline"`
	// Standard list metadata.
	// +optional
	metav1.ListMeta `json:"metadata,omitempty" protobuf:"bytes,1,opt,name=metadata"`

	// Items are the Snapshots.
	Items []Snapshot `json:"items" protobuf:"bytes,2,rep,name=items"`
}
