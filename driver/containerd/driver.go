package containerd

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	runtimespec "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/criulog"
	"github.com/agents-kruise/checkpoint-apiserver/driver"
	restoreapi "github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
)

// CRI labels on every pod container, and ours on checkpoint images and clones.
const (
	LabelPodNamespace  = "io.kubernetes.pod.namespace"
	LabelPodName       = "io.kubernetes.pod.name"
	LabelContainerName = "io.kubernetes.container.name"
	LabelKind          = "io.cri-containerd.kind"
	LabelRestoredFrom  = "agents.kruise.io/restored-from"
	LabelCheckpointID  = "agents.kruise.io/checkpoint-id"

	imagePrefix = "checkpoint.agents.kruise.io/"
	// leasePrefix names the lease a capture writes under: whatever a capture
	// that died half way ingested stays findable until it is swept.
	leasePrefix = "agents.kruise.io.capture."
)

// Config says where containerd is and how to use it.
type Config struct {
	// Address is containerd's gRPC socket.
	Address string
	// Namespace is the containerd namespace pod containers live in (k8s.io on a node).
	Namespace string
	// LogDir receives the stdout and stderr of restored containers.
	LogDir string
	// StopGracePeriod is how long Stop waits after SIGTERM before SIGKILL.
	StopGracePeriod time.Duration
	// CRIUConfigDir receives the CRIU configuration restored containers are
	// given (runc reads the file the spec's org.criu.config annotation names).
	// It must be a path runc on this node can read.
	CRIUConfigDir string
	// Node is the name of the node this containerd runs on, if known.
	Node string
	// Snapshotter unpacks restore images ("" is containerd's default,
	// overlayfs, which the CRI uses too).
	Snapshotter string
	// DumpDir is where CRIU writes memory dumps while the sandbox is frozen:
	// a tmpfs, the fastest storage a node has ("": always on disk, under
	// CRIUConfigDir). It must be a path the runc shim on this node writes.
	DumpDir string
	// DumpDirLimit bounds what the dumps in DumpDir hold together (0: half
	// its filesystem); a dump that would exceed it goes to disk.
	DumpDirLimit int64
	// DiskDumpLimit bounds what the dumps on disk (those that did not fit
	// DumpDir) hold together (0: half of its filesystem); a dump that would
	// exceed it fails the capture, saying so.
	DiskDumpLimit int64
	// RestoreRuntimeHandler is the CRI runtime handler of the restore
	// runtime (package restoreruntime; "" is "checkpoint"). A container of a
	// Pod running under it that a keepRunning=false capture ends exits 0.
	RestoreRuntimeHandler string
}

// criuLogsKept is how many CRIU logs of failed dumps the driver keeps.
const criuLogsKept = 20

// criuConfigAnnotation names the CRIU configuration file runc hands CRIU
// for a container's checkpoint and restore.
const criuConfigAnnotation = "org.criu.config"

// restoreCRIUConfig is what CRIU reads when it restores a clone. A capture
// dumps established TCP connections (runc --tcp-established), so the source,
// which keeps running, keeps them. A clone is another sandbox, with its own
// network namespace and, as a Pod, its own address: it cannot take over the
// source's connections, so they come back closed (the clone's processes see
// them end) while listening sockets come back listening.
const restoreCRIUConfig = "# Written by checkpoint-apiserver's containerd driver.\ntcp-close\n"

// Driver is the containerd + CRIU checkpoint driver.
type Driver struct {
	cfg    Config
	client *containerd.Client
	// restoreConfig is the path of the CRIU configuration for clones.
	restoreConfig string
	// busy serializes captures of one container (container ID -> *sync.Mutex):
	// two CRIU dumps of one process at once fail.
	busy sync.Map
	// dumpReserved is what the dumps in flight reserved in DumpDir,
	// diskReserved what they reserved on disk.
	dumpMu       sync.Mutex
	dumpReserved int64
	diskReserved int64
	// bg is the context of the driver's background work, ended by Close.
	bg     context.Context
	stopBg context.CancelFunc
}

// lockContainer holds id's capture lock until the returned func is called.
func (d *Driver) lockContainer(id string) func() {
	mu, _ := d.busy.LoadOrStore(id, &sync.Mutex{})
	mu.(*sync.Mutex).Lock()
	return mu.(*sync.Mutex).Unlock
}

var (
	_ driver.Driver          = &Driver{}
	_ driver.Resolver        = &Driver{}
	_ driver.RestorePreparer = &Driver{}
)

