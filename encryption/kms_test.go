package encryption

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	kmsservice "k8s.io/kms/pkg/service"
)

// testKMS is a stand-in for a KMS: a KMS v2 plugin (the real gRPC service
// of k8s.io/kms) whose key-encryption key is one AES-256-GCM key in memory.
type testKMS struct {
	keyID string
	aead  cipher.AEAD
}

func newTestKMS(t *testing.T, keyID string) *testKMS {
	key := make([]byte, 32)
	_, err := rand.Read(key)
	require.NoError(t, err)
	block, err := aes.NewCipher(key)
	require.NoError(t, err)
	aead, err := cipher.NewGCM(block)
	require.NoError(t, err)
	return &testKMS{keyID: keyID, aead: aead}
}

func (k *testKMS) Encrypt(_ context.Context, _ string, data []byte) (*kmsservice.EncryptResponse, error) {
	nonce := make([]byte, k.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return &kmsservice.EncryptResponse{Ciphertext: k.aead.Seal(nonce, nonce, data, nil), KeyID: k.keyID,
		Annotations: map[string][]byte{"kms.example/version": []byte("1")}}, nil
}

func (k *testKMS) Decrypt(_ context.Context, _ string, req *kmsservice.DecryptRequest) ([]byte, error) {
	if req.KeyID != k.keyID || string(req.Annotations["kms.example/version"]) != "1" || len(req.Ciphertext) < k.aead.NonceSize() {
		return nil, errors.New("not this KMS's key")
	}
	n := k.aead.NonceSize()
	return k.aead.Open(nil, req.Ciphertext[:n], req.Ciphertext[n:], nil)
}

func (k *testKMS) Status(context.Context) (*kmsservice.StatusResponse, error) {
	return &kmsservice.StatusResponse{Version: "v2", Healthz: "ok", KeyID: k.keyID}, nil
}

// servePlugin serves kms as a KMS v2 plugin on a unix socket until stop.
func servePlugin(t *testing.T, kms *testKMS) (endpoint string, stop func()) {
	dir, err := os.MkdirTemp("", "kms")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "kms.sock")
	svc := kmsservice.NewGRPCService(sock, 10*time.Second, kms)
	go func() { _ = svc.ListenAndServe() }()
	require.Eventually(t, func() bool { _, err := os.Stat(sock); return err == nil }, 10*time.Second, 10*time.Millisecond)
	t.Cleanup(svc.Close)
	return "unix://" + sock, svc.Close
}

// TestKMSPlugin: data keys wrapped by a KMS v2 plugin open only through
// that plugin's key, only for the Checkpoint they were made for; a key
// file's keys still open what they wrapped (moving to a KMS).
func TestKMSPlugin(t *testing.T) {
	ctx := context.Background()
	endpoint, _ := servePlugin(t, newTestKMS(t, "key-1"))
	kms, err := NewKMS(ctx, "test-kms", endpoint, 10*time.Second)
	require.NoError(t, err)
	require.NoError(t, kms.Status(ctx))

	dek, err := NewDEK()
	require.NoError(t, err)
	b := Binding{Namespace: "team-a", UID: "u1", CheckpointID: "ckpt-1"}
	wrapped, err := kms.Wrap(ctx, dek, b)
	require.NoError(t, err)
	assert.Regexp(t, `^kms2:test-kms:`, wrapped)
	assert.NotContains(t, wrapped, string(dek))
	got, err := kms.Unwrap(ctx, wrapped, b)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(dek, got))

	for _, other := range []Binding{{Namespace: "team-b", UID: "u1", CheckpointID: "ckpt-1"}, {Namespace: "team-a", UID: "u2", CheckpointID: "ckpt-1"},
		{Namespace: "team-a", UID: "u1", CheckpointID: "ckpt-2"}} {
		_, err := kms.Unwrap(ctx, wrapped, other)
		assert.ErrorContains(t, err, "made for another Checkpoint", "%+v", other)
	}

	// The same plugin name with another key (a KMS that lost or rotated
	// away the key): it does not open, and says so.
	otherEndpoint, _ := servePlugin(t, newTestKMS(t, "key-2"))
	other, err := NewKMS(ctx, "test-kms", otherEndpoint, 10*time.Second)
	require.NoError(t, err)
	_, err = other.Unwrap(ctx, wrapped, b)
	assert.ErrorContains(t, err, `does not open with KMS plugin "test-kms"`)
	renamed, err := NewKMS(ctx, "another", endpoint, 10*time.Second)
	require.NoError(t, err)
	_, err = renamed.Unwrap(ctx, wrapped, b)
	assert.ErrorContains(t, err, `wrapped by KMS plugin "test-kms"`)

	// Moving from a key file: the chain wraps with the plugin, and the
	// file's key still opens what it wrapped.
	kek, err := NewKEK(keyFileOf(t, "file-key"))
	require.NoError(t, err)
	old, err := kek.Wrap(ctx, dek, b)
	require.NoError(t, err)
	chain := Chain{kms, kek}
	got, err = chain.Unwrap(ctx, old, b)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(dek, got))
	again, err := chain.Wrap(ctx, dek, b)
	require.NoError(t, err)
	assert.True(t, kms.Owns(again), "new keys are the plugin's")
	_, err = Chain{kek}.Unwrap(ctx, again, b)
	assert.ErrorContains(t, err, "not configured with", "without the plugin, its keys do not open")

	// The plugin down: the call fails within its timeout, saying which plugin.
	downEndpoint, stop := servePlugin(t, newTestKMS(t, "key-3"))
	down, err := NewKMS(ctx, "down", downEndpoint, time.Second)
	require.NoError(t, err)
	stop()
	_, err = down.Wrap(ctx, dek, b)
	assert.ErrorContains(t, err, "KMS plugin down could not wrap")
	_, err = NewKMS(ctx, "bad name!", endpoint, time.Second)
	assert.Error(t, err)
}

func keyFileOf(t *testing.T, name string) KeyFile {
	var f KeyFile
	f.Keys = append(f.Keys, struct {
		Name   string `json:"name"`
		Secret string `json:"secret"`
	}{Name: name, Secret: secret(t)})
	return f
}
