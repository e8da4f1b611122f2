package containerd

import (
	"context"
	"fmt"
	"strings"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"

	"github.com/agents-kruise/checkpoint-apiserver/driver"
)

// ErrRegistry: a push to the checkpoint registry failed.
var ErrRegistry = fmt.Errorf("%w: checkpoint registry", driver.ErrUnavailable)

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
