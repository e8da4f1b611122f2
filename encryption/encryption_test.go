package encryption

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func secret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 32)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return base64.StdEncoding.EncodeToString(b)
}

func keyFile(t *testing.T, entries ...[2]string) string {
	t.Helper()
	var sb strings.Builder
	sb.WriteString("keys:\n")
	for _, e := range entries {
		sb.WriteString("- name: " + e[0] + "\n  secret: " + e[1] + "\n")
	}
	p := filepath.Join(t.TempDir(), "keys.yaml")
	require.NoError(t, os.WriteFile(p, []byte(sb.String()), 0o600))
	return p
}

// TestWrapUnwrap: a data key opens with the key it was wrapped with, for
// the Checkpoint it was made for, and with nothing else; each refusal says
// why without quoting a secret.
func TestWrapUnwrap(t *testing.T) {
	s1, s2 := secret(t), secret(t)
	kek, err := LoadKEK(keyFile(t, [2]string{"one", s1}))
	require.NoError(t, err)
	dek, err := NewDEK()
	require.NoError(t, err)
	b := Binding{Namespace: "team-a", UID: "uid-1", CheckpointID: "ckpt-aaaaaaaaaaaaaaaaaaaaaaaa"}
	wrapped, err := kek.Wrap(context.Background(), dek, b)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(wrapped, "v1:one:"))
	assert.NotContains(t, wrapped, base64.RawStdEncoding.EncodeToString(dek))

	got, err := kek.Unwrap(context.Background(), wrapped, b)
	require.NoError(t, err)
	assert.Equal(t, dek, got)

	// Copied into another Checkpoint (another namespace, UID or ID): refused.
	for _, other := range []Binding{
		{Namespace: "team-b", UID: b.UID, CheckpointID: b.CheckpointID},
		{Namespace: b.Namespace, UID: "uid-2", CheckpointID: b.CheckpointID},
		{Namespace: b.Namespace, UID: b.UID, CheckpointID: "ckpt-bbbbbbbbbbbbbbbbbbbbbbbb"},
	} {
		_, err := kek.Unwrap(context.Background(), wrapped, other)
		assert.ErrorContains(t, err, "made for another Checkpoint", other)
	}

	// A key-encryption key of the same name that does not match.
	wrong, err := LoadKEK(keyFile(t, [2]string{"one", s2}))
	require.NoError(t, err)
	_, err = wrong.Unwrap(context.Background(), wrapped, b)
	require.Error(t, err)
	assert.Contains(t, err.Error(), `does not open with key-encryption key "one"`)
	assert.NotContains(t, err.Error(), s1)
	assert.NotContains(t, err.Error(), s2)

	// One of another name.
	other, err := LoadKEK(keyFile(t, [2]string{"two", s2}))
	require.NoError(t, err)
	_, err = other.Unwrap(context.Background(), wrapped, b)
	assert.ErrorContains(t, err, `wrapped with key-encryption key "one", which this server does not hold (it holds two)`)

	// Rotation: the new key first wraps, the old one still unwraps.
	rotated, err := LoadKEK(keyFile(t, [2]string{"two", s2}, [2]string{"one", s1}))
	require.NoError(t, err)
	got, err = rotated.Unwrap(context.Background(), wrapped, b)
	require.NoError(t, err)
	assert.Equal(t, dek, got)
	again, err := rotated.Wrap(context.Background(), dek, b)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(again, "v1:two:"))

	_, err = kek.Unwrap(context.Background(), "", b)
	assert.ErrorIs(t, err, ErrNoKey)
	_, err = kek.Unwrap(context.Background(), "v1:one:AAAA", b)
	assert.ErrorContains(t, err, "damaged")
}

// TestBadKeyFiles: a key file that is not one is refused, never quoted.
func TestBadKeyFiles(t *testing.T) {
	s := secret(t)
	for name, content := range map[string]string{
		"empty":       "keys: []\n",
		"short":       "keys:\n- name: a\n  secret: " + base64.StdEncoding.EncodeToString([]byte("short")) + "\n",
		"not base64":  "keys:\n- name: a\n  secret: '!!!'\n",
		"bad name":    "keys:\n- name: 'a:b'\n  secret: " + s + "\n",
		"twice":       "keys:\n- name: a\n  secret: " + s + "\n- name: a\n  secret: " + s + "\n",
		"unknown key": "keys:\n- name: a\n  secret: " + s + "\n  other: x\n",
		"not yaml":    "{{{" + s,
	} {
		p := filepath.Join(t.TempDir(), "keys.yaml")
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		_, err := LoadKEK(p)
		require.Error(t, err, name)
		assert.NotContains(t, err.Error(), s, name)
	}
	_, err := LoadKEK(filepath.Join(t.TempDir(), "missing"))
	assert.Error(t, err)
}

