package framework

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Cluster is what hack/local-up.sh started for a test: etcd,
// kube-apiserver, kube-controller-manager and this server behind an
// APIService, each on a free port under a temporary directory.
type Cluster struct {
	t        testing.TB
	Dir      string
	Env      []string
	CPPort   int
	KASPort  int
	EtcdPort int
	Nodes    int
}

// LocalUp starts the whole system for t, with no node, and stops it when t
// ends. serverArgs are extra flags for checkpoint-apiserver. There is no
// kubelet, so the server finds containers by containerd's labels; unless
// serverArgs name a containerd, it points at one that does not exist.
func LocalUp(t testing.TB, serverArgs ...string) *Cluster {
	t.Helper()
	return localUp(t, 0, append([]string{"--containerd-address=" + filepath.Join(t.TempDir(), "no-containerd.sock")}, serverArgs...))
}

// LocalUpNodes starts the whole system with nodes real nodes (containerd
// 2.3 with CRI and CRIU, and a kubelet each), kube-scheduler, and the
// server capturing through the first node's containerd. The nodes use
// fixed names, addresses and ports: one such cluster runs at a time.
func LocalUpNodes(t testing.TB, nodes int, serverArgs ...string) *Cluster {
	t.Helper()
	return localUpNodes(t, nodes, nil, serverArgs)
}

// LocalUpNodesEnv is LocalUpNodes with local-up's environment extended
// (AGENT_ARGS=... for the node agents' flags, and the like).
func LocalUpNodesEnv(t testing.TB, nodes int, env []string, serverArgs ...string) *Cluster {
	t.Helper()
	return localUpNodes(t, nodes, env, serverArgs)
}

// LocalUpNodesCRDMode is LocalUpNodes with OpenKruise Agents' CRDs
// (third_party/openkruise-agents) installed and the server in --mode=crd (local-up MODE=crd).
func LocalUpNodesCRDMode(t testing.TB, nodes int, serverArgs ...string) *Cluster {
	t.Helper()
	return localUpNodes(t, nodes, []string{"MODE=crd"}, serverArgs)
}

func localUpNodes(t testing.TB, nodes int, env, serverArgs []string) *Cluster {
	t.Helper()
	for _, bin := range []string{"kubelet", "kube-scheduler", "containerd", "containerd-shim-runc-v2", "ctr"} {
		if _, err := os.Stat(filepath.Join(RepoRoot(), "_output", "bin", bin)); err != nil {
			Missing(t, "_output/bin/%s not built (run hack/build-kube-tools.sh)", bin)
		}
	}
	if os.Geteuid() != 0 {
		Missing(t, "a kubelet node needs root")
	}
	RequireCRIU(t)
	return localUp(t, nodes, serverArgs, env...)
}

func localUp(t testing.TB, nodes int, args []string, env ...string) *Cluster {
	t.Helper()
	root := RepoRoot()
	for _, bin := range []string{"etcd", "kube-apiserver", "kube-controller-manager"} {
		if _, err := os.Stat(filepath.Join(root, "_output", "bin", bin)); err != nil {
			Missing(t, "_output/bin/%s not built (run hack/build-kube-tools.sh)", bin)
		}
	}
	Kubectl(t)
	c := &Cluster{t: t, Dir: t.TempDir(), CPPort: FreePort(t), KASPort: FreePort(t), EtcdPort: FreePortPair(t), Nodes: nodes}
	c.Env = append(os.Environ(),
		fmt.Sprintf("LOCAL_UP_NODES=%d", nodes),
		"LOCAL_UP_DIR="+c.Dir,
		fmt.Sprintf("ETCD_PORT=%d", c.EtcdPort),
		fmt.Sprintf("KAS_PORT=%d", c.KASPort),
		fmt.Sprintf("CP_PORT=%d", c.CPPort),
		fmt.Sprintf("CP_WEBHOOK_PORT=%d", FreePort(t)),
		"KUBECONFIG="+c.Kubeconfig(),
		"KUBECACHEDIR="+filepath.Join(c.Dir, "kubecache"),
		"CHECKPOINT_APISERVER_ARGS="+strings.Join(args, " "),
	)
	c.Env = append(c.Env, env...)
	t.Cleanup(func() { _ = c.Script("down") })
	// Runs before down: a failed test shows the ends of the components' logs.
	t.Cleanup(func() {
		if t.Failed() {
			c.logTails()
		}
	})
	if err := c.Script("up"); err != nil {
		t.Fatalf("local-up: %v", err)
	}
	return c
}

// logTails logs the last 3000 bytes of every component's log.
func (c *Cluster) logTails() {
	logs, _ := filepath.Glob(filepath.Join(c.Dir, "*.log"))
	for _, log := range logs {
		b, _ := os.ReadFile(log)
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		c.t.Logf("%s:\n%s", filepath.Base(log), b)
	}
}