// New returns a driver for the containerd at cfg.Address. It does not dial:
// an unreachable containerd shows as driver.ErrUnavailable on first use.
func New(cfg Config) (*Driver, error) {
	if cfg.Namespace == "" {
		cfg.Namespace = "k8s.io"
	}
	if cfg.RestoreRuntimeHandler == "" {
		cfg.RestoreRuntimeHandler = "checkpoint"
	}
	if cfg.StopGracePeriod == 0 {
		cfg.StopGracePeriod = 10 * time.Second
	}
	if cfg.LogDir != "" {
		if err := os.MkdirAll(cfg.LogDir, 0o750); err != nil {
			return nil, fmt.Errorf("containerd driver log dir: %w", err)
		}
	}
	if cfg.CRIUConfigDir == "" {
		cfg.CRIUConfigDir = filepath.Join(os.TempDir(), "checkpoint-apiserver-criu")
	}
	restoreConfig := filepath.Join(cfg.CRIUConfigDir, "restore.conf")
	if err := os.MkdirAll(cfg.CRIUConfigDir, 0o755); err != nil {
		return nil, fmt.Errorf("containerd driver CRIU config dir: %w", err)
	}
	if err := os.WriteFile(restoreConfig, []byte(restoreCRIUConfig), 0o644); err != nil {
		return nil, fmt.Errorf("containerd driver CRIU config: %w", err)
	}
	client, err := containerd.New(cfg.Address, containerd.WithDefaultNamespace(cfg.Namespace))
	if err != nil {
		return nil, fmt.Errorf("%w: containerd at %s: %v", driver.ErrUnavailable, cfg.Address, err)
	}
	bg, stop := context.WithCancel(context.Background())
	d := &Driver{cfg: cfg, client: client, restoreConfig: restoreConfig, bg: bg, stopBg: stop}
	// Containers an earlier run paused for a capture and could not resume.
	go d.resumeLeftPaused("")
	return d, nil
}

// Close releases the connection.
func (d *Driver) Close() error {
	if d.stopBg != nil {
		d.stopBg()
	}
	return d.client.Close()
}

func (d *Driver) ctx(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, d.cfg.Namespace)
}

// Ping checks that containerd answers within a few seconds.
func (d *Driver) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if _, err := d.client.Version(ctx); err != nil {
		return fmt.Errorf("%w: containerd at %s does not answer: %v", driver.ErrUnavailable, d.cfg.Address, err)
	}
	return nil
}

