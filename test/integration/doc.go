// Package integration tests the checkpoint-apiserver binary end to end
// against a real (embedded) etcd, through the generated clientset, raw HTTP
// and the real kubectl.
package integration
