// Package containerd is the Driver that captures through containerd's
// checkpoint API with CRIU (memory) and the container's writable-layer diff
// (filesystem), keeping the result as a checkpoint image in containerd's
// content store, and restores new sandboxes from it. It finds pod containers
// by the labels containerd's CRI plugin puts on them, so it works the same on
// a node (containerd namespace k8s.io) and in local runs.
package containerd
