// Package storage holds what the server stores Checkpoints in besides the
// generic etcd3 backend: an embedded etcd for standalone runs.
package storage
