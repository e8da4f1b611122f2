package agent

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/agents-kruise/checkpoint-apiserver/driver"
	"github.com/agents-kruise/checkpoint-apiserver/encryption"
	"github.com/agents-kruise/checkpoint-apiserver/ociregistry"
)

// TestKeysReachTheirNodeOnly: the agent keeps a data key given for a Pod
// bound to its node, refuses one for a Pod elsewhere or replaced, and a
// capture into the registry without its data key is refused: memory
// leaves the node encrypted only.
func TestKeysReachTheirNodeOnly(t *testing.T) {
	ring := &encryption.Ring{}
	reg, err := ociregistry.New(ociregistry.Config{Repository: "127.0.0.1:1/checkpoints"})
	require.NoError(t, err)
	_, err = New(Config{Node: "node-1", Driver: &capturingDriver{}, Client: fake.NewSimpleClientset(), ServerUsers: []string{"s"}, Registry: reg})
	assert.ErrorContains(t, err, "key ring", "an agent that pushes to a registry holds keys")

	var kubeSet func(*corev1.Pod)
	c, target := hopWith(t, func(cfg *Config) {
		cfg.Registry, cfg.Keys = reg, ring
		kubeSet = func(p *corev1.Pod) {
			_, err := cfg.Client.CoreV1().Pods(p.Namespace).Create(context.Background(), p, metav1.CreateOptions{})
			require.NoError(t, err)
		}
	})
	kubeSet(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "elsewhere", UID: "uid-2"}, Spec: corev1.PodSpec{NodeName: "node-2"}})
	dek, err := encryption.NewDEK()
	require.NoError(t, err)
	id := "ckpt-aaaaaaaaaaaaaaaaaaaaaaaa"
	ctx := context.Background()

	err = c.GiveKey(ctx, "node-1", PodRef{Namespace: "ns", Name: "elsewhere", UID: "uid-2"}, id, dek)
	assert.ErrorIs(t, err, ErrForbidden, "a Pod of another node gets no key here")
	err = c.GiveKey(ctx, "node-1", PodRef{Namespace: "ns", Name: "p", UID: "replaced"}, id, dek)
	assert.ErrorIs(t, err, ErrForbidden, "nor a Pod that was replaced")
	err = c.GiveKey(ctx, "node-1", PodRef{Namespace: "ns", Name: "p", UID: "uid-1"}, "../etc", dek)
	assert.ErrorContains(t, err, "not one this server makes")
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = ring.Wait(short, "ns", id)
	cancel()
	assert.ErrorIs(t, err, encryption.ErrNoKeyOnNode, "nothing refused was kept")

	require.NoError(t, c.GiveKey(ctx, "node-1", PodRef{Namespace: "ns", Name: "p", UID: "uid-1"}, id, dek))
	got, err := ring.Wait(ctx, "ns", id)
	require.NoError(t, err)
	assert.Equal(t, dek, got)

	_, err = c.Capture(ctx, target, driver.CaptureRequest{ID: "ckpt-bbbbbbbbbbbbbbbbbbbbbbbb"})
	assert.ErrorContains(t, err, "encrypted only", "no capture into the registry without its data key")

	// A delete forgets the key.
	require.NoError(t, c.call(ctx, "node-1", PathDelete, DeleteRequest{ID: id}, nil))
	short, cancel = context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = ring.Wait(short, "ns", id)
	assert.ErrorIs(t, err, encryption.ErrNoKeyOnNode)
}

// TestTokensAreRefused: an agent takes the server's client certificate and
// nothing else: a bearer token is refused, alone or beside the certificate.
func TestTokensAreRefused(t *testing.T) {
	c, _ := hop(t)
	addr := "https://" + mustAddress(t, c) + PathStates
	anonymous := &http.Client{Transport: &http.Transport{TLSClientConfig: c.http.Transport.(*http.Transport).TLSClientConfig.Clone()}}
	anonymous.Transport.(*http.Transport).TLSClientConfig.Certificates = nil
	for name, client := range map[string]*http.Client{"a token alone": anonymous, "a token beside the certificate": c.http} {
		req, err := http.NewRequest(http.MethodPost, addr, strings.NewReader("{}"))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer the-servers-own-token")
		resp, err := client.Do(req)
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, name)
		assert.Contains(t, string(body), "bearer tokens are refused", name)
	}
	resp, err := c.http.Post(addr, "application/json", strings.NewReader("{}"))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, "the certificate alone is served")
}

func mustAddress(t *testing.T, c *Client) string {
	t.Helper()
	a, err := c.address(context.Background(), "node-1")
	require.NoError(t, err)
	return a
}

// TestListenerTimeouts: the agent's listener cuts off a client that is slow
// to send its request or holds a connection idle.
func TestListenerTimeouts(t *testing.T) {
	s := &Server{}
	srv := s.httpServer(context.Background(), nil)
	assert.Positive(t, srv.ReadTimeout)
	assert.Positive(t, srv.IdleTimeout)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	// A client that opens a connection and sends nothing.
	conn, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("POST /v1/states HTTP/1.1\r\nHost: x\r\n"))
	require.NoError(t, err)
	// Bounded far above the agent's own timeout: only a listener that never
	// cuts the client off fails here.
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*srv.ReadHeaderTimeout)))
	_, err = io.ReadAll(conn)
	require.NoError(t, err, "the agent closed the connection (no deadline of ours expired)")
}

// TestDeadNodesDoNotBlockDeletes: a node where no agent answers does not
// hold a delete up (its sweep cleans up when it is back); an agent that
// answers still gets the delete.
func TestDeadNodesDoNotBlockDeletes(t *testing.T) {
	var driver *capturingDriver
	c, _ := hopWith(t, func(cfg *Config) { driver = cfg.Driver.(*capturingDriver) })
	_, err := c.cfg.Client.CoreV1().Nodes().Create(context.Background(), &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "node-dead"},
		// Loopback, where nothing listens on the agents' port.
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.2"}}},
	}, metav1.CreateOptions{})
	require.NoError(t, err)
	require.NoError(t, c.Delete(context.Background(), "ckpt-cccccccccccccccccccccccc"))
	assert.Contains(t, driver.deleted, "ckpt-cccccccccccccccccccccccc", "the live node's agent deleted it")
}
