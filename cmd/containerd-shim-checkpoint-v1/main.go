// Command containerd-shim-checkpoint-v1 is containerd's runc shim with
// restores (package restoreruntime): the runtime handler of the
// checkpoint RuntimeClass. The node agent's binary is the same shim once
// installed under this name (checkpoint-node-agent install-runtime).
package main

import "github.com/agents-kruise/checkpoint-apiserver/restoreruntime"

func main() {
	restoreruntime.Main()
}
