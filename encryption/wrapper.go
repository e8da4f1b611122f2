package encryption

import (
	"context"
	"fmt"
)

// Wrapper wraps and unwraps checkpoints' data keys with a key-encryption
// key: KEK (keys from a file, a Secret) or KMS (a KMS v2 plugin).
type Wrapper interface {
	// Wrap encrypts dek for b.
	Wrap(ctx context.Context, dek []byte, b Binding) (string, error)
	// Unwrap opens what Wrap made for b; anything else fails.
	Unwrap(ctx context.Context, wrapped string, b Binding) ([]byte, error)
	// Owns says whether wrapped is in this wrapper's format.
	Owns(wrapped string) bool
}

// Chain wraps with its first Wrapper and unwraps with whichever made the
// key: moving from a key file to a KMS plugin (or back) keeps every
// checkpoint readable while both are configured.
type Chain []Wrapper

var _ Wrapper = Chain{}

// Wrap wraps with the first.
func (c Chain) Wrap(ctx context.Context, dek []byte, b Binding) (string, error) {
	return c[0].Wrap(ctx, dek, b)
}

// Unwrap unwraps with the one that owns wrapped.
func (c Chain) Unwrap(ctx context.Context, wrapped string, b Binding) ([]byte, error) {
	if wrapped == "" {
		return nil, fmt.Errorf("%w: checkpoint %s", ErrNoKey, b)
	}
	for _, w := range c {
		if w.Owns(wrapped) {
			return w.Unwrap(ctx, wrapped, b)
		}
	}
	return nil, fmt.Errorf("the data key of checkpoint %s was wrapped by a key-encryption key this server is not configured with", b)
}

// Owns says whether one of the chain owns wrapped.
func (c Chain) Owns(wrapped string) bool {
	for _, w := range c {
		if w.Owns(wrapped) {
			return true
		}
	}
	return false
}
