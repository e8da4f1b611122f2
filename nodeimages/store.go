package nodeimages

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
)

// Checkpoint is what the store needs of a Checkpoint object.
type Checkpoint struct {
	Namespace, Name, UID string
	// Owner is its agents.kruise.io/owner annotation.
	Owner string
	// ImageDigest is its index in the checkpoint registry ("": not there).
	ImageDigest string
	// FilesystemOnly: it holds its containers' writable layers and no
	// memory (persistentContents filesystem alone), so a restore starts the
	// containers' processes afresh on their layers. False: it must hold
	// CRIU's images, or nothing is restored.
	FilesystemOnly bool
	// Sandbox is the sandbox it captured (spec.sandboxName, else spec.podName).
	Sandbox string
	// Created is its creation time.
	Created time.Time
}

// Lookup finds the Succeeded Checkpoint whose status.checkpointId is id in
// namespace ns: a Pod restores only what its own namespace holds.
type Lookup interface {
	Find(ctx context.Context, ns, id string) (Checkpoint, error)
}

// Archives streams one container's checkpoint archive (the kubelet's
// layout: checkpoint/ with CRIU's images, rootfs-diff.tar), and says its
// size when it knows it (else -1).
type Archives interface {
	Archive(ctx context.Context, cp Checkpoint, req api.Request) (io.ReadCloser, int64, error)
}

// Errors the socket turns into statuses.
var (
	ErrNotFound = errors.New("no such checkpoint")
	// ErrNoContainer: the checkpoint holds nothing of that container.
	ErrNoContainer = fmt.Errorf("%w: no such container in it", ErrNotFound)
	ErrTooLarge    = errors.New("checkpoint larger than the node's bound")
)

// completeMarker is written last: a directory without it is not a checkpoint.
const completeMarker = ".complete"

// recentUse keeps a checkpoint a restore just asked for from eviction, so
// a restore never loses its images while CRIU reads them.
const recentUse = 5 * time.Minute

// Store is a node's unpacked checkpoints: under MemDir (a tmpfs: memory)
// while they fit in MemLimit bytes, else under Dir, at most Limit bytes
// (0: unbounded). CRIU reads them where they are: nothing is copied again.
type Store struct {
	Dir   string
	Limit int64
	// MemDir, when set, is a tmpfs holding at most MemLimit bytes (0: none)
	// of checkpoints, tried first.
	MemDir   string
	MemLimit int64
	Lookup   Lookup
	Archives Archives
	// Events receives the restores that failed on the node (nil: logged only).
	Events Events

	mu       sync.Mutex
	inflight map[string]*fetch
}

type fetch struct {
	done chan struct{}
	err  error
}

// tier is one place checkpoints are unpacked, with its bound.
type tier struct {
	root  string
	limit int64
}

// tiers are where checkpoints go, memory first.
func (s *Store) tiers() []tier {
	var out []tier
	if s.MemDir != "" && s.MemLimit > 0 {
		out = append(out, tier{s.MemDir, s.MemLimit})
	}
	return append(out, tier{s.Dir, s.Limit})
}

// Start removes what an interrupted fetch left.
func (s *Store) Start() error {
	for _, t := range s.tiers() {
		if err := os.MkdirAll(t.root, 0o700); err != nil {
			return err
		}
		partial, _ := filepath.Glob(filepath.Join(t.root, "*", "*", ".tmp-*"))
		for _, p := range partial {
			_ = os.RemoveAll(p)
		}
	}
	return nil
}

// Prepare puts req's checkpoint on the node, once however many ask.
func (s *Store) Prepare(ctx context.Context, req api.Request) (api.Response, error) {
	if err := req.Validate(); err != nil {
		return api.Response{}, err
	}
	cp, err := s.Lookup.Find(ctx, req.Namespace, req.CheckpointID)
	if err != nil {
		return api.Response{}, err
	}
	return s.prepare(ctx, cp, req)
}

// Prefetch puts a checkpoint just captured on the node, before its
// Checkpoint says Succeeded: the caller (the capturing agent) vouches for
// cp, so a clone on this node finds it unpacked.
func (s *Store) Prefetch(ctx context.Context, cp Checkpoint, req api.Request) error {
	if err := req.Validate(); err != nil {
		return err
	}
	_, err := s.prepare(ctx, cp, req)
	return err
}

