//go:build tools

// Package checkpointctl pins checkpointctl, a test tool: the e2e tests check
// with it that a checkpoint image made here reads as the kubelet's,
// CRI-O's and containerd's checkpoint archives do. The server never imports it.
package checkpointctl

import (
	_ "github.com/checkpoint-restore/checkpointctl"
)
