package agentcert

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

const agentUser = "system:serviceaccount:checkpoint-system:checkpoint-node-agent"

func testCA(t *testing.T) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "agent-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	ca, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return ca, key
}

// agentPods are the agents' Pods: one per node.
func agentPods() []runtime.Object {
	var objs []runtime.Object
	for _, n := range []string{"node-1", "node-2"} {
		objs = append(objs, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "checkpoint-system", Name: "agent-" + n, UID: types.UID("uid-" + n)},
			Spec:       corev1.PodSpec{NodeName: n},
		})
	}
	return objs
}

func request(t *testing.T, cn string, dns []string, ips []net.IP) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: cn}, DNSNames: dns, IPAddresses: ips}, key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// TestSignerSignsOnlyForTheRequestersNode tries to get a certificate for a
// node other than the one the requester's Pod runs on, in every way a node's
// root could: each is denied with its reason, and only the agent's own
// node's request is signed.
func TestSignerSignsOnlyForTheRequestersNode(t *testing.T) {
	ca, caKey := testCA(t)
	onNode1 := map[string]certificatesv1.ExtraValue{extraPodName: {"agent-node-1"}, extraPodUID: {"uid-node-1"}, extraNodeName: {"node-1"}}
	serving := []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth}
	cases := []struct {
		name   string
		user   string
		extra  map[string]certificatesv1.ExtraValue
		req    []byte
		usages []certificatesv1.KeyUsage
		denied string
	}{
		{name: "its own node", user: agentUser, extra: onNode1, req: request(t, CommonNamePrefix+"node-1", []string{"node-1"}, nil), usages: serving},
		{name: "another node", user: agentUser, extra: onNode1, req: request(t, CommonNamePrefix+"node-2", []string{"node-2"}, nil), usages: serving,
			denied: "common name must be"},
		{name: "its own common name, another node's DNS name", user: agentUser, extra: onNode1,
			req: request(t, CommonNamePrefix+"node-1", []string{"node-2"}, nil), usages: serving, denied: "the only name must be"},
		{name: "both nodes' names", user: agentUser, extra: onNode1,
			req: request(t, CommonNamePrefix+"node-1", []string{"node-1", "node-2"}, nil), usages: serving, denied: "the only name must be"},
		{name: "an IP address beside its name", user: agentUser, extra: onNode1,
			req: request(t, CommonNamePrefix+"node-1", []string{"node-1"}, []net.IP{net.ParseIP("10.0.0.2")}), usages: serving, denied: "the only name must be"},
		{name: "a client certificate", user: agentUser, extra: onNode1, req: request(t, CommonNamePrefix+"node-1", []string{"node-1"}, nil),
			usages: []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth, certificatesv1.UsageClientAuth},
			denied: "client auth"},
		{name: "another user", user: "system:serviceaccount:team-a:default", extra: onNode1,
			req: request(t, CommonNamePrefix+"node-1", []string{"node-1"}, nil), usages: serving, denied: "is not a node agent"},
		{name: "a token bound to no Pod", user: agentUser, extra: nil,
			req: request(t, CommonNamePrefix+"node-1", []string{"node-1"}, nil), usages: serving, denied: "not made with a token bound to a Pod"},
		{name: "a Pod name with another Pod's UID", user: agentUser,
			extra: map[string]certificatesv1.ExtraValue{extraPodName: {"agent-node-2"}, extraPodUID: {"uid-node-1"}},
			req:   request(t, CommonNamePrefix+"node-2", []string{"node-2"}, nil), usages: serving, denied: "not the one its token was bound to"},
		{name: "a token naming another node", user: agentUser,
			extra: map[string]certificatesv1.ExtraValue{extraPodName: {"agent-node-1"}, extraPodUID: {"uid-node-1"}, extraNodeName: {"node-2"}},
			req:   request(t, CommonNamePrefix+"node-1", []string{"node-1"}, nil), usages: serving, denied: "the token names node node-2"},
		{name: "garbage", user: agentUser, extra: onNode1, req: []byte("not a request"), usages: serving, denied: "no PEM"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			client := fake.NewSimpleClientset(agentPods()...)
			s := &Signer{Client: client, Users: []string{agentUser}, CA: ca, CAKey: caKey}
			ctx := context.Background()
			_, err := client.CertificatesV1().CertificateSigningRequests().Create(ctx, &certificatesv1.CertificateSigningRequest{
				ObjectMeta: metav1.ObjectMeta{Name: "csr"},
				Spec: certificatesv1.CertificateSigningRequestSpec{Request: tc.req, SignerName: SignerName, Usages: tc.usages,
					Username: tc.user, Extra: tc.extra},
			}, metav1.CreateOptions{})
			require.NoError(t, err)
			require.NoError(t, s.Handle(ctx, "csr"))
			got, err := client.CertificatesV1().CertificateSigningRequests().Get(ctx, "csr", metav1.GetOptions{})
			require.NoError(t, err)
			if tc.denied != "" {
				assert.Empty(t, got.Status.Certificate, "nothing signed")
				require.Len(t, got.Status.Conditions, 1)
				assert.Equal(t, certificatesv1.CertificateDenied, got.Status.Conditions[0].Type)
				assert.Contains(t, got.Status.Conditions[0].Message, tc.denied)
				return
			}
			require.NotEmpty(t, got.Status.Certificate)
			assert.Equal(t, certificatesv1.CertificateApproved, got.Status.Conditions[0].Type)
			block, _ := pem.Decode(got.Status.Certificate)
			cert, err := x509.ParseCertificate(block.Bytes)
			require.NoError(t, err)
			pool := x509.NewCertPool()
			pool.AddCert(ca)
			_, err = cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: "node-1", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
			assert.NoError(t, err, "a serving certificate for node-1")
			assert.Error(t, cert.VerifyHostname("node-2"), "and for no other node")
			_, err = cert.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			assert.Error(t, err, "not a client certificate")
			assert.LessOrEqual(t, cert.NotAfter.Unix(), ca.NotAfter.Unix(), "never past its CA")
		})
	}
}

