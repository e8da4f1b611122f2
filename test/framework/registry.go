package framework

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	certutil "k8s.io/client-go/util/cert"
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

// LocalRegistry is a docker-registry on loopback that StartRegistry ran
// for one test: TLS from a CA of its own, one htpasswd user.
type LocalRegistry struct {
	// Repository, CAFile and AuthFile are what ociregistry.Config wants.
	Repository, CAFile, AuthFile string
	// Dir holds its storage (Dir/data).
	Dir string
}

// StartRegistry starts Debian's docker-registry on 127.0.0.1 for t, with a
// self-signed certificate and the user checkpoints, and stops it when t ends.
func StartRegistry(t testing.TB) LocalRegistry {
	t.Helper()
	RequireTool(t, "docker-registry")
	RequireTool(t, "htpasswd")
	dir := t.TempDir()
	port := FreePort(t)
	host := fmt.Sprintf("127.0.0.1:%d", port)
	cert, key, err := certutil.GenerateSelfSignedCertKey("127.0.0.1", []net.IP{net.ParseIP("127.0.0.1")}, nil)
	require.NoError(t, err)
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, data, 0o600))
		return p
	}
	crt, k := write("registry.crt", cert), write("registry.key", key)
	out, err := exec.Command("htpasswd", "-Bbn", "checkpoints", "test-password").Output()
	require.NoError(t, err)
	htpasswd := write("htpasswd", out)
	auth := base64.StdEncoding.EncodeToString([]byte("checkpoints:test-password"))
	authFile := write("auth.json", []byte(`{"auths":{"`+host+`":{"auth":"`+auth+`"}}}`))
	config := write("config.yml", []byte(fmt.Sprintf(`version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: %s}
  delete: {enabled: true}
http:
  addr: %s
  tls: {certificate: %s, key: %s}
auth:
  htpasswd: {realm: test, path: %s}
`, filepath.Join(dir, "data"), host, crt, k, htpasswd)))
	cmd := exec.Command("docker-registry", "serve", config)
	logFile, err := os.Create(filepath.Join(dir, "registry.log"))
	require.NoError(t, err)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logFile.Close()
	})
	pool, err := certutil.NewPoolFromBytes(cert)
	require.NoError(t, err)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	require.Eventually(t, func() bool {
		resp, err := client.Get("https://" + host + "/v2/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusUnauthorized
	}, 30*time.Second, 100*time.Millisecond, "docker-registry answers on %s", host)
	return LocalRegistry{Repository: host + "/checkpoints", CAFile: crt, AuthFile: authFile, Dir: dir}
}

// TreeContains says whether any regular file under dir holds needle, byte
// by byte (what a grep -r of a registry's storage finds).
func TreeContains(tb testing.TB, dir, needle string) bool {
	tb.Helper()
	found := false
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || found || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		found = bytes.Contains(data, []byte(needle))
		return nil
	})
	if err != nil {
		tb.Fatalf("search %s: %v", dir, err)
	}
	return found
}

// Storage is the registry's storage directory (its filesystem driver's root).
func (r Registry) Storage() string { return filepath.Join(r.Dir, "registry", "data") }