func (s *Store) prepare(ctx context.Context, cp Checkpoint, req api.Request) (api.Response, error) {
	dir := api.Dir(s.Dir, req) // the key of req's fetch, whichever tier it lands in
	for {
		for _, t := range s.tiers() {
			if resp, ok := s.ready(api.Dir(t.root, req), cp); ok {
				return resp, nil
			}
		}
		s.mu.Lock()
		if s.inflight == nil {
			s.inflight = map[string]*fetch{}
		}
		f, running := s.inflight[dir]
		if !running {
			f = &fetch{done: make(chan struct{})}
			s.inflight[dir] = f
		}
		s.mu.Unlock()
		if running {
			select {
			case <-f.done:
				if f.err != nil {
					return api.Response{}, f.err
				}
				continue
			case <-ctx.Done():
				return api.Response{}, ctx.Err()
			}
		}
		// The fetch outlives a caller that gives up: the next one finds it.
		f.err = s.fetch(context.WithoutCancel(ctx), cp, req)
		s.mu.Lock()
		delete(s.inflight, dir)
		s.mu.Unlock()
		close(f.done)
		if f.err != nil {
			return api.Response{}, f.err
		}
	}
}

// ready says where dir's checkpoint is, if it is whole: CRIU's images
// unless cp holds filesystems only, then none.
func (s *Store) ready(dir string, cp Checkpoint) (api.Response, bool) {
	marker := filepath.Join(dir, completeMarker)
	if _, err := os.Stat(marker); err != nil {
		return api.Response{}, false
	}
	resp := api.Response{FilesystemOnly: cp.FilesystemOnly}
	if !cp.FilesystemOnly {
		resp.Images = filepath.Join(dir, "checkpoint")
		if _, err := os.Stat(filepath.Join(resp.Images, "inventory.img")); err != nil {
			return api.Response{}, false
		}
	}
	now := time.Now()
	_ = os.Chtimes(marker, now, now)
	if _, err := os.Stat(filepath.Join(dir, "rootfs-diff.tar")); err == nil {
		resp.RootfsDiff = filepath.Join(dir, "rootfs-diff.tar")
	}
	return resp, true
}

// fetch unpacks the container's archive into its tier, whole or not at
// all: memory when its size is known and fits there, else disk.
func (s *Store) fetch(ctx context.Context, cp Checkpoint, req api.Request) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	start := time.Now()
	r, size, err := s.Archives.Archive(ctx, cp, req)
	if cp.FilesystemOnly && errors.Is(err, ErrNoContainer) {
		// A container the filesystem checkpoint has no layer of (one added
		// since, a plain init container): it starts from its image alone.
		r, size, err = io.NopCloser(strings.NewReader("")), 0, nil
		klog.FromContext(ctx).Info("A filesystem checkpoint holds no layer of this container: it starts from its image",
			"checkpoint", req.CheckpointID, "namespace", req.Namespace, "container", req.Container)
	}
	if err != nil {
		return err
	}
	defer r.Close()
	tiers := s.tiers()
	t := tiers[len(tiers)-1]
	if mem := tiers[0]; len(tiers) > 1 && size > 0 && size <= mem.limit {
		// Memory if it fits there once what is not in use went.
		if held := s.evict(mem, size, api.Dir(mem.root, req)); held+size <= mem.limit {
			t = mem
		}
	}
	if t.limit > 0 && size > t.limit {
		return fmt.Errorf("%w: %d bytes, the bound is %d", ErrTooLarge, size, t.limit)
	}
	dir := api.Dir(t.root, req)
	if size > 0 && t.root == s.Dir {
		s.evict(t, size, dir)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".tmp-"+req.Container+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	n, err := unpack(r, tmp, t.limit)
	if err != nil {
		return fmt.Errorf("unpack checkpoint %s of container %s: %w", req.CheckpointID, req.Container, err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "checkpoint", "inventory.img")); err != nil && !cp.FilesystemOnly {
		return fmt.Errorf("checkpoint %s of container %s holds no CRIU images (no memory was captured)", req.CheckpointID, req.Container)
	}
	if err := os.WriteFile(filepath.Join(tmp, completeMarker), nil, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	klog.FromContext(ctx).V(2).Info("Checkpoint unpacked for a restore", "checkpoint", req.CheckpointID, "namespace", req.Namespace,
		"container", req.Container, "bytes", n, "in", time.Since(start), "dir", dir)
	s.evict(t, 0, dir)
	return nil
}

// unpack writes the archive's CRIU images (checkpoint/) and rootfs diff
// into dir: regular files only, nothing outside dir, at most limit bytes
// (0: unbounded). The rest of the archive is the CRI's, not the runtime's.
func unpack(r io.Reader, dir string, limit int64) (int64, error) {
	if err := os.Mkdir(filepath.Join(dir, "checkpoint"), 0o700); err != nil {
		return 0, err
	}
	tr := tar.NewReader(r)
	var total int64
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return total, err
		}
		name := strings.TrimPrefix(hdr.Name, "./")
		var dst string
		switch {
		case name == "rootfs-diff.tar":
			dst = filepath.Join(dir, name)
		case strings.HasPrefix(name, "checkpoint/"):
			base := strings.TrimPrefix(name, "checkpoint/")
			if base == "" && hdr.Typeflag == tar.TypeDir {
				continue
			}
			if base == "" || strings.Contains(base, "/") || base == "." || base == ".." {
				return total, fmt.Errorf("unexpected entry %q", hdr.Name)
			}
			dst = filepath.Join(dir, "checkpoint", base)
		default:
			continue
		}
		if hdr.Typeflag != tar.TypeReg {
			return total, fmt.Errorf("entry %q is not a regular file", hdr.Name)
		}
		total += hdr.Size
		if limit > 0 && total > limit {
			return total, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
		}
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return total, err
		}
		_, err = io.CopyN(f, tr, hdr.Size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return total, err
		}
	}
	// Whatever streamed the archive has its say at its end (a digest).
	if _, err := io.Copy(io.Discard, r); err != nil {
		return total, err
	}
	return total, nil
}

