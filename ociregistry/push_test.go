package ociregistry

import (
	"bytes"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/component-base/metrics/testutil"
)

// fakeRegistry is a fake of the distribution API's upload and manifest
// routes (the real registry is Debian's docker-registry, in the e2e tests):
// it keeps what it was sent and checks digests as a registry does.
type fakeRegistry struct {
	mu        sync.Mutex
	uploads   map[string]*bytes.Buffer
	blobs     map[digest.Digest][]byte
	manifests map[string][]byte
	// elsewhere, when set, is where uploads are sent (another host).
	elsewhere string
	patches   int
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if u, p, ok := r.BasicAuth(); !ok || u != "robot" || p != "pw" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	const uploads = "/v2/cp/blobs/uploads/"
	switch {
	case r.Method == http.MethodPost && r.URL.Path == uploads:
		id := "u" + string(rune('a'+len(f.uploads)))
		f.uploads[id] = &bytes.Buffer{}
		loc := uploads + id + "?_state=opaque"
		if f.elsewhere != "" {
			loc = f.elsewhere + loc
		}
		w.Header().Set("Location", loc)
		w.WriteHeader(http.StatusAccepted)
	case strings.HasPrefix(r.URL.Path, uploads) && (r.Method == http.MethodPatch || r.Method == http.MethodPut):
		id := strings.TrimPrefix(r.URL.Path, uploads)
		buf := f.uploads[id]
		if buf == nil || r.URL.Query().Get("_state") != "opaque" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		_, _ = io.Copy(buf, r.Body)
		if r.Method == http.MethodPatch {
			f.patches++
			w.Header().Set("Location", uploads+id+"?_state=opaque")
			w.WriteHeader(http.StatusAccepted)
			return
		}
		d := digest.Digest(r.URL.Query().Get("digest"))
		if digest.FromBytes(buf.Bytes()) != d {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"errors":[{"code":"DIGEST_INVALID"}]}`))
			return
		}
		f.blobs[d] = buf.Bytes()
		w.WriteHeader(http.StatusCreated)
	case r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/v2/cp/manifests/"):
		data, _ := io.ReadAll(r.Body)
		f.manifests[strings.TrimPrefix(r.URL.Path, "/v2/cp/manifests/")] = data
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(data).String())
		w.WriteHeader(http.StatusCreated)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func startFake(t *testing.T) (*fakeRegistry, *Registry) {
	f := &fakeRegistry{uploads: map[string]*bytes.Buffer{}, blobs: map[digest.Digest][]byte{}, manifests: map[string][]byte{}}
	ts := httptest.NewTLSServer(f)
	t.Cleanup(ts.Close)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.crt")
	require.NoError(t, os.WriteFile(ca, certPEM(ts.Certificate().Raw), 0o600))
	auth := filepath.Join(dir, "auth.json")
	host := strings.TrimPrefix(ts.URL, "https://")
	require.NoError(t, os.WriteFile(auth, []byte(`{"auths":{"`+host+`":{"username":"robot","password":"pw"}}}`), 0o600))
	r, err := New(Config{Repository: host + "/cp", CAFile: ca, AuthFile: auth})
	require.NoError(t, err)
	return f, r
}

// TestPushBlobStreams: a blob of unknown length goes up in one PATCH, its
// digest computed on the way and checked by the registry at the end.
func TestPushBlobStreams(t *testing.T) {
	f, r := startFake(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	// Only a Reader: neither the length nor the digest is known up front.
	desc, err := r.PushBlob(t.Context(), ocispec.MediaTypeImageLayer, io.MultiReader(bytes.NewReader(data[:1000]), bytes.NewReader(data[1000:])))
	require.NoError(t, err)
	assert.Equal(t, digest.FromBytes(data), desc.Digest)
	assert.EqualValues(t, len(data), desc.Size)
	assert.Equal(t, ocispec.MediaTypeImageLayer, desc.MediaType)
	assert.Equal(t, data, f.blobs[desc.Digest])
	assert.Equal(t, 1, f.patches)

	small, err := r.PushBytes(t.Context(), ocispec.MediaTypeImageConfig, []byte(`{}`))
	require.NoError(t, err)
	assert.Equal(t, []byte(`{}`), f.blobs[small.Digest])
	assert.Equal(t, 1, f.patches, "a known blob goes up whole, in the PUT")

	m, err := r.PushManifest(t.Context(), "", ocispec.MediaTypeImageManifest, []byte(`{"schemaVersion":2}`))
	require.NoError(t, err)
	assert.Contains(t, f.manifests, m.Digest.String(), "an untagged manifest is stored by digest")
	_, err = r.PushManifest(t.Context(), "ckpt-1", ocispec.MediaTypeImageIndex, []byte(`{"schemaVersion":2,"manifests":[]}`))
	require.NoError(t, err)
	assert.Contains(t, f.manifests, "ckpt-1")
}

// TestPushRefusals: a failing read, a registry that sends the upload to
// another host (the credentials must not follow) and bad credentials all
// end the push with an error.
func TestPushRefusals(t *testing.T) {
	f, r := startFake(t)
	_, err := r.PushBlob(t.Context(), ocispec.MediaTypeImageLayer, io.MultiReader(strings.NewReader("part"), &failingReader{}))
	require.Error(t, err)
	assert.ErrorContains(t, err, "read pages-1.img")
	assert.NotContains(t, err.Error(), "_state", "no upload session in the message")
	assert.Empty(t, f.blobs, "nothing completed")

	f.elsewhere = "https://elsewhere.example:5443"
	_, err = r.PushBytes(t.Context(), ocispec.MediaTypeImageConfig, []byte(`{}`))
	assert.ErrorContains(t, err, "not "+r.Host())
	f.elsewhere = ""

	r.pass = "wrong"
	refused := requestErrors.WithLabelValues(http.MethodPost, "unauthorized")
	before, err := testutil.GetCounterMetricValue(refused)
	require.NoError(t, err)
	_, err = r.PushBytes(t.Context(), ocispec.MediaTypeImageConfig, []byte(`{}`))
	assert.ErrorContains(t, err, "refused the server's credentials")
	assert.NotContains(t, err.Error(), "_state", "no upload session in the message")
	after, err := testutil.GetCounterMetricValue(refused)
	require.NoError(t, err)
	assert.Equal(t, 1.0, after-before, "the refused upload is counted, by method and kind")
}

func TestErrorKinds(t *testing.T) {
	for status, kind := range map[int]string{0: "unreachable", 401: "unauthorized", 403: "unauthorized", 404: "not_found",
		400: "rejected", 416: "rejected", 500: "server_error", 503: "server_error"} {
		assert.Equal(t, kind, errorKind(status), "HTTP %d", status)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errDumpGone }

var errDumpGone = &os.PathError{Op: "read", Path: "pages-1.img", Err: os.ErrNotExist}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// A reference that is neither a tag nor a digest never reaches a URL.
func TestReferencesAreTagsOrDigests(t *testing.T) {
	f, r := startFake(t)
	for _, ref := range []string{"../../v2/other/manifests/x", "x?y=1", "a/b", "", "-x", "sha256:nothex"} {
		_, err := r.Index(t.Context(), ref)
		assert.ErrorContains(t, err, "neither a tag nor a digest", ref)
		if ref != "" {
			_, err = r.PushManifest(t.Context(), ref, ocispec.MediaTypeImageIndex, []byte(`{}`))
			assert.ErrorContains(t, err, "neither a tag nor a digest", ref)
		}
	}
	assert.Empty(t, f.blobs)
	_, err := r.PushManifest(t.Context(), "ckpt-0123456789abcdef01234567", ocispec.MediaTypeImageIndex, []byte(`{}`))
	assert.NoError(t, err, "a checkpoint ID is a tag")
}
