package storage

import (
	"fmt"
	"net/url"
	"os"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// EmbeddedEtcd is a single-member etcd running inside this process, keeping
// its data under a directory so that Checkpoints survive a restart.
type EmbeddedEtcd struct {
	etcd *embed.Etcd
	// ClientURL is where the etcd3 storage backend reaches it.
	ClientURL string
}

// StartEmbeddedEtcd starts etcd on loopback ports of its own choosing, with its
// data under dataDir, and waits until it serves.
func StartEmbeddedEtcd(dataDir string, readyTimeout time.Duration) (*EmbeddedEtcd, error) {
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("embedded etcd data dir: %w", err)
	}
	loopback := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg := embed.NewConfig()
	cfg.Name = "checkpoint-apiserver"
	cfg.Dir = dataDir
	cfg.ListenClientUrls = []url.URL{loopback}
	cfg.AdvertiseClientUrls = []url.URL{loopback}
	cfg.ListenPeerUrls = []url.URL{loopback}
	cfg.AdvertisePeerUrls = []url.URL{loopback}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"}
	// Keep the history small: the server reads the latest state only.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "1h"

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", dataDir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd failed: %w", err)
	case <-time.After(readyTimeout):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("embedded etcd not ready after %s", readyTimeout)
	}
	return &EmbeddedEtcd{etcd: e, ClientURL: "http://" + e.Clients[0].Addr().String()}, nil
}

// Stop shuts etcd down and waits until it has.
func (e *EmbeddedEtcd) Stop() {
	e.etcd.Close()
}
