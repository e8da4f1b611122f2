package apiserver

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apiserver/pkg/authentication/request/anonymous"
	"k8s.io/apiserver/pkg/authentication/request/union"
	x509request "k8s.io/apiserver/pkg/authentication/request/x509"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/e2b"
)

// Standalone mode serves without a kube-apiserver: the server is its own
// certificate authority, authenticates client certificates it issued, lets
// the admin groups do everything and everyone else nothing.
type standalone struct {
	dir         string
	ca          *keyPair
	serving     *keyPair
	admin       *keyPair
	adminGroups sets.Set[string]
}

const (
	standaloneAdminUser = "checkpoint-admin"
	// KubeconfigFile is the name, under the data dir, of the admin kubeconfig.
	KubeconfigFile = "kubeconfig"
)

// newStandalone loads the standalone PKI from <dataDir>/pki, making what is missing.
func newStandalone(dataDir string, adminGroups []string) (*standalone, error) {
	if len(adminGroups) == 0 {
		return nil, fmt.Errorf("standalone mode needs at least one admin group")
	}
	dir := filepath.Join(dataDir, "pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("standalone pki dir: %w", err)
	}
	s := &standalone{dir: dir, adminGroups: sets.New(adminGroups...)}
	var err error
	if s.ca, err = loadOrCreate(dir, "ca", nil, func() (*keyPair, error) {
		return newCA("checkpoint-apiserver-standalone-ca")
	}); err != nil {
		return nil, err
	}
	if s.serving, err = loadOrCreate(dir, "serving", s.ca, func() (*keyPair, error) {
		dns := []string{"localhost"}
		if h, err := os.Hostname(); err == nil && h != "" {
			dns = append(dns, h)
		}
		return s.ca.issue(certRequest{
			CommonName: "checkpoint-apiserver",
			DNSNames:   dns,
			IPs:        []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
			Usage:      x509.ExtKeyUsageServerAuth,
		})
	}); err != nil {
		return nil, err
	}
	if s.admin, err = loadOrCreate(dir, "admin", s.ca, func() (*keyPair, error) {
		return s.ca.issue(certRequest{
			CommonName:   standaloneAdminUser,
			Organization: []string{adminGroups[0]},
			Usage:        x509.ExtKeyUsageClientAuth,
		})
	}); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *standalone) servingCertFiles() (cert, key string) {
	return filepath.Join(s.dir, "serving.crt"), filepath.Join(s.dir, "serving.key")
}

// applyTo makes the server ask for client certificates signed by the
// standalone CA, authenticate them (anonymous otherwise), and authorize
// with the admin-group rule.
func (s *standalone) applyTo(cfg *genericapiserver.Config) error {
	ca, err := dynamiccertificates.NewStaticCAContent("standalone-client-ca", s.ca.CertPEM)
	if err != nil {
		return err
	}
	if err := cfg.Authentication.ApplyClientCert(ca, cfg.SecureServing); err != nil {
		return err
	}
	cfg.Authentication.Authenticator = union.New(
		x509request.NewDynamic(ca.VerifyOptions, x509request.CommonNameUserConversion),
		anonymous.NewAuthenticator(nil),
	)
	cfg.Authorization.Authorizer = authorizer.AuthorizerFunc(s.authorize)
	return nil
}

// publicPaths are readable by anyone, as kube's system:public-info-viewer allows.
var publicPaths = []string{"/healthz", "/livez", "/readyz", "/version"}

func (s *standalone) authorize(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	if u := a.GetUser(); u != nil && s.adminGroups.HasAny(u.GetGroups()...) {
		return authorizer.DecisionAllow, "", nil
	}
	if teamMember(a) {
		return authorizer.DecisionAllow, "", nil
	}
	if !a.IsResourceRequest() && a.GetVerb() == "get" {
		for _, p := range publicPaths {
			if a.GetPath() == p || strings.HasPrefix(a.GetPath(), p+"/") {
				return authorizer.DecisionAllow, "", nil
			}
		}
	}
	return authorizer.DecisionDeny, "standalone mode allows only members of " + strings.Join(sets.List(s.adminGroups), ", "), nil
}

// teamMember allows an E2B team's users (acting through the E2B front) the
// checkpoints and snapshots of their team's namespace, as RoleBindings would
// on a cluster.
func teamMember(a authorizer.Attributes) bool {
	u := a.GetUser()
	if u == nil || !a.IsResourceRequest() || a.GetAPIGroup() != agents.GroupName || a.GetNamespace() == "" {
		return false
	}
	if a.GetResource() != "checkpoints" && a.GetResource() != "snapshots" {
		return false
	}
	if a.GetResource() == "checkpoints" && a.GetSubresource() == "status" {
		return false
	}
	for _, g := range u.GetGroups() {
		if g == e2b.TeamGroupPrefix+a.GetNamespace() {
			return true
		}
	}
	return false
}

// writeKubeconfig writes a kubeconfig for the admin identity, pointed at
// host, and returns its path.
func (s *standalone) writeKubeconfig(dataDir, host string) (string, error) {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["checkpoint-apiserver"] = &clientcmdapi.Cluster{
		Server:                   host,
		CertificateAuthorityData: s.ca.CertPEM,
	}
	cfg.AuthInfos[standaloneAdminUser] = &clientcmdapi.AuthInfo{
		ClientCertificateData: s.admin.CertPEM,
		ClientKeyData:         s.admin.KeyPEM,
	}
	cfg.Contexts["checkpoint-apiserver"] = &clientcmdapi.Context{
		Cluster:   "checkpoint-apiserver",
		AuthInfo:  standaloneAdminUser,
		Namespace: "default",
	}
	cfg.CurrentContext = "checkpoint-apiserver"
	path, err := filepath.Abs(filepath.Join(dataDir, KubeconfigFile))
	if err != nil {
		return "", err
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", fmt.Errorf("write kubeconfig: %w", err)
	}
	return path, nil
}
