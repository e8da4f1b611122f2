package apiserver

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/keyutil"
)

// The standalone PKI: a CA made, and its pairs encoded, read and written,
// with client-go's util/cert and util/keyutil; only issuing a leaf signed
// by the CA (which those packages do not do) is this file's own.

// keyPair is a certificate with its private key, in PEM and parsed.
type keyPair struct {
	CertPEM, KeyPEM []byte
	Cert            *x509.Certificate
	Key             crypto.Signer
}

// certRequest says what a certificate issued by the standalone CA is for.
type certRequest struct {
	CommonName   string
	Organization []string
	DNSNames     []string
	IPs          []net.IP
	Usage        x509.ExtKeyUsage
}

const certValidity = 5 * 365 * 24 * time.Hour

func pair(cert *x509.Certificate, key *ecdsa.PrivateKey) (*keyPair, error) {
	certPEM, err := certutil.EncodeCertificates(cert)
	if err != nil {
		return nil, err
	}
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return nil, err
	}
	return &keyPair{CertPEM: certPEM, KeyPEM: keyPEM, Cert: cert, Key: key}, nil
}

// newCA makes a self-signed certificate authority (client-go's, valid ten years).
func newCA(name string) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	cert, err := certutil.NewSelfSignedCACert(certutil.Config{CommonName: name}, key)
	if err != nil {
		return nil, err
	}
	return pair(cert, key)
}

// issue signs a leaf certificate with ca.
func (ca *keyPair) issue(req certRequest) (*keyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sn, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: req.CommonName, Organization: req.Organization},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{req.Usage},
		DNSNames:     req.DNSNames,
		IPAddresses:  req.IPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return pair(cert, key)
}

// write stores the pair as <dir>/<name>.crt and <dir>/<name>.key (0600).
func (kp *keyPair) write(dir, name string) error {
	if err := certutil.WriteCert(filepath.Join(dir, name+".crt"), kp.CertPEM); err != nil {
		return err
	}
	return keyutil.WriteKey(filepath.Join(dir, name+".key"), kp.KeyPEM)
}

// readKeyPair loads <dir>/<name>.{crt,key}; a missing file is reported as os.ErrNotExist.
func readKeyPair(dir, name string) (*keyPair, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, name+".crt"))
	if err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, name+".key"))
	if err != nil {
		return nil, err
	}
	certs, err := certutil.ParseCertsPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	key, err := keyutil.ParsePrivateKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: the key cannot sign", name)
	}
	return &keyPair{CertPEM: certPEM, KeyPEM: keyPEM, Cert: certs[0], Key: signer}, nil
}

// loadOrCreate returns the pair stored under dir when it is still good (not
// expired, and signed by signer when one is given), or makes one with create
// and stores it.
func loadOrCreate(dir, name string, signer *keyPair, create func() (*keyPair, error)) (*keyPair, error) {
	kp, err := readKeyPair(dir, name)
	if err == nil && time.Now().Before(kp.Cert.NotAfter) && (signer == nil || kp.Cert.CheckSignatureFrom(signer.Cert) == nil) {
		return kp, nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if kp, err = create(); err != nil {
		return nil, fmt.Errorf("create %s certificate: %w", name, err)
	}
	return kp, kp.write(dir, name)
}
