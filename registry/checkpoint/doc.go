// Package checkpoint is the registry of the checkpoints resource: how
// Checkpoints are stored, validated, stamped and printed, and its status
// subresource.
package checkpoint
