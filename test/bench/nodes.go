package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/utils/ptr"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/generated/clientset/versioned"
	agentsv1alpha1 "github.com/agents-kruise/checkpoint-apiserver/generated/clientset/versioned/typed/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// NodesResult is one container memory size on real kubelet nodes: the
// capture subresource with the driver in the server's process, on the
// Pod's node (a one-node cluster), against the same capture through the
// node agent of the Pod's node, pushed to the registry before it answers
// (a two-node cluster); the registry transfer of that checkpoint's layer
// alone (a monolithic push as containerd's, and one GET back); and clones
// by the restore runtime on the capturing node (unpacked there by its agent
// once durable) and on the other node (pulled by its agent, from when the
// restore is asked), lazily (to Ready, and to every page in: the
// lazy-pages daemon done) and eagerly (Ready is every page in), side by
// side with a fresh Pod of the same image on the same node (the floor).
// The Pod's memory is random (os.urandom): no zero page or compression
// flatters a figure.
type NodesResult struct {
	MemoryMiB int     `json:"memoryMiB"`
	Runs      int     `json:"runs"`
	OwnNodeMs float64 `json:"ownNodeMs"`
	AgentMs   float64 `json:"agentMs"`
	PushMs    float64 `json:"pushMs"`
	PullMs    float64 `json:"pullMs"`
	// RestoreLocalMs and RestoreOtherMs are lazy clones to Ready (the
	// restore subresource's answer: every container running, no probe).
	RestoreLocalMs float64 `json:"restoreLocalMs"`
	RestoreOtherMs float64 `json:"restoreOtherMs"`
	// ...PagesMs are the same lazy clones to every page back in memory.
	RestoreLocalPagesMs float64 `json:"restoreLocalPagesMs,omitempty"`
	RestoreOtherPagesMs float64 `json:"restoreOtherPagesMs,omitempty"`
	// Eager...Ms are eager clones to Ready, every page in before the start.
	EagerLocalMs float64 `json:"eagerLocalMs,omitempty"`
	EagerOtherMs float64 `json:"eagerOtherMs,omitempty"`
	// Fresh...Ms are a fresh Pod of the same image to Ready on each node.
	FreshLocalMs float64 `json:"freshLocalMs,omitempty"`
	FreshOtherMs float64 `json:"freshOtherMs,omitempty"`
	ImageBytes   int64   `json:"imageBytes"`
	// StateBytes is a capture's status.sizeBytes through the agent (what
	// the container's memory came to); RestoreOverBound says a clone did
	// not run within the restore's own bound (its figure is that bound).
	StateBytes       int64 `json:"stateBytes,omitempty"`
	RestoreOverBound bool  `json:"restoreOverBound,omitempty"`
	// KubeletMs is the kubelet's own checkpoint API on the same Pod
	// (POST /api/v1/nodes/<node>/proxy/checkpoint/<ns>/<pod>/<container>),
	// which leaves a tar on the node, in the one-node cluster.
	KubeletMs float64 `json:"kubeletMs,omitempty"`
}

// MeasureAcrossNodes brings up a one-node cluster, then a two-node one with
// agents and the registry (local-up), and times runs captures of each size.
func MeasureAcrossNodes(t testing.TB, sizes []int, runs int) []NodesResult {
	out := make([]NodesResult, len(sizes))
	for i, s := range sizes {
		out[i] = NodesResult{MemoryMiB: s, Runs: runs}
	}
	own := framework.LocalUpNodes(t, 1, "--declarative-capture-delay=24h")
	for i, size := range sizes {
		caps, m := nodeCaptures(t, own, size, runs, false)
		out[i].OwnNodeMs, out[i].KubeletMs = Summarize(caps).P50Ms, Summarize(m.kubelet).P50Ms
	}
	own.Down()

	two := framework.LocalUpNodes(t, 2, "--declarative-capture-delay=24h")
	reg := two.Registry()
	for i, size := range sizes {
		caps, m := nodeCaptures(t, two, size, runs, true)
		out[i].AgentMs = Summarize(caps).P50Ms
		out[i].RestoreLocalMs, out[i].RestoreOtherMs = Summarize(m.local).P50Ms, Summarize(m.other).P50Ms
		out[i].RestoreLocalPagesMs, out[i].RestoreOtherPagesMs = Summarize(m.localPages).P50Ms, Summarize(m.otherPages).P50Ms
		out[i].EagerLocalMs, out[i].EagerOtherMs = Summarize(m.eagerLocal).P50Ms, Summarize(m.eagerOther).P50Ms
		out[i].FreshLocalMs, out[i].FreshOtherMs = Summarize(m.freshLocal).P50Ms, Summarize(m.freshOther).P50Ms
		out[i].StateBytes, out[i].RestoreOverBound = m.stateBytes, m.overBound
		out[i].PushMs, out[i].PullMs, out[i].ImageBytes = registryTransfer(t, reg, size, m.images)
	}
	two.Down()
	return out
}

