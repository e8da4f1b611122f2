package v1alpha1

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
)

// Field selectors the server accepts on checkpoints, besides metadata.name and
// metadata.namespace. The registry's GetAttrs must produce the same set.
var selectableFields = map[string]bool{
	"metadata.name":       true,
	"metadata.namespace":  true,
	"spec.podName":        true,
	"spec.sandboxName":    true,
	"status.phase":        true,
	"status.checkpointId": true,
}

func addFieldLabelConversionFuncs(scheme *runtime.Scheme) error {
	return scheme.AddFieldLabelConversionFunc(SchemeGroupVersion.WithKind("Checkpoint"),
		func(label, value string) (string, string, error) {
			if selectableFields[label] {
				return label, value, nil
			}
			return "", "", fmt.Errorf("field label not supported: %s", label)
		})
}
