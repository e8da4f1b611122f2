//go:build tools

// Package containerd pins the containerd daemon the kubelet nodes of
// hack/local-up.sh run: the newest v2.4 patch, as shipped (no CRI restore
// from a checkpoint image: clones are restored by this project's restore
// runtime). The server's own Go client stays in the main module.
package containerd

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