// registryTransfer pulls each image with skopeo and pushes its largest
// blob again, timing both (medians), and gives the image's size.
func registryTransfer(t testing.TB, reg framework.Registry, size int, images []string) (pushMs, pullMs float64, bytes int64) {
	var push, pull []time.Duration
	for r, image := range images {
		dir := filepath.Join(t.TempDir(), "oci")
		start := time.Now()
		if o, err := reg.Skopeo("copy", "-q", "--src-cert-dir", reg.CertDir(), "--src-creds", reg.Creds(),
			"docker://"+image, "dir:"+dir); err != nil {
			t.Fatalf("pull %s: %v: %s", image, err, o)
		}
		skopeo := time.Since(start)
		bytes = dirSize(dir)
		p, g, err := transferLargestBlob(reg, dir, fmt.Sprintf("bench-%d-%d", size, r))
		if err != nil {
			t.Fatalf("push and pull: %v", err)
		}
		t.Logf("%d MiB: the registry took the checkpoint's largest blob in %s, gave it back in %s (skopeo's pull of the image: %s)",
			size, p, g, skopeo)
		push, pull = append(push, p), append(pull, g)
	}
	return Summarize(push).P50Ms, Summarize(pull).P50Ms, bytes
}

// SmokeAcrossNodes runs every step of the node benchmark once, on a 0 MiB
// Pod of c (two kubelet nodes with agents and the registry): a capture
// through node-1's agent, clones on both nodes, the kubelet's checkpoint
// API on the same Pod and the registry's push and pull of the image. The
// in-process figure is the agent's here (c has no in-process driver).
func SmokeAcrossNodes(t testing.TB, c *framework.Cluster) NodesResult {
	caps, m := nodeCaptures(t, c, 0, 1, true)
	n := NodesResult{MemoryMiB: 0, Runs: 1, AgentMs: Summarize(caps).P50Ms, OwnNodeMs: Summarize(caps).P50Ms,
		RestoreLocalMs: Summarize(m.local).P50Ms, RestoreOtherMs: Summarize(m.other).P50Ms, StateBytes: m.stateBytes,
		RestoreLocalPagesMs: Summarize(m.localPages).P50Ms, RestoreOtherPagesMs: Summarize(m.otherPages).P50Ms,
		EagerLocalMs: Summarize(m.eagerLocal).P50Ms, EagerOtherMs: Summarize(m.eagerOther).P50Ms,
		FreshLocalMs: Summarize(m.freshLocal).P50Ms, FreshOtherMs: Summarize(m.freshOther).P50Ms}
	if m.overBound {
		t.Fatalf("a 0 MiB clone did not run within the restore's bound")
	}
	d, err := kubeletCheckpoint(context.Background(), c, "node-1", "bench-0", "src", "main")
	if err != nil {
		t.Fatalf("kubelet checkpoint: %v", err)
	}
	n.KubeletMs = float64(d.Microseconds()) / 1000
	n.PushMs, n.PullMs, n.ImageBytes = registryTransfer(t, c.Registry(), 0, m.images)
	return n
}

type clones struct {
	// lazy clones to Ready and to every page in, eager ones, fresh Pods
	local, other           []time.Duration
	localPages, otherPages []time.Duration
	eagerLocal, eagerOther []time.Duration
	freshLocal, freshOther []time.Duration
	images                 []string
	// kubelet are the kubelet checkpoint API's times, without restores.
	kubelet []time.Duration
	// overBound: a clone did not run within the restore's bound.
	overBound bool
	// stateBytes is the last capture's status.sizeBytes.
	stateBytes int64
}

