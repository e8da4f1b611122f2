package apiserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/wait"
	coordinationclient "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

// Each replica holds a Lease of its own in the leader-election namespace,
// as kube-apiservers hold their identity Leases in kube-system: held by this
// process's incarnation and renewed every replicaLeaseRenew. The leader
// reads it to tell a capture another replica still runs from one whose
// process is gone (restarted, or its Pod deleted), instead of waiting out
// the longest a capture may take.
const (
	replicaLeasePrefix   = "checkpoint-apiserver-replica-"
	replicaLeaseLabel    = "agents.kruise.io/replica-lease"
	replicaLeaseDuration = 30 * time.Second
	replicaLeaseRenew    = 10 * time.Second
	// Leases of replicas not renewed for this long (Pods long deleted) are removed.
	replicaLeaseGC = time.Hour
	// Every this many renewals, a replica removes such Leases.
	replicaLeaseGCEvery = 60
)

// replicaLeases renews this replica's Lease and reads the others'.
type replicaLeases struct {
	leases                          coordinationclient.LeasesGetter
	namespace, replica, incarnation string
	now                             func() time.Time
	// renewed says this replica's Lease was written: Leases work here.
	renewed atomic.Bool
}

func newReplicaLeases(leases coordinationclient.LeasesGetter, namespace, replica, incarnation string) *replicaLeases {
	return &replicaLeases{leases: leases, namespace: namespace, replica: replica, incarnation: incarnation, now: time.Now}
}

// replicaLeaseName is the Lease of replica: its name when that makes a
// valid object name, else a digest of it.
func replicaLeaseName(replica string) string {
	name := replicaLeasePrefix + replica
	if len(validation.IsDNS1123Subdomain(name)) == 0 {
		return name
	}
	sum := sha256.Sum256([]byte(replica))
	return replicaLeasePrefix + hex.EncodeToString(sum[:8])
}

// Run renews the Lease until ctx ends.
func (r *replicaLeases) Run(ctx context.Context) {
	n := 0
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := r.renew(ctx); err != nil {
			klog.FromContext(ctx).Error(err, "Renewing this replica's Lease", "lease", klog.KRef(r.namespace, replicaLeaseName(r.replica)))
		}
		if n%replicaLeaseGCEvery == 0 {
			r.collect(ctx)
		}
		n++
	}, replicaLeaseRenew)
}

func (r *replicaLeases) renew(ctx context.Context) error {
	client := r.leases.Leases(r.namespace)
	now := metav1.NewMicroTime(r.now())
	name := replicaLeaseName(r.replica)
	lease, err := client.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = client.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.namespace, Labels: map[string]string{replicaLeaseLabel: "true"},
				Annotations: map[string]string{"agents.kruise.io/replica": r.replica}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(r.incarnation), LeaseDurationSeconds: ptr.To(int32(replicaLeaseDuration / time.Second)),
				AcquireTime: &now, RenewTime: &now},
		}, metav1.CreateOptions{})
	} else if err == nil {
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != r.incarnation {
			lease.Spec.HolderIdentity, lease.Spec.AcquireTime = ptr.To(r.incarnation), &now
		}
		lease.Spec.RenewTime = &now
		lease.Spec.LeaseDurationSeconds = ptr.To(int32(replicaLeaseDuration / time.Second))
		_, err = client.Update(ctx, lease, metav1.UpdateOptions{})
	}
	if err == nil {
		r.renewed.Store(true)
	}
	return err
}

// collect removes the Leases of replicas gone for replicaLeaseGC.
func (r *replicaLeases) collect(ctx context.Context) {
	client := r.leases.Leases(r.namespace)
	list, err := client.List(ctx, metav1.ListOptions{LabelSelector: replicaLeaseLabel + "=true"})
	if err != nil {
		return
	}
	for _, l := range list.Items {
		if l.Name == replicaLeaseName(r.replica) || l.Spec.RenewTime == nil || r.now().Sub(l.Spec.RenewTime.Time) < replicaLeaseGC {
			continue
		}
		err := client.Delete(ctx, l.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &l.ResourceVersion}})
		if err == nil {
			klog.FromContext(ctx).Info("Removed the Lease of a replica gone long ago", "lease", klog.KObj(&l))
		}
	}
}

// Alive implements checkpoint.ReplicaLiveness: replica's incarnation runs
// while its Lease names it and was renewed within its duration. A missing
// Lease tells only once the capture is older than two durations (its
// replica may not have written it yet); nothing tells while this replica's
// own Lease was never written (Leases may not work here).
func (r *replicaLeases) Alive(ctx context.Context, replica, incarnation string, started time.Time) (alive, known bool, why string) {
	if !r.renewed.Load() {
		return false, false, ""
	}
	name := replicaLeaseName(replica)
	lease, err := r.leases.Leases(r.namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return false, !started.IsZero() && r.now().Sub(started) > 2*replicaLeaseDuration, "it holds no Lease " + name
	case err != nil:
		return false, false, ""
	}
	spec := lease.Spec
	if spec.HolderIdentity == nil || *spec.HolderIdentity != incarnation {
		return false, true, "it restarted since: its Lease " + name + " is another process's"
	}
	if spec.RenewTime == nil || spec.LeaseDurationSeconds == nil {
		return false, false, ""
	}
	expires := spec.RenewTime.Add(time.Duration(*spec.LeaseDurationSeconds) * time.Second)
	if r.now().After(expires) {
		return false, true, "its Lease " + name + " expired at " + expires.UTC().Format(time.RFC3339)
	}
	return true, true, ""
}
