package apiserver

import (
	"io"
	"testing"

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
