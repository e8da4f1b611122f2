// Package restorekeys gives a node agent the data key of a checkpoint a Pod
// bound to its node is about to restore, and nothing else: the server
// watches Pods marked for restore, opens the data key kept in the
// Checkpoint their annotation names (in their own namespace), and hands it
// to that node's agent over its mutually authenticated channel. No agent
// ever asks for a key, and no key is given for a Pod that is not bound to
// the agent's node and marked to restore that checkpoint.
package restorekeys

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/agent"
	"github.com/agents-kruise/checkpoint-apiserver/encryption"
	"github.com/agents-kruise/checkpoint-apiserver/nodeimages"
	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
)

// Giver hands a key to a node's agent, or says why there is none (agent.Client).
type Giver interface {
	GiveKey(ctx context.Context, node string, pod agent.PodRef, id string, key []byte) error
	RefuseKey(ctx context.Context, node string, pod agent.PodRef, id, reason string) error
}

// Lookup finds a namespace's Succeeded Checkpoint by ID (nodeimages.APILookup).
type Lookup interface {
	Find(ctx context.Context, ns, id string) (nodeimages.Checkpoint, error)
}

// Distributor gives keys to the agents of the nodes Pods restore on.
type Distributor struct {
	Client kubernetes.Interface
	Lookup Lookup
	KEK    encryption.Wrapper
	// Keys holds the wrapped data keys (encryption.SecretKeys).
	Keys interface {
		Get(ctx context.Context, b encryption.Binding) (encryption.Record, error)
	}
	Agents Giver
	// Recorder, when set, says on the Pod why no key could be given.
	Recorder record.EventRecorder
	// Again is how soon a Pod still waiting is given its key again (an
	// agent that restarted lost it; default 20 s).
	Again time.Duration

	mu    sync.Mutex
	given map[types.UID]time.Time
}

// EventKeyFailed is the reason of the Event on a Pod that gets no key.
const EventKeyFailed = "CheckpointKeyFailed"

// Run watches Pods until ctx ends.
func (d *Distributor) Run(ctx context.Context) {
	if d.Again == 0 {
		d.Again = 20 * time.Second
	}
	factory := informers.NewSharedInformerFactoryWithOptions(d.Client, d.Again, informers.WithTransform(slim))
	pods := factory.Core().V1().Pods()
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "restore-keys"})
	defer queue.ShutDown()
	enqueue := func(obj any) {
		if p, ok := obj.(*corev1.Pod); ok && waiting(p) {
			queue.Add(p.Namespace + "/" + p.Name)
		}
	}
	_, _ = pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
	})
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), pods.Informer().HasSynced) {
		return
	}
	klog.FromContext(ctx).Info("Giving restoring nodes their checkpoints' data keys")
	go func() {
		for {
			key, quit := queue.Get()
			if quit {
				return
			}
			func() {
				defer queue.Done(key)
				defer utilruntime.HandleCrash()
				ns, name, _ := cache.SplitMetaNamespaceKey(key)
				p, err := pods.Lister().Pods(ns).Get(name)
				if err != nil || !waiting(p) {
					queue.Forget(key)
					return
				}
				if err := d.give(ctx, p); err != nil {
					queue.AddRateLimited(key)
					return
				}
				queue.Forget(key)
			}()
		}
	}()
	<-ctx.Done()
}

// waiting: p is marked for restore, bound to a node, and not all running.
func waiting(p *corev1.Pod) bool {
	if p.Annotations[api.AnnotationRestoreFrom] == "" || p.Spec.NodeName == "" || p.DeletionTimestamp != nil {
		return false
	}
	if p.Status.Phase == corev1.PodPending || p.Status.Phase == "" {
		return true
	}
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, st := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if st.State.Waiting != nil {
			return true
		}
	}
	return false
}

// give hands p's node the key of the checkpoint p restores, unless it got
// it a moment ago.
func (d *Distributor) give(ctx context.Context, p *corev1.Pod) error {
	d.mu.Lock()
	if d.given == nil {
		d.given = map[types.UID]time.Time{}
	}
	now := time.Now()
	for uid, at := range d.given {
		if now.Sub(at) > 10*d.Again {
			delete(d.given, uid)
		}
	}
	if at, ok := d.given[p.UID]; ok && now.Sub(at) < d.Again {
		d.mu.Unlock()
		return nil
	}
	d.mu.Unlock()
	id := p.Annotations[api.AnnotationRestoreFrom]
	logger := klog.FromContext(ctx).WithValues("pod", klog.KObj(p), "node", p.Spec.NodeName, "checkpoint", id)
	if !api.ValidCheckpointID(id) {
		return nil // the runtime refuses it, saying why
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cp, err := d.Lookup.Find(cctx, p.Namespace, id)
	if err != nil {
		logger.V(2).Info("No Checkpoint to give the key of", "err", err)
		return err
	}
	b := encryption.Binding{Namespace: p.Namespace, UID: cp.UID, CheckpointID: id}
	rec, err := d.Keys.Get(cctx, b)
	var key []byte
	if err == nil {
		key, err = d.KEK.Unwrap(ctx, rec.Wrapped, b)
	}
	ref := agent.PodRef{Namespace: p.Namespace, Name: p.Name, UID: string(p.UID)}
	if err != nil {
		logger.Info("Could not open a checkpoint's data key", "err", err)
		msg := fmt.Sprintf("checkpoint %s cannot be decrypted: %v", id, err)
		d.event(p, msg)
		// The node's restore fails now, saying why, rather than waiting.
		if rerr := d.Agents.RefuseKey(cctx, p.Spec.NodeName, ref, id, msg); rerr != nil {
			logger.Info("Could not tell the node agent why there is no key", "err", rerr)
		}
		return err
	}
	if err := d.Agents.GiveKey(cctx, p.Spec.NodeName, ref, id, key); err != nil {
		logger.Info("Could not give the node agent a checkpoint's data key", "err", err)
		return err
	}
	d.mu.Lock()
	d.given[p.UID] = time.Now()
	d.mu.Unlock()
	logger.V(2).Info("Gave the node agent the checkpoint's data key")
	return nil
}

func (d *Distributor) event(p *corev1.Pod, msg string) {
	if d.Recorder != nil {
		d.Recorder.Event(p, corev1.EventTypeWarning, EventKeyFailed, msg)
	}
}

// slim keeps of a Pod what the distributor reads: a cluster's Pods are many.
func slim(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{
		TypeMeta: p.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			DeletionTimestamp: p.DeletionTimestamp},
		Spec: corev1.PodSpec{NodeName: p.Spec.NodeName},
		Status: corev1.PodStatus{Phase: p.Status.Phase,
			ContainerStatuses: p.Status.ContainerStatuses, InitContainerStatuses: p.Status.InitContainerStatuses},
	}
	if id := p.Annotations[api.AnnotationRestoreFrom]; id != "" {
		out.Annotations = map[string]string{api.AnnotationRestoreFrom: id}
	}
	return out, nil
}
