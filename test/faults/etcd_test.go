package faults

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// retriable says whether err is an answer a client should retry: the
// server or its storage was briefly unavailable, or the connection broke.
func retriable(err error) bool {
	var netErr net.Error
	var urlErr *url.Error
	return apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsServiceUnavailable(err) ||
		apierrors.IsTooManyRequests(err) || apierrors.IsInternalError(err) ||
		errors.As(err, &netErr) || errors.As(err, &urlErr)
}

// outcomes records what each client request got.
type outcomes struct {
	mu        sync.Mutex
	created   []string // acknowledged creates
	captured  map[string]string
	ok, retry map[string]int
	bad       []string // failures that are not retriable
	samples   []string // a few retriable ones, for the log
}

func (o *outcomes) record(op string, err error) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case err == nil:
		o.ok[op]++
		return true
	case retriable(err):
		o.retry[op]++
		if len(o.samples) < 5 {
			o.samples = append(o.samples, fmt.Sprintf("%s: %v", op, err))
		}
	default:
		o.bad = append(o.bad, fmt.Sprintf("%s: %v", op, err))
	}
	return false
}

// TestEtcdKilledUnderLoad kills etcd (SIGKILL) while clients create,
// capture and list, and starts it again on the same data: every request
// either succeeded, and its object is there afterwards, or failed with a
// retriable error; the server recovers without a restart of its own; no
// Checkpoint is left Creating, and every acknowledged capture has its image.
func TestEtcdKilledUnderLoad(t *testing.T) {
	etcd := framework.StartEtcd(t)
	e := startEnv(t, "--etcd-servers="+etcd.URL)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 0; i < 2; i++ {
		src := e.ctrd.RunPodContainer(t, ns, fmt.Sprintf("sb-%d", i), "main", framework.CounterScript)
		framework.WaitCounter(t, src.LogPath, 2)
	}

	o := &outcomes{captured: map[string]string{}, ok: map[string]int{}, retry: map[string]int{}}
	var wg sync.WaitGroup
	client := func(name string, f func(i int)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				f(i)
			}
		}()
	}
	for w := 0; w < 4; w++ {
		client("create", func(i int) {
			name := fmt.Sprintf("c-%d-%d", w, i)
			_, err := e.cps().Create(context.Background(), &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: v1alpha1.CheckpointSpec{PodName: "sb-0"}}, metav1.CreateOptions{})
			if o.record("create", err) {
				o.mu.Lock()
				o.created = append(o.created, name)
				o.mu.Unlock()
			}
			time.Sleep(20 * time.Millisecond)
		})
	}
	for w := 0; w < 2; w++ {
		client("capture", func(i int) {
			name := fmt.Sprintf("k-%d-%d", w, i)
			_, err := e.cps().Create(context.Background(), &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: v1alpha1.CheckpointSpec{PodName: fmt.Sprintf("sb-%d", w)}}, metav1.CreateOptions{})
			if !o.record("create", err) {
				time.Sleep(100 * time.Millisecond)
				return
			}
			o.mu.Lock()
			o.created = append(o.created, name)
			o.mu.Unlock()
			cp, err := e.cps().Capture(context.Background(), name, &v1alpha1.CaptureOptions{}, metav1.CreateOptions{})
			if o.record("capture", err) && cp.Status.Phase == v1alpha1.PhaseSucceeded {
				o.mu.Lock()
				o.captured[name] = cp.Status.CheckpointID
				o.mu.Unlock()
			}
		})
	}
	client("list", func(int) {
		_, err := e.cps().List(context.Background(), metav1.ListOptions{})
		o.record("list", err)
		time.Sleep(50 * time.Millisecond)
	})

	time.Sleep(4 * time.Second)
	etcd.Kill(t)
	t.Log("etcd killed")
	time.Sleep(5 * time.Second)
	etcd.Start(t)
	t.Log("etcd started again")
	time.Sleep(6 * time.Second)
	cancel()
	wg.Wait()

	// The same server process answers again.
	require.Eventually(t, func() bool { return e.srv.Healthy(context.Background()) == nil }, 60*time.Second, 250*time.Millisecond,
		"the server recovers without a restart")
	require.Empty(t, o.bad, "every failure is retriable")
	t.Logf("succeeded: %v; failed with a retriable error: %v; %d creates acknowledged, %d captures succeeded",
		o.ok, o.retry, len(o.created), len(o.captured))
	for _, s := range o.samples {
		t.Logf("retriable: %s", s)
	}
	require.NotZero(t, o.ok["capture"], "captures ran")

	list, err := e.cps().List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	have := map[string]v1alpha1.Checkpoint{}
	for _, cp := range list.Items {
		have[cp.Name] = cp
	}
	for _, name := range o.created {
		assert.Contains(t, have, name, "an acknowledged create is stored")
	}
	for name, id := range o.captured {
		assert.Equal(t, v1alpha1.PhaseSucceeded, have[name].Status.Phase, name)
		assert.Equal(t, 1, e.images(t, id), "the image of acknowledged capture %s", name)
	}
	require.Eventually(t, func() bool {
		list, err := e.cps().List(context.Background(), metav1.ListOptions{FieldSelector: "status.phase=Creating"})
		return err == nil && len(list.Items) == 0
	}, 3*time.Minute, time.Second, "no Checkpoint is left Creating")
}
