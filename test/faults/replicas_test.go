package faults

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	eventtypes "github.com/containerd/containerd/api/events"
	"github.com/containerd/typeurl/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/generated/clientset/versioned"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// TestLeaderDiesReplicasHandOver runs two replicas against one etcd and
// kube-apiserver, with Checkpoints to capture declaratively, and kills the
// leader: the other replica takes the lifecycle controller over and captures
// every Checkpoint, and containerd checkpoints each exactly once.
func TestLeaderDiesReplicasHandOver(t *testing.T) {
	ctrd := framework.StartContainerd(t, "k8s.io")
	c := framework.LocalUp(t, "--containerd-address="+ctrd.Address, "--declarative-capture-delay=3s")
	port2 := framework.FreePort(t)
	second := []string{"CP_INSTANCE=-2", fmt.Sprintf("CP_PORT=%d", port2)}
	require.NoError(t, c.ScriptWith(second, "start-server"))
	t.Cleanup(func() { _ = c.ScriptWith(second, "stop-server") })
	ports := map[string]int{"checkpoint-apiserver": c.CPPort, "checkpoint-apiserver-2": port2}

	// Every checkpoint image containerd creates from here on: one per
	// container captured.
	ctx, cancel := context.WithCancel(ctrd.Ctx())
	defer cancel()
	events, errs := ctrd.Client.EventService().Subscribe(ctx, `topic=="/images/create"`)
	var mu sync.Mutex
	created := map[string]int{}
	go func() {
		for {
			select {
			case env := <-events:
				v, err := typeurl.UnmarshalAny(env.Event)
				if ev, ok := v.(*eventtypes.ImageCreate); err == nil && ok && strings.HasPrefix(ev.Name, "checkpoint.agents.kruise.io/") {
					mu.Lock()
					created[ev.Name]++
					mu.Unlock()
				}
			case <-errs:
				return
			}
		}
	}()

	var leader string
	c.Eventually("a replica leads", func() bool {
		holder, err := c.Kubectl("get", "lease", "-n", "checkpoint-system", "checkpoint-apiserver-lifecycle", "-o", "jsonpath={.spec.holderIdentity}")
		leader, _, _ = strings.Cut(holder, "_")
		return err == nil && ports[leader] != 0
	})
	survivor := "checkpoint-apiserver"
	if leader == survivor {
		survivor = "checkpoint-apiserver-2"
	}
	t.Logf("%s leads; killing it", leader)

	// Read and write through the survivor's own port: the APIService may point at the dead one.
	cfg := rest.CopyConfig(c.RESTConfig())
	cfg.Host = "https://127.0.0.1:" + strconv.Itoa(ports[survivor])
	client, err := versioned.NewForConfig(cfg)
	require.NoError(t, err)
	c.Must("create", "namespace", ns)
	cps := client.AgentsV1alpha1().Checkpoints(ns)
	const n = 4
	for i := 0; i < n; i++ {
		pod := fmt.Sprintf("sb-%d", i)
		src := ctrd.RunPodContainer(t, ns, pod, "main", framework.CounterScript)
		framework.WaitCounter(t, src.LogPath, 2)
		_, err := cps.Create(context.Background(), &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: pod},
			Spec: v1alpha1.CheckpointSpec{PodName: pod}}, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	// Before the 3 s delay is up: the leader dies with every capture still to do.
	require.NoError(t, syscall.Kill(c.PID(leader), syscall.SIGKILL))
	start := time.Now()

	require.Eventually(t, func() bool {
		l, err := cps.List(context.Background(), metav1.ListOptions{})
		if err != nil {
			return false
		}
		done := 0
		for _, cp := range l.Items {
			require.NotEqual(t, v1alpha1.PhaseFailed, cp.Status.Phase, "%s: %s", cp.Name, cp.Status.Message)
			if cp.Status.Phase == v1alpha1.PhaseSucceeded {
				done++
			}
		}
		return done == n
	}, 2*time.Minute, 500*time.Millisecond, "the new leader captures every Checkpoint")
	t.Logf("all %d captured %s after the leader died", n, time.Since(start).Round(time.Second))
	log, err := os.ReadFile(filepath.Join(c.Dir, survivor+".log"))
	require.NoError(t, err)
	assert.Contains(t, string(log), "Leading the checkpoint lifecycle controller", "%s took over", survivor)

	time.Sleep(3 * time.Second) // a second capture, if there were one, would show by now
	l, err := cps.List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	for _, cp := range l.Items {
		name := "checkpoint.agents.kruise.io/" + cp.Status.CheckpointID + "/main"
		assert.Equal(t, 1, created[name], "containerd made %s's image once", cp.Name)
	}
	assert.Len(t, created, n, "no other checkpoint image was made: %v", created)
}
