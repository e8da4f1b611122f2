package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	certutil "k8s.io/client-go/util/cert"

	"github.com/agents-kruise/checkpoint-apiserver/driver"
)

// capturingDriver is a fake node driver whose capture takes no time, so
// that what a call through the agent costs is the channel alone.
type capturingDriver struct{ fakeNodeDriver }

func (capturingDriver) Capture(_ context.Context, _ driver.Target, req driver.CaptureRequest) (driver.CaptureResult, error) {
	return driver.CaptureResult{ID: req.ID, SizeBytes: 1}, nil
}

// testClientCert writes a CA (returned) and a client certificate for user
// signed by it, at <returned base>.crt and .key.
func testClientCert(tb testing.TB, dir, user string) (string, string) {
	tb.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-ca"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(tb, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(tb, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: user}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		KeyUsage: x509.KeyUsageDigitalSignature, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caTmpl, &key.PublicKey, caKey)
	require.NoError(tb, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(tb, err)
	ca, base := filepath.Join(dir, "client-ca.crt"), filepath.Join(dir, user)
	require.NoError(tb, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600))
	require.NoError(tb, os.WriteFile(base+".crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(tb, os.WriteFile(base+".key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	return ca, base
}

// hop is an agent for node-1 on loopback, with a fake kube-apiserver that
// knows the Pod and the Node, and a Client of it with the server's
// client certificate.
func hop(tb testing.TB) (*Client, driver.Target) {
	tb.Helper()
	return hopWith(tb, func(*Config) {})
}

// hopWith is hop with the agent's configuration changed by set.
func hopWith(tb testing.TB, set func(*Config)) (*Client, driver.Target) {
	tb.Helper()
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey("127.0.0.1", []net.IP{net.ParseIP("127.0.0.1")}, []string{"node-1"})
	require.NoError(tb, err)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(tb, err)
	caFile := filepath.Join(tb.TempDir(), "serving-ca.crt")
	require.NoError(tb, os.WriteFile(caFile, certPEM, 0o600))

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p", UID: "uid-1"},
		Spec:       corev1.PodSpec{NodeName: "node-1", Containers: []corev1.Container{{Name: "main"}}},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{
			Name: "main", ContainerID: "containerd://abc", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{}},
		}}},
	}
	kube := fake.NewSimpleClientset(pod)
	dir := tb.TempDir()
	clientCA, clientCert := testClientCert(tb, dir, "the-server")
	cfg := Config{Node: "node-1", Driver: &capturingDriver{}, Client: kube, ServerUsers: []string{"the-server"}, ClientCAFile: clientCA}
	set(&cfg)
	srv, err := New(cfg)
	require.NoError(tb, err)
	ts := httptest.NewUnstartedServer(srv.Handler())
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert}
	ts.StartTLS()
	tb.Cleanup(ts.Close)
	_, port, _ := net.SplitHostPort(ts.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	_, err = kube.CoreV1().Nodes().Create(context.Background(), &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-1"},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}}},
	}, metav1.CreateOptions{})
	require.NoError(tb, err)
	c, err := NewClient(ClientConfig{Client: kube, Port: p, CAFile: caFile, CertFile: clientCert + ".crt", KeyFile: clientCert + ".key", Timeout: 10 * time.Second})
	require.NoError(tb, err)
	return c, driver.Target{Namespace: "ns", Name: "p", UID: "uid-1", Node: "node-1"}
}

func TestCaptureThroughTheAgent(t *testing.T) {
	c, target := hop(t)
	defer func() {
		// The agent's metrics, for the server's identity only.
		resp, err := c.http.Get("https://" + c.addrs["node-1"] + PathMetrics)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode, "%s", body)
		assert.Contains(t, string(body), `checkpoint_node_agent_requests_total{code="200",path="/v1/capture"}`)
		assert.Contains(t, string(body), `checkpoint_node_agent_capture_duration_seconds_count{result="success"}`)
		anonymous := &http.Client{Transport: &http.Transport{TLSClientConfig: c.http.Transport.(*http.Transport).TLSClientConfig.Clone()}}
		anonymous.Transport.(*http.Transport).TLSClientConfig.Certificates = nil
		resp, err = anonymous.Get("https://" + c.addrs["node-1"] + PathMetrics)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	}()
	res, err := c.Capture(context.Background(), target, driver.CaptureRequest{ID: "ckpt-1"})
	require.NoError(t, err)
	require.Equal(t, "ckpt-1", res.ID)
	// Another node's Pod is refused by this agent.
	target.Node = "node-1"
	target.UID = "other"
	_, err = c.Capture(context.Background(), target, driver.CaptureRequest{ID: "ckpt-2"})
	require.ErrorIs(t, err, driver.ErrTargetNotFound, "a replaced Pod (another UID) is not captured")
}

// BenchmarkAgentHop is what a capture through a node agent adds to the
// capture itself: mutual TLS to the agent (connections reused), the
// client certificate's verification, the agent's own read of the Pod,
// JSON both ways. The fake kube-apiserver answers at once: a real one adds its GET of
// the Pod (about a millisecond on loopback).
func BenchmarkAgentHop(b *testing.B) {
	c, target := hop(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Capture(ctx, target, driver.CaptureRequest{ID: "ckpt-1"}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDirectCapture is the same fake capture called in process, as
// the one-node server does: the baseline of BenchmarkAgentHop.
func BenchmarkDirectCapture(b *testing.B) {
	d := &capturingDriver{}
	ctx := context.Background()
	target := driver.Target{Namespace: "ns", Name: "p", Node: "node-1"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.Capture(ctx, target, driver.CaptureRequest{ID: "ckpt-1"}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestAnAgentCannotPoseAsAnotherNodes: the server checks each agent's
// certificate for that agent's node. node-2's address here leads to node-1's
// agent (as root on node-1 redirecting node-2's traffic would): the call
// fails the handshake, and nothing is sent.
func TestAnAgentCannotPoseAsAnotherNodes(t *testing.T) {
	c, _ := hop(t)
	ctx := context.Background()
	addr := mustAddress(t, c)
	host, _, _ := net.SplitHostPort(addr)
	_, err := c.cfg.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-2"},
		Status:     corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: host}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, c.call(ctx, "node-1", PathStates, struct{}{}, nil), "node-1's agent, for node-1")
	err = c.call(ctx, "node-2", PathStates, struct{}{}, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "certificate is valid for node-1, not node-2")
}
