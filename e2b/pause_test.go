package e2b

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apiserver/pkg/authentication/user"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
)

// fakeBackend is a fake of the API the front calls: Checkpoints (the
// owner's view, by its user) and sandboxes that are Pods. Captures end as
// failCapture says; a restore makes a running Pod of the sandbox's name.
type fakeBackend struct {
	mu          sync.Mutex
	owner       string
	cps         map[string]*v1alpha1.Checkpoint
	pods        map[string]bool // name: running
	failCapture bool
	n           int
}

func (f *fakeBackend) Create(_ context.Context, ns string, cp *v1alpha1.Checkpoint) (*v1alpha1.Checkpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	cp = cp.DeepCopy()
	cp.Name, cp.Namespace = fmt.Sprintf("%s%d", cp.GenerateName, f.n), ns
	cp.CreationTimestamp = metav1.NewTime(time.Now())
	f.cps[cp.Name] = cp
	return cp, nil
}

func (f *fakeBackend) Capture(_ context.Context, ns, name string, _ *v1alpha1.CaptureOptions) (*v1alpha1.Checkpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cp := f.cps[name]
	if f.failCapture {
		cp.Status = v1alpha1.CheckpointStatus{Phase: v1alpha1.PhaseFailed, Message: "the driver is down",
			Conditions: []metav1.Condition{{Type: "Ready", Reason: "DriverUnavailable"}}}
		return cp.DeepCopy(), nil
	}
	cp.Status = v1alpha1.CheckpointStatus{Phase: v1alpha1.PhaseSucceeded, CheckpointID: "ckpt-" + name}
	if cp.Spec.KeepRunning != nil && !*cp.Spec.KeepRunning {
		f.pods[cp.Spec.SandboxName] = false // ended, as keepRunning false does
	}
	return cp.DeepCopy(), nil
}

func (f *fakeBackend) Restore(_ context.Context, ns, name string, req *v1alpha1.CheckpointRestore) (*v1alpha1.CheckpointRestore, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.pods[req.Spec.SandboxName]; ok {
		return nil, apierrors.NewAlreadyExists(v1alpha1.Resource("pods"), req.Spec.SandboxName)
	}
	f.pods[req.Spec.SandboxName] = true
	out := req.DeepCopy()
	out.Status.SandboxName = req.Spec.SandboxName
	return out, nil
}

func (f *fakeBackend) ListSnapshots(_ context.Context, ns string, opts metav1.ListOptions) (*v1alpha1.SnapshotList, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sel, err := fields.ParseSelector(opts.FieldSelector)
	if err != nil {
		return nil, err
	}
	out := &v1alpha1.SnapshotList{}
	for _, cp := range f.cps {
		set := fields.Set{"spec.sandboxName": cp.Spec.SandboxName, "status.phase": string(cp.Status.Phase), "status.checkpointId": cp.Status.CheckpointID}
		if sel.Matches(set) {
			out.Items = append(out.Items, v1alpha1.Snapshot{ObjectMeta: cp.ObjectMeta, Spec: cp.Spec, Status: cp.Status})
		}
	}
	return out, nil
}

func (f *fakeBackend) GetSnapshot(_ context.Context, ns, name string) (*v1alpha1.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	cp, ok := f.cps[name]
	if !ok {
		return nil, apierrors.NewNotFound(v1alpha1.Resource("snapshots"), name)
	}
	return &v1alpha1.Snapshot{ObjectMeta: cp.ObjectMeta, Spec: cp.Spec, Status: cp.Status}, nil
}

func (f *fakeBackend) DeleteSnapshot(_ context.Context, ns, name string, _ metav1.DeleteOptions) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.cps[name]; !ok {
		return apierrors.NewNotFound(v1alpha1.Resource("snapshots"), name)
	}
	delete(f.cps, name)
	return nil
}

func (f *fakeBackend) Get(_ context.Context, u user.Info, _ bool, ns, name string) (Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	running, ok := f.pods[name]
	if !ok || u.GetName() != f.owner {
		return Sandbox{}, fmt.Errorf("%w: %s", ErrSandboxNotFound, name)
	}
	return Sandbox{Namespace: ns, Name: name, Running: running}, nil
}

func (f *fakeBackend) Delete(ctx context.Context, u user.Info, admin bool, ns, name string) error {
	if _, err := f.Get(ctx, u, admin, ns, name); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.pods, name)
	return nil
}

func (f *fakeBackend) List(ctx context.Context, u user.Info, _ bool, ns string) ([]Sandbox, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Sandbox
	for name, running := range f.pods {
		if u.GetName() == f.owner {
			out = append(out, Sandbox{Namespace: ns, Name: name, Running: running})
		}
	}
	return out, nil
}

func (f *fakeBackend) Pods() bool { return true }