// Down stops the cluster before t ends (t's cleanup then finds it down).
func (c *Cluster) Down() { _ = c.Script("down") }

// EtcdGet reads key from etcd through its v3 JSON gateway: the stored
// bytes, or nil when the key is absent.
func (c *Cluster) EtcdGet(key string) []byte {
	c.t.Helper()
	body, _ := json.Marshal(map[string]string{"key": base64.StdEncoding.EncodeToString([]byte(key))})
	resp, err := http.Post(fmt.Sprintf("http://127.0.0.1:%d/v3/kv/range", c.EtcdPort), "application/json", bytes.NewReader(body))
	require.NoError(c.t, err)
	defer resp.Body.Close()
	var out struct {
		Kvs []struct {
			Value []byte `json:"value"`
		} `json:"kvs"`
	}
	require.NoError(c.t, json.NewDecoder(resp.Body).Decode(&out))
	if len(out.Kvs) == 0 {
		return nil
	}
	return out.Kvs[0].Value
}

// runName is hack/local-up.sh's cpup-<hash of its directory>, which names
// its run directory and its tmpfs directories.
func (c *Cluster) runName() string {
	sum := sha256.Sum256([]byte(c.Dir + "\n")) // as `echo "$WORK" | sha256sum`
	return "cpup-" + hex.EncodeToString(sum[:])[:8]
}

// RestoreImages are node i's checkpoint stores for its restore runtime, as
// local-up places them: the tmpfs tier (tried first), then the disk tier.
// Each holds <namespace>/<checkpoint ID>/<container>/.
func (c *Cluster) RestoreImages(i int) []string {
	return []string{filepath.Join("/dev/shm", c.runName()+"-restore", fmt.Sprintf("node-%d", i)),
		filepath.Join(c.Dir, "agent-data", fmt.Sprintf("node-%d", i), "restore-images")}
}

