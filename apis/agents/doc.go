// +k8s:deepcopy-gen=package
// +groupName=agents.kruise.io

// Package agents holds the internal (hub) types of the agents.kruise.io API
// group. Every served version converts to and from these; the registry,
// validation and strategies work on them only.
package agents
