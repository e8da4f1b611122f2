// Package driver is the boundary between the API and whatever captures and
// restores sandbox state: the Driver and Resolver interfaces, the errors that
// the API turns into Checkpoint reasons, and the shared request types.
package driver

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Content is one part of a sandbox's state.
type Content string

const (
	// Memory is the process state of the sandbox's containers (CRIU task dump).
	Memory Content = "memory"
	// Filesystem is the writable layer of the sandbox's containers.
	Filesystem Content = "filesystem"
)

// Errors a driver wraps so that the API can say what went wrong.
var (
	// ErrTargetNotFound: the pod or sandbox, or its containers, do not exist.
	ErrTargetNotFound = errors.New("target not found")
	// ErrUnavailable: the driver's backend (containerd ...) cannot be reached.
	ErrUnavailable = errors.New("checkpoint driver unavailable")
	// ErrCheckpointNotFound: no captured state has that ID.
	ErrCheckpointNotFound = errors.New("checkpoint not found")
	// ErrInvalidID: a checkpoint ID that is no DNS label; it would become
	// a path, an image name, a tag.
	ErrInvalidID = errors.New("invalid checkpoint ID")
	// ErrNoContainer: the checkpoint exists and holds no such container.
	ErrNoContainer = fmt.Errorf("%w: no such container in it", ErrCheckpointNotFound)
	// ErrSandboxExists: a restore was asked to create a sandbox that exists.
	ErrSandboxExists = errors.New("sandbox already exists")
	// ErrUnsupported: the driver cannot do what was asked; it never does part of it silently.
	ErrUnsupported = errors.New("not supported by this driver")
)

// Container is one container of a target.
type Container struct {
	// ID is the runtime's container ID.
	ID string
	// Name is the container's name within its pod.
	Name string
}

// Target is a sandbox: a pod's app containers.
type Target struct {
	Namespace string
	Name      string
	// UID is the Pod's, when the target was found through the API.
	UID        string
	Node       string
	Containers []Container
	// Template is what a restore remakes the sandbox from (for a Pod, its
	// app containers), opaque to the driver, which keeps it with the state.
	Template []byte
}

// CaptureRequest says what to capture and under which ID.
type CaptureRequest struct {
	// ID names the captured state; the caller makes it unique.
	ID       string
	Contents []Content
	// Key, when set, is the checkpoint's data key: what leaves the node
	// (into the registry) is encrypted with it.
	Key []byte
	// Installation names the server's installation on what it publishes.
	Installation string
}

// CaptureResult is what a capture produced.
type CaptureResult struct {
	ID        string
	SizeBytes int64
	Contents  []Content
	// Pause is how long the captured processes were frozen: CRIU's frozen
	// time, summed over the containers, which are dumped one after another
	// (zero when nothing was frozen or it was not measured).
	Pause time.Duration
	// Published is set when the capture was pushed to a registry.
	Published *Published
}

// Published is a checkpoint pushed to a checkpoint registry.
type Published struct {
	// Image is the checkpoint's index by digest (registry/repository@sha256:...).
	Image string
	// Digest is the index's digest.
	Digest string
}

// RestoreRequest names the sandbox to create from captured state.
type RestoreRequest struct {
	Namespace string
	Name      string
	Labels    map[string]string
	// Node is the node to restore on ("": the scheduler's or the driver's choice).
	Node string
	// ImageDigest is the Checkpoint's status.imageDigest: a registry's copy
	// is found by it alone ("": none).
	ImageDigest string
	// Template, when set, is the source's template as the server recorded
	// it: the clone is made from it, never from what a registry says.
	Template []byte
}

// Driver captures, restores, deletes and stops sandboxes.
type Driver interface {
	// Capture records the target's state; on error nothing of it is left behind.
	Capture(ctx context.Context, target Target, req CaptureRequest) (CaptureResult, error)
	Restorer
	// Delete removes captured state; deleting what is not there succeeds.
	Delete(ctx context.Context, checkpointID string) error
	// Stop stops the target's containers (for keepRunning=false).
	Stop(ctx context.Context, target Target) error
}

// NamespacedDeleter is a Driver that deletes faster knowing the
// checkpoint's namespace (its repository in a registry).
type NamespacedDeleter interface {
	DeleteIn(ctx context.Context, namespace, checkpointID string) error
}

// Restorer creates and starts a new sandbox from captured state. A Driver
// makes bare containers; on a node a kubelet manages, the clone is a Pod
// (driver/kube.PodRestorer) that the node's restore runtime restores.
type Restorer interface {
	Restore(ctx context.Context, checkpointID string, req RestoreRequest) (Target, error)
}

// PreparedRestore is what a restore into a Pod needs of captured state:
// the clone Pod runs the source's images under the nodes' restore runtime,
// which asks its node's agent for each container's checkpoint.
type PreparedRestore struct {
	// Node holds the checkpoint ("" when the driver cannot tell).
	Node string
	// Template is the Target's, as captured.
	Template []byte
	// Anywhere: the checkpoint is in a registry, and any node's agent
	// fetches it; otherwise it is on Node only.
	Anywhere bool
}

// RestorePreparer says what a restore of a checkpoint into a Pod needs.
type RestorePreparer interface {
	// namespace is the Checkpoint's (and the clone's); imageDigest is its
	// status.imageDigest (its index in the namespace's repository of a
	// registry; "" when it has none).
	PrepareRestore(ctx context.Context, namespace, checkpointID, imageDigest string) (PreparedRestore, error)
}

// Stopper stops a captured source for keepRunning=false. A Driver stops
// containers itself; on a node a kubelet manages, the Pod must be ended
// through the API (driver/kube.PodStopper), or the kubelet restarts them.
type Stopper interface {
	Stop(ctx context.Context, target Target) error
}

// Resolver finds the containers of a pod or sandbox.
type Resolver interface {
	Resolve(ctx context.Context, namespace, name string) (Target, error)
}

// Has says whether contents include c.
func Has(contents []Content, c Content) bool {
	for _, x := range contents {
		if x == c {
			return true
		}
	}
	return false
}

var idPattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// ValidateID refuses a checkpoint ID that is not a DNS label (the server's
// are ckpt-<24 hex>): no path, glob, URL or tag syntax reaches a driver.
func ValidateID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%w %q: not a DNS label", ErrInvalidID, id)
	}
	return nil
}