// classify wraps errors that mean containerd is gone as driver.ErrUnavailable.
func (d *Driver) classify(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, driver.ErrUnavailable) || errors.Is(err, driver.ErrTargetNotFound) ||
		errors.Is(err, driver.ErrCheckpointNotFound) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: %w", what, err)
	}
	if errdefs.IsUnavailable(err) || status.Code(err) == codes.Unavailable {
		return fmt.Errorf("%w: %s: %v", driver.ErrUnavailable, what, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func imageName(id, container string) string {
	return imagePrefix + id + "/" + container
}

// Resolve finds the app containers of pod namespace/name by their CRI labels.
func (d *Driver) Resolve(ctx context.Context, namespace, name string) (driver.Target, error) {
	ctx = d.ctx(ctx)
	filter := fmt.Sprintf("labels.%q==%q,labels.%q==%q", LabelPodNamespace, namespace, LabelPodName, name)
	ctrs, err := d.client.Containers(ctx, filter)
	if err != nil {
		return driver.Target{}, d.classify("list containers", err)
	}
	t := driver.Target{Namespace: namespace, Name: name}
	// A node keeps the exited containers of earlier attempts, labelled alike:
	// of several containers with one name, the running one (else the newest) is the pod's.
	type candidate struct {
		c       containerd.Container
		running bool
		created time.Time
	}
	byName := map[string]candidate{}
	var order []string
	for _, c := range ctrs {
		info, err := c.Info(ctx, containerd.WithoutRefreshedMetadata)
		if err != nil {
			return driver.Target{}, d.classify("read container", err)
		}
		if info.Labels[LabelKind] == "sandbox" {
			continue // the pause container holds namespaces, not state
		}
		cname := info.Labels[LabelContainerName]
		if cname == "" {
			cname = c.ID()
		}
		cand := candidate{c: c, running: d.isRunning(ctx, c), created: info.CreatedAt}
		prev, seen := byName[cname]
		if !seen {
			order = append(order, cname)
		}
		if !seen || (cand.running && !prev.running) || (cand.running == prev.running && cand.created.After(prev.created)) {
			byName[cname] = cand
		}
	}
	for _, cname := range order {
		t.Containers = append(t.Containers, driver.Container{ID: byName[cname].c.ID(), Name: cname})
	}
	if len(t.Containers) == 0 {
		return driver.Target{}, fmt.Errorf("%w: no containers of pod %s/%s in containerd namespace %s",
			driver.ErrTargetNotFound, namespace, name, d.cfg.Namespace)
	}
	return t, nil
}

// Capture checkpoints every container of target into images named after req.ID.
// Containers are captured one after another, each frozen only for its own
// dump; containerd copies the dump into its content store once the
// container runs again.
func (d *Driver) Capture(ctx context.Context, target driver.Target, req driver.CaptureRequest) (driver.CaptureResult, error) {
	return d.capture(ctx, target, req, nil)
}

// capture is Capture; sink, when set, gives the options that take a
// container's memory dump from its dump directory (see reserveDump) after
// the task's checkpoint, instead of containerd's checkpoint tar.
func (d *Driver) capture(ctx context.Context, target driver.Target, req driver.CaptureRequest, sink func(dir, container string) []containerd.CheckpointOpts) (driver.CaptureResult, error) {
	if err := driver.ValidateID(req.ID); err != nil {
		return driver.CaptureResult{}, err
	}
	ctx = d.ctx(ctx)
	if err := d.Ping(ctx); err != nil {
		return driver.CaptureResult{}, err
	}
	memory, fs := driver.Has(req.Contents, driver.Memory), driver.Has(req.Contents, driver.Filesystem)
	if !memory && !fs {
		return driver.CaptureResult{}, errors.New("nothing to capture: contents must include memory or filesystem")
	}
	if len(target.Containers) == 0 {
		return driver.CaptureResult{}, fmt.Errorf("%w: %s/%s has no containers", driver.ErrTargetNotFound, target.Namespace, target.Name)
	}
	result := driver.CaptureResult{ID: req.ID, Contents: req.Contents}
	// Everything the capture writes is held by a lease named after it: the
	// images take over on success; on failure, or if this process dies half
	// way, deleting the lease lets containerd's GC take the rest.
	lease, err := d.client.LeasesService().Create(ctx, leases.WithID(leasePrefix+req.ID),
		leases.WithLabels(map[string]string{LabelCheckpointID: req.ID}))
	if errdefs.IsAlreadyExists(err) {
		lease = leases.Lease{ID: leasePrefix + req.ID}
	} else if err != nil {
		return driver.CaptureResult{}, d.classify("create capture lease", err)
	}
	ctx = leases.WithLease(ctx, lease.ID)
	var written []string
	fail := func(err error) (driver.CaptureResult, error) {
		// Leave nothing half-written behind, even if ctx is done. If
		// containerd is gone, the orphan sweep finishes this later.
		cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		for _, name := range written {
			_ = d.client.ImageService().Delete(cleanupCtx, name, images.SynchronousDelete())
		}
		_ = d.client.LeasesService().Delete(cleanupCtx, lease, leases.SynchronousDelete)
		return driver.CaptureResult{}, err
	}
	for _, c := range target.Containers {
		ctr, err := d.client.LoadContainer(ctx, c.ID)
		if err != nil {
			if errdefs.IsNotFound(err) {
				return fail(fmt.Errorf("%w: container %s (%s) of %s/%s", driver.ErrTargetNotFound, c.Name, c.ID, target.Namespace, target.Name))
			}
			return fail(d.classify("load container "+c.ID, err))
		}
		opts := []containerd.CheckpointOpts{containerd.WithCheckpointImage, containerd.WithCheckpointRuntime}
		// Memory and files of one instant: the container stays paused from
		// before its writable layer's diff until CRIU has dumped it. Left
		// running in between, a file it writes lands in the diff at one
		// size and in CRIU's images at another, and the restore fails
		// ("File tmp/n has bad size 2 (expect 0)").
		var frozen *pauseWindow
		if memory && fs {
			frozen = &pauseWindow{d: d}
			opts = append(opts, frozen.pause)
		}
		if fs {
			opts = append(opts, containerd.WithCheckpointRW)
		}
		work := ""
		var dump dumpSlot
		var storeErr error
		if memory {
			if err := d.requireRunning(ctx, ctr); err != nil {
				return fail(err)
			}
			// CRIU's work directory (its log and statistics), named so that
			// the shim keeps it for the driver to read.
			work = filepath.Join(d.cfg.CRIUConfigDir, "work", req.ID+"-"+c.Name)
			_ = os.RemoveAll(work)
			if err := os.MkdirAll(work, 0o700); err != nil {
				return fail(fmt.Errorf("CRIU work directory: %w", err))
			}
			if sink == nil {
				// Into the content store: containerd's own copy from its
				// temporary directory is the fastest here (measured against
				// a dump directory copied through the content service).
				opts = append(opts, withEstablishedTCP, withWorkPath(work), containerd.WithCheckpointTask, frozen.resume,
					withContainerRecord(c.Name, target.Template))
			} else {
				if dump, err = d.reserveDump(ctx, ctr, req.ID, c.Name); err != nil {
					return fail(err)
				}
				opts = append(opts, withEstablishedTCP, withWorkPath(work), withImagePath(dump.Dir), containerd.WithCheckpointTask, frozen.resume,
					withContainerRecord(c.Name, target.Template), withCheckpointSpec)
			}
		} else {
			opts = append(opts, withCheckpointSpec, withContainerRecord(c.Name, target.Template))
		}
		if sink != nil {
			// Last, once the index holds what the sink sends (no dump
			// directory for a filesystem capture: its archive has no memory).
			for _, o := range sink(dump.Dir, c.Name) {
				// The client flattens an option's error to its text: keep it.
				opts = append(opts, func(ctx context.Context, client *containerd.Client, ci *containers.Container, index *ocispec.Index, copts *options.CheckpointOptions) error {
					err := o(ctx, client, ci, index, copts)
					if err != nil {
						storeErr = err
					}
					return err
				})
			}
		}
		name := imageName(req.ID, c.Name)
		unlock := d.lockContainer(c.ID)
		img, err := ctr.Checkpoint(ctx, name, opts...)
		frozen.end(ctx)
		unlock()
		if err != nil && storeErr != nil {
			err = storeErr
		}
		if memory {
			d.releaseDump(dump)
		}
		if work != "" {
			// How long CRIU froze it, by CRIU's own clock.
			if frozen != nil && frozen.took > 0 {
				// Paused by the driver, which is longer than CRIU's own
				// freeze: the diff ran inside it too.
				result.Pause += frozen.took
			} else if stats, serr := readDumpStats(work); serr == nil {
				result.Pause += stats.Frozen
			} else if err == nil {
				klog.FromContext(ctx).V(2).Info("No CRIU dump statistics", "container", c.ID, "err", serr)
			}
			if err != nil {
				// CRIU's own reason, in the Checkpoint's message; its whole
				// log kept (the newest criuLogsKept) under <criu>/logs.
				if tail := criulog.Tail(filepath.Join(work, "dump.log"), 8); tail != "" {
					err = fmt.Errorf("%w%s", err, tail)
				}
				if kerr := criulog.Keep(work, filepath.Join(d.cfg.CRIUConfigDir, "logs"), req.ID+"-"+c.Name, criuLogsKept, "dump.log"); kerr != nil {
					klog.FromContext(ctx).Info("Could not keep CRIU's log of a failed dump", "container", c.ID, "err", kerr)
				}
			}
			_ = os.RemoveAll(work)
		}
		if err != nil {
			if _, getErr := d.client.ImageService().Get(context.WithoutCancel(ctx), name); getErr == nil {
				written = append(written, name)
			}
			return fail(d.classify(fmt.Sprintf("checkpoint container %s (%s)", c.Name, c.ID), err))
		}
		written = append(written, name)
		if _, err := d.client.ImageService().Update(ctx, images.Image{
			Name:   name,
			Labels: map[string]string{LabelCheckpointID: req.ID, LabelContainerName: c.Name},
		}, "labels"); err != nil {
			return fail(d.classify("label checkpoint image", err))
		}
		size, err := d.stateSize(ctx, img.Target())
		if err != nil {
			return fail(d.classify("size checkpoint image", err))
		}
		result.SizeBytes += size
	}
	// The images hold their content now.
	if err := d.client.LeasesService().Delete(ctx, lease); err != nil && !errdefs.IsNotFound(err) {
		return fail(d.classify("release capture lease", err))
	}
	return result, nil
}

func (d *Driver) isRunning(ctx context.Context, ctr containerd.Container) bool {
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		return false
	}
	st, err := task.Status(ctx)
	return err == nil && st.Status == containerd.Running
}

func (d *Driver) requireRunning(ctx context.Context, ctr containerd.Container) error {
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		if errdefs.IsNotFound(err) {
			return fmt.Errorf("%w: container %s has no running process, so its memory cannot be captured", driver.ErrTargetNotFound, ctr.ID())
		}
		return d.classify("load task of "+ctr.ID(), err)
	}
	st, err := task.Status(ctx)
	if err != nil {
		return d.classify("task status of "+ctr.ID(), err)
	}
	if st.Status == containerd.Paused || st.Status == containerd.Pausing {
		// Paused by a capture of it that runs now (resumeMarked waits for
		// it), or one that could not resume it (resumed now).
		if err := d.resumeMarked(ctx, ctr.ID()); err != nil {
			return d.classify("resume "+ctr.ID()+", which a capture left paused", err)
		}
		if st, err = task.Status(ctx); err != nil {
			return d.classify("task status of "+ctr.ID(), err)
		}
	}
	if st.Status != containerd.Running {
		return fmt.Errorf("%w: container %s is %s, so its memory cannot be captured", driver.ErrTargetNotFound, ctr.ID(), st.Status)
	}
	return nil
}

