package apiserver

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"

	utilruntime "k8s.io/apimachinery/pkg/util/runtime"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/install"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
)

var (
	// Scheme knows the agents.kruise.io types, internal and versioned.
	Scheme = runtime.NewScheme()
	// Codecs encodes and decodes them in JSON, YAML, CBOR and protobuf.
	Codecs = serializer.NewCodecFactory(Scheme)
)

// SubresourcesGroupVersion is the group crd mode serves alone.
var SubresourcesGroupVersion = v1alpha1.SubresourcesGroupVersion

var (
	// CRDModeScheme knows the subresources group only: in crd mode this
	// server serves nothing of agents.kruise.io.
	CRDModeScheme = runtime.NewScheme()
	// CRDModeCodecs encodes and decodes it.
	CRDModeCodecs = serializer.NewCodecFactory(CRDModeScheme)
)

func init() {
	install.Install(Scheme)
	addMetaTypes(Scheme)
	installSubresources(CRDModeScheme)
	addMetaTypes(CRDModeScheme)
}

// installSubresources registers the agents types under the subresources
// group, with the same conversions and defaults (they are keyed by type).
func installSubresources(s *runtime.Scheme) {
	internal := schema.GroupVersion{Group: SubresourcesGroupVersion.Group, Version: runtime.APIVersionInternal}
	s.AddKnownTypes(internal, &agents.Checkpoint{}, &agents.CheckpointList{}, &agents.CaptureOptions{},
		&agents.CheckpointRestore{}, &agents.Snapshot{}, &agents.SnapshotList{})
	utilruntime.Must(v1alpha1.AddToSchemeAsSubresources(s))
	utilruntime.Must(v1alpha1.RegisterConversions(s))
	utilruntime.Must(v1alpha1.RegisterDefaults(s))
	utilruntime.Must(s.SetVersionPriority(SubresourcesGroupVersion))
}

func addMetaTypes(s *runtime.Scheme) {
	// Options types (ListOptions, GetOptions ...) are decoded from query
	// parameters as the unversioned v1.
	metav1.AddToGroupVersion(s, schema.GroupVersion{Version: "v1"})
	unversioned := schema.GroupVersion{Group: "", Version: "v1"}
	s.AddUnversionedTypes(unversioned,
		&metav1.Status{},
		&metav1.APIVersions{},
		&metav1.APIGroupList{},
		&metav1.APIGroup{},
		&metav1.APIResourceList{},
	)
}
