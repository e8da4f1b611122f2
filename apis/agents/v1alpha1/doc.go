// +k8s:deepcopy-gen=package
// +k8s:protobuf-gen=package
// +k8s:conversion-gen=github.com/agents-kruise/checkpoint-apiserver/apis/agents
// +k8s:defaulter-gen=TypeMeta
// +k8s:openapi-gen=true
// +k8s:openapi-model-package=io.kruise.agents.v1alpha1
// +groupName=agents.kruise.io

// Package v1alpha1 is the v1alpha1 version of the agents.kruise.io API: the
// wire form of Checkpoint, with its defaults and conversions to the hub types.
package v1alpha1
