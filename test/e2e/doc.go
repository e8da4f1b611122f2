// Package e2e tests checkpoint-apiserver as a cluster's users meet it:
// behind a real kube-apiserver's aggregation layer (hack/local-up.sh), with
// delegated authentication and authorization, RBAC and the real kubectl.
package e2e
