package nodeimages

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/driver"
	"github.com/agents-kruise/checkpoint-apiserver/encryption"
	"github.com/agents-kruise/checkpoint-apiserver/ociregistry"
	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
)

// checkpoints is the resource in both modes (aggregated and OpenKruise's CRD).
var checkpoints = schema.GroupVersionResource{Group: "agents.kruise.io", Version: "v1alpha1", Resource: "checkpoints"}

// APILookup finds Checkpoints through the kube-apiserver.
type APILookup struct{ Client dynamic.Interface }

// Find lists ns's Checkpoints and takes the Succeeded one with ID id.
func (l APILookup) Find(ctx context.Context, ns, id string) (Checkpoint, error) {
	list, err := l.Client.Resource(checkpoints).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return Checkpoint{}, fmt.Errorf("list the Checkpoints of namespace %s: %w", ns, err)
	}
	for _, item := range list.Items {
		got, _, _ := unstructured.NestedString(item.Object, "status", "checkpointId")
		if got != id {
			continue
		}
		phase, _, _ := unstructured.NestedString(item.Object, "status", "phase")
		if phase != "Succeeded" {
			return Checkpoint{}, fmt.Errorf("%w: Checkpoint %s/%s is %s, not Succeeded", ErrNotFound, ns, item.GetName(), phase)
		}
		d, _, _ := unstructured.NestedString(item.Object, "status", "imageDigest")
		if d == "" { // crd mode: OpenKruise's CRD has no such status field
			d = item.GetAnnotations()[agents.AnnotationImageDigest]
		}
		contents, _, _ := unstructured.NestedStringSlice(item.Object, "spec", "persistentContents")
		sandbox, _, _ := unstructured.NestedString(item.Object, "spec", "sandboxName")
		if sandbox == "" {
			sandbox, _, _ = unstructured.NestedString(item.Object, "spec", "podName")
		}
		return Checkpoint{Namespace: ns, Name: item.GetName(), UID: string(item.GetUID()), ImageDigest: d,
			Owner:          item.GetAnnotations()[agents.AnnotationOwner],
			FilesystemOnly: filesystemOnly(contents),
			Sandbox:        sandbox, Created: item.GetCreationTimestamp().Time}, nil
	}
	return Checkpoint{}, fmt.Errorf("%w: namespace %s has no Checkpoint with ID %s", ErrNotFound, ns, id)
}

// filesystemOnly: contents name the filesystem and not memory (none names
// both, the API's default).
func filesystemOnly(contents []string) bool {
	return slices.Contains(contents, string(agents.ContentFilesystem)) && !slices.Contains(contents, string(agents.ContentMemory))
}

// RegistryArchives fetches archives from the checkpoint registry, by the
// Checkpoint's digest only, checks the index names the checkpoint, and
// decrypts them with the checkpoint's data key.
type RegistryArchives struct {
	Registry *ociregistry.Registry
	// Keys has the data keys the server gave this node (nil: archives are
	// in clear, and an encrypted one cannot be read).
	Keys Keys
}

// Keys are a node's checkpoint data keys.
type Keys interface {
	// Wait returns checkpoint id's key for namespace, waiting until ctx ends.
	Wait(ctx context.Context, namespace, id string) ([]byte, error)
}

// keyWait bounds the wait for a checkpoint's key: the server gives it once
// the Pod is bound here; the kubelet retries a container that failed.
const keyWait = time.Minute

