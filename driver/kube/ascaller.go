package kube

import (
	"slices"
	"strings"

	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// AsCaller returns PodRestorer.AsCaller for a server whose own
// kube-apiserver client configuration is cfg: a client that impersonates
// the caller, which the server's RBAC allows for creating Pods only
// (Kubernetes' constrained impersonation: impersonate:user-info and
// impersonate:serviceaccount, with impersonate-on:<mode>:create on pods).
//
// A member of system:masters, which no constrained impersonation may name
// and which every authorization passes anyway, gets the server's own
// client: the clone carries it as its owner, and the review of marked Pods
// admits the server's.
func AsCaller(cfg *rest.Config, server kubernetes.Interface) func(u user.Info) (kubernetes.Interface, error) {
	return func(u user.Info) (kubernetes.Interface, error) {
		imp, ok := Impersonation(u)
		if !ok {
			return server, nil
		}
		c := rest.CopyConfig(cfg)
		c.Impersonate = imp
		return kubernetes.NewForConfig(c)
	}
}

// Impersonation is how the server acts as u: a service account by its
// name alone (its groups are the kube-apiserver's to set), anyone else
// with their UID, groups and extra. ok is false for system:masters.
func Impersonation(u user.Info) (rest.ImpersonationConfig, bool) {
	if slices.Contains(u.GetGroups(), user.SystemPrivilegedGroup) {
		return rest.ImpersonationConfig{}, false
	}
	if _, _, err := serviceaccount.SplitUsername(u.GetName()); err == nil {
		return rest.ImpersonationConfig{UserName: u.GetName()}, true
	}
	imp := rest.ImpersonationConfig{UserName: u.GetName(), UID: u.GetUID()}
	for _, g := range u.GetGroups() {
		// The kube-apiserver adds system:authenticated to whomever it
		// impersonates; naming it would only need one more right.
		if g != user.AllAuthenticated && g != "" {
			imp.Groups = append(imp.Groups, g)
		}
	}
	for k, v := range u.GetExtra() {
		// Constrained impersonation takes lowercase, domain-prefixed keys
		// with non-empty values only.
		if k != strings.ToLower(k) || !strings.Contains(k, "/") || len(v) == 0 || slices.Contains(v, "") {
			continue
		}
		if imp.Extra == nil {
			imp.Extra = map[string][]string{}
		}
		imp.Extra[k] = v
	}
	return imp, true
}