// captureOrAwait captures the Pending Checkpoint name through the capture
// subresource. A cluster whose server captures new Checkpoints itself after
// --declarative-capture-delay may have started first on a slow machine: the
// call then gets a Conflict, and the declarative capture's result is awaited
// instead (its time then includes the delay).
func captureOrAwait(ctx context.Context, t testing.TB, cps agentsv1alpha1.CheckpointInterface, name string) (*v1alpha1.Checkpoint, error) {
	cp, err := cps.Capture(ctx, name, &v1alpha1.CaptureOptions{}, metav1.CreateOptions{})
	if !apierrors.IsConflict(err) {
		return cp, err
	}
	t.Logf("checkpoint %s: %v; awaiting the server's own capture", name, err)
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 10*time.Minute, true, func(ctx context.Context) (bool, error) {
		cp, err = cps.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return cp.Status.Phase == v1alpha1.PhaseSucceeded || cp.Status.Phase == v1alpha1.PhaseFailed, nil
	})
	return cp, err
}

// nodeCaptures runs a Pod holding size MiB on node-1 and captures it runs
// times through the capture subresource; with restores, it also clones
// each capture onto node-1 and node-2 and times each to Running.
func nodeCaptures(t testing.TB, c *framework.Cluster, size, runs int, restores bool) ([]time.Duration, clones) {
	ns := fmt.Sprintf("bench-%d", size)
	c.SandboxNamespace(ns)
	c.Apply(framework.OnNode(framework.PodYAML(ns, "src", framework.PythonImage, "{}", sandboxCommand(size)...), "node-1"))
	c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/src", "--timeout=180s")
	c.Eventually("the source counts", func() bool {
		out, _ := c.Kubectl("logs", "-n", ns, "src", "--tail=1")
		return out != "" && out != "\n"
	})
	cs, err := versioned.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	cps := cs.AgentsV1alpha1().Checkpoints(ns)
	ctx := context.Background()
	var caps []time.Duration
	var cl clones
	for r := 0; r < runs; r++ {
		name := fmt.Sprintf("cp-%d", r)
		if _, err := cps.Create(ctx, &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.CheckpointSpec{PodName: "src"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		cp, err := captureOrAwait(ctx, t, cps, name)
		if err != nil || cp.Status.Phase != v1alpha1.PhaseSucceeded {
			t.Fatalf("capture %s of %d MiB: %v %+v", name, size, err, cp)
		}
		caps = append(caps, time.Since(start))
		cl.stateBytes = cp.Status.SizeBytes
		if p, d := cp.Status.PauseDuration, cp.Status.CaptureDuration; p == nil || d == nil || p.Duration <= 0 || p.Duration > d.Duration {
			t.Fatalf("capture %s: pauseDuration %v must be set, positive and no larger than captureDuration %v", name, p, d)
		}
		if !restores {
			// The standard path a user could take instead: the kubelet's
			// checkpoint API, through the kube-apiserver's node proxy.
			d, err := kubeletCheckpoint(ctx, c, "node-1", ns, "src", "main")
			if err != nil {
				t.Fatalf("kubelet checkpoint of %d MiB: %v", size, err)
			}
			cl.kubelet = append(cl.kubelet, d)
			continue
		}
		cl.images = append(cl.images, cp.Status.Image)
		// The capturing node's agent unpacks the checkpoint for its restore
		// runtime in the background: the clone there is timed from it.
		id := cp.Status.CheckpointID
		c.Eventually("node-1 unpacked the checkpoint", func() bool {
			return c.RestoreImage(1, ns, id, "main") != ""
		})
		for _, lazy := range []bool{true, false} {
			setLazy(t, c, lazy)
			for _, node := range []string{"node-1", "node-2"} {
				clone := fmt.Sprintf("clone-%d-%s-%t", r, node, lazy)
				ready, pages, over := timeClone(t, c, ns, name, clone, node, id)
				cl.overBound = cl.overBound || over
				switch {
				case lazy && node == "node-1":
					cl.local, cl.localPages = append(cl.local, ready), append(cl.localPages, pages)
				case lazy:
					cl.other, cl.otherPages = append(cl.other, ready), append(cl.otherPages, pages)
				case node == "node-1":
					cl.eagerLocal = append(cl.eagerLocal, ready)
				default:
					cl.eagerOther = append(cl.eagerOther, ready)
				}
				c.Must("delete", "pod", clone, "-n", ns, "--grace-period=0", "--force", "--wait=false", "--ignore-not-found")
			}
		}
		setLazy(t, c, true)
		// The floor: a fresh Pod of the same image on each node, to Ready.
		for _, node := range []string{"node-1", "node-2"} {
			fresh := fmt.Sprintf("fresh-%d-%s", r, node)
			d := timeFresh(t, c, ns, fresh, node)
			if node == "node-1" {
				cl.freshLocal = append(cl.freshLocal, d)
			} else {
				cl.freshOther = append(cl.freshOther, d)
			}
			c.Must("delete", "pod", fresh, "-n", ns, "--grace-period=0", "--force", "--wait=false", "--ignore-not-found")
		}
	}
	// The clones go before the next size: wait until none is left.
	_ = wait.PollUntilContextTimeout(ctx, time.Second, 2*time.Minute, true, func(context.Context) (bool, error) {
		out, _ := c.Kubectl("get", "pods", "-n", ns, "-o", "name")
		return out == "pod/src" || out == "pod/src\n", nil
	})
	return caps, cl
}

// setLazy sets whether the restore runtime of both nodes restores lazily:
// each new Pod's shim reads the configuration when it starts.
func setLazy(t testing.TB, c *framework.Cluster, lazy bool) {
	for _, node := range []string{"node-1", "node-2"} {
		path := filepath.Join(c.Dir, "node-runtime", node, "restore-runtime.json")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var cfg map[string]any
		if err := json.Unmarshal(data, &cfg); err != nil {
			t.Fatal(err)
		}
		cfg["lazy"] = lazy
		if data, err = json.Marshal(cfg); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path+".tmp", data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(path+".tmp", path); err != nil {
			t.Fatal(err)
		}
	}
}

// timeClone restores checkpoint name (ID id) into clone on node and times
// it to Ready (the restore subresource answers once every container runs;
// the clone has no probe) and to every page in: the end of the lazy-pages
// daemon serving id on this machine (the nodes' processes are this
// machine's), or Ready when there is none (an eager restore). over: the
// clone did not run within the restore's own bound (the figure is that).
func timeClone(t testing.TB, c *framework.Cluster, ns, name, clone, node, id string) (ready, pages time.Duration, over bool) {
	cs, err := versioned.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = cs.AgentsV1alpha1().Checkpoints(ns).Restore(context.Background(), name,
		&v1alpha1.CheckpointRestore{Spec: v1alpha1.CheckpointRestoreSpec{SandboxName: clone, NodeName: node}}, metav1.CreateOptions{})
	ready = time.Since(start)
	if err != nil && strings.Contains(err.Error(), "did not run within") {
		t.Logf("restore %s onto %s: over the restore's bound after %s: %v", name, node, ready, err)
		return ready, ready, true
	}
	if err != nil {
		t.Fatalf("restore %s onto %s: %v", name, node, err)
	}
	for pid, _ := framework.LazyPagesDaemon(id); pid != 0; pid, _ = framework.LazyPagesDaemon(id) {
		if time.Since(start) > 5*time.Minute {
			t.Fatalf("the lazy-pages daemon of %s on %s still runs after 5 minutes", clone, node)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return ready, max(ready, time.Since(start)), false
}

// timeFresh creates a fresh Pod of the sandbox's image on node (the
// sandbox holding nothing) and times it to Ready, polling as the restore
// subresource polls its clone (every 50 ms), through the same client kind.
func timeFresh(t testing.TB, c *framework.Cluster, ns, pod, node string) time.Duration {
	kube, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: ns},
		Spec: corev1.PodSpec{NodeName: node, TerminationGracePeriodSeconds: ptr.To[int64](1), Containers: []corev1.Container{{
			Name: "main", Image: framework.PythonImage, ImagePullPolicy: corev1.PullNever, Command: sandboxCommand(0)}}},
	}
	ctx := context.Background()
	start := time.Now()
	if _, err := kube.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		got, err := kube.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cond := range got.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("fresh Pod %s on %s not Ready: %v", pod, node, err)
	}
	return time.Since(start)
}

// kubeletCheckpoint times the kubelet's checkpoint API on container of
// ns/pod, through the kube-apiserver's proxy to node, and removes the
// archive it wrote.
func kubeletCheckpoint(ctx context.Context, c *framework.Cluster, node, ns, pod, container string) (time.Duration, error) {
	kube, err := kubernetes.NewForConfig(c.RESTConfig())
	if err != nil {
		return 0, err
	}
	start := time.Now()
	// The kubelet's own timeout parameter is in seconds (client-go's would send a duration).
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	raw, err := kube.CoreV1().RESTClient().Post().AbsPath("/api/v1/nodes", node, "proxy", "checkpoint", ns, pod, container).
		Param("timeout", "110").DoRaw(ctx)
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, raw)
	}
	var written struct {
		Items []string `json:"items"`
	}
	if err := json.Unmarshal(raw, &written); err != nil || len(written.Items) == 0 {
		return 0, fmt.Errorf("the kubelet answered %q", raw)
	}
	for _, f := range written.Items {
		_ = os.Remove(f)
	}
	return d, nil
}

