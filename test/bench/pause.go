package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/generated/clientset/versioned"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// E2B's published figures the pause and resume are set beside: pause at
// about 4 s per GiB of memory, resume in about 1 s (e2b.dev docs on
// sandbox persistence).
const (
	e2bPauseMsPerGiB = 4000.0
	e2bResumeMs      = 1000.0
)

// PauseResult is one container memory size paused and resumed through the
// E2B front on two kubelet nodes with agents and the registry: the pause
// (POST /sandboxes/{id}/pause to 204: memory and files captured through the
// node's agent into the registry, the Pod gone), the time the sandbox was
// frozen for it (CRIU's dump, status.pauseDuration), the resume (POST
// /sandboxes/{id}/connect to 201: the restore subresource's answer, every
// container running, lazily restored), and a fresh Pod of the same image
// on the same node to Ready, side by side. The memory is random.
type PauseResult struct {
	MemoryMiB int     `json:"memoryMiB"`
	Runs      int     `json:"runs"`
	PauseMs   float64 `json:"pauseMs"`
	// CaptureMs is the pause's capture (status.captureDuration: the dump,
	// the push into the registry); the rest of PauseMs is the Pod's removal.
	CaptureMs float64 `json:"captureMs"`
	FrozenMs  float64 `json:"frozenMs"`
	ResumeMs  float64 `json:"resumeMs"`
	FreshMs   float64 `json:"freshMs"`
	// E2B's published figures at this size.
	E2BPauseMs  float64 `json:"e2bPauseMs"`
	E2BResumeMs float64 `json:"e2bResumeMs"`
}