// Archive streams req's container archive.
func (a RegistryArchives) Archive(ctx context.Context, cp Checkpoint, req api.Request) (io.ReadCloser, int64, error) {
	d, err := digest.Parse(cp.ImageDigest)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: Checkpoint %s/%s names no image in the checkpoint registry", ErrNotFound, cp.Namespace, cp.Name)
	}
	// The Checkpoint's namespace's repository: no other is read for it.
	reg, err := a.Registry.In(cp.Namespace)
	if err != nil {
		return nil, 0, err
	}
	idx, err := reg.Index(ctx, d.String())
	if err != nil {
		return nil, 0, fmt.Errorf("checkpoint index of %s/%s: %w", cp.Namespace, cp.Name, err)
	}
	if got := idx.Annotations[ociregistry.AnnotationCheckpointID]; got != req.CheckpointID {
		return nil, 0, fmt.Errorf("the index %s of Checkpoint %s/%s is of checkpoint %q, not %s: refused", d, cp.Namespace, cp.Name, got, req.CheckpointID)
	}
	if got := idx.Annotations[ociregistry.AnnotationNamespace]; got != cp.Namespace {
		return nil, 0, fmt.Errorf("the index %s of Checkpoint %s/%s is of namespace %q: refused", d, cp.Namespace, cp.Name, got)
	}
	var key []byte
	if a.Keys != nil {
		kctx, cancel := context.WithTimeout(ctx, keyWait)
		key, err = a.Keys.Wait(kctx, req.Namespace, req.CheckpointID)
		cancel()
		if err != nil {
			return nil, 0, err
		}
	}
	for _, m := range idx.Manifests {
		if m.Annotations[ociregistry.AnnotationContainerName] != req.Container {
			continue
		}
		man, err := reg.Manifest(ctx, m.Digest)
		if err != nil {
			return nil, 0, err
		}
		if len(man.Layers) != 1 {
			return nil, 0, fmt.Errorf("checkpoint manifest %s has %d layers, not one archive", m.Digest, len(man.Layers))
		}
		layer := man.Layers[0]
		if a.Keys != nil {
			if layer.MediaType != encryption.MediaTypeEncryptedLayer {
				return nil, 0, fmt.Errorf("%w: checkpoint %s's layer of container %s is %q: refused, memory travels encrypted only",
					encryption.ErrNotEncrypted, req.CheckpointID, req.Container, layer.MediaType)
			}
			// A wrong key is told as such (the layer's key check), before
			// the index is found not to be its key's.
			if _, err := encryption.DecryptLayer(bytes.NewReader(nil), layer, key, req.CheckpointID, req.Container); err != nil {
				return nil, 0, err
			}
			// An index someone else pushed (whoever holds registry
			// credentials may) carries no MAC of this checkpoint's data key.
			if err := encryption.VerifyIndex(idx.Annotations[ociregistry.AnnotationMAC], key, req.CheckpointID, cp.Namespace,
				idx.Manifests, ociregistry.AnnotationContainerName); err != nil {
				return nil, 0, err
			}
		}
		r, err := reg.Blob(ctx, layer)
		if err != nil {
			return nil, 0, err
		}
		if layer.MediaType != encryption.MediaTypeEncryptedLayer {
			return r, layer.Size, nil
		}
		plain, err := encryption.DecryptLayer(r, layer, key, req.CheckpointID, req.Container)
		if err != nil {
			r.Close()
			return nil, 0, err
		}
		// CTR keeps the size: the archive is as large as its ciphertext.
		return struct {
			io.Reader
			io.Closer
		}{plain, r}, layer.Size, nil
	}
	return nil, 0, fmt.Errorf("%w: checkpoint %s holds no container %s", ErrNoContainer, req.CheckpointID, req.Container)
}

// LocalArchives are the archives a node's own containerd driver keeps.
type LocalArchives interface {
	Archive(ctx context.Context, id, container string) (io.ReadCloser, error)
}

// DriverArchives fetches archives from the node's containerd (no registry).
type DriverArchives struct{ Driver LocalArchives }

// Archive streams req's container archive.
func (a DriverArchives) Archive(ctx context.Context, _ Checkpoint, req api.Request) (io.ReadCloser, int64, error) {
	r, err := a.Driver.Archive(ctx, req.CheckpointID, req.Container)
	if errors.Is(err, driver.ErrNoContainer) {
		err = fmt.Errorf("%w: %v", ErrNoContainer, err)
	}
	return r, -1, err
}
