package containerd

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	goruntime "runtime"
	"strings"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/agents-kruise/checkpoint-apiserver/driver"
)

// How a checkpoint becomes a Pod: the capture keeps, beside containerd's own
// checkpoint image, a record of each container as the CRI saw it. A restore
// into a Pod turns both into the checkpoint image containerd's CRI restores
// from when a Pod's container names it (CreateContainer with a checkpoint
// image, containerd 2.3): one layer laid out as the kubelet's checkpoint
// archive (checkpoint/ with CRIU's images, rootfs-diff.tar, spec.dump,
// config.dump, status.dump), its index annotated with the container's name.

const (
	// MediaTypeContainerRecord is the capture's record of one container.
	MediaTypeContainerRecord = "application/vnd.agents.kruise.io.checkpoint.container.v1+json"
	// CheckpointAnnotationName marks a CRI checkpoint image and names its container.
	CheckpointAnnotationName = "org.criu.checkpoint.container.name"
	// LabelImageKind tells the images made for restores from the captured ones.
	LabelImageKind   = "agents.kruise.io/image-kind"
	imageKindRestore = "restore"

	criContainerMetadata = "io.cri-containerd.container.metadata"
	// hashAnnotation and restartCountAnnotation must be in status.dump for
	// the CRI to replace them with the clone's: without the hash, the
	// kubelet sees a changed container and restarts it afresh.
	hashAnnotation         = "io.kubernetes.container.hash"
	restartCountAnnotation = "io.kubernetes.container.restartCount"
)

// containerRecord is what a CRI restore needs to know of a captured
// container besides its state.
type containerRecord struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Image is the base image by name, ImageRef the runtime's ID of it.
	Image          string            `json:"image"`
	ImageRef       string            `json:"imageRef"`
	Runtime        string            `json:"runtime"`
	CreatedAt      time.Time         `json:"createdAt"`
	CheckpointedAt time.Time         `json:"checkpointedAt"`
	Labels         map[string]string `json:"labels,omitempty"`
	Annotations    map[string]string `json:"annotations,omitempty"`
	// Template is the Target's.
	Template []byte `json:"template,omitempty"`
}