// TestPauseAndResume: what the front does on the fakes: a pause captures
// with keepRunning false, removes the Pod and keeps the capture under the
// sandbox's ID (409 the second time; paused in GET and the list, not a
// snapshot); connect resumes it under that ID (201, then 200); a new pause
// replaces the last; kill deletes the sandbox and its pause; a failed
// capture pauses nothing; another key finds nothing.
func TestPauseAndResume(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	require.NoError(t, os.WriteFile(keys, []byte("keys:\n- {key: "+keyA+", user: alice, team: team-a}\n- {key: "+keyB+", user: bob, team: team-a}\n"), 0o600))
	store, err := LoadKeys(keys)
	require.NoError(t, err)
	f := &fakeBackend{owner: "e2b:alice", cps: map[string]*v1alpha1.Checkpoint{}, pods: map[string]bool{"sbx-1": true}}
	s := New(Config{Keys: store, Sandboxes: f})
	s.clients[Identity{User: "alice", Team: "team-a"}] = f
	s.clients[Identity{User: "bob", Team: "team-a"}] = &fakeBackend{owner: "e2b:bob", cps: map[string]*v1alpha1.Checkpoint{}, pods: map[string]bool{}}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	call := func(key, method, path, body string) (int, string) {
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("X-API-Key", key)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		return resp.StatusCode, bodyOf(resp)
	}
	pauseNames := func() []string {
		f.mu.Lock()
		defer f.mu.Unlock()
		var out []string
		for name, cp := range f.cps {
			if cp.Labels[LabelPausedSandbox] == "sbx-1" {
				out = append(out, name)
			}
		}
		return out
	}

	code, body := call(keyB, "POST", "/sandboxes/sbx-1/pause", "")
	assert.Equal(t, http.StatusNotFound, code, "another key's sandbox: %s", body)

	code, body = call(keyA, "POST", "/sandboxes/sbx-1/pause", `{"memory":true}`)
	require.Equal(t, http.StatusNoContent, code, body)
	assert.NotContains(t, f.pods, "sbx-1", "a paused sandbox has no Pod")
	first := pauseNames()
	require.Len(t, first, 1)
	assert.False(t, *f.cps[first[0]].Spec.KeepRunning, "captured with keepRunning false")
	assert.Empty(t, f.cps[first[0]].Spec.PersistentContents, "memory and files")

	code, body = call(keyA, "POST", "/sandboxes/sbx-1/pause", "")
	assert.Equal(t, http.StatusConflict, code, "a second pause: %s", body)
	code, body = call(keyA, "GET", "/sandboxes/sbx-1", "")
	assert.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, `"state":"paused"`)
	code, body = call(keyA, "GET", "/v2/sandboxes?state=paused", "")
	assert.Equal(t, http.StatusOK, code, body)
	assert.Contains(t, body, `"sandboxID":"sbx-1"`)
	code, body = call(keyA, "GET", "/v2/sandboxes?state=running", "")
	assert.Equal(t, http.StatusOK, code, body)
	assert.NotContains(t, body, "sbx-1")
	code, _ = call(keyA, "GET", "/v2/sandboxes?state=asleep", "")
	assert.Equal(t, http.StatusBadRequest, code)
	code, body = call(keyA, "GET", "/snapshots", "")
	assert.Equal(t, http.StatusOK, code, body)
	assert.Equal(t, "[]", strings.TrimSpace(body), "a pause is no snapshot")
	for _, route := range [][2]string{{"POST", "/sandboxes/sbx-1/connect"}, {"DELETE", "/sandboxes/sbx-1"}, {"GET", "/sandboxes/sbx-1"}} {
		code, body = call(keyB, route[0], route[1], "")
		assert.Equal(t, http.StatusNotFound, code, "%s %s by another key: %s", route[0], route[1], body)
	}

	code, body = call(keyA, "POST", "/sandboxes/sbx-1/connect", "")
	assert.Equal(t, http.StatusCreated, code, "resumed: %s", body)
	assert.Contains(t, body, `"sandboxID":"sbx-1"`)
	assert.True(t, f.pods["sbx-1"], "its Pod runs again, under the same name")
	code, _ = call(keyA, "POST", "/sandboxes/sbx-1/connect", "")
	assert.Equal(t, http.StatusOK, code, "running: 200")

	code, body = call(keyA, "POST", "/sandboxes/sbx-1/pause", `{"memory":false}`)
	require.Equal(t, http.StatusNoContent, code, body)
	second := pauseNames()
	require.Len(t, second, 1, "pause is one to one: the last pause went")
	assert.NotEqual(t, first, second)
	assert.Equal(t, []v1alpha1.ContentType{"filesystem"}, f.cps[second[0]].Spec.PersistentContents, "memory false keeps the files only")

	code, body = call(keyA, "DELETE", "/sandboxes/sbx-1", "")
	assert.Equal(t, http.StatusNoContent, code, "a paused sandbox is killed: %s", body)
	assert.Empty(t, pauseNames(), "with its pause")
	code, _ = call(keyA, "DELETE", "/sandboxes/sbx-1", "")
	assert.Equal(t, http.StatusNotFound, code)

	// A capture that fails pauses nothing: the sandbox runs on, no pause kept.
	f.pods["sbx-1"], f.failCapture = true, true
	code, body = call(keyA, "POST", "/sandboxes/sbx-1/pause", "")
	assert.Equal(t, http.StatusServiceUnavailable, code, body)
	assert.True(t, f.pods["sbx-1"])
	assert.Empty(t, pauseNames())
}

const (
	keyA = "e2b_" + "1111111111111111111111111111111111111111"
	keyB = "e2b_" + "2222222222222222222222222222222222222222"
)

// bodyOf is a response's JSON body ("" when none).
func bodyOf(resp *http.Response) string {
	var m json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		return ""
	}
	return string(m)
}
