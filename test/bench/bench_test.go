package bench

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/rest"

	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// BenchmarkCapture is the capture part of hack/bench.sh:
//
//	go test -run '^$' -bench BenchmarkCapture -benchtime 5x ./test/bench/
//
// BENCH_CAPTURE_SIZES (MiB, comma separated; default 0,64,256,1024) and
// BENCH_CAPTURE_OUT (a JSON file for the report) tune it; b.N is the runs per size.
func BenchmarkCapture(b *testing.B) {
	sizes, runs := benchSetup(b, "BENCH_CAPTURE_SIZES", 0, 64, 256, 1024)
	if runs == 0 {
		return
	}
	cs := MeasureCapture(b, sizes, runs)
	for _, c := range cs {
		b.ReportMetric(c.APIMs/c.BareMs, "api/bare@"+strconv.Itoa(c.MemoryMiB)+"MiB")
	}
	if out := os.Getenv("BENCH_CAPTURE_OUT"); out != "" {
		require.NoError(b, SaveCapture(out, cs))
	}
}

// benchSetup is how each benchmark here starts: the timer stopped (the
// figures are the medians the harness reports), its container memory sizes
// from sizesEnv or the defaults, and the runs per size this call measures
// (0: none, see measuredRuns).
func benchSetup(b *testing.B, sizesEnv string, defaults ...int) ([]int, int) {
	b.StopTimer()
	return sizesFromEnv(b, sizesEnv, defaults...), measuredRuns(b)
}

// measuredRuns is how many runs per size this call of a benchmark
// measures: b.N, or 0 for the call that measures nothing. With -benchtime
// Nx (N > 1) Go first calls a benchmark with b.N = 1, only to learn what an
// iteration costs, and then with b.N = N; for these benchmarks that first
// call would be a whole extra pass of a slow harness (minutes on nodes).
func measuredRuns(b *testing.B) int {
	if b.N != 1 {
		return b.N
	}
	if f := flag.Lookup("test.benchtime"); f != nil {
		if count, ok := strings.CutSuffix(f.Value.String(), "x"); ok {
			if n, err := strconv.Atoi(count); err == nil && n > 1 {
				return 0
			}
		}
	}
	return 1
}

// sizesFromEnv reads container memory sizes (MiB, comma separated) from
// the environment variable name, or returns the defaults.
func sizesFromEnv(b *testing.B, name string, defaults ...int) []int {
	s := os.Getenv(name)
	if s == "" {
		return defaults
	}
	var sizes []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		require.NoError(b, err, name)
		sizes = append(sizes, n)
	}
	return sizes
}

// BenchmarkCaptureAcrossNodes is the node part of hack/bench.sh: capture
// on kubelet nodes, in the server's process against through a node agent
// and the registry, and restores on the same and the other node.
// BENCH_NODES_SIZES (MiB; default 0,64,256,1024) and BENCH_NODES_OUT tune it;
// b.N is the runs per size.
func BenchmarkCaptureAcrossNodes(b *testing.B) {
	sizes, runs := benchSetup(b, "BENCH_NODES_SIZES", 0, 64, 256, 1024)
	if runs == 0 {
		return
	}
	ns := MeasureAcrossNodes(b, sizes, runs)
	for _, n := range ns {
		b.ReportMetric(n.AgentMs-n.OwnNodeMs, "agent-ms-added@"+strconv.Itoa(n.MemoryMiB)+"MiB")
	}
	if out := os.Getenv("BENCH_NODES_OUT"); out != "" {
		require.NoError(b, SaveNodes(out, ns))
	}
}

// BenchmarkLazyRestore is CRIU's lazy restore against its eager one, for
// a process holding BENCH_LAZY_SIZES MiB (default 64,256,1024); b.N is the
// runs per size, BENCH_LAZY_OUT a JSON file for the report.
//
//	go test -run '^$' -bench BenchmarkLazyRestore -benchtime 3x ./test/bench/
func BenchmarkLazyRestore(b *testing.B) {
	sizes, runs := benchSetup(b, "BENCH_LAZY_SIZES", 64, 256, 1024)
	if runs == 0 {
		return
	}
	ls := MeasureLazyRestore(b, sizes, runs)
	for _, l := range ls {
		b.ReportMetric(l.LazyMs/l.EagerMs, "lazy/eager@"+strconv.Itoa(l.MemoryMiB)+"MiB")
	}
	if out := os.Getenv("BENCH_LAZY_OUT"); out != "" {
		require.NoError(b, saveJSON(out, ls))
	}
}