// pauseWindow pauses a container (its cgroup frozen) for the diff of its
// writable layer and CRIU's dump, which then see the same instant, and
// resumes it as soon as the dump is done. A nil window does nothing.
//
// A sandbox is never left frozen: a marker file (<criu-config-dir>/paused/
// <container>) records the pause until the resume; a resume that fails (as
// when containerd dies mid-capture) is retried in the background, and a
// marked container found paused later, even by a restarted driver, is
// resumed (resumeLeftPaused, requireRunning).
type pauseWindow struct {
	d      *Driver
	task   containerd.Task
	marker string
	paused time.Time
	took   time.Duration
}

func (d *Driver) pausedMarker(containerID string) string {
	return filepath.Join(d.cfg.CRIUConfigDir, "paused", containerID)
}

func (w *pauseWindow) pause(ctx context.Context, client *containerd.Client, c *containers.Container, _ *ocispec.Index, _ *options.CheckpointOptions) error {
	ctr, err := client.LoadContainer(ctx, c.ID)
	if err != nil {
		return err
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		return err
	}
	w.marker = w.d.pausedMarker(c.ID)
	if err := os.MkdirAll(filepath.Dir(w.marker), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(w.marker, nil, 0o600); err != nil {
		return err
	}
	w.paused = time.Now()
	// Set before the call: a pause that reports an error (its context
	// ended) may still have frozen the container, and end resumes it.
	w.task = task
	if err := task.Pause(ctx); err != nil {
		return fmt.Errorf("pause %s for its capture: %w", c.ID, err)
	}
	return nil
}

func (w *pauseWindow) resume(ctx context.Context, _ *containerd.Client, _ *containers.Container, _ *ocispec.Index, _ *options.CheckpointOptions) error {
	if w == nil {
		return nil
	}
	return w.resumeNow(ctx)
}

func (w *pauseWindow) resumeNow(ctx context.Context) error {
	if w.task == nil {
		return nil
	}
	if err := w.task.Resume(ctx); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("resume %s after its capture: %w", w.task.ID(), err)
	}
	w.took = time.Since(w.paused)
	w.task = nil
	_ = os.Remove(w.marker)
	return nil
}

