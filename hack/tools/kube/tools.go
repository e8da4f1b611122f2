//go:build tools

// Package kube pins kube-apiserver, kube-controller-manager (its namespace
// controller finishes namespace deletion), kube-scheduler, the kubelet (real
// nodes for hack/local-up.sh) and kubectl at k8s.io/kubernetes v1.37.2.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