// TestLazyRestoreSmoke keeps BenchmarkLazyRestore working: a real CRIU
// dumps a 16 MiB process and restores it eagerly and lazily, and every
// figure is recorded (never how fast).
func TestLazyRestoreSmoke(t *testing.T) {
	ls := MeasureLazyRestore(t, []int{16}, 1)
	require.Len(t, ls, 1)
	assert.Positive(t, ls[0].EagerMs)
	assert.Positive(t, ls[0].LazyMs)
	assert.Positive(t, ls[0].LazyAllPagesMs)
}

// TestBenchSmoke runs the whole harness at tiny sizes against the real
// system (etcd, kube-apiserver with the CRD, this server behind its
// APIService, containerd with CRIU) so it cannot rot. It checks that every
// side answered and every figure was recorded, never how fast.
func TestBenchSmoke(t *testing.T) {
	c := framework.LocalUp(t, "--declarative-capture-delay=24h")
	kas := c.RESTConfig()
	server := rest.CopyConfig(kas)
	server.Host = "https://127.0.0.1:" + strconv.Itoa(c.CPPort)

	res, err := Run(context.Background(), Config{
		KAS: kas, Server: server, Steps: []int{20, 50}, Workers: 4, DirectObjects: 10, ListRepeats: 2,
		WatchObjects: 15, Watchers: 2, ServerPID: c.PID("checkpoint-apiserver"), KASPID: c.PID("kube-apiserver"), Logf: t.Logf,
	})
	require.NoError(t, err)
	res.Capture = MeasureCapture(t, []int{0}, 1)

	// Both sides wrote the same etcd: this server in protobuf, the CRD in JSON.
	ours := c.EtcdGet("/registry/agents.kruise.io/agents.kruise.io/checkpoints/bench/bench-000000")
	require.NotNil(t, ours, "this server's object in etcd")
	assert.True(t, bytes.HasPrefix(ours, []byte("k8s\x00")), "stored as protobuf: %q", ours[:min(len(ours), 40)])
	peer := c.EtcdGet("/registry/crd.bench.local/checkpoints/bench/bench-000000")
	require.NotNil(t, peer, "the CRD's object in etcd")
	assert.True(t, bytes.HasPrefix(peer, []byte("{")), "the CRD stores JSON")

	require.Len(t, res.Create, 3)
	for _, cr := range res.Create {
		want := map[string]int{Aggregated: 50, CRD: 50, Direct: 10}[cr.Target]
		assert.Equal(t, want, cr.Objects, cr.Target)
		assert.Equal(t, want, cr.Latency.N, cr.Target)
		assert.Positive(t, cr.PerSecond, cr.Target)
	}
	assert.Len(t, res.List, 2*10, "two steps of five ways to list, with and without resourceVersion=0")
	for _, l := range res.List {
		assert.Equal(t, 2, l.Runs)
		assert.Positive(t, l.Bytes, "%s %s", l.Target, l.Encoding)
		assert.Positive(t, l.MedianMs)
	}
	require.Len(t, res.Watch, 2)
	for _, w := range res.Watch {
		assert.Equal(t, 15*2, w.Latency.N, "every watcher saw every object on %s", w.Target)
	}
	require.NotNil(t, res.Memory)
	assert.Positive(t, res.Memory.ServerBytes)
	assert.Positive(t, res.Memory.KASBytes)
	assert.Positive(t, res.Memory.ServerHeapBytes)
	assert.Positive(t, res.Memory.KASHeapBytes)
	assert.Equal(t, 60, res.Memory.ServerObjects)
	require.Len(t, res.Capture, 1)
	assert.Positive(t, res.Capture[0].APIMs)
	assert.Positive(t, res.Capture[0].BareMs)
	assert.Positive(t, res.Capture[0].RestoreMs)
	assert.Positive(t, res.Capture[0].DumpMs)
	// MeasureCapture itself fails a capture whose pauseDuration is unset or
	// larger than its captureDuration. The felt pause may be under the
	// stamper's 5 ms threshold at 0 MiB: its row is checked below.
	assert.Positive(t, res.Capture[0].PauseMs)

	dir := t.TempDir()
	path := filepath.Join(dir, "results.json")
	require.NoError(t, res.Save(path))
	loaded, err := Load(path)
	require.NoError(t, err)
	assert.Equal(t, res.Rows(), loaded.Rows())
	table := loaded.Markdown()
	for _, want := range []string{"create p99 via kube-apiserver", "list 50, resourceVersion unset, aggregated protobuf vs CRD JSON",
		"watch, create to event", "memory growth per 10,000 objects", "live heap growth", "capture, 0 MiB container",
		"pause, 0 MiB: felt inside the sandbox vs status.pauseDuration"} {
		assert.Contains(t, table, want)
	}
	require.NoError(t, loaded.Plot(dir))
	for _, png := range []string{"list.png", "capture.png"} {
		st, err := os.Stat(filepath.Join(dir, png))
		require.NoError(t, err)
		assert.Positive(t, st.Size())
	}
}

