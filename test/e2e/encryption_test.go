package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agents-kruise/checkpoint-apiserver/encryption"
	"github.com/agents-kruise/checkpoint-apiserver/ociregistry"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// tokenScript keeps a random token, made at run time (so in no spec), in
// the shell's memory and in /tmp/token, then counts.
const tokenScript = `T=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'); echo "$T" > /tmp/token; ` + framework.CounterScript

// dataKey opens Checkpoint ns/cp's data key as the operator can: the key
// Secret in checkpoint-system, unwrapped with the cluster's key-encryption
// key (local-up's encryption-keys.yaml).
func dataKey(t *testing.T, c *framework.Cluster, ns, cp string) []byte {
	t.Helper()
	uid := c.Must("get", "cp", cp, "-n", ns, "-o", "jsonpath={.metadata.uid}")
	id := c.Must("get", "cp", cp, "-n", ns, "-o", "jsonpath={.status.checkpointId}")
	wrapped, err := base64.StdEncoding.DecodeString(c.Must("get", "secret", "checkpoint-key-"+id, "-n", "checkpoint-system", "-o", "jsonpath={.data.wrapped}"))
	require.NoError(t, err)
	kek, err := encryption.LoadKEK(filepath.Join(c.Dir, "encryption-keys.yaml"))
	require.NoError(t, err)
	dek, err := kek.Unwrap(context.Background(), string(wrapped), encryption.Binding{Namespace: ns, UID: uid, CheckpointID: id})
	require.NoError(t, err)
	return dek
}

// ociLayer is the one layer of the one image in OCI layout dir: its path
// and descriptor.
func ociLayer(t *testing.T, dir string) (string, ocispec.Descriptor) {
	t.Helper()
	var idx ocispec.Index
	readBlobJSON(t, filepath.Join(dir, "index.json"), &idx)
	require.Len(t, idx.Manifests, 1)
	var m ocispec.Manifest
	readBlobJSON(t, blobPath(dir, idx.Manifests[0].Digest.String()), &m)
	require.Len(t, m.Layers, 1)
	return blobPath(dir, m.Layers[0].Digest.String()), m.Layers[0]
}

// decryptLayer writes the clear archive of an encrypted layer to a file.
func decryptLayer(t *testing.T, path string, desc ocispec.Descriptor, dek []byte, id, container string) string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	r, err := encryption.DecryptLayer(f, desc, dek, id, container)
	require.NoError(t, err)
	out := filepath.Join(t.TempDir(), "archive.tar")
	clear, err := os.Create(out)
	require.NoError(t, err)
	_, err = io.Copy(clear, r)
	require.NoError(t, err)
	require.NoError(t, clear.Close())
	return out
}

// registryBlobs are the files of blobs in the registry's storage, by digest hex.
func registryBlobs(t *testing.T, reg framework.Registry) map[string]string {
	t.Helper()
	out := map[string]string{}
	root := filepath.Join(reg.Storage(), "docker", "registry", "v2", "blobs", "sha256")
	entries, _ := filepath.Glob(filepath.Join(root, "*", "*", "data"))
	for _, e := range entries {
		out[filepath.Base(filepath.Dir(e))] = e
	}
	return out
}

