package apiserver

import (
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// The upgrade's key is an annotation key, and never the clone mark itself
// (which restores memory, where an upgrade restores layers only).
func TestCheckpointIDAnnotationKey(t *testing.T) {
	for key, ok := range map[string]bool{
		"":                               true,
		"agents.kruise.io/checkpoint-id": true,
		"example.com/x":                  true,
		"agents.kruise.io/restore-from":  false,
		"not a key":                      false,
		"a/b/c":                          false,
	} {
		o := NewOptions(io.Discard)
		o.CheckpointIDAnnotationKey = key
		err := o.Validate()
		if ok {
			if err != nil {
				assert.NotContains(t, err.Error(), "--checkpoint-id-annotation-key", key)
			}
			continue
		}
		if assert.Error(t, err, key) {
			assert.Contains(t, err.Error(), "--checkpoint-id-annotation-key", key)
		}
	}
}

// The bytes bound is a quantity, the KMS plugin a unix socket, and node
// agents need a key-encryption key from a file or a KMS.
func TestEncryptionAndBytesOptions(t *testing.T) {
	validate := func(set func(o *Options)) string {
		o := NewOptions(io.Discard)
		set(o)
		if err := o.Validate(); err != nil {
			return err.Error()
		}
		return ""
	}
	assert.Contains(t, validate(func(o *Options) { o.NamespaceCheckpointBytes = "lots" }), "--namespace-checkpoint-bytes")
	assert.Contains(t, validate(func(o *Options) { o.NamespaceCheckpointBytes = "-1Gi" }), "--namespace-checkpoint-bytes")
	assert.NotContains(t, validate(func(o *Options) { o.NamespaceCheckpointBytes = "20Gi" }), "--namespace-checkpoint-bytes")
	o := NewOptions(io.Discard)
	o.NamespaceCheckpointBytes = "20Gi"
	assert.Equal(t, int64(20<<30), o.namespaceBytes())
	assert.Contains(t, validate(func(o *Options) { o.E2BPausedTTL = -time.Hour }), "--e2b-paused-sandbox-ttl")
	assert.NotContains(t, validate(func(o *Options) { o.E2BPausedTTL = 24 * time.Hour }), "--e2b-paused-sandbox-ttl")
	assert.Contains(t, validate(func(o *Options) { o.EncryptionKMSEndpoint = "tcp://127.0.0.1:1" }), "--encryption-kms-endpoint")
	assert.Contains(t, validate(func(o *Options) { o.NodeAgents = true }), "--encryption-key-file or --encryption-kms-endpoint")
	assert.NotContains(t, validate(func(o *Options) {
		o.NodeAgents, o.EncryptionKMSEndpoint = true, "unix:///run/kms.sock"
	}), "--encryption-key-file or --encryption-kms-endpoint")
}