// transferLargestBlob times the push of the largest blob skopeo copied into
// dir (the checkpoint's layer) to repository name (pushBlob), and its pull
// back from there:
// one GET, TLS, the body read to its end, as a kubelet's pull fetches a
// layer (without its unpack).
func transferLargestBlob(reg framework.Registry, dir, name string) (push, pull time.Duration, err error) {
	push, err = pushBlob(reg, dir, name)
	if err != nil {
		return 0, 0, err
	}
	path := largestFile(dir)
	pool, err := certutil.NewPool(filepath.Join(reg.CertDir(), "ca.crt"))
	if err != nil {
		return 0, 0, err
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	req, err := http.NewRequest(http.MethodGet, "https://"+framework.RegistryHost+"/v2/"+name+"/blobs/sha256:"+filepath.Base(path), nil)
	if err != nil {
		return 0, 0, err
	}
	req.SetBasicAuth("checkpoints", reg.Password)
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, 0, err
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	pull = time.Since(start)
	if err != nil || resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("pull %s: %s, %d bytes: %v", req.URL.Path, resp.Status, n, err)
	}
	return push, pull, nil
}

// largestFile is the largest file under dir.
func largestFile(dir string) string {
	var path string
	var size int64
	_ = filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && fi.Size() > size {
			path, size = p, fi.Size()
		}
		return nil
	})
	return path
}

