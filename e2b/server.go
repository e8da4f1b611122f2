package e2b

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/generated/clientset/versioned"
)

const (
	// AdminTeam's keys see the snapshots of every namespace.
	AdminTeam = "admin"
	// TeamGroupPrefix + team is the group an E2B user acts in.
	TeamGroupPrefix = "agents.kruise.io:e2b-team:"
	// AdminGroup is the group the admin team's users act in: bound to the
	// ClusterRole checkpoint-e2b-admin (artifacts/deploy/rbac-users.yaml),
	// and one of the server's --admin-groups by default. Never system:masters.
	AdminGroup = "agents.kruise.io:e2b-admins"
	// UserPrefix starts every E2B user's name: a keys file cannot name a
	// Kubernetes user (system:admin, a service account) for a key.
	UserPrefix = "e2b:"
	// AnnotationSnapshotName keeps the name given at snapshot creation.
	AnnotationSnapshotName = "agents.kruise.io/snapshot-name"
	// AnnotationCreatedAt orders snapshots newest first finer than
	// creationTimestamp, which has whole seconds.
	AnnotationCreatedAt = "agents.kruise.io/created-at"

	maxBody      = 1 << 20
	envdVersion  = "0.2.0"
	clientID     = "checkpoint-apiserver"
	captureLimit = 50
)

// Config is what the front needs.
type Config struct {
	Keys *KeyStore
	// Loopback reaches this server with a privileged identity; the front
	// impersonates each key's user through it.
	Loopback *rest.Config
	// Sandboxes finds and ends sandboxes as each key's user.
	Sandboxes Sandboxes
	// CRD, in crd mode, creates Checkpoint custom resources; capture,
	// restore and snapshots are then this server's subresources group's.
	CRD *CRDBackend
}

// Server is the E2B front.
type Server struct {
	cfg     Config
	mu      sync.Mutex
	clients map[Identity]Checkpoints
}

// New returns the front.
func New(cfg Config) *Server {
	return &Server{cfg: cfg, clients: map[Identity]Checkpoints{}}
}

// Handler routes the E2B REST API.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /sandboxes/{sandboxID}/snapshots", s.auth(s.createSnapshot))
	mux.HandleFunc("GET /snapshots", s.auth(s.listSnapshots))
	mux.HandleFunc("DELETE /templates/{templateID...}", s.auth(s.deleteSnapshot))
	mux.HandleFunc("POST /sandboxes", s.auth(s.createSandbox))
	mux.HandleFunc("POST /v2/sandboxes", s.auth(s.createSandbox))
	mux.HandleFunc("GET /sandboxes/{sandboxID}", s.auth(s.getSandbox))
	mux.HandleFunc("DELETE /sandboxes/{sandboxID}", s.auth(s.deleteSandbox))
	mux.HandleFunc("POST /sandboxes/{sandboxID}/connect", s.auth(s.connectSandbox))
	mux.HandleFunc("POST /v2/sandboxes/{sandboxID}/connect", s.auth(s.connectSandbox))
	mux.HandleFunc("POST /sandboxes/{sandboxID}/pause", s.auth(s.pauseSandbox))
	mux.HandleFunc("GET /sandboxes", s.auth(s.listSandboxes))
	mux.HandleFunc("GET /v2/sandboxes", s.auth(s.listSandboxes))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	})
	return recoverPanics(mux)
}

// recoverPanics turns a panic into a 500 body: none reaches the client as a dropped connection.
func recoverPanics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				klog.ErrorS(fmt.Errorf("%v", p), "E2B handler panicked", "path", r.URL.Path)
				writeError(w, http.StatusInternalServerError, "internal error")
			}
		}()
		next.ServeHTTP(w, r)
	})
}

type handler func(w http.ResponseWriter, r *http.Request, id Identity, c Checkpoints)

func (s *Server) auth(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("X-API-Key")
		if key == "" {
			writeError(w, http.StatusUnauthorized, "missing X-API-Key")
			return
		}
		id, err := s.cfg.Keys.Lookup(key)
		if err != nil {
			writeError(w, http.StatusUnauthorized, "invalid API key")
			return
		}
		c, err := s.client(id)
		if err != nil {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		h(w, r, id, c)
	}
}

