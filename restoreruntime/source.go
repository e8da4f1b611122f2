package restoreruntime

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containerd/log"

	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
)

// Request names one container's checkpoint; Prepared is where it lies.
type (
	Request  = api.Request
	Prepared = api.Response
)

// Source puts a container's checkpoint on the node.
type Source interface {
	Prepare(ctx context.Context, req Request) (Prepared, error)
	// Failed reports that req's restore failed, and why (best effort).
	Failed(ctx context.Context, req Request, reason string)
}

// ErrNoCheckpoint: the node holds no checkpoint for the container.
var ErrNoCheckpoint = errors.New("no checkpoint for this container on the node")

// DirSource reads checkpoints a node agent laid out under Dir as
// <namespace>/<checkpoint ID>/<container>/{checkpoint/,rootfs-diff.tar}.
type DirSource struct{ Dir string }

// Failed has no one to tell: the runtime's own log and the Pod say it.
func (DirSource) Failed(context.Context, Request, string) {}

// Prepare finds req's images under the directory.
func (s DirSource) Prepare(_ context.Context, req Request) (Prepared, error) {
	if err := req.Validate(); err != nil {
		return Prepared{}, err
	}
	dir := api.Dir(s.Dir, req)
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

// SocketSource asks the node's checkpoint images store (the node agent's,
// on a node-local socket only root reaches) to put the checkpoint on the
// node: from its cache, or pulled by digest from the checkpoint registry.
type SocketSource struct {
	Socket string
	// Timeout bounds one request (a pull of a big checkpoint included).
	Timeout time.Duration
}

// Prepare asks the store for req's checkpoint.
func (s SocketSource) Prepare(ctx context.Context, req Request) (Prepared, error) {
	if err := req.Validate(); err != nil {
		return Prepared{}, err
	}
	timeout := s.Timeout
	if timeout == 0 {
		timeout = 100 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	data, err := s.post(ctx, api.Path, req, http.StatusOK)
	if err != nil {
		return Prepared{}, err
	}
	var p Prepared
	if err := json.Unmarshal(data, &p); err != nil {
		return Prepared{}, fmt.Errorf("the node agent's answer: %w", err)
	}
	return p, nil
}

// Failed tells the node agent, within 5 s.
func (s SocketSource) Failed(ctx context.Context, req Request, reason string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := s.post(ctx, api.FailurePath, api.Failure{Request: req, Reason: reason}, http.StatusNoContent); err != nil {
		log.G(ctx).WithError(err).Warn("tell the node agent a restore failed")
	}
}

// post posts v as JSON to the agent's path and returns its answer, an
// error unless its status is want.
func (s SocketSource) post(ctx context.Context, path string, v any, want int) ([]byte, error) {
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", s.Socket)
		},
	}}
	defer client.CloseIdleConnections()
	body, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://node-agent"+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("the node agent (%s) is not answering: %w", s.Socket, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("the node agent's answer: %w", err)
	}
	if resp.StatusCode != want {
		var e api.Error
		if json.Unmarshal(data, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(data))
		}
		return nil, fmt.Errorf("the node agent: %s (%d)", e.Message, resp.StatusCode)
	}
	return data, nil
}
