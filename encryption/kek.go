// Package encryption keeps checkpoints' memory encrypted outside the nodes.
//
// Each checkpoint has a data key of its own (DEK), made by the server when
// the capture starts. Its layers are encrypted with keys derived from it
// (AES-256-CTR with HMAC-SHA256, the OCI layer encryption ocicrypt
// writes), so the registry holds ciphertext only. The DEK is wrapped
// (AES-256-GCM) by a key-encryption key the operator supplies (KeyFile, a
// Secret), bound to the Checkpoint it was made for (namespace, UID, ID),
// and kept in that Checkpoint alone: deleting the Checkpoint destroys it,
// whatever blobs a registry keeps. Only the server unwraps it, and hands
// it to the node agent of a node that is about to restore that checkpoint.
package encryption

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"sigs.k8s.io/yaml"
)

// DEKSize is a data key's size: AES-256.
const DEKSize = 32

// NewDEK makes a checkpoint's data key.
func NewDEK() ([]byte, error) {
	k := make([]byte, DEKSize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("make a data key: %w", err)
	}
	return k, nil
}

// KeyFile is the key-encryption key configuration, in the shape of the
// kube-apiserver's aesgcm provider: the first key wraps new data keys,
// every key unwraps (rotation: put the new key first, keep the old one
// until the Checkpoints it wrapped are gone).
//
//	keys:
//	- name: key-2026-12
//	  secret: <base64 of 32 random bytes>
type KeyFile struct {
	Keys []struct {
		Name   string `json:"name"`
		Secret string `json:"secret"`
	} `json:"keys"`
}

var keyName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// KEK wraps and unwraps data keys.
type KEK struct {
	primary string
	aeads   map[string]cipher.AEAD
	names   []string
}

// LoadKEK reads a KeyFile. Its errors never quote a secret.
func LoadKEK(path string) (*KEK, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key-encryption keys: %w", err)
	}
	var f KeyFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("key-encryption keys %s: not a key file (keys: [{name, secret}])", path)
	}
	return NewKEK(f)
}

// NewKEK checks the keys of f.
func NewKEK(f KeyFile) (*KEK, error) {
	if len(f.Keys) == 0 {
		return nil, errors.New("key-encryption keys: none given")
	}
	k := &KEK{aeads: map[string]cipher.AEAD{}}
	for i, key := range f.Keys {
		if !keyName.MatchString(key.Name) {
			return nil, fmt.Errorf("key-encryption keys: keys[%d].name %q: want letters, digits, '.', '_' or '-', at most 63", i, key.Name)
		}
		if _, dup := k.aeads[key.Name]; dup {
			return nil, fmt.Errorf("key-encryption keys: keys[%d].name %q is given twice", i, key.Name)
		}
		secret, err := base64.StdEncoding.DecodeString(key.Secret)
		if err != nil || len(secret) != 32 {
			return nil, fmt.Errorf("key-encryption keys: keys[%d] (%s): the secret must be 32 bytes, base64 encoded", i, key.Name)
		}
		block, err := aes.NewCipher(secret)
		if err != nil {
			return nil, err
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		k.aeads[key.Name] = aead
		k.names = append(k.names, key.Name)
	}
	k.primary = f.Keys[0].Name
	return k, nil
}

// Binding is what a data key is bound to: it unwraps for that Checkpoint only.
type Binding struct {
	Namespace, UID, CheckpointID string
}

func (b Binding) aad() []byte {
	return []byte("agents.kruise.io/checkpoint-key/v1\x00" + b.Namespace + "\x00" + b.UID + "\x00" + b.CheckpointID)
}

func (b Binding) String() string { return b.Namespace + "/" + b.CheckpointID }

const wrappedPrefix = "v1:"

// Owns says whether wrapped is in KEK's format.
func (k *KEK) Owns(wrapped string) bool { return strings.HasPrefix(wrapped, wrappedPrefix) }

// Wrap encrypts dek for b with the primary key: v1:<key name>:<base64>.
func (k *KEK) Wrap(_ context.Context, dek []byte, b Binding) (string, error) {
	if len(dek) != DEKSize {
		return "", fmt.Errorf("a data key has %d bytes, not %d", DEKSize, len(dek))
	}
	aead := k.aeads[k.primary]
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	sealed := aead.Seal(nonce, nonce, dek, b.aad())
	return wrappedPrefix + k.primary + ":" + base64.RawStdEncoding.EncodeToString(sealed), nil
}

// ErrNoKey: the Checkpoint holds no data key (it was not captured through
// the registry, or not by this server).
var ErrNoKey = errors.New("the checkpoint has no data key")

// cutWrapped splits a wrapped key prefix<name>:<data>; otherwise it says
// the key notOurs.
func cutWrapped(wrapped, prefix string, b Binding, notOurs string) (name, data string, err error) {
	if wrapped == "" {
		return "", "", fmt.Errorf("%w: checkpoint %s", ErrNoKey, b)
	}
	rest, ok := strings.CutPrefix(wrapped, prefix)
	name, data, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 {
		return "", "", fmt.Errorf("the data key of checkpoint %s %s", b, notOurs)
	}
	return name, data, nil
}

// Unwrap opens a wrapped data key for b.
func (k *KEK) Unwrap(_ context.Context, wrapped string, b Binding) ([]byte, error) {
	name, data, err := cutWrapped(wrapped, wrappedPrefix, b, "is not one this server wraps")
	if err != nil {
		return nil, err
	}
	aead, ok := k.aeads[name]
	if !ok {
		return nil, fmt.Errorf("the data key of checkpoint %s was wrapped with key-encryption key %q, which this server does not hold (it holds %s)",
			b, name, strings.Join(k.names, ", "))
	}
	sealed, err := base64.RawStdEncoding.DecodeString(data)
	if err != nil || len(sealed) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("the data key of checkpoint %s is damaged", b)
	}
	dek, err := aead.Open(nil, sealed[:aead.NonceSize()], sealed[aead.NonceSize():], b.aad())
	if err != nil {
		return nil, fmt.Errorf("the data key of checkpoint %s does not open with key-encryption key %q: "+
			"that key is not the one it was wrapped with, or the key was made for another Checkpoint", b, name)
	}
	return dek, nil
}