// memoryEncryptedAtRest: a sandbox holding a random token in memory is
// captured; the registry's storage, searched byte by byte, holds no trace
// of the token, while the checkpoint unpacked on the capturing node (in
// clear, on the node) does; once the Checkpoint is deleted its data key is
// gone (the one Secret that held it), while its blobs stay in the
// registry's storage, unreadable.
func memoryEncryptedAtRest(t *testing.T, c *framework.Cluster, reg framework.Registry, ns string) {
	c.Apply(framework.OnNode(podYAML(ns, "holder", tokenScript), "node-1"))
	c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/holder", "--timeout=120s")
	token := strings.TrimSpace(c.MustStdout("exec", "-n", ns, "holder", "--", "cat", "/tmp/token"))
	require.Len(t, token, 48)
	require.False(t, framework.TreeContains(t, reg.Storage(), token), "the token is nowhere in the registry before the capture")
	captureByApply(t, c, ns, "cp-holder", "holder", true)
	id := c.Must("get", "cp", "cp-holder", "-n", ns, "-o", "jsonpath={.status.checkpointId}")

	// Decrypted on the node, the checkpoint holds the token: the search
	// below would find it if it were there in clear.
	c.Eventually("node-1's agent unpacked the capture", func() bool { return c.RestoreImage(1, ns, id, "main") != "" })
	assert.True(t, framework.TreeContains(t, c.RestoreImage(1, ns, id, "main"), token), "the node's unpacked copy holds the token")
	assert.False(t, framework.TreeContains(t, reg.Storage(), token), "the registry's storage holds the token in clear")

	// The layer in the registry is an encrypted one, and no tenant
	// namespace holds its key: only the server's namespace does.
	out, err := reg.Inspect(framework.RegistryHost+"/checkpoints/"+ns+":"+id, true)
	require.NoError(t, err, out)
	var index ocispec.Index
	require.NoError(t, json.Unmarshal([]byte(out), &index), out)
	require.Len(t, index.Manifests, 1)
	assert.NotEmpty(t, index.Annotations[ociregistry.AnnotationMAC], "the index carries its data key's MAC")
	assert.Equal(t, ns, index.Annotations[ociregistry.AnnotationNamespace])
	out, err = reg.Inspect(framework.RegistryHost+"/checkpoints/"+ns+"@"+index.Manifests[0].Digest.String(), true)
	require.NoError(t, err, out)
	var manifest ocispec.Manifest
	require.NoError(t, json.Unmarshal([]byte(out), &manifest), out)
	require.Len(t, manifest.Layers, 1)
	layer := manifest.Layers[0]
	assert.Equal(t, encryption.MediaTypeEncryptedLayer, layer.MediaType)
	assert.NotEmpty(t, layer.Annotations[encryption.AnnotationPubOpts])
	assert.NotContains(t, c.Must("get", "cp", "cp-holder", "-n", ns, "-o", "json"), "v1:local-up:", "the Checkpoint carries no key")
	assert.Equal(t, "checkpoint-key-"+id, c.Must("get", "secrets", "-A", "-l", encryption.LabelKeyOf+"=true",
		"--field-selector", "metadata.name=checkpoint-key-"+id, "-o", "jsonpath={.items[*].metadata.name}"))
	assert.Equal(t, "checkpoint-system", c.Must("get", "secrets", "-A", "--field-selector", "metadata.name=checkpoint-key-"+id,
		"-o", "jsonpath={.items[*].metadata.namespace}"))
	blob := registryBlobs(t, reg)[layer.Digest.Encoded()]
	require.NotEmpty(t, blob, "the layer's blob is in the registry's storage")
	onlyTheServerReachesTheRegistry(t, c, reg, ns, id)

	// Deleted: the key is destroyed, the blob stays (until the registry's
	// garbage collection), and nothing can open it any more.
	dek := dataKey(t, c, ns, "cp-holder")
	c.Must("delete", "cp", "cp-holder", "-n", ns, "--wait=true", "--timeout=60s")
	out, err = c.Kubectl("get", "secret", "checkpoint-key-"+id, "-n", "checkpoint-system")
	require.Error(t, err, "the data key outlived its Checkpoint: %s", out)
	assert.Contains(t, out, "NotFound")
	data, err := os.ReadFile(blob)
	require.NoError(t, err, "the blob remains in the registry's storage")
	assert.False(t, bytes.Contains(data, []byte(token)))
	// (What opened it: the data key, which existed only in that Secret.)
	r, err := encryption.DecryptLayer(bytes.NewReader(data), layer, dek, id, "main")
	require.NoError(t, err)
	clear, err := io.ReadAll(r)
	require.NoError(t, err)
	assert.True(t, bytes.Contains(clear, []byte(token)), "the blob was this capture's")
}

