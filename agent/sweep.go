package agent

import (
	"context"
	"sort"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
)

// checkpoints is the resource whose objects own node state, served by the
// checkpoint server (aggregated) or by OpenKruise Agents' CRD (crd mode).
var checkpoints = schema.GroupVersionResource{Group: agents.GroupName, Version: "v1alpha1", Resource: "checkpoints"}

// SweepConfig is the agent's own cleaning of its node.
type SweepConfig struct {
	// Checkpoints lists the cluster's Checkpoints (the agent's own rights: list checkpoints).
	Checkpoints dynamic.Interface
	// Interval is how often the node is swept, and how old state must be
	// before it is an orphan (0: never).
	Interval time.Duration
	// CacheMaxBytes bounds the captured state the node keeps of
	// checkpoints the registry holds; beyond it the oldest copies go (a
	// later clone here pulls them again). 0: unbounded.
	CacheMaxBytes int64
}

// Sizer is a driver that can tell how much each checkpoint takes on the node.
type Sizer interface {
	Sizes(ctx context.Context) (map[string]int64, error)
}

// RunSweep sweeps the node every Interval until ctx ends.
func (s *Server) RunSweep(ctx context.Context, cfg SweepConfig) {
	if cfg.Interval <= 0 || cfg.Checkpoints == nil {
		return
	}
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := s.sweep(ctx, cfg, time.Now()); err != nil {
			klog.FromContext(ctx).Error(err, "Sweeping the node's checkpoint state")
		}
	}, cfg.Interval)
}

// sweep deletes the node's state of checkpoints no live Checkpoint owns
// (deleted, Failed, or left by a capture that died) and their unpacked
// copies, once older than the interval, then trims the cache of registry-held checkpoints to its
// bound, oldest first.
func (s *Server) sweep(ctx context.Context, cfg SweepConfig, now time.Time) error {
	states, err := s.cfg.Driver.States(ctx)
	if err != nil {
		return err
	}
	var held map[string]time.Time
	if s.cfg.Images != nil {
		held = s.cfg.Images.Held()
	}
	if len(states) == 0 && len(held) == 0 {
		return nil
	}
	list, err := cfg.Checkpoints.Resource(checkpoints).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	live, shipped := map[string]bool{}, map[string]bool{}
	for _, cp := range list.Items {
		phase, _, _ := unstructured.NestedString(cp.Object, "status", "phase")
		image, _, _ := unstructured.NestedString(cp.Object, "status", "image")
		id := agents.CheckpointID(cp.GetUID())
		if phase != string(agents.PhaseFailed) && phase != string(agents.PhaseTerminating) && cp.GetDeletionTimestamp() == nil {
			live[id] = true
		}
		if phase == string(agents.PhaseSucceeded) && image != "" {
			shipped[id] = true
		}
	}
	logger := klog.FromContext(ctx)
	if s.cfg.Images != nil {
		// Unpacked copies (in clear, on this node) of checkpoints that are
		// gone: their delete may have found this agent down.
		for id, used := range held {
			if live[id] || now.Sub(used) < cfg.Interval {
				continue
			}
			if err := s.cfg.Images.Remove(id); err != nil {
				return err
			}
			swept.WithLabelValues("orphan").Inc()
			logger.Info("Swept an unpacked copy of a checkpoint that is gone", "id", id)
		}
	}
	for id, made := range states {
		if live[id] || now.Sub(made) < cfg.Interval {
			continue
		}
		if err := s.cfg.Driver.Delete(ctx, id); err != nil {
			return err
		}
		delete(states, id)
		swept.WithLabelValues("orphan").Inc()
		logger.Info("Swept orphaned checkpoint state from the node", "id", id, "age", now.Sub(made).Round(time.Second))
	}
	sizer, ok := s.cfg.Driver.(Sizer)
	if cfg.CacheMaxBytes <= 0 || !ok {
		return nil
	}
	sizes, err := sizer.Sizes(ctx)
	if err != nil {
		return err
	}
	var total int64
	var evictable []string
	for id, n := range sizes {
		total += n
		if shipped[id] {
			evictable = append(evictable, id)
		}
	}
	sort.Slice(evictable, func(i, j int) bool { return states[evictable[i]].Before(states[evictable[j]]) })
	for _, id := range evictable {
		if total <= cfg.CacheMaxBytes {
			break
		}
		if err := s.cfg.Driver.Delete(ctx, id); err != nil {
			return err
		}
		total -= sizes[id]
		swept.WithLabelValues("evicted").Inc()
		logger.Info("Evicted a checkpoint from the node's cache (the registry keeps it)", "id", id, "bytes", sizes[id])
	}
	return nil
}
