// Package faults is the fault-injection suite (make test-faults): etcd,
// containerd and the server killed under load, replicas handing over, and
// a mixed load of E2B and Kubernetes API clients. Every test uses the real
// components and asserts that nothing acknowledged is lost and nothing is
// left half done. make soak runs the load test for longer.
package faults