// userOf is the user an API key acts as.
func (s *Server) userOf(id Identity) user.Info {
	groups := []string{TeamGroupPrefix + id.Team, user.AllAuthenticated}
	if id.Team == AdminTeam {
		groups = append(groups, AdminGroup)
	}
	return &user.DefaultInfo{Name: UserPrefix + id.User, Groups: groups}
}

// client acts as id's user: it impersonates the user on this server
// (and in crd mode asks RBAC before creating a Checkpoint CR for them).
func (s *Server) client(id Identity) (Checkpoints, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[id]; ok {
		return c, nil
	}
	cfg := rest.CopyConfig(s.cfg.Loopback)
	u := s.userOf(id)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: u.GetName(), Groups: u.GetGroups()}
	cfg.Timeout = 60 * time.Second
	var c Checkpoints
	if s.cfg.CRD != nil {
		sub, err := subresourcesClient(cfg)
		if err != nil {
			return nil, err
		}
		c = crdCheckpoints{user: u, backend: s.cfg.CRD, sub: sub}
	} else {
		vc, err := versioned.NewForConfig(cfg)
		if err != nil {
			return nil, err
		}
		c = apiCheckpoints{c: vc}
	}
	s.clients[id] = c
	return c, nil
}

type errorBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, code int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Code: code, Message: msg})
}

// writeAPIError maps an error of the Kubernetes API to an E2B error body.
func writeAPIError(w http.ResponseWriter, err error) {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		code := int(status.Status().Code)
		if code == 0 {
			code = http.StatusInternalServerError
		}
		writeError(w, code, status.Status().Message)
		return
	}
	writeError(w, http.StatusInternalServerError, err.Error())
}

// decode reads an optional JSON body into v: 400 on bad JSON or wrong types,
// 413 over the limit.
func decode(w http.ResponseWriter, r *http.Request, v interface{}) bool {
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", maxBody))
			return false
		}
		writeError(w, http.StatusBadRequest, "cannot read body")
		return false
	}
	if err := DecodeBody(data, v); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return false
	}
	return true
}

// DecodeBody decodes an E2B request body; an empty body is an empty object.
func DecodeBody(data []byte, v interface{}) error {
	if len(strings.TrimSpace(string(data))) == 0 {
		return nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("malformed JSON body: %v", err)
	}
	return nil
}

// namespace is where id's sandboxes and snapshots live.
func namespace(id Identity) string { return id.Team }

// listNamespace is where id's lists look: every namespace for the admin team.
func listNamespace(id Identity) string {
	if id.Team == AdminTeam {
		return metav1.NamespaceAll
	}
	return id.Team
}

// sandbox finds sandboxID for id, or writes the error.
func (s *Server) sandbox(w http.ResponseWriter, r *http.Request, id Identity, sandboxID string) (Sandbox, bool) {
	sb, err := s.cfg.Sandboxes.Get(r.Context(), s.userOf(id), id.Team == AdminTeam, namespace(id), sandboxID)
	if err != nil {
		writeSandboxError(w, sandboxID, err)
		return Sandbox{}, false
	}
	return sb, true
}

func writeSandboxError(w http.ResponseWriter, sandboxID string, err error) {
	switch {
	case errors.Is(err, ErrSandboxNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("sandbox %s not found", sandboxID))
	case errors.Is(err, ErrSandboxForbidden):
		writeError(w, http.StatusForbidden, err.Error())
	default:
		writeAPIError(w, err)
	}
}

type snapshotBody struct {
	SnapshotID string   `json:"snapshotID"`
	Names      []string `json:"names"`
}

func snapshotOf(cp *v1alpha1.Snapshot) snapshotBody {
	names := []string{}
	if n := cp.Annotations[AnnotationSnapshotName]; n != "" {
		names = append(names, n)
	}
	return snapshotBody{SnapshotID: cp.Status.CheckpointID, Names: names}
}

