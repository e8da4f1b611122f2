package containerd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/containerd/cgroups/v3/cgroup1/stats"
	cgroupsv2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/driver"
	"github.com/agents-kruise/checkpoint-apiserver/encryption"
	"github.com/agents-kruise/checkpoint-apiserver/ociregistry"
)

// Where CRIU writes a memory dump. The sandbox is frozen while CRIU writes
// its images, so they go to the fastest storage the node has, memory
// (a tmpfs, DumpDir), as long as they fit in its bound; a dump that would
// not fit goes to disk (<CRIUConfigDir>/dumps), slower but never refused.
// Either way the directory lives only until its images are in the
// registry, and is removed then.

// DefaultDumpDir is on the tmpfs every Linux node has.
const DefaultDumpDir = "/dev/shm/checkpoint-apiserver-dumps"

// Help of the flags that set DumpDir and DumpDirLimit.
const (
	DumpDirHelp = "Where CRIU writes a memory dump while the sandbox is frozen: a tmpfs (memory) on the node, which the runc shim writes " +
		"and this process reads at the same path. A dump that would not fit in --dump-dir-limit goes to disk instead (\"\": always)."
	DumpDirLimitHelp  = "Bound of what the dumps in --dump-dir hold at once (a quantity; 0: half of its filesystem)."
	DiskDumpLimitHelp = "Bound of what the dumps that go to disk (under the CRIU configuration directory) hold at once " +
		"(a quantity; 0: half of that filesystem). A capture whose dump would exceed it fails, saying so."
)

// ErrDumpTooLarge: a dump fits neither in memory nor within the disk bound.
var ErrDumpTooLarge = errors.New("the dump does not fit the node's bounds")

// dumpReserve is what a dump may use beyond the container's memory (CRIU's
// own images of the process tree, file descriptors and sockets).
const dumpReserve = 16 << 20

// dumpSlot is a reserved dump directory.
type dumpSlot struct {
	Dir   string
	Fast  bool
	bytes int64
	// disk is what it reserved on disk (not Fast).
	disk int64
}

// reserveDump picks the directory container ctr's dump for capture id goes
// to, reserving its estimated size in the fast directory when it fits.
func (d *Driver) reserveDump(ctx context.Context, ctr containerd.Container, id, name string) (dumpSlot, error) {
	slot := dumpSlot{Dir: filepath.Join(d.diskDumpDir(), id, name)}
	est, known := d.memoryUsage(ctx, ctr)
	est += dumpReserve
	if d.cfg.DumpDir != "" {
		why := "containerd reports no memory usage of the container"
		if known {
			if why = d.reserveFast(est); why == "" {
				slot = dumpSlot{Dir: filepath.Join(d.cfg.DumpDir, id, name), Fast: true, bytes: est}
			}
		}
		if why != "" {
			klog.FromContext(ctx).V(2).Info("The dump goes to disk", "container", ctr.ID(), "why", why)
		}
	}
	if !slot.Fast && known {
		// On disk too, dumps are bounded: past the bound the capture fails.
		if why := d.reserveDisk(est); why != "" {
			return dumpSlot{}, fmt.Errorf("%w: container %s's dump of about %d bytes: %s (--dump-dir-limit, --disk-dump-limit)",
				ErrDumpTooLarge, name, est, why)
		}
		slot.disk = est
	}
	if dumpHook != nil {
		dumpHook(slot.Dir, slot.Fast)
	}
	_ = os.RemoveAll(slot.Dir)
	if err := os.MkdirAll(slot.Dir, 0o700); err != nil {
		d.releaseDump(slot)
		return dumpSlot{}, fmt.Errorf("dump directory: %w", err)
	}
	return slot, nil
}

// dumpHook, when set (by tests), learns where each dump goes.
var dumpHook func(dir string, fast bool)

