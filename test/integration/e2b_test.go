package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/generated/clientset/versioned"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// Keys of the E2B tests: alice and bob share team-a, carol is in team-b, root is admin.
const (
	keyAlice = "e2b_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	keyBob   = "e2b_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	keyCarol = "e2b_cccccccccccccccccccccccccccccccccccccccc"
	keyRoot  = "e2b_dddddddddddddddddddddddddddddddddddddddd"
)

type e2bEnv struct {
	*captureEnv
	url  string
	keys string
}

func startE2BEnv(t *testing.T) *e2bEnv {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys.yaml")
	require.NoError(t, os.WriteFile(keys, []byte(fmt.Sprintf(`keys:
- {key: %s, user: alice, team: team-a}
- {key: %s, user: bob, team: team-a}
- {key: %s, user: carol, team: team-b}
- {key: %s, user: root, team: admin}
`, keyAlice, keyBob, keyCarol, keyRoot)), 0o600))
	addr := fmt.Sprintf("127.0.0.1:%d", framework.FreePort(t))
	env := startCaptureEnv(t, "--e2b-bind-address="+addr, "--e2b-api-keys-file="+keys)
	return &e2bEnv{captureEnv: env, url: "http://" + addr, keys: keys}
}

// call makes one E2B request and returns the status and the decoded body.
func (e *e2bEnv) call(t *testing.T, key, method, path, body string) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	require.NoError(t, err)
	if key != "" {
		req.Header.Set("X-API-Key", key)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header
}

// wantError checks an E2B error: the status, and a {code, message} body with the same code.
func wantError(t *testing.T, code int, status int, body []byte, what string) {
	t.Helper()
	assert.Equal(t, code, status, "%s: %s", what, body)
	var e struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}
	require.NoError(t, json.Unmarshal(body, &e), "%s: error body %s", what, body)
	assert.Equal(t, code, e.Code, what)
	assert.NotEmpty(t, e.Message, what)
}

// TestE2BSDK runs the real E2B JS SDK, at 2.51.0 and 2.20.1, against the front.
func TestE2BSDK(t *testing.T) {
	sdkDir := framework.E2BSDK(t)
	env := startE2BEnv(t)
	for _, pkg := range []string{"e2b", "e2b-2-20"} {
		t.Run(pkg, func(t *testing.T) {
			sandbox := "sbx-" + strings.ReplaceAll(pkg, "-", "")
			src := env.ctrd.RunPodContainer(t, "team-a", sandbox, "main", framework.CounterScript)
			framework.WaitCounter(t, src.LogPath, 10)

			cmd := exec.Command("node", "snapshots.mjs")
			cmd.Dir = sdkDir
			cmd.Env = append(os.Environ(), "E2B_API_URL="+env.url, "E2B_API_KEY="+keyAlice, "SANDBOX_ID="+sandbox, "E2B_PACKAGE="+pkg)
			out, err := cmd.CombinedOutput()
			require.NoError(t, err, "node snapshots.mjs with %s:\n%s", pkg, out)
			var seen struct {
				SnapshotID string   `json:"snapshotId"`
				CloneID    string   `json:"cloneId"`
				Pages      int      `json:"pages"`
				Remaining  []string `json:"remaining"`
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &seen), "%s", out)
			assert.Equal(t, 3, seen.Pages)

			// The clone runs, and its counter continues from the capture (a fresh process would start at 1).
			ctrs, err := env.ctrd.Client.Containers(env.ctrd.Ctx(), fmt.Sprintf(`labels."io.kubernetes.pod.name"==%q`, seen.CloneID))
			require.NoError(t, err)
			require.Len(t, ctrs, 1)
			log := env.srv.DataDir + "/containers/" + ctrs[0].ID() + ".log"
			framework.WaitCounter(t, log, 1)
			first, _, _ := framework.Counter(t, log)
			assert.Greater(t, first, 10, "the clone's memory continues from the capture")
			_, last, _ := framework.Counter(t, log)
			framework.WaitCounter(t, log, last+3)

			// Owned by alice, in team-a: what the Kubernetes API shows too.
			snaps, err := env.client.AgentsV1alpha1().Checkpoints("team-a").List(context.Background(), metav1.ListOptions{
				FieldSelector: "status.checkpointId=" + seen.SnapshotID})
			require.NoError(t, err)
			require.Len(t, snaps.Items, 1)
			assert.Equal(t, "e2b:alice", snaps.Items[0].Annotations["agents.kruise.io/owner"], "E2B users are prefixed: a keys file names no Kubernetes user")
		})
	}
}

