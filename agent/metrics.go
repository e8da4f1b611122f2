package agent

import (
	"strconv"
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

// The agent's metrics, on its /metrics (for the server's identities and
// --metrics-user), in the k8s.io/component-base registry.
var (
	requests = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "checkpoint_node_agent", Name: "requests_total",
		Help: "Requests to the node agent, by path and HTTP status code.", StabilityLevel: metrics.ALPHA,
	}, []string{"path", "code"})
	captureSeconds = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Namespace: "checkpoint_node_agent", Name: "capture_duration_seconds",
		Help:    "How long the node's captures took until durable (CRIU, and with a registry the push into it), by result.",
		Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32}, StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	swept = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "checkpoint_node_agent", Name: "swept_total",
		Help: "Checkpoints removed from the node by the agent's sweep: orphaned, or evicted from the cache.", StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
	metricsOnce sync.Once
)

func registerMetrics() {
	metricsOnce.Do(func() {
		legacyregistry.MustRegister(requests, captureSeconds, swept)
	})
}

func result(err error) string {
	if err != nil {
		return "failure"
	}
	return "success"
}

func code(c int) string { return strconv.Itoa(c) }
