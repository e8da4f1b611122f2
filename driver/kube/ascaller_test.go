package kube

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/authentication/user"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/rest"
	k8stesting "k8s.io/client-go/testing"

	"github.com/agents-kruise/checkpoint-apiserver/driver"
)

// TestClonesAreCreatedAsTheirCaller: the clone Pod's create goes through
// the caller's client, never the server's; the server's only reads and
// cleans up.
func TestClonesAreCreatedAsTheirCaller(t *testing.T) {
	server := fake.NewSimpleClientset()
	server.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		t.Error("the server created the clone Pod with its own rights")
		return false, nil, nil
	})
	callers := fake.NewSimpleClientset()
	var asked user.Info
	// The caller's creates land where the server reads (one API).
	callers.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		obj := a.(k8stesting.CreateAction).GetObject()
		return true, obj, server.Tracker().Create(a.GetResource(), obj, a.GetNamespace())
	})
	kubelet(callers, "")
	r := &PodRestorer{Client: server, Preparer: prepared(t), Authorizer: allowOnly("alice"),
		AsCaller: func(u user.Info) (kubernetes.Interface, error) { asked = u; return callers, nil }}
	ctx := genericapirequest.WithUser(context.Background(), &user.DefaultInfo{Name: "alice", Groups: []string{"team-a", user.AllAuthenticated}})
	_, err := r.Restore(ctx, "ckpt-1", driver.RestoreRequest{Namespace: "ns", Name: "clone"})
	require.NoError(t, err)
	require.NotNil(t, asked)
	assert.Equal(t, "alice", asked.GetName())
}

func TestImpersonation(t *testing.T) {
	imp, ok := Impersonation(&user.DefaultInfo{Name: "alice", UID: "u1", Groups: []string{"team-a", user.AllAuthenticated},
		Extra: map[string][]string{"example.com/scopes": {"x"}, "Bad-Key": {"y"}, "example.com/empty": {""}}})
	require.True(t, ok)
	assert.Equal(t, rest.ImpersonationConfig{UserName: "alice", UID: "u1", Groups: []string{"team-a"},
		Extra: map[string][]string{"example.com/scopes": {"x"}}}, imp, "her groups and extra, as constrained impersonation takes them")

	imp, ok = Impersonation(&user.DefaultInfo{Name: "system:serviceaccount:ns:sa", Groups: []string{"system:serviceaccounts", "system:serviceaccounts:ns"},
		Extra: map[string][]string{"authentication.kubernetes.io/pod-name": {"p"}}})
	require.True(t, ok)
	assert.Equal(t, rest.ImpersonationConfig{UserName: "system:serviceaccount:ns:sa"}, imp, "a service account by its name alone")

	_, ok = Impersonation(&user.DefaultInfo{Name: "admin", Groups: []string{user.SystemPrivilegedGroup}})
	assert.False(t, ok, "system:masters is never impersonated")
}
