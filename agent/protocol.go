// Package agent is the node agent: it runs the containerd + CRIU driver
// against its own node's containerd, and serves the API server, and only
// the API server, over mutually authenticated TLS (as the kube-apiserver
// calls kubelets), for Pods bound to its own node only (as the Node
// authorizer limits kubelets). Captures are pushed to the checkpoint
// registry before the agent answers. Client is the server's side: a
// driver.Driver that hands each call to the agent of the right node.
package agent

import (
	"errors"
	"fmt"
	"time"

	"github.com/agents-kruise/checkpoint-apiserver/driver"
)

// Paths the agent serves (POST, JSON bodies).
const (
	PathCapture      = "/v1/capture"
	PathDelete       = "/v1/delete"
	PathTerminate    = "/v1/terminate"
	PathStop         = "/v1/stop"
	PathStates       = "/v1/states"
	PathPrefetch     = "/v1/prefetch"
	PathKey          = "/v1/key"
	PathHealthz      = "/healthz"
	PathMetrics      = "/metrics"
	maxRequestBytes  = 1 << 20
	headerCheckpoint = "X-Checkpoint-Id"
)

// PodRef names a Pod; the agent reads the rest from the kube-apiserver.
type PodRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// UID, when set, must be the Pod's.
	UID string `json:"uid,omitempty"`
}

// CaptureRequest asks for a capture of a Pod on the agent's node.
type CaptureRequest struct {
	Pod      PodRef           `json:"pod"`
	ID       string           `json:"id"`
	Contents []driver.Content `json:"contents,omitempty"`
	// Key is the checkpoint's data key: what goes to the registry is
	// encrypted with it (required when the agent pushes to a registry).
	Key []byte `json:"key,omitempty"`
	// Installation names the server's installation on the index pushed.
	Installation string `json:"installation,omitempty"`
}

// KeyRequest gives the node checkpoint CheckpointID's data key, for Pod
// (bound to the node) to restore from: the server sends it, for a Pod
// marked to restore that checkpoint, once the Pod is bound.
type KeyRequest struct {
	Pod          PodRef `json:"pod"`
	CheckpointID string `json:"checkpointId"`
	Key          []byte `json:"key,omitempty"`
	// Refusal, instead of Key, says why the server gives none: the restore
	// waiting for it fails with that reason.
	Refusal string `json:"refusal,omitempty"`
}

// CaptureResponse is what was captured and where it was pushed.
type CaptureResponse struct {
	ID        string            `json:"id"`
	SizeBytes int64             `json:"sizeBytes"`
	Contents  []driver.Content  `json:"contents,omitempty"`
	Published *driver.Published `json:"published,omitempty"`
	// Pause is how long CRIU kept the Pod's processes frozen.
	Pause time.Duration `json:"pauseNanoseconds,omitempty"`
}

// DeleteRequest removes a checkpoint's state from the node: what its
// captures wrote, and images pulled of it (Images, by name).
type DeleteRequest struct {
	ID     string   `json:"id"`
	Images []string `json:"images,omitempty"`
}

// PrefetchRequest puts checkpoint ID's containers on the node for the
// restore runtime, before the clone (Pod, of Namespace) asks for them.
// The agent resolves ID in Namespace itself, as it does for the runtime.
type PrefetchRequest struct {
	Namespace  string   `json:"namespace"`
	Pod        string   `json:"pod"`
	ID         string   `json:"id"`
	Containers []string `json:"containers"`
}

// StopRequest ends a Pod's processes (terminate) or containers (stop).
type StopRequest struct {
	Pod PodRef `json:"pod"`
}

// StatesResponse lists the checkpoint state on the node, by ID, with
// when it was made (RFC 3339).
type StatesResponse struct {
	States map[string]string `json:"states"`
}

// Error kinds on the wire, so that the server's reasons survive the hop.
const (
	kindTargetNotFound     = "TargetNotFound"
	kindUnavailable        = "Unavailable"
	kindCheckpointNotFound = "CheckpointNotFound"
	kindUnsupported        = "Unsupported"
	kindForbidden          = "Forbidden"
	kindUnauthorized       = "Unauthorized"
	kindBadRequest         = "BadRequest"
	kindInternal           = "Internal"
)

// ErrorResponse is every failed answer's body.
type ErrorResponse struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// ErrForbidden: the agent refused (not the server, or not its node's Pod).
var ErrForbidden = errors.New("refused by the node agent")

func kindOf(err error) string {
	switch {
	case errors.Is(err, driver.ErrTargetNotFound):
		return kindTargetNotFound
	case errors.Is(err, driver.ErrUnavailable):
		return kindUnavailable
	case errors.Is(err, driver.ErrCheckpointNotFound):
		return kindCheckpointNotFound
	case errors.Is(err, driver.ErrUnsupported):
		return kindUnsupported
	case errors.Is(err, ErrForbidden):
		return kindForbidden
	}
	return kindInternal
}

// asError turns an agent's error answer back into the driver's errors.
func (e ErrorResponse) asError(node string) error {
	msg := fmt.Sprintf("node agent of %s: %s", node, e.Message)
	switch e.Kind {
	case kindTargetNotFound:
		return fmt.Errorf("%w: %s", driver.ErrTargetNotFound, msg)
	case kindUnavailable:
		return fmt.Errorf("%w: %s", driver.ErrUnavailable, msg)
	case kindCheckpointNotFound:
		return fmt.Errorf("%w: %s", driver.ErrCheckpointNotFound, msg)
	case kindUnsupported:
		return fmt.Errorf("%w: %s", driver.ErrUnsupported, msg)
	case kindForbidden, kindUnauthorized:
		return fmt.Errorf("%w: %s", ErrForbidden, msg)
	}
	return errors.New(msg)
}