// TestE2BIsolationAndBadInput: keys see only their own snapshots; bad input
// gets the documented status and a {code,message} body, and creates nothing.
func TestE2BIsolationAndBadInput(t *testing.T) {
	env := startE2BEnv(t)
	src := env.ctrd.RunPodContainer(t, "team-a", "shared", "main", framework.CounterScript)
	framework.WaitCounter(t, src.LogPath, 3)

	status, body, _ := env.call(t, keyAlice, "POST", "/sandboxes/shared/snapshots", `{"name":"mine"}`)
	require.Equal(t, 201, status, "%s", body)
	var snap struct {
		SnapshotID string   `json:"snapshotID"`
		Names      []string `json:"names"`
	}
	require.NoError(t, json.Unmarshal(body, &snap))
	assert.Equal(t, []string{"mine"}, snap.Names)

	list := func(key, query string) []string {
		t.Helper()
		status, body, _ := env.call(t, key, "GET", "/snapshots"+query, "")
		require.Equal(t, 200, status, "%s", body)
		var items []struct {
			SnapshotID string   `json:"snapshotID"`
			Names      []string `json:"names"`
		}
		require.NoError(t, json.Unmarshal(body, &items))
		ids := []string{}
		for _, it := range items {
			require.NotNil(t, it.Names, "names is always an array")
			ids = append(ids, it.SnapshotID)
		}
		return ids
	}
	assert.Equal(t, []string{snap.SnapshotID}, list(keyAlice, ""))
	assert.Equal(t, []string{snap.SnapshotID}, list(keyAlice, "?sandboxID=shared&name=mine"))
	assert.Equal(t, []string{}, list(keyAlice, "?name=unknown"))
	assert.Equal(t, []string{}, list(keyBob, ""), "bob, same team, sees nothing of alice's")
	assert.Equal(t, []string{}, list(keyCarol, ""), "carol, another team, sees nothing")
	assert.Equal(t, []string{snap.SnapshotID}, list(keyRoot, ""), "the admin team sees all")

	for _, key := range []string{keyBob, keyCarol} {
		status, body, _ = env.call(t, key, "DELETE", "/templates/"+snap.SnapshotID, "")
		wantError(t, 404, status, body, "deleting another's snapshot")
		status, body, _ = env.call(t, key, "POST", "/v2/sandboxes", `{"templateID":"`+snap.SnapshotID+`"}`)
		wantError(t, 404, status, body, "cloning another's snapshot")
	}
	// Over the Kubernetes API too: bob may see alice's Checkpoint (RBAC), not restore it.
	cfg := rest.CopyConfig(env.srv.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "bob", Groups: []string{"agents.kruise.io:e2b-team:team-a"}}
	asBob, err := versioned.NewForConfig(cfg)
	require.NoError(t, err)
	cps, err := asBob.AgentsV1alpha1().Checkpoints("team-a").List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	require.Len(t, cps.Items, 1)
	_, err = asBob.AgentsV1alpha1().Checkpoints("team-a").Restore(context.Background(), cps.Items[0].Name,
		&v1alpha1.CheckpointRestore{Spec: v1alpha1.CheckpointRestoreSpec{SandboxName: "stolen"}}, metav1.CreateOptions{})
	assert.True(t, apierrors.IsForbidden(err), "bob restoring alice's checkpoint: %v", err)
	mine, err := asBob.AgentsV1alpha1().Snapshots("team-a").List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	assert.Empty(t, mine.Items, "bob's snapshots view is empty")

	count := func() int {
		l, err := env.client.AgentsV1alpha1().Checkpoints(metav1.NamespaceAll).List(context.Background(), metav1.ListOptions{})
		require.NoError(t, err)
		return len(l.Items)
	}
	before := count()
	bad := []struct {
		name, key, method, path, body string
		code                          int
	}{
		{"no key", "", "GET", "/snapshots", "", 401},
		{"bad key shape", "e2b_XYZ", "GET", "/snapshots", "", 401},
		{"unknown key", "e2b_0000000000000000000000000000000000000000", "GET", "/snapshots", "", 401},
		{"malformed JSON", keyAlice, "POST", "/sandboxes/shared/snapshots", `{"name":`, 400},
		{"wrong type", keyAlice, "POST", "/sandboxes/shared/snapshots", `{"name":42}`, 400},
		{"unknown sandbox", keyAlice, "POST", "/sandboxes/no-such-sandbox/snapshots", `{}`, 404},
		{"unparsable query", keyAlice, "GET", "/snapshots?nextToken=%%%not-a-token", "", 400},
		{"bad nextToken", keyAlice, "GET", "/snapshots?nextToken=!!not-a-token", "", 400},
		{"forged nextToken", keyAlice, "GET", "/snapshots?nextToken=eyJvIjotNX0", "", 400},
		{"limit 0", keyAlice, "GET", "/snapshots?limit=0", "", 400},
		{"limit 101", keyAlice, "GET", "/snapshots?limit=101", "", 400},
		{"oversized body", keyAlice, "POST", "/sandboxes/shared/snapshots", `{"name":"` + strings.Repeat("x", 2<<20) + `"}`, 413},
		{"create sandbox without template", keyAlice, "POST", "/v2/sandboxes", `{}`, 400},
		{"create sandbox, template a number", keyAlice, "POST", "/sandboxes", `{"templateID":7}`, 400},
		{"unknown template", keyAlice, "POST", "/v2/sandboxes", `{"templateID":"ckpt-000000000000000000000000"}`, 404},
		{"delete unknown", keyAlice, "DELETE", "/templates/team%2Fsnap%3Adefault", "", 404},
		{"unknown sandbox get", keyAlice, "GET", "/sandboxes/nope", "", 404},
		{"unknown route", keyAlice, "GET", "/nothing-here", "", 404},
		{"wrong method", keyAlice, "PUT", "/snapshots", "", 404},
	}
	for _, tc := range bad {
		status, body, _ := env.call(t, tc.key, tc.method, tc.path, tc.body)
		wantError(t, tc.code, status, body, tc.name)
	}
	assert.Equal(t, before, count(), "bad input created nothing")

	// Pagination headers: X-Next-Token when more, none on the last page.
	status, body, _ = env.call(t, keyAlice, "POST", "/sandboxes/shared/snapshots", "")
	require.Equal(t, 201, status, "%s", body)
	_, _, h := env.call(t, keyAlice, "GET", "/snapshots?limit=1", "")
	next := h.Get("X-Next-Token")
	require.NotEmpty(t, next)
	_, _, h = env.call(t, keyAlice, "GET", "/snapshots?limit=1&nextToken="+next, "")
	assert.Empty(t, h.Get("X-Next-Token"))

	// A change of the keys file is picked up: carol's key goes.
	data, err := os.ReadFile(env.keys)
	require.NoError(t, err)
	var kept []string
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.Contains(line, keyCarol) {
			kept = append(kept, line)
		}
	}
	require.NoError(t, os.WriteFile(env.keys, []byte(strings.Join(kept, "\n")), 0o600))
	require.Eventually(t, func() bool {
		status, _, _ := env.call(t, keyCarol, "GET", "/snapshots", "")
		return status == 401
	}, 15*time.Second, 200*time.Millisecond, "carol's key is refused once removed from the file")
	status, _, _ = env.call(t, keyAlice, "GET", "/snapshots", "")
	assert.Equal(t, 200, status)

	// No key ever reaches the log.
	log, err := os.ReadFile(env.srv.LogFile)
	require.NoError(t, err)
	for _, k := range []string{keyAlice, keyBob, keyCarol, keyRoot} {
		assert.NotContains(t, string(log), k)
	}
}
