package ociregistry

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

// requestErrors counts the registry's failed requests, in the
// k8s.io/component-base registry of whichever binary talks to it (the
// server's /metrics and the node agent's).
var (
	requestErrors = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "checkpoint", Name: "registry_errors_total",
		Help: "Failed requests to the checkpoint registry, by HTTP method and kind (unreachable, unauthorized, " +
			"not_found, rejected for another 4xx answer, server_error for a 5xx).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"method", "kind"})
	metricsOnce sync.Once
)

func registerMetrics() {
	metricsOnce.Do(func() { legacyregistry.MustRegister(requestErrors) })
}

// errorKind is the kind label of a registry answer's HTTP status (0: no answer).
func errorKind(status int) string {
	switch {
	case status == 0:
		return "unreachable"
	case status == 401 || status == 403:
		return "unauthorized"
	case status == 404:
		return "not_found"
	case status >= 500:
		return "server_error"
	default:
		return "rejected"
	}
}
