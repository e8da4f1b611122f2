package checkpoint

import (
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
)

// Event reasons on Checkpoints; where they match one, the Ready condition's.
const (
	EventCapturing     = ReasonCapturing
	EventCaptured      = ReasonCaptured
	EventCaptureFailed = ReasonCaptureFailed
	EventRestored      = "Restored"
	EventRestoreFailed = "RestoreFailed"
	EventStateDeleted  = "StateDeleted"
	EventInterrupted   = ReasonInterrupted
	EventExpired       = "Expired"
)

// Metrics of captures and restores, beside the apiserver's own on /metrics.
var (
	captureDuration = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Namespace: "checkpoint_apiserver", Name: "capture_duration_seconds",
		Help:    "How long captures took, from resolving the target to the state recorded, by result and Ready reason.",
		Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64}, StabilityLevel: metrics.ALPHA,
	}, []string{"result", "reason"})
	captureSize = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Namespace: "checkpoint_apiserver", Name: "capture_size_bytes",
		Help:    "Size of the state successful captures wrote, by result and Ready reason.",
		Buckets: metrics.ExponentialBuckets(1<<20, 4, 8), StabilityLevel: metrics.ALPHA,
	}, []string{"result", "reason"})
	capturePause = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Namespace: "checkpoint_apiserver", Name: "capture_pause_seconds",
		Help:    "How long successful captures kept the sandbox's processes frozen (CRIU's frozen time, summed over its containers), by result and Ready reason.",
		Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8}, StabilityLevel: metrics.ALPHA,
	}, []string{"result", "reason"})
	restoreDuration = metrics.NewHistogramVec(&metrics.HistogramOpts{
		Namespace: "checkpoint_apiserver", Name: "restore_duration_seconds",
		Help:    "How long restores took, until the clone ran, by result.",
		Buckets: []float64{0.25, 0.5, 1, 2, 4, 8, 16, 32}, StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	capturesInFlight = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "checkpoint_apiserver", Name: "captures_in_flight",
		Help: "Captures this replica is running.", StabilityLevel: metrics.ALPHA,
	})
	driverErrors = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "checkpoint_apiserver", Name: "driver_errors_total",
		Help: "Failed driver operations, by operation and kind (the Ready reason a capture would get).", StabilityLevel: metrics.ALPHA,
	}, []string{"operation", "kind"})
	registerOnce sync.Once
)

func registerMetrics() {
	registerOnce.Do(func() {
		legacyregistry.MustRegister(captureDuration, captureSize, capturePause, restoreDuration, capturesInFlight, driverErrors)
	})
}

// reference names a Checkpoint for an Event: by its v1alpha1 kind, which
// kubectl describe looks Events up by.
func reference(cp *agents.Checkpoint) *corev1.ObjectReference {
	return &corev1.ObjectReference{
		APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: "Checkpoint",
		Namespace: cp.Namespace, Name: cp.Name, UID: cp.UID, ResourceVersion: cp.ResourceVersion,
	}
}

// event records an Event on cp, when the Capturer has a recorder.
func (c *Capturer) event(cp *agents.Checkpoint, eventType, reason, format string, args ...interface{}) {
	if c.recorder != nil && cp != nil {
		c.recorder.Eventf(reference(cp), eventType, reason, format, args...)
	}
}