// reserveFast reserves est bytes in the fast dump directory, or says why
// they do not fit.
func (d *Driver) reserveFast(est int64) string {
	d.dumpMu.Lock()
	defer d.dumpMu.Unlock()
	free, limit, err := dumpSpace(d.cfg.DumpDir, d.cfg.DumpDirLimit)
	switch {
	case err != nil:
		return err.Error()
	case d.dumpReserved+est > limit:
		return fmt.Sprintf("%d bytes with the %d reserved would exceed the limit of %d", est, d.dumpReserved, limit)
	case est > free:
		return fmt.Sprintf("%d bytes, %d free", est, free)
	}
	d.dumpReserved += est
	return ""
}

// reserveDisk reserves est bytes of the disk dump directory, or says why
// they do not fit.
func (d *Driver) reserveDisk(est int64) string {
	d.dumpMu.Lock()
	defer d.dumpMu.Unlock()
	free, limit, err := dumpSpace(d.diskDumpDir(), d.cfg.DiskDumpLimit)
	switch {
	case err != nil:
		return err.Error()
	case d.diskReserved+est > limit:
		return fmt.Sprintf("with the %d bytes reserved on disk it would exceed the disk bound of %d", d.diskReserved, limit)
	case est > free:
		return fmt.Sprintf("the disk has %d bytes free", free)
	}
	d.diskReserved += est
	return ""
}

// diskDumpDir is where dumps go that do not fit in DumpDir.
func (d *Driver) diskDumpDir() string { return filepath.Join(d.cfg.CRIUConfigDir, "dumps") }

// dumpDirs are the directories dumps go to, each holding one directory
// per capture (named by its ID) of one per container.
func (d *Driver) dumpDirs() []string {
	if d.cfg.DumpDir == "" {
		return []string{d.diskDumpDir()}
	}
	return []string{d.cfg.DumpDir, d.diskDumpDir()}
}

// releaseDump removes the dump and gives its reservation back.
func (d *Driver) releaseDump(slot dumpSlot) {
	if slot.Dir == "" {
		return
	}
	_ = os.RemoveAll(slot.Dir)
	_ = os.Remove(filepath.Dir(slot.Dir)) // the capture's, once empty
	d.dumpMu.Lock()
	if slot.Fast {
		d.dumpReserved -= slot.bytes
	}
	d.diskReserved -= slot.disk
	d.dumpMu.Unlock()
}

// dumpSpace is the free space of dir's filesystem, and the bound of what
// dumps may hold there together (limit, or half the filesystem when 0).
func dumpSpace(dir string, limit int64) (free, bound int64, err error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, 0, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, err
	}
	free = int64(st.Bavail) * int64(st.Bsize)
	if limit <= 0 {
		limit = int64(st.Blocks) * int64(st.Bsize) / 2
	}
	return free, limit, nil
}

// memoryUsage is what the container's cgroup holds that CRIU dumps
// (anonymous and shared memory), from containerd's task metrics.
func (d *Driver) memoryUsage(ctx context.Context, ctr containerd.Container) (int64, bool) {
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		return 0, false
	}
	m, err := task.Metrics(ctx)
	if err != nil || m.Data == nil {
		return 0, false
	}
	v, err := typeurl.UnmarshalAny(m.Data)
	if err != nil {
		return 0, false
	}
	switch s := v.(type) {
	case *cgroupsv2.Metrics:
		if mem := s.GetMemory(); mem != nil {
			if mem.GetAnon()+mem.GetShmem() > 0 {
				return int64(mem.GetAnon() + mem.GetShmem()), true
			}
			return int64(mem.GetUsage()), true
		}
	case *stats.Metrics:
		if mem := s.GetMemory(); mem != nil {
			return int64(mem.GetRSS() + mem.GetUsage().GetUsage()), true
		}
	}
	return 0, false
}

// withImagePath has CRIU write its images to dir (runc --image-path):
// containerd then stores nothing, and the driver takes them from there. It
// must come before WithCheckpointTask, which reads the options.
func withImagePath(dir string) containerd.CheckpointOpts {
	return func(_ context.Context, _ *containerd.Client, _ *containers.Container, _ *ocispec.Index, copts *options.CheckpointOptions) error {
		copts.ImagePath = dir
		return nil
	}
}

// dumpFiles are the CRIU images in dir, by name.
func dumpFiles(dir string) ([]os.FileInfo, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []os.FileInfo
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out, nil
}