// pushBlob uploads the largest blob in dir to repository name, in one
// monolithic PUT as containerd's pusher does, and times it. (skopeo itself
// would gzip the layer on the way.)
func pushBlob(reg framework.Registry, dir, name string) (time.Duration, error) {
	data, err := os.ReadFile(largestFile(dir))
	if err != nil {
		return 0, err
	}
	pool, err := certutil.NewPool(filepath.Join(reg.CertDir(), "ca.crt"))
	if err != nil {
		return 0, err
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	send := func(method, url string, body []byte) (*http.Response, error) {
		req, err := http.NewRequest(method, url, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.SetBasicAuth("checkpoints", reg.Password)
		req.ContentLength = int64(len(body))
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return nil, fmt.Errorf("%s %s: %s", method, url, resp.Status)
		}
		return resp, nil
	}
	start := time.Now()
	resp, err := send(http.MethodPost, "https://"+framework.RegistryHost+"/v2/"+name+"/blobs/uploads/", nil)
	if err != nil {
		return 0, err
	}
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		return 0, err
	}
	q := loc.Query()
	q.Set("digest", digest.FromBytes(data).String())
	loc.RawQuery = q.Encode()
	target := loc.String()
	if !loc.IsAbs() {
		target = "https://" + framework.RegistryHost + target
	}
	if _, err := send(http.MethodPut, target, data); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func dirSize(dir string) int64 {
	var n int64
	_ = filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// SaveNodes writes the figures for the report (LoadNodes reads them).
func SaveNodes(path string, ns []NodesResult) error { return saveJSON(path, ns) }

// LoadNodes reads what SaveNodes wrote.
func LoadNodes(path string) ([]NodesResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ns []NodesResult
	return ns, json.Unmarshal(b, &ns)
}

// nodeRows are the report's rows of the figures across nodes, with the
// fast-capture targets: durable in the registry within 1.2x (CRIU's dump,
// from the capture benchmark of the same run, + the push of the image
// alone) + 50 ms and 0.5 s + 2 s/GiB; in process within half the kubelet's
// checkpoint API; clones as restoreRows says.
func (r *Results) nodeRows() []Row {
	var rows []Row
	var base *NodesResult
	for i, n := range r.Nodes {
		if n.MemoryMiB == 0 {
			base = &r.Nodes[i]
		}
	}
	for _, n := range r.Nodes {
		gib := float64(n.MemoryMiB) / 1024
		if n.StateBytes > 0 && n.MemoryMiB > 0 {
			gib = float64(n.StateBytes) / (1 << 30) // what the memory came to
		}
		over := ""
		if n.RestoreOverBound {
			over = " (a clone did not run within the restore's bound: at least)"
		}
		rows = append(rows,
			Row{Figure: fmt.Sprintf("capture, %d MiB Pod (a %s state) on a kubelet node: through the node agent, durable in the registry, vs in the server's process on the Pod's node (ms)", n.MemoryMiB, mib(n.StateBytes)),
				Ours: f1(n.AgentMs), Peer: f1(n.OwnNodeMs), Ratio: n.AgentMs / n.OwnNodeMs})
		if c, ok := r.captureAt(n.MemoryMiB); ok && c.DumpMs > 0 && n.PushMs > 0 {
			peer := c.DumpMs + n.PushMs
			rows = append(rows, Row{Figure: fmt.Sprintf("  durable in the registry, %d MiB, vs CRIU's dump alone + the push of the image alone (ms)", n.MemoryMiB),
				Ours: f1(n.AgentMs), Peer: f1(peer), Ratio: n.AgentMs / peer, Target: "<= 1.2x + 50 ms", Met: yes(n.AgentMs <= 1.2*peer+50)})
		}
		limit := 500 + 2000*gib
		rows = append(rows, Row{Figure: fmt.Sprintf("  durable in the registry, %d MiB (ms; peer: the 0.5 s + 2 s/GiB target)", n.MemoryMiB),
			Ours: f1(n.AgentMs), Peer: f1(limit), Ratio: n.AgentMs / limit, Target: "<= 1", Met: yes(n.AgentMs <= limit)})
		if base != nil && n.MemoryMiB > 0 {
			slope := (n.AgentMs - base.AgentMs) / 1000 / gib
			row := Row{Figure: fmt.Sprintf("  durable in the registry, 0 to %d MiB: seconds per GiB added (peer: in process)", n.MemoryMiB),
				Ours: f2(slope), Peer: f2((n.OwnNodeMs - base.OwnNodeMs) / 1000 / gib), Target: "<= 2 s/GiB", Met: yes(slope <= 2)}
			row.Ratio = slope / ((n.OwnNodeMs - base.OwnNodeMs) / 1000 / gib)
			rows = append(rows, row)
		}
		if n.KubeletMs > 0 {
			rows = append(rows,
				Row{Figure: fmt.Sprintf("capture, %d MiB Pod on its node: this server in process vs the kubelet's checkpoint API (ms)", n.MemoryMiB),
					Ours: f1(n.OwnNodeMs), Peer: f1(n.KubeletMs), Ratio: n.OwnNodeMs / n.KubeletMs, Target: "<= 0.5x", Met: yes(n.OwnNodeMs <= 0.5*n.KubeletMs)},
				Row{Figure: fmt.Sprintf("capture, %d MiB Pod: through the agent, durable in the registry, vs the kubelet's checkpoint API, a tar on its node (ms)", n.MemoryMiB),
					Ours: f1(n.AgentMs), Peer: f1(n.KubeletMs), Ratio: n.AgentMs / n.KubeletMs, Target: "<= 0.5x", Met: yes(n.AgentMs <= 0.5*n.KubeletMs)})
		}
		if n.PullMs > 0 && n.ImageBytes > 0 {
			rate := float64(n.ImageBytes) / 1e6 / (n.PullMs / 1000)
			rows = append(rows,
				Row{Figure: fmt.Sprintf("  the registry alone: push vs pull of its checkpoint image (%s; ms)", mib(n.ImageBytes)),
					Ours: f1(n.PushMs), Peer: f1(n.PullMs), Ratio: n.PushMs / n.PullMs},
				Row{Figure: fmt.Sprintf("  pull, %d MiB checkpoint (MB/s, higher is better; peer: the 400 MB/s target)", n.MemoryMiB),
					Ours: f1(rate), Peer: "400.0", Ratio: rate / 400, Target: ">= 1", Met: yes(rate >= 400)})
		}
		rows = append(rows, restoreRows(n, gib, over)...)
		if base != nil && n.MemoryMiB > 0 {
			rows = append(rows, Row{Figure: fmt.Sprintf("restore, 0 to %d MiB: seconds per GiB added to Ready, lazy, other node vs capturing node", n.MemoryMiB),
				Ours: f2((n.RestoreOtherMs - base.RestoreOtherMs) / 1000 / gib), Peer: f2((n.RestoreLocalMs - base.RestoreLocalMs) / 1000 / gib),
				Ratio: (n.RestoreOtherMs - base.RestoreOtherMs) / (n.RestoreLocalMs - base.RestoreLocalMs)})
		}
	}
	return rows
}

// restoreRows are a size's clones against the fresh Pod on the same node
// (the floor), with the restore targets: Ready within the fresh Pod's time
// + 0.3 s; every page in within that + 0.7 s/GiB; on the other node the
// same plus the checkpoint's transfer at 400 MB/s. Eager restores, and
// lazy against eager, are figures without a target.
func restoreRows(n NodesResult, gib float64, over string) []Row {
	var rows []Row
	transfer := float64(n.ImageBytes) / 400e6 * 1000
	for _, side := range []struct {
		where                      string
		fresh, ready, pages, eager float64
		extra                      float64
	}{
		{"capturing node", n.FreshLocalMs, n.RestoreLocalMs, n.RestoreLocalPagesMs, n.EagerLocalMs, 0},
		{"other node", n.FreshOtherMs, n.RestoreOtherMs, n.RestoreOtherPagesMs, n.EagerOtherMs, transfer},
	} {
		if side.fresh <= 0 {
			continue
		}
		ready := side.fresh + 300 + side.extra
		pages := ready + 700*gib
		plus := ""
		if side.extra > 0 {
			plus = " + the checkpoint's transfer at 400 MB/s"
		}
		rows = append(rows,
			Row{Figure: fmt.Sprintf("clone, %d MiB random, %s: lazy, to Ready (ms; peer: a fresh Pod's %.0f ms + 0.3 s%s)%s", n.MemoryMiB, side.where, side.fresh, plus, over),
				Ours: f1(side.ready), Peer: f1(ready), Ratio: side.ready / ready, Target: "<= 1", Met: yes(side.ready <= ready)},
			Row{Figure: fmt.Sprintf("clone, %d MiB random, %s: lazy, to every page in (ms; peer: that + 0.7 s/GiB)", n.MemoryMiB, side.where),
				Ours: f1(side.pages), Peer: f1(pages), Ratio: side.pages / pages, Target: "<= 1", Met: yes(side.pages <= pages)})
		if side.eager > 0 {
			rows = append(rows,
				Row{Figure: fmt.Sprintf("clone, %d MiB random, %s: eager, to Ready and every page in, vs a fresh Pod (ms)", n.MemoryMiB, side.where),
					Ours: f1(side.eager), Peer: f1(side.fresh), Ratio: side.eager / side.fresh},
				Row{Figure: fmt.Sprintf("clone, %d MiB random, %s: lazy vs eager, to Ready (ms)", n.MemoryMiB, side.where),
					Ours: f1(side.ready), Peer: f1(side.eager), Ratio: side.ready / side.eager})
		}
	}
	return rows
}