// BenchmarkEncryption is the cost of encryption at rest, in clear and
// encrypted side by side: a capture into a real registry, and a node's
// fetch and unpack of it. BENCH_ENCRYPTION_SIZES (MiB; default
// 0,64,256,1024); b.N is the runs per size.
//
//	go test -run '^$' -bench BenchmarkEncryption -benchtime 3x ./test/bench/
func BenchmarkEncryption(b *testing.B) {
	sizes, runs := benchSetup(b, "BENCH_ENCRYPTION_SIZES", 0, 64, 256, 1024)
	if runs == 0 {
		return
	}
	for _, r := range MeasureEncryption(b, sizes, runs) {
		b.ReportMetric(r.CaptureEncMs/r.CaptureClearMs, "capture-enc/clear@"+strconv.Itoa(r.MemoryMiB)+"MiB")
		b.ReportMetric(r.FetchEncMs/r.FetchClearMs, "fetch-enc/clear@"+strconv.Itoa(r.MemoryMiB)+"MiB")
	}
}

// TestEncryptionBenchmarkSmoke runs every step of BenchmarkEncryption once,
// at 0 MiB, so it cannot rot: each figure is recorded, never how fast.
func TestEncryptionBenchmarkSmoke(t *testing.T) {
	rs := MeasureEncryption(t, []int{0}, 1)
	require.Len(t, rs, 1)
	for what, v := range map[string]float64{"capture clear": rs[0].CaptureClearMs, "capture encrypted": rs[0].CaptureEncMs,
		"fetch clear": rs[0].FetchClearMs, "fetch encrypted": rs[0].FetchEncMs} {
		assert.Positive(t, v, what)
	}
	assert.Positive(t, rs[0].ArchiveSizeBytes)
}

// BenchmarkPauseResume is E2B's pause and resume through this server's
// front on two kubelet nodes with agents and the registry, beside E2B's
// published figures and a fresh Pod of the same image. BENCH_PAUSE_SIZES
// (MiB; default 0,64,256,1024) and BENCH_PAUSE_OUT (JSON) tune it; b.N is
// the runs per size.
//
//	go test -run '^$' -bench BenchmarkPauseResume -benchtime 3x ./test/bench/
func BenchmarkPauseResume(b *testing.B) {
	sizes, runs := benchSetup(b, "BENCH_PAUSE_SIZES", 0, 64, 256, 1024)
	if runs == 0 {
		return
	}
	rs := MeasurePauseResume(b, sizes, runs)
	for _, r := range rs {
		b.ReportMetric(r.PauseMs, "pause-ms@"+strconv.Itoa(r.MemoryMiB)+"MiB")
		b.ReportMetric(r.ResumeMs, "resume-ms@"+strconv.Itoa(r.MemoryMiB)+"MiB")
	}
	b.Log("\n" + PauseTable(rs))
	if out := os.Getenv("BENCH_PAUSE_OUT"); out != "" {
		require.NoError(b, SavePause(out, rs))
	}
}
