package containerd

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/driver"
	"github.com/agents-kruise/checkpoint-apiserver/ociregistry"
)

// Publish pushes checkpoint id to the registry: an OCI index tagged with
// the ID, annotated with the captured template, whose manifests are the
// CRI checkpoint images of PrepareRestore (one per container, each
// annotated with its container's name, laid out as the kubelet's
// checkpoint archive, so checkpointctl reads it). The manifests also get
// local names by digest, the names a clone Pod uses, so a clone on this
// node starts without a pull.
func (d *Driver) Publish(ctx context.Context, id string, reg *ociregistry.Registry) (driver.Published, error) {
	ctx = d.ctx(ctx)
	start := time.Now()
	prepared, err := d.PrepareRestore(ctx, id)
	if err != nil {
		return driver.Published{}, err
	}
	preparedIn := time.Since(start)
	labels := func(kind string) map[string]string {
		return map[string]string{LabelCheckpointID: id, LabelImageKind: kind}
	}
	index := ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Annotations: map[string]string{
			ociregistry.AnnotationCheckpointID: id,
			ociregistry.AnnotationTemplate:     string(prepared.Template),
		},
	}
	gcRefs := map[string]string{}
	for i, im := range prepared.Images {
		img, err := d.client.ImageService().Get(ctx, im.Image)
		if err != nil {
			return driver.Published{}, d.classify("read restore image "+im.Image, err)
		}
		inner, err := d.readIndex(ctx, img.Target)
		if err != nil || len(inner.Manifests) != 1 {
			return driver.Published{}, fmt.Errorf("restore image %s: want an index of one manifest (%v)", im.Image, err)
		}
		m := inner.Manifests[0]
		m.Annotations = map[string]string{ociregistry.AnnotationContainerName: im.Container}
		index.Manifests = append(index.Manifests, m)
		gcRefs["containerd.io/gc.ref.content.m."+strconv.Itoa(i)] = m.Digest.String()
		if err := d.nameImage(ctx, images.Image{
			Name: reg.DigestRef(m.Digest), Target: ocispec.Descriptor{MediaType: m.MediaType, Digest: m.Digest, Size: m.Size},
			Labels: labels(imageKindRestore),
		}); err != nil {
			return driver.Published{}, d.classify("name restore image by digest", err)
		}
	}
	// The index is referenced by nothing here: a lease holds it until pushed.
	lease, err := d.client.LeasesService().Create(ctx, leases.WithRandomID(), leases.WithExpiration(time.Hour))
	if err != nil {
		return driver.Published{}, d.classify("lease for the checkpoint index", err)
	}
	defer func() { _ = d.client.LeasesService().Delete(context.WithoutCancel(ctx), lease) }()
	ctx = leases.WithLease(ctx, lease.ID)
	indexDesc, err := writeJSONBlob(ctx, d.client.ContentStore(), ocispec.MediaTypeImageIndex, index, gcRefs)
	if err != nil {
		return driver.Published{}, d.classify("write checkpoint index", err)
	}
	// No local name for the index: the CRI would take it for one more name
	// of the first container's image, one without the checkpoint annotation.
	ref := reg.TagRef(id)
	pushStart := time.Now()
	if err := d.client.Push(ctx, ref, indexDesc, containerd.WithResolver(reg.Resolver())); err != nil {
		return driver.Published{}, fmt.Errorf("%w: push %s: %v", ErrRegistry, ref, err)
	}
	klog.FromContext(ctx).Info("Published a checkpoint", "id", id, "ref", ref, "digest", indexDesc.Digest,
		"prepared", preparedIn, "pushed", time.Since(pushStart))
	return driver.Published{Image: reg.DigestRef(indexDesc.Digest), Digest: indexDesc.Digest.String()}, nil
}

// ErrRegistry: a push to the checkpoint registry failed.
var ErrRegistry = fmt.Errorf("%w: checkpoint registry", driver.ErrUnavailable)

// nameImage creates or updates a local image record.
func (d *Driver) nameImage(ctx context.Context, img images.Image) error {
	if _, err := d.client.ImageService().Create(ctx, img); err == nil || !errdefs.IsAlreadyExists(err) {
		return err
	}
	_, err := d.client.ImageService().Update(ctx, img, "target", "labels")
	return err
}

// DeleteImages removes local images by name (what a kubelet pulled of a
// checkpoint); what is not there is gone.
func (d *Driver) DeleteImages(ctx context.Context, names []string) error {
	ctx = d.ctx(ctx)
	var imgs []images.Image
	for _, n := range names {
		img, err := d.client.ImageService().Get(ctx, n)
		if errdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return d.classify("read image "+n, err)
		}
		imgs = append(imgs, img)
	}
	return d.deleteImages(ctx, imgs)
}

// deleteImages deletes imgs, and then the records the CRI keeps of them
// under their image IDs (named sha256:..., with the same target), which it
// would otherwise keep listing; a record whose target another named image
// still has (a base image) stays.
func (d *Driver) deleteImages(ctx context.Context, imgs []images.Image) error {
	targets := map[digest.Digest]bool{}
	for _, img := range imgs {
		targets[img.Target.Digest] = true
		// A restore image is an index of the one manifest a clone names.
		if img.Labels[LabelImageKind] == imageKindRestore && images.IsIndexType(img.Target.MediaType) {
			if idx, err := d.readIndex(ctx, img.Target); err == nil {
				for _, m := range idx.Manifests {
					targets[m.Digest] = true
				}
			}
		}
		if err := d.client.ImageService().Delete(ctx, img.Name, images.SynchronousDelete()); err != nil && !errdefs.IsNotFound(err) {
			return d.classify("delete checkpoint image "+img.Name, err)
		}
	}
	if len(targets) == 0 {
		return nil
	}
	all, err := d.client.ImageService().List(ctx)
	if err != nil {
		return d.classify("list images", err)
	}
	for _, img := range all {
		if !strings.HasPrefix(img.Name, "sha256:") {
			delete(targets, img.Target.Digest) // still named: not ours to drop
		}
	}
	for _, img := range all {
		if !strings.HasPrefix(img.Name, "sha256:") || !targets[img.Target.Digest] {
			continue
		}
		if err := d.client.ImageService().Delete(ctx, img.Name, images.SynchronousDelete()); err != nil && !errdefs.IsNotFound(err) {
			return d.classify("delete image record "+img.Name, err)
		}
	}
	return nil
}