// wrongKeyEncryptionKey: the server restarted with a key-encryption key
// that is not the one the checkpoint's data key was wrapped with: a clone
// on a node that has no copy fails, saying why, and never starts fresh.
func wrongKeyEncryptionKey(t *testing.T, c *framework.Cluster, ns string, restartServer func()) {
	c.Apply(framework.OnNode(podYAML(ns, "kek-src", framework.CounterScript), "node-1"))
	c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/kek-src", "--timeout=120s")
	captureByApply(t, c, ns, "cp-kek", "kek-src", true)

	// A new secret under the same key name, as a mistaken rotation would do.
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	secret := make([]byte, 32)
	f, err := os.Open("/dev/urandom")
	require.NoError(t, err)
	_, err = io.ReadFull(f, secret)
	f.Close()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(keys, fmt.Appendf(nil, "keys:\n- name: local-up\n  secret: %s\n", base64.StdEncoding.EncodeToString(secret)), 0o600))
	manifest := c.Must("-n", "checkpoint-system", "create", "secret", "generic", "checkpoint-encryption-key", "--from-file=keys.yaml="+keys,
		"--dry-run=client", "-o", "yaml")
	c.MustStdin(manifest, "apply", "-f", "-")
	restartServer()

	var out string
	c.Eventually("the restore is answered by the restarted server", func() bool {
		out, err = restoreOn(c, ns, "cp-kek", "kek-b", "node-2")
		return err == nil || !strings.Contains(out, "ServiceUnavailable") && !strings.Contains(out, "currently unable")
	})
	require.Error(t, err, "a clone restored without its key: %s", out)
	assert.Contains(t, out, `does not open with key-encryption key "local-up"`, "the restore says why")
	_, err = c.Kubectl("get", "pod", "kek-b", "-n", ns)
	assert.Error(t, err, "the failed clone was removed")
	events := c.Must("get", "events", "-n", ns, "--field-selector", "reason=CheckpointKeyFailed", "-o", "jsonpath={.items[*].message}")
	assert.Contains(t, events, "cannot be decrypted")
	assert.NotContains(t, events, base64.StdEncoding.EncodeToString(secret), "no secret in an Event")
}

// onlyTheServerReachesTheRegistry: of every dockerconfigjson Secret in the
// cluster, only those of the server's namespace read checkpoint id from the
// registry: no tenant namespace holds credentials that pull (or push).
func onlyTheServerReachesTheRegistry(t *testing.T, c *framework.Cluster, reg framework.Registry, ns, id string) {
	t.Helper()
	var list struct {
		Items []struct {
			Metadata struct{ Name, Namespace string } `json:"metadata"`
			Type     string                           `json:"type"`
			Data     map[string]string                `json:"data"`
		} `json:"items"`
	}
	require.NoError(t, json.Unmarshal([]byte(c.Must("get", "secrets", "-A", "-o", "json")), &list))
	ref := "docker://" + framework.RegistryHost + "/checkpoints/" + ns + ":" + id
	tried, served := 0, 0
	for _, s := range list.Items {
		if s.Type != "kubernetes.io/dockerconfigjson" {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(s.Data[".dockerconfigjson"])
		require.NoError(t, err)
		var cfg struct {
			Auths map[string]struct {
				Auth string `json:"auth"`
			} `json:"auths"`
		}
		require.NoError(t, json.Unmarshal(raw, &cfg), "%s/%s", s.Metadata.Namespace, s.Metadata.Name)
		for host, a := range cfg.Auths {
			creds, err := base64.StdEncoding.DecodeString(a.Auth)
			require.NoError(t, err)
			out, err := reg.Skopeo("inspect", "--raw", "--cert-dir", reg.CertDir(), "--creds", string(creds), ref)
			if s.Metadata.Namespace == "checkpoint-system" {
				if err == nil {
					served++
				}
				continue
			}
			tried++
			assert.Error(t, err, "Secret %s/%s (for %s) reads another namespace's checkpoint: %s", s.Metadata.Namespace, s.Metadata.Name, host, out)
		}
	}
	assert.Positive(t, served, "the server's own Secret reads it: the attempt is a real one")
	t.Logf("%d registry credentials outside checkpoint-system tried, none served", tried)
}