// end resumes the container if the capture failed while it was paused;
// when that fails too, it keeps trying in the background.
func (w *pauseWindow) end(ctx context.Context) {
	if w == nil || w.task == nil {
		return
	}
	id := w.task.ID()
	w.task = nil
	// The capture holds the container's lock: resumeLocked, not resumeMarked.
	err := w.d.resumeLocked(context.WithoutCancel(ctx), id)
	if err == nil {
		return
	}
	klog.FromContext(ctx).Error(err, "A container paused for its capture could not be resumed yet; trying again", "container", id)
	go w.d.resumeLeftPaused(id)
}

// resumeLeftPaused resumes containers a capture paused and could not
// resume (all of them when only is ""), until none is left or the driver
// closes; a container gone or not paused just loses its marker.
func (d *Driver) resumeLeftPaused(only string) {
	for {
		entries, _ := os.ReadDir(filepath.Join(d.cfg.CRIUConfigDir, "paused"))
		left := 0
		for _, e := range entries {
			if only != "" && e.Name() != only {
				continue
			}
			if err := d.resumeMarked(d.ctx(d.bg), e.Name()); err != nil {
				left++
			}
		}
		if left == 0 {
			return
		}
		select {
		case <-d.bg.Done():
			return
		case <-time.After(2 * time.Second):
		}
	}
}

// resumeMarked resumes container id if a capture left it paused; never
// while a capture of it runs (which holds the container's lock).
func (d *Driver) resumeMarked(ctx context.Context, id string) error {
	defer d.lockContainer(id)()
	return d.resumeLocked(ctx, id)
}

// resumeLocked is resumeMarked for a caller holding the container's lock.
func (d *Driver) resumeLocked(ctx context.Context, id string) error {
	marker := d.pausedMarker(id)
	if _, err := os.Stat(marker); err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ctr, err := d.client.LoadContainer(ctx, id)
	if errdefs.IsNotFound(err) {
		return os.Remove(marker)
	} else if err != nil {
		return err
	}
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return os.Remove(marker)
	} else if err != nil {
		return err
	}
	st, err := task.Status(ctx)
	if err != nil {
		return err
	}
	if st.Status == containerd.Paused {
		if err := task.Resume(ctx); err != nil {
			return err
		}
		klog.InfoS("Resumed a container a capture had left paused", "container", id)
	}
	return os.Remove(marker)
}

// withEstablishedTCP dumps established TCP connections (runc
// --tcp-established) instead of failing on them: every real sandbox holds
// some. It must come before WithCheckpointTask, which reads the options.
func withEstablishedTCP(_ context.Context, _ *containerd.Client, _ *containers.Container, _ *ocispec.Index, copts *options.CheckpointOptions) error {
	copts.OpenTcp = true
	return nil
}

// withWorkPath names CRIU's work directory (runc --work-path). It must
// come before WithCheckpointTask, which reads the options.
func withWorkPath(dir string) containerd.CheckpointOpts {
	return func(_ context.Context, _ *containerd.Client, _ *containers.Container, _ *ocispec.Index, copts *options.CheckpointOptions) error {
		copts.WorkPath = dir
		return nil
	}
}

