package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupName is the API group served by this server.
const GroupName = "agents.kruise.io"

// SchemeGroupVersion is the group version of these types.
var SchemeGroupVersion = schema.GroupVersion{Group: GroupName, Version: "v1alpha1"}

// Resource takes an unqualified resource and returns a group-qualified GroupResource.
func Resource(resource string) schema.GroupResource {
	return SchemeGroupVersion.WithResource(resource).GroupResource()
}

var (
	// SchemeBuilder registers the v1alpha1 types, their defaults, conversions
	// and field label conversions. Generated code adds to localSchemeBuilder.
	SchemeBuilder      runtime.SchemeBuilder
	localSchemeBuilder = &SchemeBuilder
	// AddToScheme adds v1alpha1 to a scheme.
	AddToScheme = localSchemeBuilder.AddToScheme
)

func init() {
	// The generated defaulters and conversions register themselves through
	// localSchemeBuilder in their own init functions.
	localSchemeBuilder.Register(addKnownTypes, addDefaultingFuncs, addFieldLabelConversionFuncs)
}

func addKnownTypes(scheme *runtime.Scheme) error {
	addKnownTypesAs(scheme, SchemeGroupVersion)
	return nil
}

// addKnownTypesAs registers these types under group-version gv.
func addKnownTypesAs(scheme *runtime.Scheme, gv schema.GroupVersion) {
	scheme.AddKnownTypes(gv,
		&Checkpoint{},
		&CheckpointList{},
		&CaptureOptions{},
		&CheckpointRestore{},
		&Snapshot{},
		&SnapshotList{},
	)
	metav1.AddToGroupVersion(scheme, gv)
}

// SubresourcesGroupVersion is the group crd mode serves alone: the capture
// and restore subresources and the snapshots view over OpenKruise Agents'
// Checkpoint custom resources, whose own group-version is the CRD's.
var SubresourcesGroupVersion = schema.GroupVersion{Group: "subresources.agents.kruise.io", Version: "v1alpha1"}

// AddToSchemeAsSubresources registers these types, with their field label
// conversions, under SubresourcesGroupVersion.
func AddToSchemeAsSubresources(scheme *runtime.Scheme) error {
	addKnownTypesAs(scheme, SubresourcesGroupVersion)
	return AddFieldLabelConversions(scheme, SubresourcesGroupVersion)
}
