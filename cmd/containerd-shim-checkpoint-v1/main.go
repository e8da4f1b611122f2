// Command containerd-shim-checkpoint-v1 is containerd's runc shim with
// restores (package restoreruntime): the runtime handler of the
// checkpoint RuntimeClass.
package main

import (
	"context"

	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2/manager"
	"github.com/containerd/containerd/v2/pkg/shim"

	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime"
)

func main() {
	restoreruntime.Register()
	shim.RunShim(context.Background(), manager.NewShimManager("io.containerd.checkpoint.v1"))
}
