// Package restoreruntime is what the checkpoint restore runtime adds to
// containerd's runc shim: a container whose Pod is marked
// agents.kruise.io/restore-from is created from its checkpoint (CRIU
// images a Source puts on the node, the rootfs diff applied, a CRIU
// configuration this package writes) and, when asked, restored lazily
// behind a watched criu lazy-pages daemon. Every other container, and
// every other call, is runc's shim unchanged.
package restoreruntime
