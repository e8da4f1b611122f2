package e2b

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
)

// SandboxesResource names sandboxes in errors.
var SandboxesResource = v1alpha1.Resource("sandboxes")

// LabelPausedSandbox marks a Checkpoint that holds a paused sandbox (its
// value is the sandbox's ID): E2B's pause keeps the sandbox's memory and
// files there, and its connect restores the sandbox from it under the same
// ID. Such a Checkpoint is no snapshot: GET /snapshots does not list it.
const LabelPausedSandbox = "agents.kruise.io/paused-sandbox"

// podGone bounds the wait for a paused sandbox's Pod to go.
const podGone = 2 * time.Minute

// pauses are sandboxID's pause Checkpoints in ns that the key's user sees
// (the owner's view), newest first.
func pauses(ctx context.Context, c Checkpoints, ns, sandboxID string) ([]v1alpha1.Snapshot, error) {
	list, err := c.ListSnapshots(ctx, ns, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("spec.sandboxName", sandboxID).String()})
	if err != nil {
		return nil, err
	}
	var out []v1alpha1.Snapshot
	for _, it := range list.Items {
		if it.Labels[LabelPausedSandbox] == sandboxID && it.DeletionTimestamp == nil {
			out = append(out, it)
		}
	}
	newestFirst(out)
	return out, nil
}

// pausedRecord is the Checkpoint a paused sandbox resumes from: its newest
// pause, once Succeeded (nil: none).
func pausedRecord(ctx context.Context, c Checkpoints, ns, sandboxID string) (*v1alpha1.Snapshot, error) {
	list, err := pauses(ctx, c, ns, sandboxID)
	if err != nil || len(list) == 0 || list[0].Status.Phase != v1alpha1.PhaseSucceeded {
		return nil, err
	}
	return &list[0], nil
}

// sandboxOrPause finds sandboxID for id: its Pod (sb) or, when it has
// none, its pause (rec). ok is false when the answer is written (404...).
func (s *Server) sandboxOrPause(w http.ResponseWriter, r *http.Request, id Identity, c Checkpoints, sandboxID string) (sb Sandbox, rec *v1alpha1.Snapshot, ok bool) {
	ns := namespace(id)
	sb, err := s.cfg.Sandboxes.Get(r.Context(), s.userOf(id), id.Team == AdminTeam, ns, sandboxID)
	if errors.Is(err, ErrSandboxNotFound) {
		rec, rerr := pausedRecord(r.Context(), c, ns, sandboxID)
		if rerr != nil {
			writeAPIError(w, rerr)
			return Sandbox{}, nil, false
		}
		if rec != nil {
			return Sandbox{}, rec, true
		}
	}
	if err != nil {
		writeSandboxError(w, sandboxID, err)
		return Sandbox{}, nil, false
	}
	return sb, nil, true
}

// running answers 409 for a sandbox whose Pod does not run.
func running(w http.ResponseWriter, sb Sandbox) bool {
	if !sb.Running {
		writeError(w, http.StatusConflict, fmt.Sprintf("sandbox %s is not running", sb.Name))
	}
	return sb.Running
}

