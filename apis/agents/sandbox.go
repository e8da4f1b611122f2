package agents

import (
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// KindSandbox is OpenKruise Agents' Sandbox (agents.kruise.io/v1alpha1, a
// CRD in crd mode): the controller owner of the Pods of its sandboxes.
const KindSandbox = "Sandbox"

// SandboxController is the Sandbox among refs that controls their object,
// if one does.
func SandboxController(refs []metav1.OwnerReference) (metav1.OwnerReference, bool) {
	for _, ref := range refs {
		group, _, _ := strings.Cut(ref.APIVersion, "/")
		if ref.Kind == KindSandbox && group == GroupName && ref.Controller != nil && *ref.Controller {
			return ref, true
		}
	}
	return metav1.OwnerReference{}, false
}
