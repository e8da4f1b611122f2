package restoreruntime

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/pkg/archive"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	ptypes "github.com/containerd/containerd/v2/pkg/protobuf/types"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/agents-kruise/checkpoint-apiserver/criulog"
	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
)

// AnnotationRestoreFrom marks a Pod for restore: containerd's CRI passes
// it, and only it, into every container's spec (pod_annotations).
const AnnotationRestoreFrom = api.AnnotationRestoreFrom

// criuConfigAnnotation is the one runc hands CRIU as its configuration file.
// No container may carry its own: the runtime removes it from every spec,
// and sets it only to a file it wrote itself.
const criuConfigAnnotation = "org.criu.config"

// criuRestoreConf is the restore's CRIU configuration, in the bundle.
const criuRestoreConf = "criu-restore.conf"

// What containerd's CRI writes into a container's spec.
const (
	criContainerType      = "io.kubernetes.cri.container-type"
	criContainerName      = "io.kubernetes.cri.container-name"
	criSandboxNamespace   = "io.kubernetes.cri.sandbox-namespace"
	criSandboxName        = "io.kubernetes.cri.sandbox-name"
	terminationMessageKey = "io.kubernetes.container.terminationMessagePath"
	defaultTerminationLog = "/dev/termination-log"
)

// Service is runc's shim task service with restores: Create, Start and
// Delete of a marked container do the restore's part around runc's.
type Service struct {
	taskAPI.TTRPCTaskService
	cfg Config
	src Source

	mu       sync.Mutex
	restores map[string]*restore
	clean    *cleanExits
}

// restore is one container being (or restored) from a checkpoint.
type restore struct {
	req      Request
	bundle   string
	work     string
	images   string
	termLog  string // host path of the container's termination message file
	lazy     *lazyPages
	failure  string // why the runtime killed the container
	finished chan struct{}
}

// NewService wraps runc's task service.
// clean is the set its publisher (exitPublisher) shares, or nil for one of its own.
func NewService(runc taskAPI.TTRPCTaskService, cfg Config, src Source, clean *cleanExits) *Service {
	if clean == nil {
		clean = &cleanExits{}
	}
	return &Service{TTRPCTaskService: runc, cfg: cfg, src: src, restores: map[string]*restore{}, clean: clean}
}

// RegisterTTRPC serves the wrapped service in runc's place.
func (s *Service) RegisterTTRPC(server *ttrpc.Server) error {
	taskAPI.RegisterTTRPCTaskService(server, s)
	return nil
}

// Create creates r's container as runc does, unless its Pod is marked for
// restore: then from its checkpoint, or not at all.
func (s *Service) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	spec, err := readSpec(r.Bundle)
	if err != nil {
		return nil, err
	}
	_, hadCRIUConfig := spec.Annotations[criuConfigAnnotation]
	delete(spec.Annotations, criuConfigAnnotation)
	id, marked := spec.Annotations[AnnotationRestoreFrom]
	if !marked || spec.Annotations[criContainerType] == "sandbox" {
		if hadCRIUConfig {
			if err := writeSpec(r.Bundle, spec); err != nil {
				return nil, err
			}
		}
		return s.TTRPCTaskService.Create(ctx, r)
	}
	req := Request{
		Namespace: spec.Annotations[criSandboxNamespace], Pod: spec.Annotations[criSandboxName],
		Container: spec.Annotations[criContainerName], CheckpointID: id,
	}
	if err := req.Validate(); err != nil {
		return nil, fmt.Errorf("%w: container %s is marked %s=%s: %v", errdefs.ErrInvalidArgument, r.ID, AnnotationRestoreFrom, id, err)
	}
	prepared, err := s.src.Prepare(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("%w: restore %s/%s container %s from %s: %v (a Pod marked for restore never starts fresh)",
			errdefs.ErrFailedPrecondition, req.Namespace, req.Pod, req.Container, id, err)
	}
	if err := within([]string{s.cfg.ImagesDir, s.cfg.MemImagesDir}, prepared.Images, prepared.RootfsDiff); err != nil {
		return nil, fmt.Errorf("restore %s/%s container %s from %s: %w", req.Namespace, req.Pod, req.Container, id, err)
	}
	if prepared.FilesystemOnly {
		return s.createOnLayer(ctx, r, spec, hadCRIUConfig, req, prepared)
	}
	if prepared.Images == "" {
		return nil, fmt.Errorf("%w: restore %s/%s container %s from %s: the node agent named no memory images (a Pod marked for restore never starts fresh)",
			errdefs.ErrFailedPrecondition, req.Namespace, req.Pod, req.Container, id)
	}
	rs := &restore{req: req, bundle: r.Bundle, work: filepath.Join(r.Bundle, "criu-restore"), images: prepared.Images,
		termLog: terminationLogSource(spec), finished: make(chan struct{})}
	if err := os.MkdirAll(rs.work, 0o700); err != nil {
		return nil, err
	}
	conf := filepath.Join(r.Bundle, criuRestoreConf)
	if err := os.WriteFile(conf, []byte(criuConfig(s.cfg.Lazy)), 0o600); err != nil {
		return nil, err
	}
	spec.Annotations[criuConfigAnnotation] = conf
	if err := writeSpec(r.Bundle, spec); err != nil {
		return nil, err
	}
	if r.Options, err = withWorkPath(r.Options, rs.work); err != nil {
		return nil, err
	}
	r.Checkpoint = prepared.Images
	resp, err := s.createWithLayer(ctx, r, req, prepared.RootfsDiff)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.restores[r.ID] = rs
	s.mu.Unlock()
	log.G(ctx).WithField("checkpoint", id).WithField("container", req.Container).Info("container created from its checkpoint")
	return resp, nil
}

