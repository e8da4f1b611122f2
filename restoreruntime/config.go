package restoreruntime

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// ConfigEnv names the environment variable (containerd's, which its shims
// inherit) that points at the runtime's configuration file.
const ConfigEnv = "CHECKPOINT_RESTORE_RUNTIME_CONFIG"

// DefaultConfigPath is where the node install writes the configuration.
const DefaultConfigPath = "/etc/checkpoint-apiserver/restore-runtime.json"

// Config is the node's, never a Pod's: nothing in it comes from a container.
type Config struct {
	// ImagesDir holds checkpoints as <namespace>/<checkpoint ID>/<container>/
	// (checkpoint/ with CRIU's images, rootfs-diff.tar), the layout the node
	// agent fills; the runtime only reads it.
	ImagesDir string `json:"imagesDir"`
	// MemImagesDir is the tmpfs the agent fills first, in the same layout,
	// while checkpoints fit its bound ("": none).
	MemImagesDir string `json:"memImagesDir,omitempty"`
	// AgentSocket is the node agent's socket that puts a checkpoint under
	// ImagesDir when asked ("": ImagesDir is read as it is).
	AgentSocket string `json:"agentSocket,omitempty"`
	// Lazy restores through criu lazy-pages (userfaultfd); false: eagerly.
	Lazy bool `json:"lazy"`
	// LogDir keeps CRIU's logs of failed restores (at most LogKeep of them).
	LogDir  string `json:"logDir,omitempty"`
	LogKeep int    `json:"logKeep,omitempty"`
	// CRIU is the criu binary the lazy-pages daemon runs ("": criu on PATH).
	CRIU string `json:"criu,omitempty"`
}

// LoadConfig reads the configuration named by ConfigEnv, or DefaultConfigPath.
func LoadConfig() (Config, error) {
	path := os.Getenv(ConfigEnv)
	if path == "" {
		path = DefaultConfigPath
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("restore runtime configuration: %w", err)
	}
	var cfg Config
	if err := json.Unmarshal(data, &cfg); err != nil {
		return Config{}, fmt.Errorf("restore runtime configuration %s: %w", path, err)
	}
	if !filepath.IsAbs(cfg.ImagesDir) || (cfg.MemImagesDir != "" && !filepath.IsAbs(cfg.MemImagesDir)) {
		return Config{}, errors.New("restore runtime configuration: imagesDir and memImagesDir must be absolute paths")
	}
	if cfg.LogDir == "" {
		cfg.LogDir = filepath.Join(cfg.ImagesDir, ".logs")
	}
	if cfg.LogKeep <= 0 {
		cfg.LogKeep = 20
	}
	return cfg, nil
}
