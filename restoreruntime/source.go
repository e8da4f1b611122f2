package restoreruntime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Request names one container's checkpoint, from what containerd's CRI
// put in the container's spec.
type Request struct {
	Namespace    string
	Pod          string
	Container    string
	CheckpointID string
}

// Prepared is a container's checkpoint on the node, ready for CRIU.
type Prepared struct {
	// Images is the directory of CRIU's images.
	Images string
	// RootfsDiff is the container's filesystem changes as a tar ("": none).
	RootfsDiff string
}

// Source puts a container's checkpoint on the node.
type Source interface {
	Prepare(ctx context.Context, req Request) (Prepared, error)
}

// ErrNoCheckpoint: the node holds no checkpoint for the container.
var ErrNoCheckpoint = errors.New("no checkpoint for this container on the node")

var checkpointIDPattern = regexp.MustCompile(`^ckpt-[0-9a-f]{24}$`)

// Validate refuses anything but the names Kubernetes and the server make:
// they become path elements under the node's images directory.
func (r Request) Validate() error {
	if !checkpointIDPattern.MatchString(r.CheckpointID) {
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

// DirSource reads checkpoints a node agent laid out under Dir as
// <namespace>/<checkpoint ID>/<container>/{checkpoint/,rootfs-diff.tar}.
type DirSource struct{ Dir string }

// Prepare finds req's images under the directory.
func (s DirSource) Prepare(_ context.Context, req Request) (Prepared, error) {
	if err := req.Validate(); err != nil {
		return Prepared{}, err
	}
	dir := filepath.Join(s.Dir, req.Namespace, req.CheckpointID, req.Container)
	images := filepath.Join(dir, "checkpoint")
	if _, err := os.Stat(filepath.Join(images, "inventory.img")); err != nil {
		return Prepared{}, fmt.Errorf("%w: checkpoint %s of container %s in namespace %s: %v", ErrNoCheckpoint, req.CheckpointID, req.Container, req.Namespace, err)
	}
	p := Prepared{Images: images}
	if _, err := os.Stat(filepath.Join(dir, "rootfs-diff.tar")); err == nil {
		p.RootfsDiff = filepath.Join(dir, "rootfs-diff.tar")
	}
	return p, nil
}