// eachDumpFile hands every CRIU image in dir to add.
func eachDumpFile(dir string, add addFile) error {
	if dir == "" { // a filesystem capture: no memory
		return nil
	}
	files, err := dumpFiles(dir)
	if err != nil {
		return err
	}
	for _, fi := range files {
		f, err := os.Open(filepath.Join(dir, fi.Name()))
		if err != nil {
			return err
		}
		err = add(fi.Name(), fi.Size(), f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", fi.Name(), err)
		}
	}
	return nil
}

// AnnotationPublishedManifest, on a local checkpoint image whose memory
// went to the registry only, is its CRI checkpoint image there.
const AnnotationPublishedManifest = "agents.kruise.io/published-manifest"

// withDumpPushed streams the container's kubelet checkpoint archive, made
// from the CRIU images in dir, the record and the filesystem diff already
// in the index, straight into the registry, then pushes its CRI
// checkpoint image's config and manifest; into is the manifest's
// descriptor. It comes after WithCheckpointTask and withContainerRecord.
//
// With a data key, the archive is encrypted on its way (the OCI encrypted
// layer format): the registry never holds it in clear.
func withDumpPushed(dir, name string, req driver.CaptureRequest, reg *ociregistry.Registry, into *pushedImage) containerd.CheckpointOpts {
	return func(ctx context.Context, client *containerd.Client, c *containers.Container, index *ocispec.Index, _ *options.CheckpointOptions) error {
		cs := client.ContentStore()
		var rec *containerRecord
		var rw *blobReader
		for _, m := range index.Manifests {
			switch m.MediaType {
			case MediaTypeContainerRecord:
				data, err := content.ReadBlob(ctx, cs, m)
				if err != nil {
					return err
				}
				rec = &containerRecord{}
				if err := json.Unmarshal(data, rec); err != nil {
					return err
				}
			case ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayer, images.MediaTypeDockerSchema2LayerGzip:
				ra, err := cs.ReaderAt(ctx, m)
				if err != nil {
					return err
				}
				defer ra.Close()
				rw = &blobReader{r: bufio.NewReaderSize(content.NewReader(ra), copyBuffer), size: m.Size}
			}
		}
		if rec == nil {
			return errors.New("no container record before the push")
		}
		if c.Spec == nil {
			return fmt.Errorf("container %s has no runtime spec", c.ID)
		}
		start := time.Now()
		pr, pw := io.Pipe()
		go func() {
			buffered := bufio.NewWriterSize(pw, copyBuffer)
			err := writeArchive(buffered, *rec, c.Spec.GetValue(), func(add addFile) error { return eachDumpFile(dir, add) }, rw)
			if err == nil {
				err = buffered.Flush()
			}
			pw.CloseWithError(err)
		}()
		// The image's diff ID is the archive's own digest, encrypted or not.
		diffID := digest.SHA256.Digester()
		var body io.Reader = io.TeeReader(pr, diffID.Hash())
		mediaType := ocispec.MediaTypeImageLayer
		var enc *encryption.Encrypter
		if req.Key != nil {
			var err error
			if enc, err = encryption.EncryptLayer(body, req.Key, req.ID, name); err != nil {
				pr.CloseWithError(err)
				return err
			}
			body, mediaType = enc, encryption.MediaTypeEncryptedLayer
		}
		layer, err := reg.PushBlob(ctx, mediaType, body)
		pr.CloseWithError(err) // the writer stops if the push did
		if err != nil {
			return fmt.Errorf("%w: push the checkpoint of %s: %v", ErrRegistry, name, err)
		}
		if enc != nil {
			if layer.Annotations, err = enc.Annotations(); err != nil {
				return err
			}
		}
		streamed := time.Since(start)
		cfg, annotations := criImage(*rec, diffID.Digest())
		cfgData, err := json.Marshal(cfg)
		if err != nil {
			return err
		}
		cfgDesc, err := reg.PushBytes(ctx, ocispec.MediaTypeImageConfig, cfgData)
		if err != nil {
			return fmt.Errorf("%w: push the image config of %s: %v", ErrRegistry, name, err)
		}
		manifest, err := json.Marshal(criManifest(cfgDesc, layer, annotations))
		if err != nil {
			return err
		}
		mDesc, err := reg.PushManifest(ctx, "", ocispec.MediaTypeImageManifest, manifest)
		if err != nil {
			return fmt.Errorf("%w: push the manifest of %s: %v", ErrRegistry, name, err)
		}
		platform := cfg.Platform
		mDesc.Platform = &platform
		mDesc.Annotations = map[string]string{ociregistry.AnnotationContainerName: name}
		*into = pushedImage{manifest: mDesc, archive: layer.Size}
		if index.Annotations == nil {
			index.Annotations = map[string]string{}
		}
		index.Annotations[AnnotationPublishedManifest] = reg.DigestRef(mDesc.Digest)
		klog.FromContext(ctx).V(2).Info("Streamed a checkpoint into the registry", "container", c.ID, "bytes", layer.Size, "in", streamed)
		return nil
	}
}

