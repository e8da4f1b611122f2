package restorekeys

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/agents-kruise/checkpoint-apiserver/agent"
	"github.com/agents-kruise/checkpoint-apiserver/encryption"
	"github.com/agents-kruise/checkpoint-apiserver/nodeimages"
	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
)

const id = "ckpt-aaaaaaaaaaaaaaaaaaaaaaaa"

type oneCheckpoint struct{ ns, uid string }

func (o oneCheckpoint) Find(_ context.Context, ns, want string) (nodeimages.Checkpoint, error) {
	if ns != o.ns || want != id {
		return nodeimages.Checkpoint{}, fmt.Errorf("%w: %s/%s", nodeimages.ErrNotFound, ns, want)
	}
	return nodeimages.Checkpoint{Namespace: ns, Name: "cp", UID: o.uid}, nil
}

type keyMap map[string]string

func (k keyMap) Get(_ context.Context, b encryption.Binding) (encryption.Record, error) {
	w, ok := k[b.Namespace+"/"+b.UID+"/"+b.CheckpointID]
	if !ok {
		return encryption.Record{}, fmt.Errorf("%w: %s", encryption.ErrNoKey, b)
	}
	return encryption.Record{Wrapped: w}, nil
}

type given struct {
	node, pod, reason string
	key               []byte
}

type agents struct {
	mu  sync.Mutex
	got []given
}

func (a *agents) GiveKey(_ context.Context, node string, pod agent.PodRef, _ string, key []byte) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.got = append(a.got, given{node: node, pod: pod.Namespace + "/" + pod.Name + "/" + pod.UID, key: key})
	return nil
}

func (a *agents) RefuseKey(_ context.Context, node string, pod agent.PodRef, _ string, reason string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.got = append(a.got, given{node: node, pod: pod.Namespace + "/" + pod.Name + "/" + pod.UID, reason: reason})
	return nil
}

func (a *agents) calls() []given {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]given(nil), a.got...)
}

func kek(t *testing.T, name string) *encryption.KEK {
	t.Helper()
	b := make([]byte, 32)
	_, err := rand.Read(b)
	require.NoError(t, err)
	k, err := encryption.NewKEK(encryption.KeyFile{Keys: []struct {
		Name   string `json:"name"`
		Secret string `json:"secret"`
	}{{Name: name, Secret: base64.StdEncoding.EncodeToString(b)}}})
	require.NoError(t, err)
	return k
}

func pod(name, node string, phase corev1.PodPhase, restoreFrom string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: name, UID: types.UID("pod-uid-" + name)},
		Spec: corev1.PodSpec{NodeName: node}, Status: corev1.PodStatus{Phase: phase}}
	if restoreFrom != "" {
		p.Annotations = map[string]string{api.AnnotationRestoreFrom: restoreFrom}
	}
	return p
}

// TestKeysGoToTheRestoringNodeOnly: the key of the checkpoint a Pod
// restores goes to the node it is bound to, once it is; nothing goes for
// a Pod that restores nothing, is not bound, or runs; a key that does not
// open (another key-encryption key) is refused on the node, saying why,
// and in an Event on the Pod.
func TestKeysGoToTheRestoringNodeOnly(t *testing.T) {
	k := kek(t, "one")
	dek, err := encryption.NewDEK()
	require.NoError(t, err)
	b := encryption.Binding{Namespace: "team-a", UID: "cp-uid", CheckpointID: id}
	wrapped, err := k.Wrap(context.Background(), dek, b)
	require.NoError(t, err)
	pods := []*corev1.Pod{
		pod("clone", "node-2", corev1.PodPending, id),
		pod("unbound", "", corev1.PodPending, id),
		pod("plain", "node-1", corev1.PodPending, ""),
		pod("running", "node-1", corev1.PodRunning, id),
		pod("other-checkpoint", "node-1", corev1.PodPending, "ckpt-bbbbbbbbbbbbbbbbbbbbbbbb"),
	}
	client := fake.NewSimpleClientset()
	for _, p := range pods {
		_, err := client.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	a := &agents{}
	d := &Distributor{Client: client, Lookup: oneCheckpoint{ns: "team-a", uid: "cp-uid"}, KEK: k,
		Keys: keyMap{"team-a/cp-uid/" + id: wrapped}, Agents: a, Again: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go d.Run(ctx)
	require.Eventually(t, func() bool { return len(a.calls()) > 0 }, 10*time.Second, 10*time.Millisecond)
	time.Sleep(200 * time.Millisecond) // what else would come, comes
	calls := a.calls()
	require.Len(t, calls, 1, "%+v", calls)
	assert.Equal(t, given{node: "node-2", pod: "team-a/clone/pod-uid-clone", key: dek}, calls[0])

	// Bound later: given then.
	p := pods[1].DeepCopy()
	p.Spec.NodeName = "node-1"
	_, err = client.CoreV1().Pods("team-a").Update(ctx, p, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(a.calls()) == 2 }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, given{node: "node-1", pod: "team-a/unbound/pod-uid-unbound", key: dek}, a.calls()[1])

	// Another key-encryption key of the same name: refused, with the reason.
	rec := record.NewFakeRecorder(10)
	wrong := &agents{}
	d2 := &Distributor{Client: client, Lookup: oneCheckpoint{ns: "team-a", uid: "cp-uid"}, KEK: kek(t, "one"),
		Keys: keyMap{"team-a/cp-uid/" + id: wrapped}, Agents: wrong, Recorder: rec, Again: time.Hour}
	require.Error(t, d2.give(ctx, pods[0]))
	calls = wrong.calls()
	require.Len(t, calls, 1)
	assert.Nil(t, calls[0].key)
	assert.Contains(t, calls[0].reason, `does not open with key-encryption key "one"`)
	event := <-rec.Events
	assert.True(t, strings.HasPrefix(event, "Warning "+EventKeyFailed), event)

	// A Checkpoint whose key was destroyed (deleted): refused.
	gone := &agents{}
	d3 := &Distributor{Client: client, Lookup: oneCheckpoint{ns: "team-a", uid: "cp-uid"}, KEK: k, Keys: keyMap{}, Agents: gone, Again: time.Hour}
	require.Error(t, d3.give(ctx, pods[0]))
	require.Len(t, gone.calls(), 1)
	assert.Contains(t, gone.calls()[0].reason, "has no data key")
}