// withCheckpointSpec stores the container's runtime spec in the checkpoint
// image. A task checkpoint carries it already; a filesystem-only one does
// not, and restore needs it.
func withCheckpointSpec(ctx context.Context, client *containerd.Client, c *containers.Container, index *ocispec.Index, _ *options.CheckpointOptions) error {
	if c.Spec == nil {
		return fmt.Errorf("container %s has no runtime spec", c.ID)
	}
	data, err := proto.Marshal(typeurl.MarshalProto(c.Spec))
	if err != nil {
		return fmt.Errorf("encode spec of %s: %w", c.ID, err)
	}
	desc := ocispec.Descriptor{
		MediaType: images.MediaTypeContainerd1CheckpointConfig,
		Digest:    digest.FromBytes(data),
		Size:      int64(len(data)),
	}
	if err := content.WriteBlob(ctx, client.ContentStore(), c.ID+"-checkpoint-spec", bytes.NewReader(data), desc); err != nil {
		return fmt.Errorf("store spec of %s: %w", c.ID, err)
	}
	index.Manifests = append(index.Manifests, desc)
	return nil
}

// readIndex decodes the checkpoint image's index.
func (d *Driver) readIndex(ctx context.Context, desc ocispec.Descriptor) (*ocispec.Index, error) {
	data, err := content.ReadBlob(ctx, d.client.ContentStore(), desc)
	if err != nil {
		return nil, err
	}
	var index ocispec.Index
	if err := json.Unmarshal(data, &index); err != nil {
		return nil, err
	}
	return &index, nil
}

// stateSize is the size of what the capture wrote: everything in the index
// but the base image it references.
func (d *Driver) stateSize(ctx context.Context, desc ocispec.Descriptor) (int64, error) {
	index, err := d.readIndex(ctx, desc)
	if err != nil {
		return 0, err
	}
	size := desc.Size
	for _, m := range index.Manifests {
		if images.IsManifestType(m.MediaType) || images.IsIndexType(m.MediaType) {
			continue
		}
		size += m.Size
	}
	return size, nil
}

func (d *Driver) checkpointImages(ctx context.Context, id string) ([]images.Image, error) {
	imgs, err := d.client.ImageService().List(ctx, fmt.Sprintf("labels.%q==%q", LabelCheckpointID, id))
	if err != nil {
		return nil, d.classify("list checkpoint images", err)
	}
	return imgs, nil
}

// Delete removes every image of the checkpoint, and with them (garbage
// collected synchronously) the memory dump and filesystem diff.
func (d *Driver) Delete(ctx context.Context, checkpointID string) error {
	if err := driver.ValidateID(checkpointID); err != nil {
		return err
	}
	ctx = d.ctx(ctx)
	if err := d.Ping(ctx); err != nil {
		return err
	}
	imgs, err := d.checkpointImages(ctx, checkpointID)
	if err != nil {
		return err
	}
	if err := d.deleteImages(ctx, imgs); err != nil {
		return err
	}
	// A capture that died half way left its lease.
	err = d.client.LeasesService().Delete(ctx, leases.Lease{ID: leasePrefix + checkpointID}, leases.SynchronousDelete)
	if err != nil && !errdefs.IsNotFound(err) {
		return d.classify("delete capture lease of "+checkpointID, err)
	}
	// And CRIU's work directories and dumps, if this process died too.
	dirs, _ := filepath.Glob(filepath.Join(d.cfg.CRIUConfigDir, "work", checkpointID+"-*"))
	for _, dir := range dirs {
		_ = os.RemoveAll(dir)
	}
	for _, dir := range d.dumpDirs() {
		_ = os.RemoveAll(filepath.Join(dir, checkpointID))
	}
	return nil
}

// States lists the checkpoint IDs this containerd holds state for (images
// or the lease of a capture), each with when its oldest piece was made.
func (d *Driver) States(ctx context.Context) (map[string]time.Time, error) {
	ctx = d.ctx(ctx)
	out := map[string]time.Time{}
	note := func(id string, t time.Time) {
		if old, ok := out[id]; !ok || t.Before(old) {
			out[id] = t
		}
	}
	imgs, err := d.client.ImageService().List(ctx, fmt.Sprintf(`labels.%q`, LabelCheckpointID))
	if err != nil {
		return nil, d.classify("list checkpoint images", err)
	}
	for _, img := range imgs {
		note(img.Labels[LabelCheckpointID], img.CreatedAt)
	}
	ls, err := d.client.LeasesService().List(ctx, fmt.Sprintf(`labels.%q`, LabelCheckpointID))
	if err != nil {
		return nil, d.classify("list capture leases", err)
	}
	for _, l := range ls {
		note(l.Labels[LabelCheckpointID], l.CreatedAt)
	}
	// A dump a crash (or a cut capture racing CRIU) left behind holds memory.
	for _, dir := range d.dumpDirs() {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if info, err := e.Info(); err == nil && e.IsDir() {
				note(e.Name(), info.ModTime())
			}
		}
	}
	return out, nil
}

