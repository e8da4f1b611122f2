// Package e2b is the E2B-compatible HTTP front: real E2B SDKs create, list
// and delete snapshots and clone sandboxes from them here. Each API key maps
// to a user and a team (the team is the namespace); every call is made to
// this server as that user, so validation, owner stamping, authorization and
// audit are those of the Kubernetes API.
package e2b
