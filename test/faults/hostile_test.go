package faults

import (
	"bytes"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// TestNoCredentialsNoEntryNoSecretsInLogs: on every listener (the API's
// secure port and the E2B front), requests without valid credentials are
// refused and change nothing, bodies over the limit are refused, and after
// all of it no API key and no private key appears in the server's log.
func TestNoCredentialsNoEntryNoSecretsInLogs(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	require.NoError(t, os.WriteFile(keys, []byte("keys:\n- {key: "+loadKey+", user: loader, team: "+ns+"}\n"), 0o600))
	front := fmt.Sprintf("http://127.0.0.1:%d", framework.FreePort(t))
	e := startEnv(t, "--e2b-bind-address="+strings.TrimPrefix(front, "http://"), "--e2b-api-keys-file="+keys, "-v=4")
	api := e.srv.Config.Host + "/apis/agents.kruise.io/v1alpha1/namespaces/" + ns + "/checkpoints"
	body := `{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"intruder"},"spec":{"podName":"p"}}`

	// The API: TLS without a client certificate, or with one from another CA.
	stranger := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for _, req := range []struct{ method, url, body string }{
		{http.MethodGet, api, ""}, {http.MethodPost, api, body}, {http.MethodGet, e.srv.Config.Host + "/metrics", ""},
		{http.MethodGet, e.srv.Config.Host + "/debug/pprof/heap", ""},
	} {
		r, err := http.NewRequest(req.method, req.url, strings.NewReader(req.body))
		require.NoError(t, err)
		r.Header.Set("Content-Type", "application/json")
		resp, err := stranger.Do(r)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Contains(t, []int{http.StatusUnauthorized, http.StatusForbidden}, resp.StatusCode, "%s %s without credentials", req.method, req.url)
	}
	r, _ := http.NewRequest(http.MethodGet, api, nil)
	r.Header.Set("Authorization", "Bearer not-a-token")
	resp, err := stranger.Do(r)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Contains(t, []int{http.StatusUnauthorized, http.StatusForbidden}, resp.StatusCode, "a made-up bearer token")

	// The E2B front: no key, a malformed key, an unknown key.
	e2b := &http.Client{Timeout: 10 * time.Second}
	for _, key := range []string{"", "hello", "e2b_ffffffffffffffffffffffffffffffffffffffff", strings.ToUpper(loadKey)} {
		for _, req := range []struct{ method, path, body string }{
			{http.MethodGet, "/snapshots", ""}, {http.MethodPost, "/sandboxes/sb/snapshots", `{}`}, {http.MethodDelete, "/templates/x", ""},
		} {
			r, err := http.NewRequest(req.method, front+req.path, strings.NewReader(req.body))
			require.NoError(t, err)
			if key != "" {
				r.Header.Set("X-API-Key", key)
			}
			resp, err := e2b.Do(r)
			require.NoError(t, err)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "%s %s with key %q", req.method, req.path, key)
			assert.Contains(t, string(b), `"code":401`)
		}
	}
	// Over the limit, with a good key and with admin credentials.
	big := `{"name":"` + strings.Repeat("x", 4<<20) + `"}`
	r, _ = http.NewRequest(http.MethodPost, front+"/sandboxes/sb/snapshots", strings.NewReader(big))
	r.Header.Set("X-API-Key", loadKey)
	resp, err = e2b.Do(r)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, "E2B body over the limit")
	admin, err := restHTTPClient(e)
	require.NoError(t, err)
	resp, err = admin.Post(api, "application/json", bytes.NewReader([]byte(`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"big","annotations":{"a":"`+strings.Repeat("x", 4<<20)+`"}},"spec":{"podName":"p"}}`)))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, "API body over the limit")

	list, err := e.cps().List(t.Context(), listAll)
	require.NoError(t, err)
	assert.Empty(t, list.Items, "nothing was created")

	// No secret in the log: not the API key, not a private key of the data dir.
	e.srv.Stop()
	logData, err := os.ReadFile(e.srv.LogFile)
	require.NoError(t, err)
	log := string(logData)
	assert.NotContains(t, log, loadKey)
	assert.NotContains(t, log, "PRIVATE KEY")
	keyFiles, _ := filepath.Glob(filepath.Join(e.srv.DataDir, "*", "*.key"))
	more, _ := filepath.Glob(filepath.Join(e.srv.DataDir, "*.key"))
	keyFiles = append(keyFiles, more...)
	require.NotEmpty(t, keyFiles, "the data dir holds private keys to look for")
	for _, f := range keyFiles {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		block, _ := pem.Decode(data)
		require.NotNil(t, block, f)
		body := strings.Join(strings.Split(strings.TrimSpace(string(data)), "\n")[1:3], "")
		assert.NotContains(t, log, body, "the private key %s", filepath.Base(f))
	}
}