// TestLayerRoundTrip: a layer decrypts with its data key, checkpoint and
// container only; an altered layer fails at its end.
func TestLayerRoundTrip(t *testing.T) {
	dek, err := NewDEK()
	require.NoError(t, err)
	plain := bytes.Repeat([]byte("memory of the sandbox: token-1234567890\n"), 5000)
	id := "ckpt-aaaaaaaaaaaaaaaaaaaaaaaa"
	enc, err := EncryptLayer(bytes.NewReader(plain), dek, id, "main")
	require.NoError(t, err)
	_, err = enc.Annotations()
	assert.Error(t, err, "no annotations before the end")
	cipherText, err := io.ReadAll(enc)
	require.NoError(t, err)
	assert.Len(t, cipherText, len(plain))
	assert.False(t, bytes.Contains(cipherText, []byte("token-1234567890")))
	ann, err := enc.Annotations()
	require.NoError(t, err)
	desc := ocispec.Descriptor{MediaType: MediaTypeEncryptedLayer, Digest: digest.FromBytes(cipherText), Size: int64(len(cipherText)), Annotations: ann}

	r, err := DecryptLayer(bytes.NewReader(cipherText), desc, dek, id, "main")
	require.NoError(t, err)
	got, err := io.ReadAll(r)
	require.NoError(t, err)
	assert.Equal(t, plain, got)

	other, err := NewDEK()
	require.NoError(t, err)
	_, err = DecryptLayer(bytes.NewReader(cipherText), desc, other, id, "main")
	assert.ErrorIs(t, err, ErrWrongKey, "a wrong key is told before any byte is read")

	altered := append([]byte(nil), cipherText...)
	altered[100] ^= 1
	r, err = DecryptLayer(bytes.NewReader(altered), desc, dek, id, "main")
	require.NoError(t, err)
	_, err = io.ReadAll(r)
	assert.ErrorIs(t, err, ErrWrongKey)

	_, err = DecryptLayer(bytes.NewReader(cipherText), desc, dek, id, "sidecar")
	assert.ErrorContains(t, err, "refused")
	clear := desc
	clear.MediaType = ocispec.MediaTypeImageLayer
	_, err = DecryptLayer(bytes.NewReader(plain), clear, dek, id, "main")
	assert.ErrorIs(t, err, ErrNotEncrypted)
}

// TestRing: a key waited for arrives, one never given times out saying
// so, and a dropped one is gone.
func TestRing(t *testing.T) {
	r := &Ring{}
	dek, err := NewDEK()
	require.NoError(t, err)
	id := "ckpt-aaaaaaaaaaaaaaaaaaaaaaaa"
	got := make(chan []byte)
	go func() {
		k, _ := r.Wait(context.Background(), "team-a", id)
		got <- k
	}()
	require.NoError(t, r.Put("team-a", id, dek))
	assert.Equal(t, dek, <-got)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = r.Wait(ctx, "team-b", id)
	assert.ErrorIs(t, err, ErrNoKeyOnNode, "a key is per namespace")

	r.Drop(id)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel2()
	_, err = r.Wait(ctx2, "team-a", id)
	assert.ErrorIs(t, err, ErrNoKeyOnNode)
	assert.Error(t, r.Put("team-a", id, []byte("short")))
}

func TestIndexMAC(t *testing.T) {
	dek, err := NewDEK()
	require.NoError(t, err)
	const name = "org.criu.checkpoint.container.name"
	m := func(ctr, d string, size int64) ocispec.Descriptor {
		return ocispec.Descriptor{Digest: digest.FromString(d), Size: size, Annotations: map[string]string{name: ctr}}
	}
	manifests := []ocispec.Descriptor{m("main", "a", 10), m("side", "b", 20)}
	mac, err := IndexMAC(dek, "ckpt-1", "team-a", manifests, name)
	require.NoError(t, err)
	require.NoError(t, VerifyIndex(mac, dek, "ckpt-1", "team-a", manifests, name))
	require.NoError(t, VerifyIndex(mac, dek, "ckpt-1", "team-a", []ocispec.Descriptor{manifests[1], manifests[0]}, name),
		"the order of the manifests means nothing")

	other, err := NewDEK()
	require.NoError(t, err)
	for what, verify := range map[string]func() error{
		"no MAC":            func() error { return VerifyIndex("", dek, "ckpt-1", "team-a", manifests, name) },
		"another key":       func() error { return VerifyIndex(mac, other, "ckpt-1", "team-a", manifests, name) },
		"another ID":        func() error { return VerifyIndex(mac, dek, "ckpt-2", "team-a", manifests, name) },
		"another namespace": func() error { return VerifyIndex(mac, dek, "ckpt-1", "team-b", manifests, name) },
		"a manifest less":   func() error { return VerifyIndex(mac, dek, "ckpt-1", "team-a", manifests[:1], name) },
		"another digest": func() error {
			return VerifyIndex(mac, dek, "ckpt-1", "team-a", []ocispec.Descriptor{m("main", "x", 10), manifests[1]}, name)
		},
		"another size": func() error {
			return VerifyIndex(mac, dek, "ckpt-1", "team-a", []ocispec.Descriptor{m("main", "a", 11), manifests[1]}, name)
		},
		"containers swapped": func() error {
			return VerifyIndex(mac, dek, "ckpt-1", "team-a", []ocispec.Descriptor{m("side", "a", 10), m("main", "b", 20)}, name)
		},
		// Field boundaries are unambiguous: "ckpt-1"+"team-a" is not "ckpt-1t"+"eam-a".
		"fields shifted": func() error { return VerifyIndex(mac, dek, "ckpt-1t", "eam-a", manifests, name) },
	} {
		assert.ErrorIs(t, verify(), ErrIndexNotAuthentic, what)
	}
	_, err = IndexMAC([]byte("short"), "ckpt-1", "team-a", manifests, name)
	assert.Error(t, err)
}