// createSnapshot: POST /sandboxes/{sandboxID}/snapshots, synchronous.
func (s *Server) createSnapshot(w http.ResponseWriter, r *http.Request, id Identity, c Checkpoints) {
	var body struct {
		Name *string `json:"name"`
	}
	if !decode(w, r, &body) {
		return
	}
	sandboxID := r.PathValue("sandboxID")
	if _, ok := s.sandbox(w, r, id, sandboxID); !ok {
		return
	}
	ctx := r.Context()
	cp := &v1alpha1.Checkpoint{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "snapshot-",
			Annotations:  map[string]string{AnnotationCreatedAt: time.Now().UTC().Format(time.RFC3339Nano)},
		},
		Spec: v1alpha1.CheckpointSpec{SandboxName: sandboxID},
	}
	if body.Name != nil && *body.Name != "" {
		cp.Annotations[AnnotationSnapshotName] = *body.Name
	}
	ns := namespace(id)
	created, err := c.Create(ctx, ns, cp)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	done, err := captureNow(ctx, c, ns, created.Name)
	if err != nil {
		// A failed capture is no snapshot: do not leave it listed.
		_ = c.DeleteSnapshot(context.WithoutCancel(ctx), ns, created.Name, metav1.DeleteOptions{})
		writeAPIError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, snapshotOf(&v1alpha1.Snapshot{ObjectMeta: done.ObjectMeta, Status: done.Status}))
}

// awaitCapture waits for the capture someone else runs of Checkpoint name
// to end (within a capture's limit) and returns the Checkpoint.
func awaitCapture(ctx context.Context, c Checkpoints, ns, name string) (*v1alpha1.Checkpoint, error) {
	ctx, cancel := context.WithTimeout(ctx, (captureLimit+5)*time.Second)
	defer cancel()
	var done *v1alpha1.Checkpoint
	err := wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		snap, err := c.GetSnapshot(ctx, ns, name)
		if err != nil {
			return false, err
		}
		done = &v1alpha1.Checkpoint{ObjectMeta: snap.ObjectMeta, Spec: snap.Spec, Status: snap.Status}
		return snap.Status.Phase == v1alpha1.PhaseSucceeded || snap.Status.Phase == v1alpha1.PhaseFailed, nil
	})
	if wait.Interrupted(err) {
		return nil, apierrors.NewTimeoutError(fmt.Sprintf("the capture of %s did not end in time", name), 0)
	}
	return done, err
}

func captureFailure(cp *v1alpha1.Checkpoint) error {
	reason := ""
	for _, c := range cp.Status.Conditions {
		if c.Type == "Ready" {
			reason = c.Reason
		}
	}
	switch reason {
	case "TargetNotFound":
		return apierrors.NewNotFound(v1alpha1.Resource("sandboxes"), cp.Spec.SandboxName)
	case "DriverUnavailable":
		return apierrors.NewServiceUnavailable(cp.Status.Message)
	case "Timeout":
		return apierrors.NewTimeoutError(cp.Status.Message, 0)
	}
	return apierrors.NewInternalError(errors.New(cp.Status.Message))
}

// listSnapshots: GET /snapshots, newest first, paginated.
func (s *Server) listSnapshots(w http.ResponseWriter, r *http.Request, id Identity, c Checkpoints) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, "malformed query: "+err.Error())
		return
	}
	limit := 100
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			writeError(w, http.StatusBadRequest, "limit must be between 1 and 100")
			return
		}
		limit = n
	}
	offset, err := decodeToken(q.Get("nextToken"))
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	selector := fields.Set{"status.phase": string(v1alpha1.PhaseSucceeded)}
	if sb := q.Get("sandboxID"); sb != "" {
		selector["spec.sandboxName"] = sb
	}
	list, err := c.ListSnapshots(r.Context(), listNamespace(id), metav1.ListOptions{FieldSelector: selector.String()})
	if err != nil {
		writeAPIError(w, err)
		return
	}
	name := q.Get("name")
	items := list.Items[:0]
	for _, it := range list.Items {
		// A paused sandbox's Checkpoint is no snapshot.
		if it.DeletionTimestamp == nil && it.Labels[LabelPausedSandbox] == "" && (name == "" || it.Annotations[AnnotationSnapshotName] == name) {
			items = append(items, it)
		}
	}
	newestFirst(items)
	if offset > len(items) {
		offset = len(items)
	}
	end := offset + limit
	if end < len(items) {
		w.Header().Set("X-Next-Token", encodeToken(end))
	} else {
		end = len(items)
	}
	out := make([]snapshotBody, 0, end-offset)
	for i := offset; i < end; i++ {
		out = append(out, snapshotOf(&items[i]))
	}
	writeJSON(w, http.StatusOK, out)
}

