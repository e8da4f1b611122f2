//go:build tools

// Package kube pins kube-apiserver and kubectl at k8s.io/kubernetes v1.37.2.
package kube

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
