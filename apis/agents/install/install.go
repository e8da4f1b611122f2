// Package install registers the agents.kruise.io group, internal and
// versioned, into a scheme.
package install

import (
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
)

// Install adds the internal and v1alpha1 types, defaults and conversions to scheme,
// with v1alpha1 as the preferred version.
func Install(scheme *runtime.Scheme) {
	utilruntime.Must(agents.AddToScheme(scheme))
	utilruntime.Must(v1alpha1.AddToScheme(scheme))
	utilruntime.Must(scheme.SetVersionPriority(v1alpha1.SchemeGroupVersion))
}