// RestoreImage is where node i holds container ctr of checkpoint id of
// namespace ns, in whichever tier ("" when in none).
func (c *Cluster) RestoreImage(i int, ns, id, ctr string) string {
	for _, root := range c.RestoreImages(i) {
		if d := filepath.Join(root, ns, id, ctr); fileExists(filepath.Join(d, ".complete")) {
			return d
		}
	}
	return ""
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// NodeCtr runs ctr, in containerd namespace k8s.io, against node i's
// containerd (its socket is where hack/local-up.sh puts it).
func (c *Cluster) NodeCtr(i int, args ...string) (string, error) {
	sock := fmt.Sprintf("/run/%s/node-%d/containerd.sock", c.runName(), i)
	cmd := exec.Command(filepath.Join(RepoRoot(), "_output", "bin", "ctr"), append([]string{"--address", sock, "-n", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Kubeconfig is the admin kubeconfig of the kube-apiserver.
func (c *Cluster) Kubeconfig() string { return filepath.Join(c.Dir, "admin.kubeconfig") }

// RESTConfig is the admin client configuration for the kube-apiserver.
func (c *Cluster) RESTConfig() *rest.Config {
	c.t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	require.NoError(c.t, err)
	return cfg
}

// PID is the process id of a component local-up started (etcd,
// kube-apiserver, checkpoint-apiserver, ...).
func (c *Cluster) PID(name string) int {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.Dir, name+".pid"))
	require.NoError(c.t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(c.t, err)
	return pid
}

// Script runs hack/local-up.sh with args in this cluster's environment.
func (c *Cluster) Script(args ...string) error { return c.ScriptWith(nil, args...) }

// ScriptWith runs hack/local-up.sh with args in this cluster's environment
// plus env (for example CP_INSTANCE=-2 CP_PORT=... for a second replica).
func (c *Cluster) ScriptWith(env []string, args ...string) error {
	cmd := exec.Command(filepath.Join(RepoRoot(), "hack", "local-up.sh"), args...)
	cmd.Env = append(append([]string(nil), c.Env...), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// Kubectl runs the real kubectl against the kube-apiserver.
func (c *Cluster) Kubectl(args ...string) (string, error) {
	cmd := exec.Command("kubectl", args...)
	cmd.Env = c.Env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// MustStdout runs kubectl and returns its stdout alone, failing the test
// when it fails: for output that is parsed, which kubectl's warnings on
// stderr (such as a streaming hiccup of exec) must not pollute.
func (c *Cluster) MustStdout(args ...string) string {
	c.t.Helper()
	out, stderr, err := c.KubectlOutputs(args...)
	require.NoError(c.t, err, "kubectl %s:\n%s%s", strings.Join(args, " "), out, stderr)
	return out
}

// KubectlOutputs runs kubectl and returns its stdout and stderr apart.
func (c *Cluster) KubectlOutputs(args ...string) (string, string, error) {
	cmd := exec.Command("kubectl", args...)
	cmd.Env = c.Env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	return string(out), stderr.String(), err
}

// KubectlStdin runs kubectl with stdin (for "-f -").
func (c *Cluster) KubectlStdin(stdin string, args ...string) (string, error) {
	cmd := exec.Command("kubectl", args...)
	cmd.Env = c.Env
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// MustStdin runs kubectl with stdin and returns its stdout alone,
// failing the test when it fails.
func (c *Cluster) MustStdin(stdin string, args ...string) string {
	c.t.Helper()
	cmd := exec.Command("kubectl", args...)
	cmd.Env = c.Env
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	require.NoError(c.t, err, "kubectl %s:\n%s%s", strings.Join(args, " "), out, stderr.String())
	return string(out)
}

// Must runs kubectl and fails the test when it fails.
func (c *Cluster) Must(args ...string) string {
	c.t.Helper()
	out, err := c.Kubectl(args...)
	require.NoError(c.t, err, "kubectl %s:\n%s", strings.Join(args, " "), out)
	return out
}

// Apply runs kubectl apply on a YAML document.
func (c *Cluster) Apply(yaml string) {
	c.t.Helper()
	out, err := c.KubectlStdin(yaml, "apply", "-f", "-")
	require.NoError(c.t, err, "%s", out)
}

// Count is the first (or, with last, the last) number container ctr of
// Pod ns/pod printed since it last started; -1 when none.
func (c *Cluster) Count(ns, pod, ctr string, last bool) int {
	out, _ := c.Kubectl("logs", "-n", ns, pod, "-c", ctr)
	n := -1
	for _, l := range strings.Split(out, "\n") {
		if v, err := strconv.Atoi(strings.TrimSpace(l)); err == nil {
			n = v
			if !last {
				break
			}
		}
	}
	return n
}

// Secret is the secret a SecretCounterScript Pod's container main printed
// since it last started; the test fails unless it printed one, and only one.
func (c *Cluster) Secret(ns, pod string) string {
	c.t.Helper()
	seen := map[string]bool{}
	last := ""
	for _, l := range strings.Split(c.Must("logs", "-n", ns, pod, "-c", "main"), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "secret "); ok && v != "" {
			seen[v], last = true, v
		}
	}
	require.Len(c.t, seen, 1, "Pod %s/%s printed one secret", ns, pod)
	return last
}

// Eventually waits up to 90 s for f.
func (c *Cluster) Eventually(what string, f func() bool) {
	c.t.Helper()
	require.Eventually(c.t, f, 90*time.Second, 250*time.Millisecond, what)
}

// SandboxNamespace creates namespace ns, waits for its default
// ServiceAccount (Pods need it), and, when the cluster has a checkpoint
// registry, gives it the registry's pull secret for clones.
func (c *Cluster) SandboxNamespace(ns string) {
	c.t.Helper()
	c.Must("create", "namespace", ns)
	c.Eventually("the namespace's default ServiceAccount", func() bool {
		_, err := c.Kubectl("get", "serviceaccount", "default", "-n", ns)
		return err == nil
	})
}

// BusyboxPodYAML is a Pod running script in the local busybox image, with
// the container's resources (YAML, "{}" for none).
func BusyboxPodYAML(ns, name, script, resources string) string {
	return PodYAML(ns, name, BusyboxImage, resources, "sh", "-c", script)
}

// PodYAML is a Pod whose one container, main, runs command in a local
// image (imagePullPolicy Never), with the container's resources (YAML, "{}"
// for none).
func PodYAML(ns, name, image, resources string, command ...string) string {
	quoted := make([]string, len(command))
	for i, c := range command {
		quoted[i] = strconv.Quote(c)
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: %s
    imagePullPolicy: Never
    command: [%s]
    resources: %s
`, name, ns, image, strings.Join(quoted, ", "), resources)
}

// MarkForRestore marks a Pod manifest (BusyboxPodYAML and the like) for
// restore from checkpoint id, under the restore runtime's RuntimeClass, as
// a user or a controller would by hand.
func MarkForRestore(manifest, id string) string {
	manifest = regexp.MustCompile(`metadata: \{name: ([^,]+), namespace: ([^}]+)\}\n`).ReplaceAllString(manifest,
		"metadata:\n  name: $1\n  namespace: $2\n  annotations: {agents.kruise.io/restore-from: "+id+"}\n")
	return strings.Replace(manifest, "spec:\n", "spec:\n  runtimeClassName: checkpoint\n", 1)
}

// OnNode binds a Pod manifest (BusyboxPodYAML and the like) to node.
func OnNode(manifest, node string) string {
	return strings.Replace(manifest, "spec:\n", "spec:\n  nodeName: "+node+"\n", 1)
}
