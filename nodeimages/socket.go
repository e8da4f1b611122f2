package nodeimages

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
)

// DefaultSocket is where the node agent serves the restore runtime.
const DefaultSocket = "/run/checkpoint-apiserver/restore.sock"

// Handler serves api.Path: the restore runtime's requests.
func (s *Store) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.Path, func(w http.ResponseWriter, r *http.Request) {
		var req api.Request
		data, err := io.ReadAll(io.LimitReader(r.Body, 8<<10))
		if err == nil {
			err = json.Unmarshal(data, &req)
		}
		if err != nil {
			writeJSON(w, http.StatusBadRequest, api.Error{Message: "a restore-images request is JSON: " + err.Error()})
			return
		}
		resp, err := s.Prepare(r.Context(), req)
		if err != nil {
			code := http.StatusServiceUnavailable
			switch {
			case errors.Is(err, ErrNotFound):
				code = http.StatusNotFound
			case errors.Is(err, ErrTooLarge):
				code = http.StatusInsufficientStorage
			case req.Validate() != nil:
				code = http.StatusBadRequest
			}
			klog.FromContext(r.Context()).Info("A restore's checkpoint could not be put on the node", "namespace", req.Namespace,
				"pod", req.Pod, "container", req.Container, "checkpoint", req.CheckpointID, "err", err)
			writeJSON(w, code, api.Error{Message: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, resp)
	})
	mux.HandleFunc("POST "+api.FailurePath, func(w http.ResponseWriter, r *http.Request) {
		var f api.Failure
		data, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
		if err == nil {
			err = json.Unmarshal(data, &f)
		}
		if err == nil {
			err = f.Validate()
		}
		if err != nil {
			writeJSON(w, http.StatusBadRequest, api.Error{Message: "a restore failure is JSON of a valid request: " + err.Error()})
			return
		}
		klog.FromContext(r.Context()).Info("A restore failed on the node", "namespace", f.Namespace, "pod", f.Pod,
			"container", f.Container, "checkpoint", f.CheckpointID, "reason", f.Reason)
		cp, err := s.Lookup.Find(r.Context(), f.Namespace, f.CheckpointID)
		if err != nil {
			writeJSON(w, http.StatusNotFound, api.Error{Message: err.Error()})
			return
		}
		if s.Events != nil {
			s.Events.RestoreFailed(r.Context(), cp, f)
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// Serve serves Handler on the unix socket path (only root may connect)
// until ctx ends.
func (s *Store) Serve(ctx context.Context, path string) error {
	if err := s.Start(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	_ = os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("restore images socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return err
	}
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: time.Minute}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	klog.InfoS("Serving the restore runtime", "socket", path, "images", s.Dir)
	if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