// newestFirst sorts snapshots by when they were made, newest first.
func newestFirst(items []v1alpha1.Snapshot) {
	sort.SliceStable(items, func(i, j int) bool {
		ti, tj := createdAt(&items[i]), createdAt(&items[j])
		if !ti.Equal(tj) {
			return ti.After(tj)
		}
		return items[i].Name > items[j].Name
	})
}

// createdAt is when the snapshot was made, as finely as known.
func createdAt(s *v1alpha1.Snapshot) time.Time {
	if t, err := time.Parse(time.RFC3339Nano, s.Annotations[AnnotationCreatedAt]); err == nil {
		return t
	}
	return s.CreationTimestamp.Time
}

// findSnapshot returns id's snapshot with snapshotID, or nil.
func (s *Server) findSnapshot(ctx context.Context, id Identity, c Checkpoints, snapshotID string) (*v1alpha1.Snapshot, error) {
	list, err := c.ListSnapshots(ctx, listNamespace(id), metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("status.checkpointId", snapshotID).String(),
	})
	if err != nil {
		return nil, err
	}
	for i := range list.Items {
		// One being deleted is gone for E2B; a paused sandbox's is no snapshot.
		if list.Items[i].DeletionTimestamp == nil && list.Items[i].Labels[LabelPausedSandbox] == "" {
			return &list.Items[i], nil
		}
	}
	return nil, nil
}

// snapshotIDFrom accepts an ID and the team/name:tag form E2B names take.
func snapshotIDFrom(templateID string) string {
	if i := strings.LastIndex(templateID, "/"); i >= 0 {
		templateID = templateID[i+1:]
	}
	if i := strings.Index(templateID, ":"); i >= 0 {
		templateID = templateID[:i]
	}
	return templateID
}