// createOnLayer creates a container of a filesystem checkpoint (its
// writable layer, no memory) as runc does, with the captured layer applied
// before it starts: its processes start afresh on its files, which is all
// such a checkpoint holds (OpenKruise's CheckpointRestore upgrade).
func (s *Service) createOnLayer(ctx context.Context, r *taskAPI.CreateTaskRequest, spec *specs.Spec, hadCRIUConfig bool,
	req Request, prepared Prepared) (*taskAPI.CreateTaskResponse, error) {
	if hadCRIUConfig {
		if err := writeSpec(r.Bundle, spec); err != nil {
			return nil, err
		}
	}
	resp, err := s.createWithLayer(ctx, r, req, prepared.RootfsDiff)
	if err != nil {
		return nil, err
	}
	log.G(ctx).WithField("checkpoint", req.CheckpointID).WithField("container", req.Container).WithField("layer", prepared.RootfsDiff != "").
		Info("container created on its checkpoint's writable layer")
	return resp, nil
}

// createWithLayer creates r's container as runc's shim does, then applies
// the captured writable layer diff ("": none) to its rootfs before anything
// runs in it; the container is deleted when that fails.
func (s *Service) createWithLayer(ctx context.Context, r *taskAPI.CreateTaskRequest, req Request, diff string) (*taskAPI.CreateTaskResponse, error) {
	resp, err := s.TTRPCTaskService.Create(ctx, r)
	if err != nil || diff == "" {
		return resp, err
	}
	if err := applyDiff(ctx, filepath.Join(r.Bundle, "rootfs"), diff); err != nil {
		_, _ = s.TTRPCTaskService.Delete(ctx, &taskAPI.DeleteRequest{ID: r.ID})
		err = fmt.Errorf("restore %s/%s container %s from %s: apply its filesystem changes: %w", req.Namespace, req.Pod, req.Container, req.CheckpointID, err)
		s.src.Failed(ctx, req, err.Error())
		return nil, err
	}
	return resp, nil
}

// Start restores a marked container (behind its lazy-pages daemon when
// lazy); CRIU's own error lines come back in the error when it fails.
func (s *Service) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	s.mu.Lock()
	rs := s.restores[r.ID]
	s.mu.Unlock()
	if rs == nil || r.ExecID != "" {
		return s.TTRPCTaskService.Start(ctx, r)
	}
	if s.cfg.Lazy {
		lp, err := startLazyPages(ctx, s.cfg.CRIU, rs.images, rs.work)
		if err != nil {
			s.keepLog(r.ID, rs)
			err = fmt.Errorf("restore %s/%s container %s: %w", rs.req.Namespace, rs.req.Pod, rs.req.Container, err)
			s.src.Failed(ctx, rs.req, err.Error())
			return nil, err
		}
		rs.lazy = lp
	}
	var started chan struct{}
	if rs.lazy != nil {
		started = make(chan struct{})
		go abortIfDaemonEnds(r.ID, rs.lazy, started)
	}
	resp, err := s.TTRPCTaskService.Start(ctx, r)
	if started != nil {
		close(started)
	}
	if err != nil {
		why := ""
		if rs.lazy != nil {
			select {
			case <-rs.lazy.done:
				if served, reason := rs.lazy.wait(); !served {
					why = fmt.Sprintf(" (its lazy-pages daemon ended during the restore: %s; the restored processes were killed)", reason)
				}
			default:
			}
			rs.lazy.stop()
		}
		tail := criulog.Tail(filepath.Join(rs.work, "restore.log"), 8)
		s.keepLog(r.ID, rs)
		err = fmt.Errorf("restore %s/%s container %s from %s%s: %w%s", rs.req.Namespace, rs.req.Pod, rs.req.Container, rs.req.CheckpointID, why, err, tail)
		s.src.Failed(ctx, rs.req, err.Error())
		return nil, err
	}
	// The restore's CRIU configuration is the container's for good (runc
	// keeps org.criu.config from its create): gone, a later checkpoint of
	// the clone dumps as any container's does, not with lazy-pages (which
	// on a dump waits for a page client that never comes).
	_ = os.Remove(filepath.Join(rs.bundle, criuRestoreConf))
	if rs.lazy != nil {
		go s.watchLazyPages(r.ID, rs)
	}
	return resp, nil
}

