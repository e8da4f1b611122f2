package e2b

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
)

// fakeSnapshots is a fake Checkpoints backend whose GetSnapshot answers
// the phases in turn (the last one from then on); nothing else is used.
type fakeSnapshots struct {
	Checkpoints
	phases []v1alpha1.CheckpointPhase
	gets   int
}

func (f *fakeSnapshots) GetSnapshot(_ context.Context, ns, name string) (*v1alpha1.Snapshot, error) {
	p := f.phases[min(f.gets, len(f.phases)-1)]
	f.gets++
	return &v1alpha1.Snapshot{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Status: v1alpha1.CheckpointStatus{Phase: p}}, nil
}

// A snapshot whose Checkpoint another replica's declarative capture took
// first is that capture's result, once it ends.
func TestAwaitCaptureOfAnother(t *testing.T) {
	f := &fakeSnapshots{phases: []v1alpha1.CheckpointPhase{v1alpha1.PhaseCreating, v1alpha1.PhaseCreating, v1alpha1.PhaseSucceeded}}
	done, err := awaitCapture(context.Background(), f, "team", "snapshot-x")
	require.NoError(t, err)
	assert.Equal(t, v1alpha1.PhaseSucceeded, done.Status.Phase)
	assert.Equal(t, "snapshot-x", done.Name)
	assert.Equal(t, 3, f.gets, "it asked until the capture ended")

	f = &fakeSnapshots{phases: []v1alpha1.CheckpointPhase{v1alpha1.PhaseFailed}}
	done, err = awaitCapture(context.Background(), f, "team", "snapshot-y")
	require.NoError(t, err)
	assert.Equal(t, v1alpha1.PhaseFailed, done.Status.Phase, "a failed capture is returned as such, for captureFailure")
}