// criConfig is the part of the CRI's container metadata a restore reads.
type criConfig struct {
	Metadata struct {
		ImageRef string
		Config   *struct {
			Image *struct {
				Image              string `json:"image"`
				UserSpecifiedImage string `json:"user_specified_image"`
			} `json:"image"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		}
	}
}

// withContainerRecord adds the container's record to its checkpoint image.
func withContainerRecord(name string, template []byte) containerd.CheckpointOpts {
	return func(ctx context.Context, client *containerd.Client, c *containers.Container, index *ocispec.Index, _ *options.CheckpointOptions) error {
		rec := containerRecord{ID: c.ID, Name: name, Image: c.Image, Runtime: c.Runtime.Name,
			CreatedAt: c.CreatedAt, CheckpointedAt: time.Now().UTC(), Template: template}
		if ext, ok := c.Extensions[criContainerMetadata]; ok && ext != nil {
			var meta criConfig
			if err := json.Unmarshal(ext.GetValue(), &meta); err == nil {
				rec.ImageRef = meta.Metadata.ImageRef
				if cfg := meta.Metadata.Config; cfg != nil {
					rec.Labels, rec.Annotations = cfg.Labels, cfg.Annotations
					if cfg.Image != nil && cfg.Image.UserSpecifiedImage != "" {
						rec.Image = cfg.Image.UserSpecifiedImage
					}
				}
			}
		}
		if rec.ImageRef == "" && c.Image != "" {
			img, err := client.GetImage(ctx, c.Image)
			if err != nil {
				return fmt.Errorf("base image %s of %s: %w", c.Image, c.ID, err)
			}
			cfg, err := img.Config(ctx)
			if err != nil {
				return fmt.Errorf("config of base image %s: %w", c.Image, err)
			}
			rec.ImageRef = cfg.Digest.String()
		}
		data, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		desc := ocispec.Descriptor{MediaType: MediaTypeContainerRecord, Digest: digest.FromBytes(data), Size: int64(len(data))}
		if err := content.WriteBlob(ctx, client.ContentStore(), c.ID+"-checkpoint-record", bytes.NewReader(data), desc); err != nil {
			return fmt.Errorf("store record of %s: %w", c.ID, err)
		}
		index.Manifests = append(index.Manifests, desc)
		return nil
	}
}

// PrepareRestore says where checkpoint checkpointID is (this node) and
// what its Pod was.
func (d *Driver) PrepareRestore(ctx context.Context, _, checkpointID, _ string) (driver.PreparedRestore, error) {
	ctx = d.ctx(ctx)
	imgs, err := d.capturedState(ctx, checkpointID)
	if err != nil {
		return driver.PreparedRestore{}, err
	}
	out := driver.PreparedRestore{Node: d.cfg.Node}
	for _, im := range imgs {
		index, err := d.readIndex(ctx, im.Target)
		if err != nil {
			return driver.PreparedRestore{}, d.classify("read checkpoint "+im.Name, err)
		}
		rec, err := d.readRecord(ctx, im.Name, index)
		if err != nil {
			return driver.PreparedRestore{}, err
		}
		if !hasMediaType(index, images.MediaTypeContainerd1Checkpoint) {
			return driver.PreparedRestore{}, fmt.Errorf("%w: container %s of checkpoint %s was captured without its memory: a Pod can only be restored from a memory capture",
				driver.ErrUnsupported, rec.Name, checkpointID)
		}
		if out.Template == nil {
			out.Template = rec.Template
		}
	}
	return out, nil
}

// capturedState are the images of a checkpoint that must exist.
func (d *Driver) capturedState(ctx context.Context, checkpointID string) ([]images.Image, error) {
	if err := driver.ValidateID(checkpointID); err != nil {
		return nil, err
	}
	if err := d.Ping(ctx); err != nil {
		return nil, err
	}
	imgs, err := d.capturedImages(ctx, checkpointID)
	if err != nil {
		return nil, err
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("%w: %s%s", driver.ErrCheckpointNotFound, checkpointID, d.whatIsHere(ctx, checkpointID))
	}
	return imgs, nil
}

// whatIsHere says, for a checkpoint not found, what this node holds: how
// many checkpoints have images here, and whether a capture of this one is
// still open (its lease), so that an error says more than "not found".
func (d *Driver) whatIsHere(ctx context.Context, id string) string {
	states, err := d.States(ctx)
	if err != nil {
		return ""
	}
	_, leased := states[id]
	return fmt.Sprintf(" (this node's containerd holds state of %d checkpoints; of this one: %t)", len(states), leased)
}

// capturedImages are the checkpoint's images a capture wrote (not those
// made for restores), oldest first.
func (d *Driver) capturedImages(ctx context.Context, id string) ([]images.Image, error) {
	all, err := d.checkpointImages(ctx, id)
	if err != nil {
		return nil, err
	}
	var out []images.Image
	for _, im := range all {
		if im.Labels[LabelImageKind] == "" { // not made from the capture
			out = append(out, im)
		}
	}
	return out, nil
}

func (d *Driver) readRecord(ctx context.Context, image string, index *ocispec.Index) (containerRecord, error) {
	for _, m := range index.Manifests {
		if m.MediaType != MediaTypeContainerRecord {
			continue
		}
		data, err := content.ReadBlob(ctx, d.client.ContentStore(), m)
		if err != nil {
			return containerRecord{}, d.classify("read container record of "+image, err)
		}
		var rec containerRecord
		if err := json.Unmarshal(data, &rec); err != nil {
			return containerRecord{}, fmt.Errorf("container record of %s: %w", image, err)
		}
		return rec, nil
	}
	return containerRecord{}, fmt.Errorf("%w: checkpoint %s was captured without a container record, so it cannot be restored into a Pod",
		driver.ErrUnsupported, image)
}

// criImage is the image config of a CRI checkpoint image of rec whose one
// layer is its archive, and the annotations of its manifest and index.
func criImage(rec containerRecord, diffID digest.Digest) (ocispec.Image, map[string]string) {
	annotations := map[string]string{
		CheckpointAnnotationName:              rec.Name,
		"org.criu.checkpoint.engine.name":     "checkpoint-apiserver",
		"org.criu.checkpoint.rootfsImageName": rec.Image,
		"org.criu.checkpoint.rootfsImageID":   rec.ImageRef,
		"org.criu.checkpoint.runtime.name":    rec.Runtime,
		"org.criu.checkpoint.host.arch":       goruntime.GOARCH,
		"org.opencontainers.image.created":    rec.CheckpointedAt.Format(time.RFC3339),
	}
	if ns, pod := rec.Labels[LabelPodNamespace], rec.Labels[LabelPodName]; pod != "" {
		annotations["org.criu.checkpoint.pod.namespace"] = ns
		annotations["org.criu.checkpoint.pod.name"] = pod
	}
	return ocispec.Image{
		Created:  &rec.CheckpointedAt,
		Platform: ocispec.Platform{OS: "linux", Architecture: goruntime.GOARCH},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
	}, annotations
}

// criManifest is the manifest of a CRI checkpoint image.
func criManifest(config, layer ocispec.Descriptor, annotations map[string]string) ocispec.Manifest {
	return ocispec.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   ocispec.MediaTypeImageManifest,
		Config:      config,
		Layers:      []ocispec.Descriptor{layer},
		Annotations: annotations,
	}
}

// unpack makes the image's snapshot, which the CRI mounts to read the archive.
func (d *Driver) unpack(ctx context.Context, img images.Image) error {
	i := containerd.NewImage(d.client, img)
	if ok, err := i.IsUnpacked(ctx, d.cfg.Snapshotter); err == nil && ok {
		return nil
	}
	return i.Unpack(ctx, d.cfg.Snapshotter)
}

// writeJSONBlob stores v as JSON, labelled (with the references that keep
// what it names from garbage collection).
func writeJSONBlob(ctx context.Context, cs content.Store, mediaType string, v interface{}, labels map[string]string) (ocispec.Descriptor, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	var opts []content.Opt
	if labels != nil {
		opts = append(opts, content.WithLabels(labels))
	}
	if err := content.WriteBlob(ctx, cs, "agents.kruise.io-"+desc.Digest.Encoded(), bytes.NewReader(data), desc, opts...); err != nil {
		return ocispec.Descriptor{}, err
	}
	return desc, nil
}

// criStatus is the part of the CRI's ContainerStatus that status.dump
// carries and a restore reads (its JSON names are the CRI API's).
type criStatus struct {
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Image struct {
		Image              string `json:"image"`
		UserSpecifiedImage string `json:"user_specified_image,omitempty"`
	} `json:"image"`
	ImageRef    string            `json:"image_ref"`
	CreatedAt   int64             `json:"created_at"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations"`
}

// criContainerConfig is the kubelet checkpoint archive's config.dump.
type criContainerConfig struct {
	ID              string    `json:"id"`
	Name            string    `json:"name"`
	RootfsImage     string    `json:"rootfsImage,omitempty"`
	RootfsImageRef  string    `json:"rootfsImageRef,omitempty"`
	RootfsImageName string    `json:"rootfsImageName,omitempty"`
	OCIRuntime      string    `json:"runtime,omitempty"`
	CreatedTime     time.Time `json:"createdTime"`
	CheckpointedAt  time.Time `json:"checkpointedTime"`
}

// Archive streams the kubelet checkpoint archive of container's state in
// checkpoint id, from the node's content store: what the node's restore
// runtime unpacks when no registry holds the checkpoint.
func (d *Driver) Archive(ctx context.Context, id, container string) (io.ReadCloser, error) {
	ctx = d.ctx(ctx)
	imgs, err := d.capturedState(ctx, id)
	if err != nil {
		return nil, err
	}
	for _, im := range imgs {
		index, err := d.readIndex(ctx, im.Target)
		if err != nil {
			return nil, d.classify("read checkpoint "+im.Name, err)
		}
		rec, err := d.readRecord(ctx, im.Name, index)
		if err != nil {
			return nil, err
		}
		if rec.Name != container {
			continue
		}
		pr, pw := io.Pipe()
		go func() {
			buffered := bufio.NewWriterSize(pw, copyBuffer)
			err := d.archiveTo(ctx, buffered, index, rec)
			if err == nil {
				err = buffered.Flush()
			}
			pw.CloseWithError(err)
		}()
		return pr, nil
	}
	return nil, fmt.Errorf("%w: checkpoint %s holds no container %s", driver.ErrNoContainer, id, container)
}

// archiveTo writes the kubelet checkpoint archive of rec's captured blobs to w.
func (d *Driver) archiveTo(ctx context.Context, w io.Writer, index *ocispec.Index, rec containerRecord) error {
	cs := d.client.ContentStore()
	var criuTar, rwLayer, specBlob *ocispec.Descriptor
	for i := range index.Manifests {
		m := &index.Manifests[i]
		switch m.MediaType {
		case images.MediaTypeContainerd1Checkpoint:
			criuTar = m
		case ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayer, images.MediaTypeDockerSchema2LayerGzip:
			rwLayer = m
		case images.MediaTypeContainerd1CheckpointConfig:
			specBlob = m
		}
	}
	if specBlob == nil {
		return fmt.Errorf("checkpoint of container %s holds no runtime spec", rec.Name)
	}
	specData, err := content.ReadBlob(ctx, cs, *specBlob)
	if err != nil {
		return err
	}
	var specAny anypb.Any
	if err := proto.Unmarshal(specData, &specAny); err != nil {
		return fmt.Errorf("decode runtime spec of %s: %w", rec.Name, err)
	}
	if criuTar == nil { // a filesystem capture: its writable layer only
		return d.writeLayerArchive(ctx, w, rec, specAny.GetValue(), rwLayer, nil)
	}
	ra, err := cs.ReaderAt(ctx, *criuTar)
	if err != nil {
		return err
	}
	defer ra.Close()
	memory := func(add addFile) error {
		tr := tar.NewReader(bufio.NewReaderSize(content.NewReader(ra), copyBuffer))
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("read CRIU images of %s: %w", rec.Name, err)
			}
			if hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeRegA {
				continue
			}
			if err := add(strings.TrimPrefix(hdr.Name, "./"), hdr.Size, tr); err != nil {
				return err
			}
		}
	}
	return d.writeLayerArchive(ctx, w, rec, specAny.GetValue(), rwLayer, memory)
}

