// Package agentcert gives each node agent a serving certificate for its own
// node, and nothing else: the agent asks for it with a
// CertificateSigningRequest under its Pod's service-account token, and the
// server signs it only for the node that token's Pod is bound to. The
// server then checks each agent's certificate for that agent's node name,
// so root on one node, which holds that node's agent key, cannot pose as
// another node's agent (and be handed its checkpoints' data keys).
package agentcert

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	certificatesv1 "k8s.io/api/certificates/v1"
)

// SignerName is the signer of node agents' serving certificates.
const SignerName = "agents.kruise.io/node-agent-serving"

// CommonNamePrefix starts the common name of an agent's certificate; the
// node's name follows it.
const CommonNamePrefix = "checkpoint-node-agent:"

// Extra keys a bound service-account token carries into a CSR's spec.extra.
const (
	extraPodName  = "authentication.kubernetes.io/pod-name"
	extraPodUID   = "authentication.kubernetes.io/pod-uid"
	extraNodeName = "authentication.kubernetes.io/node-name"
)

// ServerName is what the server checks an agent's certificate for: the
// name of the agent's node (a DNS subject alternative name, or an IP one
// for a node named by its address).
func ServerName(node string) string { return node }

// names is the subject alternative names of node's certificate.
func names(node string) (dns []string, ips []net.IP) {
	if ip := net.ParseIP(node); ip != nil {
		return nil, []net.IP{ip}
	}
	return []string{ServerName(node)}, nil
}

var allowedUsages = []certificatesv1.KeyUsage{
	certificatesv1.UsageDigitalSignature, certificatesv1.UsageKeyEncipherment, certificatesv1.UsageServerAuth,
}

// checkRequest checks what an agent's CSR asks for, whoever asked: a
// serving certificate whose only name is node, and nothing more.
func checkRequest(csr *certificatesv1.CertificateSigningRequest, node string) (*x509.CertificateRequest, error) {
	if !slices.Contains(csr.Spec.Usages, certificatesv1.UsageServerAuth) {
		return nil, errors.New("spec.usages must include server auth")
	}
	for _, u := range csr.Spec.Usages {
		if !slices.Contains(allowedUsages, u) {
			return nil, fmt.Errorf("spec.usages: %q is not a serving certificate's", u)
		}
	}
	req, err := parseRequest(csr.Spec.Request)
	if err != nil {
		return nil, err
	}
	if req.Subject.CommonName != CommonNamePrefix+node {
		return nil, fmt.Errorf("spec.request: the common name must be %q, not %q", CommonNamePrefix+node, req.Subject.CommonName)
	}
	if len(req.Subject.Organization) > 0 || len(req.Subject.OrganizationalUnit) > 0 {
		return nil, errors.New("spec.request: no organization may be asked for")
	}
	if ip := net.ParseIP(node); ip != nil {
		// A node named by its address: its certificate names that address.
		if len(req.IPAddresses) != 1 || !req.IPAddresses[0].Equal(ip) || len(req.DNSNames) > 0 {
			return nil, fmt.Errorf("spec.request: the only name must be the IP address %s", node)
		}
	} else if len(req.DNSNames) != 1 || req.DNSNames[0] != ServerName(node) || len(req.IPAddresses) > 0 {
		return nil, fmt.Errorf("spec.request: the only name must be the DNS name %q, not DNS %s IP %v", ServerName(node), strings.Join(req.DNSNames, ","), req.IPAddresses)
	}
	if len(req.EmailAddresses) > 0 || len(req.URIs) > 0 {
		return nil, errors.New("spec.request: only the node's name may be asked for (no e-mail or URI)")
	}
	return req, nil
}

func parseRequest(data []byte) (*x509.CertificateRequest, error) {
	block := pemBlock(data, "CERTIFICATE REQUEST")
	if block == nil {
		return nil, errors.New("spec.request: no PEM CERTIFICATE REQUEST")
	}
	req, err := x509.ParseCertificateRequest(block)
	if err != nil {
		return nil, fmt.Errorf("spec.request: %w", err)
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("spec.request: its signature: %w", err)
	}
	return req, nil
}

func pemBlock(data []byte, typ string) []byte {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil
		}
		if b.Type == typ {
			return b.Bytes
		}
	}
}