// Restore creates and starts one container per captured container, labelled
// as a pod container of the new sandbox so that it can itself be captured.
func (d *Driver) Restore(ctx context.Context, checkpointID string, req driver.RestoreRequest) (driver.Target, error) {
	ctx = d.ctx(ctx)
	imgs, err := d.capturedState(ctx, checkpointID)
	if err != nil {
		return driver.Target{}, err
	}
	if existing, err := d.Resolve(ctx, req.Namespace, req.Name); err == nil {
		return driver.Target{}, fmt.Errorf("%w: sandbox %s/%s already has %d containers", driver.ErrSandboxExists, req.Namespace, req.Name, len(existing.Containers))
	}
	target := driver.Target{Namespace: req.Namespace, Name: req.Name}
	var started []containerd.Container
	fail := func(err error) (driver.Target, error) {
		cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		for _, c := range started {
			d.remove(cleanupCtx, c)
		}
		return driver.Target{}, err
	}
	for _, im := range imgs {
		cname := im.Labels[LabelContainerName]
		index, err := d.readIndex(ctx, im.Target)
		if err != nil {
			return fail(d.classify("read checkpoint "+im.Name, err))
		}
		hasMemory := hasMediaType(index, images.MediaTypeContainerd1Checkpoint)
		hasRW := hasMediaType(index, ocispec.MediaTypeImageLayerGzip)
		id := newContainerID()
		labels := map[string]string{}
		for k, v := range req.Labels {
			labels[k] = v
		}
		labels[LabelPodNamespace] = req.Namespace
		labels[LabelPodName] = req.Name
		labels[LabelContainerName] = cname
		labels[LabelKind] = "container"
		labels[LabelRestoredFrom] = checkpointID

		img := containerd.NewImage(d.client, im)
		opts := []containerd.RestoreOpts{containerd.WithRestoreImage, containerd.WithRestoreRuntime, containerd.WithRestoreSpec,
			d.withCloneSpec, withLabels(labels)}
		if hasRW {
			opts = append(opts, containerd.WithRestoreRW)
		}
		ctr, err := d.client.Restore(ctx, id, img, opts...)
		if err != nil {
			return fail(d.classify("restore container "+cname, err))
		}
		started = append(started, ctr)
		var taskOpts []containerd.NewTaskOpts
		if hasMemory {
			taskOpts = append(taskOpts, containerd.WithTaskCheckpoint(img))
		}
		task, err := ctr.NewTask(ctx, d.logIO(id), taskOpts...)
		if err != nil {
			return fail(d.classify("create task of restored container "+cname, err))
		}
		if err := task.Start(ctx); err != nil {
			return fail(d.classify("start restored container "+cname, err))
		}
		// A Pod's network has lo up; a bare clone's namespace is made here.
		if err := loopbackUp(task.Pid()); err != nil {
			return fail(fmt.Errorf("restored container %s: %w", cname, err))
		}
		target.Containers = append(target.Containers, driver.Container{ID: id, Name: cname})
	}
	return target, nil
}

func (d *Driver) logIO(id string) cio.Creator {
	if d.cfg.LogDir == "" {
		return cio.NullIO
	}
	return cio.LogFile(filepath.Join(d.cfg.LogDir, id+".log"))
}

// LogPath is where the output of a restored container goes ("" when not kept).
func (d *Driver) LogPath(containerID string) string {
	if d.cfg.LogDir == "" {
		return ""
	}
	return filepath.Join(d.cfg.LogDir, containerID+".log")
}

func hasMediaType(index *ocispec.Index, mediaType string) bool {
	for _, m := range index.Manifests {
		if m.MediaType == mediaType {
			return true
		}
	}
	return false
}

func newContainerID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// withLabels sets the clone's labels.
func withLabels(labels map[string]string) containerd.RestoreOpts {
	return func(context.Context, string, *containerd.Client, containerd.Image, *ocispec.Index) containerd.NewContainerOpts {
		return containerd.WithContainerLabels(labels)
	}
}

// withCloneSpec gives the clone a cgroup of its own (the spec restored from
// the checkpoint still names the source's, which is per container ID) and
// the CRIU configuration that closes the source's established connections.
func (d *Driver) withCloneSpec(_ context.Context, id string, _ *containerd.Client, _ containerd.Image, _ *ocispec.Index) containerd.NewContainerOpts {
	return func(_ context.Context, _ *containerd.Client, c *containers.Container) error {
		if c.Spec == nil {
			return errors.New("checkpoint has no runtime spec")
		}
		v, err := typeurl.UnmarshalAny(c.Spec)
		if err != nil {
			return fmt.Errorf("decode restored spec: %w", err)
		}
		spec, ok := v.(*runtimespec.Spec)
		if !ok {
			return fmt.Errorf("restored spec is %T", v)
		}
		if spec.Linux != nil && spec.Linux.CgroupsPath != "" {
			spec.Linux.CgroupsPath = cloneCgroupsPath(spec.Linux.CgroupsPath, id)
		}
		if spec.Annotations == nil {
			spec.Annotations = map[string]string{}
		}
		spec.Annotations[criuConfigAnnotation] = d.restoreConfig
		c.Spec, err = typeurl.MarshalAny(spec)
		return err
	}
}