// writeLayerArchive writes rec's archive with its writable layer rwLayer
// (nil: none) and the CRIU images memory adds (nil: none).
func (d *Driver) writeLayerArchive(ctx context.Context, w io.Writer, rec containerRecord, spec []byte, rwLayer *ocispec.Descriptor, memory func(add addFile) error) error {
	var rw *blobReader
	if rwLayer != nil {
		rra, err := d.client.ContentStore().ReaderAt(ctx, *rwLayer)
		if err != nil {
			return err
		}
		defer rra.Close()
		rw = &blobReader{r: bufio.NewReaderSize(content.NewReader(rra), copyBuffer), size: rwLayer.Size}
	}
	if memory == nil {
		memory = func(addFile) error { return nil }
	}
	return writeArchive(w, rec, spec, memory, rw)
}

// addFile adds one CRIU image file (a base name) to an archive.
type addFile func(name string, size int64, r io.Reader) error

// blobReader is a blob's content and size.
type blobReader struct {
	r    io.Reader
	size int64
}

// writeArchive writes the kubelet checkpoint archive of container rec to
// w, as a tar: config.dump, spec.dump (spec is the runtime spec's JSON),
// status.dump, the CRIU images memory hands to its add under checkpoint/,
// and the filesystem diff rw (nil: none) as rootfs-diff.tar.
func writeArchive(w io.Writer, rec containerRecord, spec []byte, memory func(add addFile) error, rw *blobReader) error {
	configDump, err := json.Marshal(criContainerConfig{
		ID: rec.ID, Name: rec.Name, RootfsImage: rec.Image, RootfsImageRef: rec.ImageRef, RootfsImageName: rec.Image,
		OCIRuntime: rec.Runtime, CreatedTime: rec.CreatedAt, CheckpointedAt: rec.CheckpointedAt,
	})
	if err != nil {
		return err
	}
	st := criStatus{ImageRef: rec.ImageRef, CreatedAt: rec.CreatedAt.UnixNano(), Labels: rec.Labels, Annotations: map[string]string{}}
	st.Metadata.Name = rec.Name
	st.Image.Image = rec.Image
	for k, v := range rec.Annotations {
		st.Annotations[k] = v
	}
	for _, k := range []string{hashAnnotation, restartCountAnnotation} {
		if _, ok := st.Annotations[k]; !ok {
			st.Annotations[k] = "0"
		}
	}
	statusDump, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	modTime := rec.CheckpointedAt
	file := func(name string, size int64, r io.Reader) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: size, ModTime: modTime, Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		n, err := io.Copy(tw, r)
		if err == nil && n != size {
			err = fmt.Errorf("%s: wrote %d of %d bytes", name, n, size)
		}
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{"config.dump", configDump}, {"spec.dump", spec}, {"status.dump", statusDump}} {
		if err := file(f.name, int64(len(f.data)), bytes.NewReader(f.data)); err != nil {
			return err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Name: "checkpoint/", Mode: 0o700, ModTime: modTime, Typeflag: tar.TypeDir}); err != nil {
		return err
	}
	err = memory(func(base string, size int64, r io.Reader) error {
		if base == "" || strings.Contains(base, "/") || strings.Contains(base, "..") {
			return fmt.Errorf("unexpected entry %q in the CRIU images of %s", base, rec.Name)
		}
		return file("checkpoint/"+base, size, r)
	})
	if err != nil {
		return err
	}
	if rw != nil {
		if err := file("rootfs-diff.tar", rw.size, rw.r); err != nil {
			return err
		}
	}
	return tw.Close()
}

// copyBuffer is the size of the archive layer's reads and writes.
const copyBuffer = 4 << 20

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