// pushedImage is a container's CRI checkpoint image in the registry.
type pushedImage struct {
	manifest ocispec.Descriptor
	archive  int64
}

// CaptureToRegistry captures target like Capture, but a container's memory
// goes from CRIU's dump directory straight into the registry, in the
// archive a kubelet restores from, read once: nothing of it is copied into
// the content store. It answers once the checkpoint's index is pushed and
// tagged with its ID, that is, durable. The local checkpoint images keep
// the rest (record, filesystem diff, options) for Delete and the sweep.
func (d *Driver) CaptureToRegistry(ctx context.Context, target driver.Target, req driver.CaptureRequest, registry *ociregistry.Registry) (driver.CaptureResult, driver.Published, error) {
	// Each namespace's checkpoints go to its own repository.
	reg, err := registry.In(target.Namespace)
	if err != nil {
		return driver.CaptureResult{}, driver.Published{}, err
	}
	pushed := make([]pushedImage, len(target.Containers))
	n := 0
	res, err := d.capture(ctx, target, req, func(dir, container string) []containerd.CheckpointOpts {
		n++
		return []containerd.CheckpointOpts{withDumpPushed(dir, container, req, reg, &pushed[n-1])}
	})
	if err != nil {
		return res, driver.Published{}, err
	}
	fail := func(err error) (driver.CaptureResult, driver.Published, error) {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = d.Delete(cctx, res.ID)
		return driver.CaptureResult{}, driver.Published{}, err
	}
	// The state's size is what was pushed: every archive, and the indexes.
	res.SizeBytes = 0
	var manifests []ocispec.Descriptor
	for _, p := range pushed {
		res.SizeBytes += p.archive
		manifests = append(manifests, p.manifest)
	}
	annotations := map[string]string{ociregistry.AnnotationCheckpointID: res.ID, ociregistry.AnnotationNamespace: target.Namespace,
		ociregistry.AnnotationCreated: time.Now().UTC().Format(time.RFC3339)}
	if req.Installation != "" {
		annotations[ociregistry.AnnotationInstallation] = req.Installation
	}
	if req.Key == nil {
		// Encrypted, the template stays with the server's record: a Pod's
		// spec may hold secrets, and a clone is never made from the registry's word.
		annotations[ociregistry.AnnotationTemplate] = string(target.Template)
	} else {
		// Only who holds the data key makes an index a restore accepts.
		mac, err := encryption.IndexMAC(req.Key, res.ID, target.Namespace, manifests, ociregistry.AnnotationContainerName)
		if err != nil {
			return fail(err)
		}
		annotations[ociregistry.AnnotationMAC] = mac
	}
	data, err := json.Marshal(ocispec.Index{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   ocispec.MediaTypeImageIndex,
		Manifests:   manifests,
		Annotations: annotations,
	})
	if err != nil {
		return fail(err)
	}
	idx, err := reg.PushManifest(ctx, res.ID, ocispec.MediaTypeImageIndex, data)
	if err != nil {
		return fail(fmt.Errorf("%w: push %s: %v", ErrRegistry, reg.TagRef(res.ID), err))
	}
	return res, driver.Published{Image: reg.DigestRef(idx.Digest), Digest: idx.Digest.String()}, nil
}
