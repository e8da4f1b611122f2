package nodeimages

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
)

// Events records what the node's restores say about a Checkpoint.
type Events interface {
	RestoreFailed(ctx context.Context, cp Checkpoint, f api.Failure)
}

// EventRestoreFailed is the reason of the Warning Event a failed restore
// puts on its Checkpoint.
const EventRestoreFailed = "RestoreFailed"

// maxEventMessage bounds an Event's message (the API allows 1 KiB more).
const maxEventMessage = 3072

// KubeEvents posts them as Warning Events on the Checkpoint, so that
// kubectl describe cp shows why a clone on Node did not come back.
type KubeEvents struct {
	Client kubernetes.Interface
	// Component names the reporter (checkpoint-node-agent).
	Component string
	Node      string
}

// RestoreFailed posts one Event.
func (k KubeEvents) RestoreFailed(ctx context.Context, cp Checkpoint, f api.Failure) {
	msg := fmt.Sprintf("restore of %s/%s container %s on node %q failed: %s", f.Namespace, f.Pod, f.Container, k.Node, f.Reason)
	if len(msg) > maxEventMessage {
		msg = msg[:maxEventMessage-3] + "..."
	}
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", cp.Name, now.UnixNano()), Namespace: cp.Namespace},
		InvolvedObject: corev1.ObjectReference{APIVersion: "agents.kruise.io/v1alpha1", Kind: "Checkpoint",
			Namespace: cp.Namespace, Name: cp.Name, UID: types.UID(cp.UID)},
		Reason: EventRestoreFailed, Message: msg, Type: corev1.EventTypeWarning,
		Source:         corev1.EventSource{Component: k.Component, Host: k.Node},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
		ReportingController: "agents.kruise.io/" + k.Component, ReportingInstance: k.Component + "-" + k.Node,
	}
	if _, err := k.Client.CoreV1().Events(cp.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		klog.FromContext(ctx).Error(err, "Post a failed restore's Event", "checkpoint", cp.Namespace+"/"+cp.Name)
	}
}
