// Package access asks the server's authorizer (a SubjectAccessReview to the
// kube-apiserver) whether a caller may do something the server is about to
// do for it with its own rights.
package access

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// Check returns nil when u may verb resource in namespace (name may be
// empty), and otherwise an error saying who may not do what, with RBAC's
// reason. A nil authorizer allows everything.
func Check(ctx context.Context, a authorizer.Authorizer, u user.Info, verb string, resource schema.GroupVersionResource, namespace, name string) error {
	return CheckSubresource(ctx, a, u, verb, resource, "", namespace, name)
}

// CheckSubresource is Check on a subresource of resource ("": the resource).
func CheckSubresource(ctx context.Context, a authorizer.Authorizer, u user.Info, verb string, resource schema.GroupVersionResource, subresource, namespace, name string) error {
	if a == nil {
		return nil
	}
	decision, reason, err := a.Authorize(ctx, authorizer.AttributesRecord{
		User: u, Verb: verb, Namespace: namespace, APIGroup: resource.Group, APIVersion: resource.Version,
		Resource: resource.Resource, Subresource: subresource, Name: name, ResourceRequest: true,
	})
	if decision == authorizer.DecisionAllow {
		return nil
	}
	what := resource.GroupResource().String()
	if subresource != "" {
		what += "/" + subresource
	}
	msg := fmt.Sprintf("user %q may not %s %s in namespace %q", u.GetName(), verb, what, namespace)
	if reason != "" {
		msg += ": " + reason
	}
	if err != nil {
		msg += fmt.Sprintf(" (%v)", err)
	}
	return errors.New(msg)
}

var pods = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

// CapturePod returns nil when u may have Pod pod of namespace ns captured
// (pod "": any Pod of ns): a capture reads the Pod's memory and files, as
// exec can (get pods, create pods/exec); one with keepRunning false also
// ends it (delete pods).
func CapturePod(ctx context.Context, a authorizer.Authorizer, u user.Info, ns, pod string, keepRunning bool) error {
	if err := Check(ctx, a, u, "get", pods, ns, pod); err != nil {
		return err
	}
	if err := CheckSubresource(ctx, a, u, "create", pods, "exec", ns, pod); err != nil {
		return err
	}
	if !keepRunning {
		return Check(ctx, a, u, "delete", pods, ns, pod)
	}
	return nil
}

// creator is a user as a Checkpoint records its creator.
type creator struct {
	Name   string              `json:"name"`
	UID    string              `json:"uid,omitempty"`
	Groups []string            `json:"groups,omitempty"`
	Extra  map[string][]string `json:"extra,omitempty"`
}

// EncodeUser is u as a Checkpoint records its creator
// (agents.AnnotationCreator), for the capture to check again, with the
// creator's groups, when it runs.
func EncodeUser(u user.Info) string {
	data, err := json.Marshal(creator{Name: u.GetName(), UID: u.GetUID(), Groups: u.GetGroups(), Extra: u.GetExtra()})
	if err != nil { // strings and string slices always encode
		return ""
	}
	return string(data)
}

// DecodeUser reads what EncodeUser wrote.
func DecodeUser(s string) (user.Info, error) {
	var c creator
	if err := json.Unmarshal([]byte(s), &c); err != nil || c.Name == "" {
		return nil, fmt.Errorf("not a recorded creator: %q", s)
	}
	return &user.DefaultInfo{Name: c.Name, UID: c.UID, Groups: c.Groups, Extra: c.Extra}, nil
}