// Checkpoint of a container still restoring lazily waits for its last
// page: CRIU dumps what the process holds, and part of it is still in the
// lazy-pages daemon's images.
func (s *Service) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*ptypes.Empty, error) {
	s.mu.Lock()
	rs := s.restores[r.ID]
	s.mu.Unlock()
	if rs != nil && rs.lazy != nil {
		select {
		case <-rs.lazy.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("checkpoint %s: its lazy restore has not brought all its memory back yet: %w", r.ID, ctx.Err())
		}
	}
	return s.TTRPCTaskService.Checkpoint(ctx, r)
}

// watchLazyPages kills the container when its lazy-pages daemon ends
// before every page was served: the kernel would hand the process
// zero-filled pages in place of its memory.
func (s *Service) watchLazyPages(id string, rs *restore) {
	served, reason := rs.lazy.wait()
	if served {
		close(rs.finished)
		return
	}
	rs.failure = fmt.Sprintf("restore runtime: the lazy-pages daemon of checkpoint %s ended before every page was back (%s); "+
		"the container was killed rather than run on memory it did not get back", rs.req.CheckpointID, reason)
	writeTerminationMessage(rs.termLog, rs.failure)
	ctx := context.Background()
	log.G(ctx).WithField("container", id).Error(rs.failure)
	// The daemon has ended, so its log is whole: keep it before the kill,
	// which whoever waits on the container sees at once.
	s.keepLog(id, rs)
	if _, err := s.TTRPCTaskService.Kill(ctx, &taskAPI.KillRequest{ID: id, Signal: uint32(syscall.SIGKILL), All: true}); err != nil {
		log.G(ctx).WithError(err).WithField("container", id).Error("kill a container whose pages were lost")
	}
	s.src.Failed(ctx, rs.req, rs.failure)
	close(rs.finished)
}

// Delete deletes as runc does, then what the restore left.
func (s *Service) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	resp, err := s.TTRPCTaskService.Delete(ctx, r)
	if err != nil || r.ExecID != "" {
		return resp, err
	}
	if s.clean.has(r.ID) {
		resp.ExitStatus = 0
		s.clean.forget(r.ID)
	}
	s.mu.Lock()
	rs := s.restores[r.ID]
	delete(s.restores, r.ID)
	s.mu.Unlock()
	if rs != nil && rs.lazy != nil {
		rs.lazy.stop()
	}
	return resp, err
}

// criuConfig is the whole CRIU configuration of a restore: established
// connections a clone inherits come back closed (its peers are elsewhere).
func criuConfig(lazy bool) string {
	c := "tcp-close\n"
	if lazy {
		c += "lazy-pages\n"
	}
	return c
}

func readSpec(bundle string) (*specs.Spec, error) {
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil {
		return nil, err
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(bundle, "config.json"), err)
	}
	if spec.Annotations == nil {
		spec.Annotations = map[string]string{}
	}
	return &spec, nil
}

func writeSpec(bundle string, spec *specs.Spec) error {
	data, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(bundle, "config.json"), data, 0o600)
}

// withWorkPath sets CRIU's work directory in runc's options: the restore
// and its lazy-pages daemon meet there.
func withWorkPath(any typeurl.Any, work string) (*ptypes.Any, error) {
	opts := &options.Options{}
	if any != nil && len(any.GetValue()) > 0 {
		v, err := typeurl.UnmarshalAny(any)
		if err != nil {
			return nil, err
		}
		o, ok := v.(*options.Options)
		if !ok {
			return nil, fmt.Errorf("%w: runtime options of type %T, not runc's", errdefs.ErrInvalidArgument, v)
		}
		opts = o
	}
	opts.CriuWorkPath = work
	return typeurl.MarshalAnyToProto(opts)
}

// terminationLogSource is the host file behind the container's
// termination message: what the runtime writes there, the kubelet reports.
func terminationLogSource(spec *specs.Spec) string {
	dest := spec.Annotations[terminationMessageKey]
	if dest == "" {
		dest = defaultTerminationLog
	}
	for _, m := range spec.Mounts {
		if m.Destination == dest && m.Type == "bind" {
			return m.Source
		}
	}
	return ""
}

// writeTerminationMessage writes msg into the container's termination
// message file, the empty regular file the kubelet made for it: never
// anything else a mount might name.
func writeTerminationMessage(path, msg string) {
	if path == "" {
		return
	}
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != 0 {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return
	}
	_, _ = f.WriteString(msg)
	_ = f.Close()
}

// within refuses a checkpoint the source placed outside the node's images
// directory.
func within(roots []string, paths ...string) error {
	for _, p := range paths {
		if p == "" {
			continue
		}
		inside := false
		for _, root := range roots {
			if root == "" {
				continue
			}
			rel, err := filepath.Rel(root, filepath.Clean(p))
			inside = inside || (err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel))
		}
		if !inside {
			return fmt.Errorf("checkpoint path %s is outside the node's images directories %s", p, strings.Join(roots, " and "))
		}
	}
	return nil
}

// applyDiff applies a container's captured filesystem changes to its new rootfs.
func applyDiff(ctx context.Context, rootfs, diff string) error {
	f, err := os.Open(diff)
	if err != nil {
		return err
	}
	defer f.Close()
	// A capture's diff may be compressed.
	r, err := compression.DecompressStream(f)
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = archive.Apply(ctx, rootfs, r)
	return err
}