// cloneCgroupsPath replaces the container part of a cgroups path: the last
// element of a cgroupfs path, the last field of a systemd "slice:prefix:name".
func cloneCgroupsPath(p, id string) string {
	if i := strings.LastIndex(p, ":"); i >= 0 && !strings.HasPrefix(p, "/") {
		return p[:i+1] + id
	}
	return path.Join(path.Dir(p), id)
}

// Stop stops every container of target: SIGTERM, then SIGKILL after the
// grace period, and deletes its task.
func (d *Driver) Stop(ctx context.Context, target driver.Target) error {
	return d.stop(ctx, target, true)
}

// Terminate ends the processes of every container of target as Stop does,
// but leaves their tasks to whoever owns them: the CRI records the exit
// (and the kubelet ends the Pod by it).
func (d *Driver) Terminate(ctx context.Context, target driver.Target) error {
	return d.stop(ctx, target, false)
}

func (d *Driver) stop(ctx context.Context, target driver.Target, deleteTask bool) error {
	ctx = d.ctx(ctx)
	if err := d.Ping(ctx); err != nil {
		return err
	}
	for _, c := range target.Containers {
		ctr, err := d.client.LoadContainer(ctx, c.ID)
		if errdefs.IsNotFound(err) {
			continue
		}
		if err != nil {
			return d.classify("load container "+c.ID, err)
		}
		if err := d.stopTask(ctx, ctr, deleteTask); err != nil {
			return err
		}
	}
	return nil
}

func (d *Driver) stopTask(ctx context.Context, ctr containerd.Container, deleteTask bool) error {
	task, err := ctr.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return d.classify("load task of "+ctr.ID(), err)
	}
	exited, err := task.Wait(ctx)
	if err != nil {
		return d.classify("wait for task of "+ctr.ID(), err)
	}
	if d.underRestoreRuntime(ctx, ctr) {
		// The runtime reports this exit as 0: the sandbox was taken to its
		// checkpoint, whatever its process does on SIGTERM.
		if err := task.Update(ctx, func(_ context.Context, _ *containerd.Client, u *containerd.UpdateTaskInfo) error {
			u.Annotations = map[string]string{restoreapi.AnnotationStopAfterCheckpoint: "true"}
			return nil
		}); err != nil && !errdefs.IsNotFound(err) {
			return d.classify("mark task of "+ctr.ID()+" as ended by its checkpoint", err)
		}
	}
	if err := task.Kill(ctx, syscall.SIGTERM); err != nil && !errdefs.IsNotFound(err) {
		return d.classify("stop task of "+ctr.ID(), err)
	}
	select {
	case <-exited:
	case <-time.After(d.cfg.StopGracePeriod):
		if err := task.Kill(ctx, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
			return d.classify("kill task of "+ctr.ID(), err)
		}
		<-exited
	case <-ctx.Done():
		return ctx.Err()
	}
	if !deleteTask {
		return nil
	}
	if _, err := task.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
		return d.classify("delete task of "+ctr.ID(), err)
	}
	return nil
}

// underRestoreRuntime says whether ctr's Pod runs under the restore
// runtime, by the runtime handler containerd's CRI records in its
// sandbox's metadata. Only that runtime takes an update without
// resources: runc's own shim would fail on one.
func (d *Driver) underRestoreRuntime(ctx context.Context, ctr containerd.Container) bool {
	info, err := ctr.Info(ctx, containerd.WithoutRefreshedMetadata)
	if err != nil || info.SandboxID == "" {
		return false
	}
	sb, err := d.client.SandboxStore().Get(ctx, info.SandboxID)
	if err != nil {
		return false
	}
	ext, ok := sb.Extensions[criSandboxMetadata]
	if !ok || ext == nil {
		return false
	}
	var meta struct {
		Metadata struct{ RuntimeHandler string }
	}
	if err := json.Unmarshal(ext.GetValue(), &meta); err != nil {
		return false
	}
	return meta.Metadata.RuntimeHandler == d.cfg.RestoreRuntimeHandler
}

// criSandboxMetadata is the sandbox extension where containerd's CRI keeps
// a Pod sandbox's metadata (as {"Version":"v1","Metadata":{...}}).
const criSandboxMetadata = "metadata"

// remove kills and deletes a container and its snapshot, ignoring what is gone.
func (d *Driver) remove(ctx context.Context, ctr containerd.Container) {
	if task, err := ctr.Task(ctx, nil); err == nil {
		_, _ = task.Delete(ctx, containerd.WithProcessKill)
	}
	_ = ctr.Delete(ctx, containerd.WithSnapshotCleanup)
}
