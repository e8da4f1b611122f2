package v1alpha1

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Field selectors the server accepts on checkpoints and snapshots. The
// registry's GetAttrs must produce the same set. "owner" is the
// agents.kruise.io/owner annotation.
var selectableFields = map[string]bool{
	"owner":               true,
	"metadata.name":       true,
	"metadata.namespace":  true,
	"spec.podName":        true,
	"spec.sandboxName":    true,
	"status.phase":        true,
	"status.checkpointId": true,
}

func addFieldLabelConversionFuncs(scheme *runtime.Scheme) error {
	return AddFieldLabelConversions(scheme, SchemeGroupVersion)
}

// AddFieldLabelConversions accepts the selectable fields of Checkpoint and
// Snapshot in group-version gv (this group's, or crd mode's subresources group).
func AddFieldLabelConversions(scheme *runtime.Scheme, gv schema.GroupVersion) error {
	for _, kind := range []string{"Checkpoint", "Snapshot"} {
		if err := scheme.AddFieldLabelConversionFunc(gv.WithKind(kind),
			func(label, value string) (string, string, error) {
				if selectableFields[label] {
					return label, value, nil
				}
				return "", "", fmt.Errorf("field label not supported: %s", label)
			}); err != nil {
			return err
		}
	}
	return nil
}
