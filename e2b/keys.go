package e2b

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"regexp"
	"sync"
	"time"

	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"
)

// Identity is who an API key acts as.
type Identity struct {
	User string
	Team string
}

// keyShape is what E2B SDKs send: e2b_ and 40 lowercase hex digits.
var keyShape = regexp.MustCompile(`^e2b_[0-9a-f]{40}$`)

type keysFile struct {
	Keys []struct {
		Key    string `json:"key,omitempty"`
		SHA256 string `json:"sha256,omitempty"`
		User   string `json:"user"`
		Team   string `json:"team"`
	} `json:"keys"`
}

// KeyStore maps API keys to identities. It keeps only SHA-256 digests of
// keys, never the keys, and reloads its file when the file changes.
type KeyStore struct {
	path string

	mu       sync.RWMutex
	byDigest map[[32]byte]Identity
	stamp    string
}

// LoadKeys reads a keys file (YAML or JSON).
func LoadKeys(path string) (*KeyStore, error) {
	ks := &KeyStore{path: path}
	if err := ks.reload(); err != nil {
		return nil, err
	}
	return ks, nil
}

// ParseKeys builds the digest table of a keys file's content.
func ParseKeys(data []byte) (map[[32]byte]Identity, error) {
	var f keysFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("keys file: %w", err)
	}
	out := map[[32]byte]Identity{}
	for i, k := range f.Keys {
		if k.User == "" || k.Team == "" {
			return nil, fmt.Errorf("keys[%d]: user and team are required", i)
		}
		var digest [32]byte
		switch {
		case k.Key != "" && k.SHA256 != "":
			return nil, fmt.Errorf("keys[%d]: give key or sha256, not both", i)
		case k.Key != "":
			if !keyShape.MatchString(k.Key) {
				return nil, fmt.Errorf("keys[%d]: a key is e2b_ followed by 40 lowercase hex digits", i)
			}
			digest = sha256.Sum256([]byte(k.Key))
		case k.SHA256 != "":
			b, err := hex.DecodeString(k.SHA256)
			if err != nil || len(b) != 32 {
				return nil, fmt.Errorf("keys[%d]: sha256 must be 64 hex digits", i)
			}
			copy(digest[:], b)
		default:
			return nil, fmt.Errorf("keys[%d]: key or sha256 is required", i)
		}
		if _, dup := out[digest]; dup {
			return nil, fmt.Errorf("keys[%d]: the same key is listed twice", i)
		}
		out[digest] = Identity{User: k.User, Team: k.Team}
	}
	return out, nil
}

func (ks *KeyStore) reload() error {
	info, err := os.Stat(ks.path)
	if err != nil {
		return err
	}
	stamp := fmt.Sprintf("%d/%d", info.ModTime().UnixNano(), info.Size())
	ks.mu.RLock()
	same := stamp == ks.stamp
	ks.mu.RUnlock()
	if same {
		return nil
	}
	data, err := os.ReadFile(ks.path)
	if err != nil {
		return err
	}
	table, err := ParseKeys(data)
	if err != nil {
		return err
	}
	ks.mu.Lock()
	ks.byDigest, ks.stamp = table, stamp
	ks.mu.Unlock()
	return nil
}

// Watch reloads the file when it changes, until ctx ends.
func (ks *KeyStore) Watch(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			ks.refresh()
		}
	}
}

// refresh reloads the file if it changed. A file that is gone or turns bad
// fails closed: every key is refused until it is good again, since keeping
// the last table would keep a key its operator meant to revoke.
func (ks *KeyStore) refresh() {
	if err := ks.reload(); err != nil {
		ks.mu.Lock()
		was := ks.byDigest != nil
		ks.byDigest, ks.stamp = nil, ""
		ks.mu.Unlock()
		if was {
			klog.ErrorS(err, "E2B keys file unreadable: every API key is refused until it is fixed", "path", ks.path)
		}
	}
}

var errBadKey = errors.New("invalid API key")

// Lookup returns the identity of key.
func (ks *KeyStore) Lookup(key string) (Identity, error) {
	if !keyShape.MatchString(key) {
		return Identity{}, errBadKey
	}
	ks.mu.RLock()
	id, ok := ks.byDigest[sha256.Sum256([]byte(key))]
	ks.mu.RUnlock()
	if !ok {
		return Identity{}, errBadKey
	}
	return id, nil
}