type entry struct {
	dir  string
	used time.Time
	size int64
}

// evict removes the least recently used checkpoints of tier t until need
// more bytes fit under its bound, never keep (being written) nor one used
// recently, and says how many bytes t holds then.
func (s *Store) evict(t tier, need int64, keep string) int64 {
	if t.limit <= 0 {
		return 0
	}
	var all []entry
	var total int64
	dirs, _ := filepath.Glob(filepath.Join(t.root, "*", "*", "*"))
	for _, d := range dirs {
		if strings.HasPrefix(filepath.Base(d), ".tmp-") {
			continue
		}
		fi, err := os.Stat(filepath.Join(d, completeMarker))
		if err != nil {
			continue
		}
		e := entry{dir: d, used: fi.ModTime(), size: dirSize(d)}
		total += e.size
		all = append(all, e)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].used.Before(all[j].used) })
	for _, e := range all {
		if total+need <= t.limit {
			return total
		}
		if e.dir == keep || time.Since(e.used) < recentUse {
			continue
		}
		if err := os.RemoveAll(e.dir); err == nil {
			total -= e.size
		}
	}
	return total
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// Held is every checkpoint the store holds whole, by ID, with when a
// restore last used it (its newest use of any container).
func (s *Store) Held() map[string]time.Time {
	out := map[string]time.Time{}
	for _, t := range s.tiers() {
		markers, _ := filepath.Glob(filepath.Join(t.root, "*", "*", "*", completeMarker))
		for _, m := range markers {
			fi, err := os.Stat(m)
			if err != nil {
				continue
			}
			id := filepath.Base(filepath.Dir(filepath.Dir(m)))
			if fi.ModTime().After(out[id]) {
				out[id] = fi.ModTime()
			}
		}
	}
	return out
}

// Remove deletes checkpoint id from the node, in every namespace.
func (s *Store) Remove(id string) error {
	if !api.ValidCheckpointID(id) {
		return fmt.Errorf("checkpoint ID %q is not one this server makes", id)
	}
	var errs []error
	for _, t := range s.tiers() {
		dirs, _ := filepath.Glob(filepath.Join(t.root, "*", id))
		for _, d := range dirs {
			errs = append(errs, os.RemoveAll(d))
		}
	}
	return errors.Join(errs...)
}
