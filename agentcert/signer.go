package agentcert

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
	"k8s.io/klog/v2"
)

// Signer approves and signs node agents' CSRs (SignerName): a request is
// signed when it comes from an agent's service account, through a token
// bound to a Pod of the agents' namespace that runs on the node the request
// names, and asks for nothing but that node's serving certificate. Every
// other request of this signer is denied, with the reason.
type Signer struct {
	Client kubernetes.Interface
	// Users are the agents' service-account user names
	// (system:serviceaccount:<namespace>:<name>).
	Users []string
	// CA signs; its certificate is what the server trusts for agents.
	CA    *x509.Certificate
	CAKey crypto.Signer
	// Validity bounds a certificate's life (a request may ask for less).
	Validity time.Duration
	now      func() time.Time
}

// LoadCA reads the signing CA's certificate and key (PEM files).
func LoadCA(certFile, keyFile string) (*x509.Certificate, crypto.Signer, error) {
	certs, err := certutil.CertsFromFile(certFile)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certFile, err)
	}
	ca := certs[0]
	if !ca.IsCA {
		return nil, nil, fmt.Errorf("%s: not a CA certificate", certFile)
	}
	key, err := keyutil.PrivateKeyFromFile(keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyFile, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, nil, fmt.Errorf("%s: not a signing key", keyFile)
	}
	return ca, signer, nil
}

// Run signs and denies until ctx ends, from a watch of this signer's CSRs.
func (s *Signer) Run(ctx context.Context) {
	lw := cache.NewFilteredListWatchFromClient(s.Client.CertificatesV1().RESTClient(), "certificatesigningrequests", "",
		func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.signerName", SignerName).String()
		})
	queue := make(chan string, 64)
	enqueue := func(obj any) {
		if csr, ok := obj.(*certificatesv1.CertificateSigningRequest); ok && pending(csr) {
			select {
			case queue <- csr.Name:
			default: // a resync brings it back
			}
		}
	}
	_, informer := cache.NewInformerWithOptions(cache.InformerOptions{
		ListerWatcher: lw, ObjectType: &certificatesv1.CertificateSigningRequest{}, ResyncPeriod: time.Minute,
		Handler: cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, o any) { enqueue(o) }},
	})
	go informer.Run(ctx.Done())
	for {
		select {
		case <-ctx.Done():
			return
		case name := <-queue:
			if err := s.Handle(ctx, name); err != nil {
				klog.ErrorS(err, "A node agent's certificate request was not handled; retried on the next resync", "csr", name)
			}
		}
	}
}

func pending(csr *certificatesv1.CertificateSigningRequest) bool {
	if csr.Spec.SignerName != SignerName || len(csr.Status.Certificate) > 0 {
		return false
	}
	for _, c := range csr.Status.Conditions {
		if c.Type == certificatesv1.CertificateDenied || c.Type == certificatesv1.CertificateFailed {
			return false
		}
	}
	return true
}

func approved(csr *certificatesv1.CertificateSigningRequest) bool {
	for _, c := range csr.Status.Conditions {
		if c.Type == certificatesv1.CertificateApproved {
			return true
		}
	}
	return false
}

// Handle reviews one CSR: denies it with the reason, or approves and signs.
func (s *Signer) Handle(ctx context.Context, name string) error {
	csrs := s.Client.CertificatesV1().CertificateSigningRequests()
	csr, err := csrs.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !pending(csr) {
		return nil
	}
	req, node, err := s.review(ctx, csr)
	if err != nil {
		var refused refusal
		if !errors.As(err, &refused) {
			return err
		}
		klog.InfoS("Denied a node agent certificate request", "csr", name, "user", csr.Spec.Username, "reason", err.Error())
		csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: certificatesv1.CertificateDenied, Status: corev1.ConditionTrue, Reason: "NotThisAgentsNode", Message: err.Error(),
			LastUpdateTime: metav1.Now(),
		})
		_, err = csrs.UpdateApproval(ctx, name, csr, metav1.UpdateOptions{})
		return err
	}
	if !approved(csr) {
		csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "AgentOfThisNode",
			Message: "the node agent's Pod on " + node + " asked for " + node + "'s serving certificate", LastUpdateTime: metav1.Now(),
		})
		if csr, err = csrs.UpdateApproval(ctx, name, csr, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	cert, err := s.sign(req, csr.Spec.ExpirationSeconds)
	if err != nil {
		return err
	}
	csr.Status.Certificate = cert
	if _, err := csrs.UpdateStatus(ctx, csr, metav1.UpdateOptions{}); err != nil {
		return err
	}
	klog.InfoS("Signed a node agent's serving certificate", "csr", name, "node", node)
	return nil
}

// refusal is a request this signer will never sign.
type refusal struct{ error }

func refuse(format string, args ...any) error { return refusal{fmt.Errorf(format, args...)} }

// review finds the node the requester's Pod runs on and checks the request
// is for that node only.
func (s *Signer) review(ctx context.Context, csr *certificatesv1.CertificateSigningRequest) (*x509.CertificateRequest, string, error) {
	spec := csr.Spec
	if !slices.Contains(s.Users, spec.Username) {
		return nil, "", refuse("%s is not a node agent (%v)", spec.Username, s.Users)
	}
	one := func(key string) string {
		if v := spec.Extra[key]; len(v) == 1 {
			return v[0]
		}
		return ""
	}
	podName, podUID := one(extraPodName), one(extraPodUID)
	if podName == "" || podUID == "" {
		return nil, "", refuse("the request was not made with a token bound to a Pod (spec.extra has no %s and %s)", extraPodName, extraPodUID)
	}
	namespace, _, err := serviceaccount.SplitUsername(spec.Username)
	if err != nil {
		return nil, "", refuse("%s is not a service account", spec.Username)
	}
	pod, err := s.Client.CoreV1().Pods(namespace).Get(ctx, podName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, "", refuse("the requester's Pod %s/%s is gone", namespace, podName)
	}
	if err != nil {
		return nil, "", err
	}
	if string(pod.UID) != podUID {
		return nil, "", refuse("the requester's Pod %s/%s is not the one its token was bound to", namespace, podName)
	}
	node := pod.Spec.NodeName
	if node == "" {
		return nil, "", refuse("the requester's Pod %s/%s is not bound to a node", namespace, podName)
	}
	if n := one(extraNodeName); n != "" && n != node {
		return nil, "", refuse("the token names node %s, its Pod runs on %s", n, node)
	}
	req, err := checkRequest(csr, node)
	if err != nil {
		return nil, "", refuse("the agent on %s: %v", node, err)
	}
	return req, node, nil
}

// sign issues the serving certificate req asks for, for at most Validity
// (or the CSR's expirationSeconds, if less), never past the CA's own end.
func (s *Signer) sign(req *x509.CertificateRequest, expirationSeconds *int32) ([]byte, error) {
	now := time.Now
	if s.now != nil {
		now = s.now
	}
	validity := s.Validity
	if validity <= 0 {
		validity = 7 * 24 * time.Hour
	}
	if expirationSeconds != nil {
		if d := time.Duration(*expirationSeconds) * time.Second; d > 0 && d < validity {
			validity = d
		}
	}
	start := now().Add(-5 * time.Minute)
	end := now().Add(validity)
	if end.After(s.CA.NotAfter) {
		end = s.CA.NotAfter
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: req.Subject.CommonName},
		DNSNames:     req.DNSNames,
		IPAddresses:  req.IPAddresses,
		NotBefore:    start, NotAfter: end,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.CA, req.PublicKey, s.CAKey)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
