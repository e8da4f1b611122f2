// Package api is what the restore runtime and the node's checkpoint
// images store say to each other over the node-local socket, and where a
// container's checkpoint lies on the node.
package api

import (
	"fmt"
	"path/filepath"
	"regexp"

	"k8s.io/apimachinery/pkg/util/validation"
)

// AnnotationRestoreFrom marks a Pod for restore: every container of it is
// restored from checkpoint <value> of the Pod's namespace, never started
// fresh.
const AnnotationRestoreFrom = "agents.kruise.io/restore-from"

// AnnotationStopAfterCheckpoint, set by a task Update just before a
// keepRunning=false capture ends the container, makes the runtime report
// the container's exit as status 0 whatever its process did on SIGTERM:
// the sandbox was taken to its checkpoint, not failed. The runtime takes
// the annotation out of the update; runc's own shim refuses an update
// without resources, which tells the caller the container is not the
// runtime's.
const AnnotationStopAfterCheckpoint = "agents.kruise.io/stopped-after-checkpoint"

// Path is the socket's one route: POST a Request, get a Response (200) or
// an Error.
const Path = "/v1/restore-images"

// FailurePath is where the runtime reports a restore that failed (POST a
// Failure, get 204): the node agent puts it on the Checkpoint as an Event.
const FailurePath = "/v1/restore-failures"

// Failure is a restore that failed, and why (CRIU's own lines included).
type Failure struct {
	Request
	Reason string `json:"reason"`
}

// Request names one container's checkpoint, from what containerd's CRI
// put in the container's spec.
type Request struct {
	Namespace    string `json:"namespace"`
	Pod          string `json:"pod"`
	Container    string `json:"container"`
	CheckpointID string `json:"checkpointId"`
}

// Response is a container's checkpoint on the node, ready for CRIU.
type Response struct {
	// Images is the directory of CRIU's images ("" only when FilesystemOnly).
	Images string `json:"images"`
	// FilesystemOnly: the checkpoint holds writable layers and no memory;
	// the container starts afresh on its layer.
	FilesystemOnly bool `json:"filesystemOnly,omitempty"`
	// RootfsDiff is the container's filesystem changes as a tar ("": none).
	RootfsDiff string `json:"rootfsDiff,omitempty"`
}

// Error says why there is no Response.
type Error struct {
	Message string `json:"message"`
}

var checkpointIDPattern = regexp.MustCompile(`^ckpt-[0-9a-f]{24}$`)

// ValidCheckpointID says whether id is one the server makes (ckpt-<24 hex>).
func ValidCheckpointID(id string) bool { return checkpointIDPattern.MatchString(id) }

// Validate refuses anything but the names Kubernetes and the server make:
// they become path elements under the node's images directory.
func (r Request) Validate() error {
	if !ValidCheckpointID(r.CheckpointID) {
		return fmt.Errorf("checkpoint ID %q is not one this server makes (ckpt-<24 hex>)", r.CheckpointID)
	}
	if errs := validation.IsDNS1123Label(r.Namespace); len(errs) > 0 {
		return fmt.Errorf("namespace %q: %v", r.Namespace, errs)
	}
	if errs := validation.IsDNS1123Label(r.Container); len(errs) > 0 {
		return fmt.Errorf("container name %q: %v", r.Container, errs)
	}
	return nil
}

// Dir is where container's checkpoint lies under root:
// <root>/<namespace>/<checkpoint ID>/<container>/, holding checkpoint/
// (CRIU's images) and rootfs-diff.tar. r must be valid.
func Dir(root string, r Request) string {
	return filepath.Join(root, r.Namespace, r.CheckpointID, r.Container)
}
