package encryption

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Ring is a node agent's data keys, in memory only, each for a while: the
// server gives a key for a checkpoint a Pod on the node is about to
// restore, and the capturing agent keeps the key of its capture for its
// own unpack. A key the ring does not have is waited for.
type Ring struct {
	// TTL is how long a key is kept after it was last given (default 10 min).
	TTL time.Duration

	mu      sync.Mutex
	keys    map[string]held
	changed chan struct{}
}

type held struct {
	key     []byte
	refused string
	expires time.Time
}

func ringKey(namespace, id string) string { return namespace + "/" + id }

// Put keeps checkpoint id's data key, for restores in namespace.
func (r *Ring) Put(namespace, id string, key []byte) error {
	if len(key) != DEKSize {
		return fmt.Errorf("a data key has %d bytes, not %d", DEKSize, len(key))
	}
	ttl := r.TTL
	if ttl == 0 {
		ttl = 10 * time.Minute
	}
	r.set(namespace, id, held{key: append([]byte(nil), key...), expires: time.Now().Add(ttl)})
	return nil
}

// Refuse records why the server gives no key for checkpoint id in
// namespace: a restore waiting for it fails at once with that reason, for
// a while (the server may be set right and give it after all).
func (r *Ring) Refuse(namespace, id, reason string) {
	r.set(namespace, id, held{refused: reason, expires: time.Now().Add(30 * time.Second)})
}

func (r *Ring) set(namespace, id string, h held) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.keys == nil {
		r.keys = map[string]held{}
	}
	now := time.Now()
	for k, old := range r.keys {
		if now.After(old.expires) {
			delete(r.keys, k)
		}
	}
	r.keys[ringKey(namespace, id)] = h
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
}

// ErrRefused: the server said why it gives no key.
var ErrRefused = errors.New("the checkpoint server gives no data key")

// ErrNoKeyOnNode: the server gave this node no key for the checkpoint.
var ErrNoKeyOnNode = errors.New("no data key for the checkpoint reached this node")

// Wait returns checkpoint id's key for namespace, waiting for it until
// ctx ends.
func (r *Ring) Wait(ctx context.Context, namespace, id string) ([]byte, error) {
	for {
		r.mu.Lock()
		h, ok := r.keys[ringKey(namespace, id)]
		if ok && time.Now().Before(h.expires) {
			r.mu.Unlock()
			if h.refused != "" {
				return nil, fmt.Errorf("%w: %s", ErrRefused, h.refused)
			}
			return h.key, nil
		}
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: checkpoint %s of namespace %s (the server gives one for a Pod bound here and marked to restore it)",
				ErrNoKeyOnNode, id, namespace)
		}
	}
}

// Drop forgets checkpoint id's key, in every namespace.
func (r *Ring) Drop(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.keys {
		if strings.HasSuffix(k, "/"+id) {
			delete(r.keys, k)
		}
	}
}
