//go:build tools

// Package containerd pins the containerd daemon the kubelet nodes of
// hack/local-up.sh run: the newest v2.3 patch, since v2.4 removed CRI's
// restore of a container from a checkpoint image. The server's own Go client
// stays in the main module.
package containerd

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
