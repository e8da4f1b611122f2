package agents

import (
	"crypto/sha256"
	"encoding/hex"

	"k8s.io/apimachinery/pkg/types"
)

// CheckpointID is the driver ID of a Checkpoint's captured state. It is
// derived from the UID, so that state left by an interrupted capture can be
// found and removed (by the server and by every node agent).
func CheckpointID(uid types.UID) string {
	sum := sha256.Sum256([]byte(uid))
	return "ckpt-" + hex.EncodeToString(sum[:12])
}