// TestRequesterAndSigner: an agent obtains its node's certificate from the
// signer and serves with it; the server's check (the node's name) passes
// for that node and fails for another.
func TestRequesterAndSigner(t *testing.T) {
	ca, caKey := testCA(t)
	client := fake.NewSimpleClientset(agentPods()...)
	// The kube-apiserver records the requester; the fake, told here.
	client.PrependReactor("create", "certificatesigningrequests", func(a k8stesting.Action) (bool, runtime.Object, error) {
		csr := a.(k8stesting.CreateAction).GetObject().(*certificatesv1.CertificateSigningRequest)
		csr.Name = csr.GenerateName + "x"
		csr.Spec.Username = agentUser
		csr.Spec.Extra = map[string]certificatesv1.ExtraValue{extraPodName: {"agent-node-1"}, extraPodUID: {"uid-node-1"}}
		return false, nil, nil
	})
	s := &Signer{Client: client, Users: []string{agentUser}, CA: ca, CAKey: caKey, Validity: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			list, _ := client.CertificatesV1().CertificateSigningRequests().List(ctx, metav1.ListOptions{})
			for _, c := range list.Items {
				_ = s.Handle(ctx, c.Name)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	r := &Requester{Client: client, Node: "node-1", Timeout: 30 * time.Second}
	require.NoError(t, r.Start(ctx))
	cert, err := r.GetCertificate(nil)
	require.NoError(t, err)
	assert.LessOrEqual(t, cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore), time.Hour+5*time.Minute, "the signer's bound")

	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	ts.TLS = &tls.Config{GetCertificate: r.GetCertificate, MinVersion: tls.VersionTLS12}
	ts.StartTLS()
	defer ts.Close()
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for node, ok := range map[string]bool{"node-1": true, "node-2": false} {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: ServerName(node), MinVersion: tls.VersionTLS12}}}
		resp, err := c.Get(ts.URL)
		if ok {
			require.NoError(t, err, "node-1's agent is node-1's")
			resp.Body.Close()
		} else {
			require.Error(t, err, "node-1's agent cannot pose as node-2's")
			assert.Contains(t, err.Error(), "node-2")
		}
	}

	// An agent on node-1 asking for node-2 is told why, at once.
	r2 := &Requester{Client: client, Node: "node-2", Timeout: 30 * time.Second}
	_, err = r2.Obtain(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Denied")
}