// MeasurePauseResume brings up two kubelet nodes with agents, the registry
// and the E2B front, and pauses and resumes a sandbox of each size runs times.
func MeasurePauseResume(t testing.TB, sizes []int, runs int) []PauseResult {
	keys := filepath.Join(t.TempDir(), "e2b-keys.yaml")
	// A key names one team (namespace): each size has its own.
	var lines []string
	for i, s := range sizes {
		lines = append(lines, fmt.Sprintf("- {key: e2b_%040d, user: bench, team: %s}", i, pauseNamespace(s)))
	}
	if err := os.WriteFile(keys, []byte("keys:\n"+strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", framework.FreePort(t))
	c := framework.LocalUpNodes(t, 2, "--declarative-capture-delay=24h", "--e2b-bind-address="+addr, "--e2b-api-keys-file="+keys)
	defer c.Down()
	out := make([]PauseResult, len(sizes))
	for i, size := range sizes {
		out[i] = PauseResume(t, c, "http://"+addr, fmt.Sprintf("e2b_%040d", i), pauseNamespace(size), size, runs)
		t.Logf("%d MiB: pause %.0f ms (capture %.0f ms, frozen %.0f ms; E2B ~%.0f ms), resume %.0f ms (E2B ~%.0f ms), fresh Pod %.0f ms",
			size, out[i].PauseMs, out[i].CaptureMs, out[i].FrozenMs, out[i].E2BPauseMs, out[i].ResumeMs, out[i].E2BResumeMs, out[i].FreshMs)
	}
	return out
}

func pauseNamespace(size int) string { return fmt.Sprintf("bench-pause-%d", size) }

// PauseResume pauses and resumes a sandbox of size MiB on node-1 of c (two
// kubelet nodes with agents) runs times, through the E2B front at URL front
// with key, whose team is namespace ns (created here).
func PauseResume(t testing.TB, c *framework.Cluster, front, key, ns string, size, runs int) PauseResult {
	c.SandboxNamespace(ns)
	c.E2BTeam(ns)
	c.Apply(framework.OnNode(framework.PodYAML(ns, "sb", framework.PythonImage, "{}", sandboxCommand(size)...), "node-1"))
	c.Must("annotate", "pod", "sb", "-n", ns, "agents.kruise.io/owner=e2b:bench")
	c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/sb", "--timeout=180s")
	c.Eventually("the sandbox stamps", func() bool {
		out, _ := c.Kubectl("logs", "-n", ns, "sb", "--tail=1")
		return strings.TrimSpace(out) != ""
	})
	cs, err := versioned.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	var pauses, captures, frozen, resumes, fresh []time.Duration
	for r := 0; r < runs; r++ {
		start := time.Now()
		if status, body := e2bCall(t, http.MethodPost, front, key, "/sandboxes/sb/pause"); status != http.StatusNoContent {
			t.Fatalf("pause of %d MiB: %d %s", size, status, body)
		}
		pauses = append(pauses, time.Since(start))
		// The sandbox's pause: the one not going (the previous pause is
		// deleted once this one succeeded).
		list, err := cs.AgentsV1alpha1().Checkpoints(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "agents.kruise.io/paused-sandbox=sb"})
		if err != nil {
			t.Fatal(err)
		}
		var live []v1alpha1.Checkpoint
		for _, cp := range list.Items {
			if cp.DeletionTimestamp == nil {
				live = append(live, cp)
			}
		}
		if len(live) != 1 || live[0].Status.Phase != v1alpha1.PhaseSucceeded || live[0].Status.PauseDuration == nil ||
			live[0].Status.CaptureDuration == nil {
			t.Fatalf("the pause of %d MiB: one Succeeded pause with its pauseDuration and captureDuration, not %+v", size, live)
		}
		frozen = append(frozen, live[0].Status.PauseDuration.Duration)
		captures = append(captures, live[0].Status.CaptureDuration.Duration)
		start = time.Now()
		if status, body := e2bCall(t, http.MethodPost, front, key, "/sandboxes/sb/connect"); status != http.StatusCreated {
			t.Fatalf("resume of %d MiB: %d %s", size, status, body)
		}
		resumes = append(resumes, time.Since(start))
		c.Must("wait", "-n", ns, "--for=condition=Ready", "pod/sb", "--timeout=180s")
		node := c.Must("get", "pod", "sb", "-n", ns, "-o", "jsonpath={.spec.nodeName}")
		// The capturing node (node-1 first, then where the sandbox last ran)
		// holds an unpacked copy; another node pulls from the registry.
		t.Logf("%d MiB, run %d: pause %s (capture %s), resume %s onto %s", size, r,
			pauses[r].Round(time.Millisecond), captures[len(captures)-1].Round(time.Millisecond), resumes[r].Round(time.Millisecond), node)
		f := fmt.Sprintf("fresh-%d", r)
		fresh = append(fresh, timeFresh(t, c, ns, f, node))
		c.Must("delete", "pod", f, "-n", ns, "--grace-period=0", "--force", "--wait=false", "--ignore-not-found")
	}
	if status, body := e2bCall(t, http.MethodDelete, front, key, "/sandboxes/sb"); status != http.StatusNoContent {
		t.Fatalf("kill of %d MiB: %d %s", size, status, body)
	}
	return PauseResult{MemoryMiB: size, Runs: runs, PauseMs: Summarize(pauses).P50Ms, CaptureMs: Summarize(captures).P50Ms, FrozenMs: Summarize(frozen).P50Ms,
		ResumeMs: Summarize(resumes).P50Ms, FreshMs: Summarize(fresh).P50Ms,
		E2BPauseMs: e2bPauseMsPerGiB * float64(size) / 1024, E2BResumeMs: e2bResumeMs}
}

// e2bCall calls the E2B front; a call cut short fails the benchmark.
func e2bCall(t testing.TB, method, front, key, path string) (int, string) {
	status, body, err := framework.E2BCall(front, key, method, path)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return status, body
}

// SavePause writes the results as JSON.
func SavePause(path string, rs []PauseResult) error {
	b, err := json.MarshalIndent(rs, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// PauseTable is the results as a Markdown table, with ratios against E2B's
// published figures and a fresh Pod, measured side by side.
func PauseTable(rs []PauseResult) string {
	var b strings.Builder
	b.WriteString("| Memory | Pause | of which capture | of which frozen | E2B pause (4 s/GiB) | Resume | E2B resume (~1 s) | Fresh Pod | Resume / fresh Pod |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		e2b := "~0 s"
		if r.E2BPauseMs > 0 {
			e2b = fmt.Sprintf("%.1f s (ours %.1fx)", r.E2BPauseMs/1000, r.PauseMs/r.E2BPauseMs)
		}
		fmt.Fprintf(&b, "| %d MiB | %.1f s | %.1f s | %.2f s | %s | %.1f s | 1 s (ours %.1fx) | %.1f s | %.1fx |\n",
			r.MemoryMiB, r.PauseMs/1000, r.CaptureMs/1000, r.FrozenMs/1000, e2b, r.ResumeMs/1000, r.ResumeMs/r.E2BResumeMs, r.FreshMs/1000, r.ResumeMs/r.FreshMs)
	}
	return b.String()
}
