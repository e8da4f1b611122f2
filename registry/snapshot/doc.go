// Package snapshot is the owner-scoped view over Checkpoints: the snapshots
// resource shows a caller only the Checkpoints it owns (admins see all),
// with the owner filter applied in the server for every verb.
package snapshot
