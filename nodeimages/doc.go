// Package nodeimages is a node's store of checkpoints unpacked for the
// restore runtime: on request over a node-local socket, it resolves a
// checkpoint ID in the Pod's own namespace to its Checkpoint, fetches the
// container's archive (by digest from the checkpoint registry, or from the
// node's containerd), and unpacks CRIU's images and the rootfs diff under
// one bounded directory the runtime reads in place.
package nodeimages