// pauseSandbox: POST /sandboxes/{sandboxID}/pause captures the running
// sandbox's memory (unless memory is false) and files, ends and removes
// its Pod, and keeps the capture under the sandbox's ID: 204; 409 when it
// is paused already (or does not run); 404 when the key has no such sandbox.
func (s *Server) pauseSandbox(w http.ResponseWriter, r *http.Request, id Identity, c Checkpoints) {
	var body struct {
		Memory *bool `json:"memory"`
	}
	if !decode(w, r, &body) {
		return
	}
	if !s.cfg.Sandboxes.Pods() {
		writeError(w, http.StatusNotImplemented, "pause needs sandboxes that are Pods (a cluster): this server's are bare containers")
		return
	}
	ctx := r.Context()
	sandboxID := r.PathValue("sandboxID")
	sb, rec, ok := s.sandboxOrPause(w, r, id, c, sandboxID)
	if !ok {
		return
	}
	if rec != nil {
		writeError(w, http.StatusConflict, fmt.Sprintf("sandbox %s is already paused", sandboxID))
		return
	}
	if !running(w, sb) {
		return
	}
	cp := &v1alpha1.Checkpoint{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "pause-",
			Labels:       map[string]string{LabelPausedSandbox: sandboxID},
			Annotations:  map[string]string{AnnotationCreatedAt: time.Now().UTC().Format(time.RFC3339Nano)},
		},
		Spec: v1alpha1.CheckpointSpec{SandboxName: sandboxID, KeepRunning: ptr.To(false)},
	}
	if body.Memory != nil && !*body.Memory {
		cp.Spec.PersistentContents = []v1alpha1.ContentType{v1alpha1.ContentType(agents.ContentFilesystem)}
	}
	created, err := c.Create(ctx, sb.Namespace, cp)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	done, err := captureNow(ctx, c, sb.Namespace, created.Name)
	if err != nil {
		// Not paused: the sandbox runs on (a capture that failed ended nothing).
		_ = c.DeleteSnapshot(context.WithoutCancel(ctx), sb.Namespace, created.Name, metav1.DeleteOptions{})
		writeAPIError(w, err)
		return
	}
	// The capture ended the sandbox's processes (or deleted its Pod); a
	// paused sandbox has no Pod at all, and costs its node nothing.
	if err := s.removePod(ctx, id, sb.Namespace, sandboxID); err != nil {
		writeAPIError(w, err)
		return
	}
	// Pause is one to one: the sandbox's earlier pauses go.
	older, err := pauses(ctx, c, sb.Namespace, sandboxID)
	if err == nil {
		for _, p := range older {
			if p.Name != done.Name {
				_ = c.DeleteSnapshot(context.WithoutCancel(ctx), sb.Namespace, p.Name, metav1.DeleteOptions{})
			}
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// captureNow captures Checkpoint name and returns it Succeeded, or the
// reason it is not; a capture the declarative path (another replica's
// lifecycle controller) took first is awaited: its capture is this one.
func captureNow(ctx context.Context, c Checkpoints, ns, name string) (*v1alpha1.Checkpoint, error) {
	timeout := int64(captureLimit)
	done, err := c.Capture(ctx, ns, name, &v1alpha1.CaptureOptions{TimeoutSeconds: &timeout})
	if apierrors.IsConflict(err) {
		done, err = awaitCapture(ctx, c, ns, name)
	}
	if err == nil && done.Status.Phase != v1alpha1.PhaseSucceeded {
		err = captureFailure(done)
	}
	return done, err
}

// removePod deletes the sandbox's Pod, if it is still there, and waits
// until it is gone.
func (s *Server) removePod(ctx context.Context, id Identity, ns, sandboxID string) error {
	u, admin := s.userOf(id), id.Team == AdminTeam
	if err := s.cfg.Sandboxes.Delete(ctx, u, admin, ns, sandboxID); err != nil && !errors.Is(err, ErrSandboxNotFound) {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, podGone)
	defer cancel()
	err := wait.PollUntilContextCancel(ctx, 250*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		_, err := s.cfg.Sandboxes.Get(ctx, u, admin, ns, sandboxID)
		if errors.Is(err, ErrSandboxNotFound) {
			return true, nil
		}
		return false, err
	})
	if wait.Interrupted(err) {
		return apierrors.NewTimeoutError(fmt.Sprintf("the Pod of sandbox %s did not go within %s", sandboxID, podGone), 0)
	}
	return err
}

// resume restores the paused sandboxID from rec under its own name, lazily,
// through the restore runtime.
func resume(ctx context.Context, c Checkpoints, rec *v1alpha1.Snapshot, sandboxID string) error {
	_, err := c.Restore(ctx, rec.Namespace, rec.Name, &v1alpha1.CheckpointRestore{
		Spec: v1alpha1.CheckpointRestoreSpec{SandboxName: sandboxID},
	})
	return err
}

// listedSandbox is one sandbox of a list.
type listedSandbox struct {
	SandboxID   string            `json:"sandboxID"`
	TemplateID  string            `json:"templateID"`
	ClientID    string            `json:"clientID"`
	State       string            `json:"state"`
	CPUCount    int64             `json:"cpuCount"`
	MemoryMB    int64             `json:"memoryMB"`
	DiskSizeMB  int64             `json:"diskSizeMB"`
	EnvdVersion string            `json:"envdVersion"`
	StartedAt   string            `json:"startedAt"`
	EndAt       string            `json:"endAt"`
	Metadata    map[string]string `json:"metadata"`
}

// listSandboxes: GET /v2/sandboxes (and /sandboxes): the key's running
// sandboxes (Pods) and paused ones (pause Checkpoints whose Pod is gone),
// filtered by state (repeated or comma-separated: running, paused).
func (s *Server) listSandboxes(w http.ResponseWriter, r *http.Request, id Identity, c Checkpoints) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, "malformed query: "+err.Error())
		return
	}
	states := []string{}
	for _, v := range q["state"] {
		for _, st := range strings.Split(v, ",") {
			if st = strings.TrimSpace(st); st != "" {
				if st != "running" && st != "paused" {
					writeError(w, http.StatusBadRequest, fmt.Sprintf("state %q: want running or paused", st))
					return
				}
				states = append(states, st)
			}
		}
	}
	want := func(st string) bool { return len(states) == 0 || slices.Contains(states, st) }
	ctx := r.Context()
	ns := namespace(id)
	running, err := s.cfg.Sandboxes.List(ctx, s.userOf(id), id.Team == AdminTeam, ns)
	if err != nil {
		writeSandboxError(w, "", err)
		return
	}
	out := []listedSandbox{}
	seen := map[string]bool{}
	for _, sb := range running {
		seen[sb.Name] = true
		st := "paused"
		if sb.Running {
			st = "running"
		}
		if !want(st) {
			continue
		}
		l := listedSandbox{SandboxID: sb.Name, TemplateID: sb.TemplateID, ClientID: clientID, State: st,
			CPUCount: (sb.CPUMillis + 999) / 1000, MemoryMB: sb.MemoryBytes >> 20, EnvdVersion: envdVersion, Metadata: map[string]string{}}
		if !sb.StartedAt.IsZero() {
			l.StartedAt = sb.StartedAt.UTC().Format(time.RFC3339)
		}
		out = append(out, l)
	}
	if want("paused") {
		list, err := c.ListSnapshots(ctx, ns, metav1.ListOptions{})
		if err != nil {
			writeAPIError(w, err)
			return
		}
		newest := map[string]*v1alpha1.Snapshot{}
		for i := range list.Items {
			it := &list.Items[i]
			sbx := it.Labels[LabelPausedSandbox]
			if sbx == "" || seen[sbx] || it.DeletionTimestamp != nil {
				continue
			}
			if cur := newest[sbx]; cur == nil || createdAt(it).After(createdAt(cur)) {
				newest[sbx] = it
			}
		}
		for sbx, rec := range newest {
			if rec.Status.Phase != v1alpha1.PhaseSucceeded {
				continue
			}
			out = append(out, listedSandbox{SandboxID: sbx, ClientID: clientID, State: "paused", EnvdVersion: envdVersion,
				StartedAt: createdAt(rec).UTC().Format(time.RFC3339), Metadata: map[string]string{}})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].SandboxID < out[j].SandboxID })
	writeJSON(w, http.StatusOK, out)
}
