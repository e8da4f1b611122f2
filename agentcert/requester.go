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
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

// Requester is the agent's side: it asks the signer for its node's serving
// certificate, with a key that never leaves its memory, and renews it.
type Requester struct {
	Client kubernetes.Interface
	Node   string
	// Validity asked for (the signer may give less); default 7 days.
	Validity time.Duration
	// Timeout bounds the wait for one certificate; default 2 minutes.
	Timeout time.Duration

	current atomic.Pointer[tls.Certificate]
}

// Obtain asks for a certificate and waits until it is issued or refused.
func (r *Requester) Obtain(ctx context.Context) (*tls.Certificate, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	dns, ips := names(r.Node)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: CommonNamePrefix + r.Node}, DNSNames: dns, IPAddresses: ips,
	}, key)
	if err != nil {
		return nil, err
	}
	validity := r.Validity
	if validity <= 0 {
		validity = 7 * 24 * time.Hour
	}
	seconds := int32(validity / time.Second)
	csr, err := r.Client.CertificatesV1().CertificateSigningRequests().Create(ctx, &certificatesv1.CertificateSigningRequest{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "checkpoint-node-agent-" + r.Node + "-"},
		Spec: certificatesv1.CertificateSigningRequestSpec{
			Request:           pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}),
			SignerName:        SignerName,
			Usages:            []certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageServerAuth},
			ExpirationSeconds: &seconds,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("ask for %s's serving certificate: %w", r.Node, err)
	}
	var issued []byte
	err = wait.PollUntilContextCancel(ctx, 500*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		got, err := r.Client.CertificatesV1().CertificateSigningRequests().Get(ctx, csr.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil // the API may be briefly away: ask again
		}
		for _, c := range got.Status.Conditions {
			if c.Type == certificatesv1.CertificateDenied || c.Type == certificatesv1.CertificateFailed {
				return false, fmt.Errorf("%s's serving certificate (CSR %s) was %s: %s", r.Node, csr.Name, c.Type, c.Message)
			}
		}
		issued = got.Status.Certificate
		return len(issued) > 0, nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %s's serving certificate (CSR %s, signer %s), in %s: is the server's signer running?",
				ErrNotIssued, r.Node, csr.Name, SignerName, timeout)
		}
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(issued, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		return nil, fmt.Errorf("the issued certificate (CSR %s): %w", csr.Name, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, err
		}
	}
	if err := cert.Leaf.VerifyHostname(ServerName(r.Node)); err != nil {
		return nil, fmt.Errorf("the issued certificate (CSR %s) is not for %s: %w", csr.Name, r.Node, err)
	}
	return &cert, nil
}

// ErrNotIssued: no answer came in time (the server may not run yet).
var ErrNotIssued = errors.New("not issued yet")

// Start obtains the first certificate, asking again while the signer does
// not answer (the agents may start before the server) and failing when it
// is refused; then it renews it in the background at two thirds of its
// life until ctx ends.
func (r *Requester) Start(ctx context.Context) error {
	cert, err := r.Obtain(ctx)
	for errors.Is(err, ErrNotIssued) && ctx.Err() == nil {
		klog.InfoS("No serving certificate yet; asking again", "node", r.Node, "err", err)
		cert, err = r.Obtain(ctx)
	}
	if err != nil {
		return err
	}
	r.current.Store(cert)
	klog.InfoS("Serving with this node's own certificate", "node", r.Node, "notAfter", cert.Leaf.NotAfter)
	go r.renew(ctx)
	return nil
}

func (r *Requester) renew(ctx context.Context) {
	for {
		leaf := r.current.Load().Leaf
		wait := time.Until(leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3))
		select {
		case <-ctx.Done():
			return
		case <-time.After(max(wait, 30*time.Second)):
		}
		cert, err := r.Obtain(ctx)
		if err != nil {
			klog.ErrorS(err, "Could not renew this node's serving certificate; trying again", "node", r.Node, "notAfter", leaf.NotAfter)
			continue
		}
		r.current.Store(cert)
		klog.InfoS("Renewed this node's serving certificate", "node", r.Node, "notAfter", cert.Leaf.NotAfter)
	}
}

// GetCertificate serves the current certificate (tls.Config.GetCertificate).
func (r *Requester) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := r.current.Load(); c != nil {
		return c, nil
	}
	return nil, errors.New("no serving certificate yet")
}
