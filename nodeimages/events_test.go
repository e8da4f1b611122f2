package nodeimages

import (
	"context"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
)

func TestKubeEventsWarnOnTheCheckpoint(t *testing.T) {
	client := fake.NewSimpleClientset()
	k := KubeEvents{Client: client, Component: "checkpoint-node-agent", Node: "node-2"}
	cp := Checkpoint{Namespace: "team-a", Name: "snap", UID: "u-1"}
	f := api.Failure{Request: api.Request{Namespace: "team-a", Pod: "clone", Container: "app", CheckpointID: id}, Reason: strings.Repeat("x", 10000)}
	k.RestoreFailed(context.Background(), cp, f)
	list, err := client.CoreV1().Events("team-a").List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, list.Items, 1)
	ev := list.Items[0]
	assert.Equal(t, corev1.ObjectReference{APIVersion: "agents.kruise.io/v1alpha1", Kind: "Checkpoint", Namespace: "team-a", Name: "snap", UID: "u-1"}, ev.InvolvedObject)
	assert.Equal(t, corev1.EventTypeWarning, ev.Type)
	assert.Equal(t, EventRestoreFailed, ev.Reason)
	assert.True(t, strings.HasPrefix(ev.Message, `restore of team-a/clone container app on node "node-2" failed: xxx`), ev.Message[:80])
	assert.LessOrEqual(t, len(ev.Message), maxEventMessage, "a long reason is cut to fit an Event")
}
