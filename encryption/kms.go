package encryption

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"k8s.io/apiserver/pkg/storage/value/encrypt/envelope/kmsv2"
	kmsservice "k8s.io/kms/pkg/service"
)

// kmsPrefix marks a data key wrapped by a KMS v2 plugin: kms2:<name>:<base64 JSON>.
const kmsPrefix = "kms2:"

// KMS wraps data keys with a KMS v2 plugin, the gRPC service on a unix
// socket that the kube-apiserver's KMS v2 encryption calls: the
// key-encryption key never leaves the KMS. What it encrypts is the data
// key behind its Binding, so a wrapped key moved to another Checkpoint
// decrypts, and is then refused.
type KMS struct {
	name string
	svc  kmsservice.Service
}

// NewKMS connects to the KMS v2 plugin at endpoint (unix:///path), known
// to operators as name (as in an EncryptionConfiguration). Calls wait for
// the plugin up to timeout.
func NewKMS(ctx context.Context, name, endpoint string, timeout time.Duration) (*KMS, error) {
	if !keyName.MatchString(name) {
		return nil, fmt.Errorf("KMS plugin name %q: want letters, digits, '.', '_' or '-', at most 63", name)
	}
	svc, err := kmsv2.NewGRPCService(ctx, endpoint, name, timeout)
	if err != nil {
		return nil, fmt.Errorf("KMS plugin %s: %w", name, err)
	}
	return &KMS{name: name, svc: svc}, nil
}

// kmsWrapped is what a wrapped key holds: the plugin's answer.
type kmsWrapped struct {
	KeyID       string            `json:"keyID"`
	Ciphertext  []byte            `json:"ciphertext"`
	Annotations map[string][]byte `json:"annotations,omitempty"`
}

// Owns says whether wrapped was made by a KMS plugin.
func (k *KMS) Owns(wrapped string) bool { return strings.HasPrefix(wrapped, kmsPrefix) }

// Status asks the plugin whether it is healthy.
func (k *KMS) Status(ctx context.Context) error {
	st, err := k.svc.Status(ctx)
	if err != nil {
		return fmt.Errorf("KMS plugin %s: %w", k.name, err)
	}
	if st.Healthz != "ok" || st.Version != "v2" && st.Version != "v2beta1" {
		return fmt.Errorf("KMS plugin %s: healthz %q, version %q (want ok, v2)", k.name, st.Healthz, st.Version)
	}
	return nil
}

// Wrap has the plugin encrypt dek behind b.
func (k *KMS) Wrap(ctx context.Context, dek []byte, b Binding) (string, error) {
	if len(dek) != DEKSize {
		return "", fmt.Errorf("a data key has %d bytes, not %d", DEKSize, len(dek))
	}
	uid := make([]byte, 16)
	if _, err := rand.Read(uid); err != nil {
		return "", err
	}
	resp, err := k.svc.Encrypt(ctx, hex.EncodeToString(uid), append(append(b.aad(), 0), dek...))
	if err != nil {
		return "", fmt.Errorf("KMS plugin %s could not wrap the data key of checkpoint %s: %v", k.name, b, err)
	}
	data, err := json.Marshal(kmsWrapped{KeyID: resp.KeyID, Ciphertext: resp.Ciphertext, Annotations: resp.Annotations})
	if err != nil {
		return "", err
	}
	return kmsPrefix + k.name + ":" + base64.RawStdEncoding.EncodeToString(data), nil
}

// Unwrap has the plugin decrypt a key it wrapped, and checks it is b's.
func (k *KMS) Unwrap(ctx context.Context, wrapped string, b Binding) ([]byte, error) {
	name, data, err := cutWrapped(wrapped, kmsPrefix, b, "was not wrapped by a KMS plugin")
	if err != nil {
		return nil, err
	}
	if name != k.name {
		return nil, fmt.Errorf("the data key of checkpoint %s was wrapped by KMS plugin %q; this server uses %q", b, name, k.name)
	}
	raw, err := base64.RawStdEncoding.DecodeString(data)
	var w kmsWrapped
	if err == nil {
		err = json.Unmarshal(raw, &w)
	}
	if err != nil {
		return nil, fmt.Errorf("the data key of checkpoint %s is damaged", b)
	}
	uid := make([]byte, 16)
	if _, err := rand.Read(uid); err != nil {
		return nil, err
	}
	plain, err := k.svc.Decrypt(ctx, hex.EncodeToString(uid), &kmsservice.DecryptRequest{Ciphertext: w.Ciphertext, KeyID: w.KeyID, Annotations: w.Annotations})
	if err != nil {
		return nil, fmt.Errorf("the data key of checkpoint %s does not open with KMS plugin %q (key %q): %v", b, k.name, w.KeyID, err)
	}
	dek, ok := bytes.CutPrefix(plain, append(b.aad(), 0))
	if !ok || len(dek) != DEKSize {
		return nil, fmt.Errorf("the data key of checkpoint %s was made for another Checkpoint: refused", b)
	}
	return dek, nil
}