// deleteSnapshot: DELETE /templates/{templateID}.
func (s *Server) deleteSnapshot(w http.ResponseWriter, r *http.Request, id Identity, c Checkpoints) {
	snapshotID := snapshotIDFrom(r.PathValue("templateID"))
	snap, err := s.findSnapshot(r.Context(), id, c, snapshotID)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	if snap == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("snapshot %s not found", snapshotID))
		return
	}
	uid := snap.UID
	err = c.DeleteSnapshot(r.Context(), snap.Namespace, snap.Name,
		metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if apierrors.IsNotFound(err) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("snapshot %s not found", snapshotID))
		return
	}
	if err != nil {
		writeAPIError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type sandboxBody struct {
	TemplateID  string `json:"templateID"`
	SandboxID   string `json:"sandboxID"`
	ClientID    string `json:"clientID"`
	EnvdVersion string `json:"envdVersion"`
	Alias       string `json:"alias,omitempty"`
}

// createSandbox: POST /sandboxes and /v2/sandboxes clone a sandbox from a snapshot.
func (s *Server) createSandbox(w http.ResponseWriter, r *http.Request, id Identity, c Checkpoints) {
	var body struct {
		TemplateID string            `json:"templateID"`
		Timeout    *int64            `json:"timeout"`
		Metadata   map[string]string `json:"metadata"`
	}
	if !decode(w, r, &body) {
		return
	}
	if body.TemplateID == "" {
		writeError(w, http.StatusBadRequest, "templateID is required")
		return
	}
	snapshotID := snapshotIDFrom(body.TemplateID)
	snap, err := s.findSnapshot(r.Context(), id, c, snapshotID)
	if err != nil {
		writeAPIError(w, err)
		return
	}
	if snap == nil {
		writeError(w, http.StatusNotFound, fmt.Sprintf("template %s not found", body.TemplateID))
		return
	}
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	sandboxID := "sbx-" + hex.EncodeToString(b)
	res, err := c.Restore(r.Context(), snap.Namespace, snap.Name, &v1alpha1.CheckpointRestore{
		Spec: v1alpha1.CheckpointRestoreSpec{SandboxName: sandboxID},
	})
	if err != nil {
		writeAPIError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, sandboxBody{TemplateID: snapshotID, SandboxID: res.Status.SandboxName, ClientID: clientID, EnvdVersion: envdVersion})
}

// getSandbox: GET /sandboxes/{sandboxID}: what the sandbox's Pod says.
func (s *Server) getSandbox(w http.ResponseWriter, r *http.Request, id Identity, c Checkpoints) {
	sandboxID := r.PathValue("sandboxID")
	sb, rec, ok := s.sandboxOrPause(w, r, id, c, sandboxID)
	if !ok {
		return
	}
	if rec != nil {
		// A paused sandbox has no Pod: its pause says what it was.
		writeJSON(w, http.StatusOK, map[string]interface{}{
			"templateID": "", "sandboxID": sandboxID, "clientID": clientID, "envdVersion": envdVersion,
			"state": "paused", "cpuCount": 0, "memoryMB": 0, "diskSizeMB": 0, "metadata": map[string]string{},
			"startedAt": createdAt(rec).UTC().Format(time.RFC3339),
		})
		return
	}
	state := "paused"
	if sb.Running {
		state = "running"
	}
	metadata := map[string]string{}
	for k, v := range sb.Labels {
		metadata[k] = v
	}
	body := map[string]interface{}{
		"templateID": sb.TemplateID, "sandboxID": sb.Name, "clientID": clientID, "envdVersion": envdVersion,
		"state": state, "cpuCount": (sb.CPUMillis + 999) / 1000, "memoryMB": sb.MemoryBytes >> 20, "diskSizeMB": 0,
		"metadata": metadata,
	}
	if !sb.StartedAt.IsZero() {
		body["startedAt"] = sb.StartedAt.UTC().Format(time.RFC3339)
		// A Pod has no end of life; none is made up.
	}
	writeJSON(w, http.StatusOK, body)
}

// deleteSandbox: DELETE /sandboxes/{sandboxID} ends the sandbox, as the
// key's user, and deletes its pauses (a paused sandbox is its pause alone).
func (s *Server) deleteSandbox(w http.ResponseWriter, r *http.Request, id Identity, c Checkpoints) {
	sandboxID, ns := r.PathValue("sandboxID"), namespace(id)
	err := s.cfg.Sandboxes.Delete(r.Context(), s.userOf(id), id.Team == AdminTeam, ns, sandboxID)
	if err != nil && !errors.Is(err, ErrSandboxNotFound) {
		writeSandboxError(w, sandboxID, err)
		return
	}
	found := err == nil
	list, lerr := pauses(r.Context(), c, ns, sandboxID)
	if lerr != nil {
		writeAPIError(w, lerr)
		return
	}
	for _, p := range list {
		if derr := c.DeleteSnapshot(r.Context(), ns, p.Name, metav1.DeleteOptions{}); derr != nil && !apierrors.IsNotFound(derr) {
			writeAPIError(w, derr)
			return
		}
		found = true
	}
	if !found {
		writeSandboxError(w, sandboxID, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// connectSandbox: POST /sandboxes/{id}/connect and /v2/...: 200 while the
// sandbox runs; 201 when it was paused and is resumed, under its ID, from
// its pause (memory and files), lazily through the restore runtime; 409
// for a sandbox whose Pod is there and does not run.
func (s *Server) connectSandbox(w http.ResponseWriter, r *http.Request, id Identity, c Checkpoints) {
	var body struct {
		Timeout *int64 `json:"timeout"`
	}
	if !decode(w, r, &body) {
		return
	}
	sandboxID := r.PathValue("sandboxID")
	sb, rec, ok := s.sandboxOrPause(w, r, id, c, sandboxID)
	if !ok {
		return
	}
	if rec != nil {
		if err := resume(r.Context(), c, rec, sandboxID); err != nil {
			writeAPIError(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, sandboxBody{SandboxID: sandboxID, ClientID: clientID, EnvdVersion: envdVersion})
		return
	}
	if !running(w, sb) {
		return
	}
	writeJSON(w, http.StatusOK, sandboxBody{SandboxID: sandboxID, ClientID: clientID, EnvdVersion: envdVersion})
}
