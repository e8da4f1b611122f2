package integration

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// TestBadInput sends what a broken or hostile client might, and checks each
// gets a Kubernetes Status error, nothing is stored, and the server lives on.
func TestBadInput(t *testing.T) {
	srv := framework.StartStandalone(t, t.TempDir())
	client, err := rest.HTTPClientFor(srv.Config)
	require.NoError(t, err)
	ns := "bad-input"
	collection := srv.Config.Host + "/apis/agents.kruise.io/v1alpha1/namespaces/" + ns + "/checkpoints"

	huge := strings.Repeat("a", 4<<20)
	cases := map[string]struct {
		body        string
		contentType string
		code        int
	}{
		"malformed JSON":        {`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint",`, "application/json", 400},
		"not an object":         {`[1,2,3]`, "application/json", 400},
		"wrong kind":            {`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}`, "application/json", 400},
		"unknown kind in group": {`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Snapshot","metadata":{"name":"x"}}`, "application/json", 400},
		"wrong field type":      {`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"x"},"spec":{"podName":42}}`, "application/json", 400},
		"keepRunning a string":  {`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"x"},"spec":{"podName":"p","keepRunning":"yes"}}`, "application/json", 400},
		"garbage protobuf":      {"k8s\x00\xff\xfe\x01garbage", "application/vnd.kubernetes.protobuf", 400},
		"oversized field":       {`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"x"},"spec":{"podName":"` + strings.Repeat("p", 300) + `"}}`, "application/json", 422},
		"oversized name":        {`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"` + strings.Repeat("n", 300) + `"},"spec":{"podName":"p"}}`, "application/json", 422},
		"oversized body":        {`{"apiVersion":"agents.kruise.io/v1alpha1","kind":"Checkpoint","metadata":{"name":"x","annotations":{"a":"` + huge + `"}},"spec":{"podName":"p"}}`, "application/json", 413},
		"unsupported media":     {`podName: p`, "text/plain", 415},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodPost, collection, bytes.NewBufferString(tc.body))
			require.NoError(t, err)
			req.Header.Set("Content-Type", tc.contentType)
			req.Header.Set("Accept", "application/json")
			resp, err := client.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			assert.Equal(t, tc.code, resp.StatusCode, "%s", body)
			var status metav1.Status
			require.NoError(t, json.Unmarshal(body, &status), "body is a Status: %s", body)
			assert.Equal(t, "Status", status.Kind)
			assert.Equal(t, metav1.StatusFailure, status.Status)
			assert.NotEmpty(t, status.Message)
		})
	}

	list, err := clientFor(t, srv.Config, "application/json").AgentsV1alpha1().Checkpoints(ns).List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	assert.Empty(t, list.Items, "nothing was stored")
	assert.NoError(t, srv.Healthy(context.Background()))
	assert.NotContains(t, readFile(t, srv.LogFile), "panic", "no panic in the server log")
}

// TestStandaloneAuth checks that standalone mode admits its admin identity
// and refuses everyone else, including other certificates from its own CA.
func TestStandaloneAuth(t *testing.T) {
	srv := framework.StartStandalone(t, t.TempDir())
	url := srv.Config.Host + "/apis/agents.kruise.io/v1alpha1/namespaces/default/checkpoints"
	caPool := x509.NewCertPool()
	require.True(t, caPool.AppendCertsFromPEM([]byte(readFile(t, filepath.Join(srv.DataDir, "pki", "ca.crt")))))

	get := func(t *testing.T, cert *tls.Certificate, path string) int {
		tlsCfg := &tls.Config{RootCAs: caPool}
		if cert != nil {
			tlsCfg.Certificates = []tls.Certificate{*cert}
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsCfg}, Timeout: 10 * time.Second}
		resp, err := c.Get(path)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}

	admin, err := tls.LoadX509KeyPair(filepath.Join(srv.DataDir, "pki", "admin.crt"), filepath.Join(srv.DataDir, "pki", "admin.key"))
	require.NoError(t, err)
	assert.Equal(t, 200, get(t, &admin, url), "admin certificate")

	user := issueClientCert(t, srv.DataDir, "alice", "developers")
	assert.Equal(t, 403, get(t, &user, url), "a certificate of the CA outside the admin groups")
	assert.Equal(t, 403, get(t, nil, url), "no certificate")
	assert.Equal(t, 200, get(t, nil, srv.Config.Host+"/readyz"), "health is public")
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

// issueClientCert signs a client certificate with the standalone CA in dataDir.
func issueClientCert(t *testing.T, dataDir, name string, groups ...string) tls.Certificate {
	t.Helper()
	ca, err := tls.LoadX509KeyPair(filepath.Join(dataDir, "pki", "ca.crt"), filepath.Join(dataDir, "pki", "ca.key"))
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	require.NoError(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name, Organization: groups},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), ca.PrivateKey)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	cert, err := tls.X509KeyPair(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	require.NoError(t, err)
	return cert
}
