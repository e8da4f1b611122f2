package restoreruntime

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	"github.com/containerd/containerd/v2/pkg/shim"
)

// ShimName is the shim binary's name; a binary that runs under that name
// is the shim (the node agent's binary is, once installed as it).
const ShimName = "containerd-shim-checkpoint-v1"

// IsShim says whether this process was started as the shim.
func IsShim() bool { return filepath.Base(os.Args[0]) == ShimName }

// Main runs the shim: runc's, with Service in place of its task service.
func Main() {
	Register()
	shim.RunShim(context.Background(), manager.NewShimManager("io.containerd.checkpoint.v1"))
}

// Install puts this binary on the node as the shim, in binDir, and writes
// the runtime's configuration to configPath: what a node's containerd
// needs besides its own configuration (a runtime whose runtime_path is
// <binDir>/containerd-shim-checkpoint-v1, pod_annotations
// ["agents.kruise.io/restore-from"]). Both are replaced atomically.
func Install(binDir, configPath string, cfg Config) error {
	if !filepath.IsAbs(binDir) || !filepath.IsAbs(configPath) || !filepath.IsAbs(cfg.ImagesDir) {
		return errors.New("install the restore runtime: the bin directory, the configuration and the images directory must be absolute paths")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if err := copyAtomic(self, filepath.Join(binDir, ShimName), 0o755); err != nil {
		return fmt.Errorf("install the restore runtime's shim: %w", err)
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	if err := writeAtomic(configPath, data, 0o644); err != nil {
		return fmt.Errorf("write the restore runtime's configuration: %w", err)
	}
	if cfg.MemImagesDir != "" {
		if err := os.MkdirAll(cfg.MemImagesDir, 0o700); err != nil {
			return err
		}
	}
	return os.MkdirAll(cfg.ImagesDir, 0o700)
}

func copyAtomic(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return replace(dst, mode, func(w io.Writer) error { _, err := io.Copy(w, in); return err })
}

func writeAtomic(dst string, data []byte, mode os.FileMode) error {
	return replace(dst, mode, func(w io.Writer) error { _, err := w.Write(data); return err })
}

// replace writes dst anew through a temporary file renamed over it, so
// that a shim starting meanwhile finds the old or the new file, whole.
func replace(dst string, mode os.FileMode, write func(io.Writer) error) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+"-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}
