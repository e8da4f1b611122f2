package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime"
)

func addDefaultingFuncs(scheme *runtime.Scheme) error {
	return RegisterDefaults(scheme)
}

// SetDefaults_CheckpointSpec fills in keepRunning=true and, for an empty
// persistentContents, both memory and filesystem.
func SetDefaults_CheckpointSpec(obj *CheckpointSpec) {
	if obj.KeepRunning == nil {
		keep := true
		obj.KeepRunning = &keep
	}
	if len(obj.PersistentContents) == 0 {
		obj.PersistentContents = []ContentType{ContentMemory, ContentFilesystem}
	}
}
