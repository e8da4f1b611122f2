package framework

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/stretchr/testify/require"
)

// RegistryHost is local-up's checkpoint registry (with more than one node).
const RegistryHost = "198.18.0.1:5443"

// Registry is local-up's checkpoint registry as skopeo sees it, with the
// test credentials.
type Registry struct {
	Dir, Password string
}

// Registry reads the cluster's registry credentials.
func (c *Cluster) Registry() Registry {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.Dir, "registry", "password"))
	require.NoError(c.t, err, "the cluster has no checkpoint registry")
	return Registry{Dir: c.Dir, Password: strings.TrimSpace(string(b))}
}

// Skopeo runs skopeo; it returns its combined output.
func (r Registry) Skopeo(args ...string) (string, error) {
	b, err := exec.Command("skopeo", args...).CombinedOutput()
	return string(b), err
}

// CertDir holds the registry's CA, as skopeo's --cert-dir wants it.
func (r Registry) CertDir() string { return filepath.Join(r.Dir, "certs.d", RegistryHost) }

// Creds is skopeo's --creds value.
func (r Registry) Creds() string { return "checkpoints:" + r.Password }

// Inspect is skopeo inspect of ref with the test credentials (raw: the manifest).
func (r Registry) Inspect(ref string, raw bool) (string, error) {
	args := []string{"inspect", "--cert-dir", r.CertDir(), "--creds", r.Creds()}
	if raw {
		args = append(args, "--raw")
	}
	return r.Skopeo(append(args, "docker://"+ref)...)
}

// PullSecret creates the registry's pull secret (checkpoint-registry) in ns.
func (c *Cluster) PullSecret(ns string) {
	r := c.Registry()
	c.Must("create", "secret", "docker-registry", "checkpoint-registry", "-n", ns,
		"--docker-server="+RegistryHost, "--docker-username=checkpoints", "--docker-password="+r.Password)
}
