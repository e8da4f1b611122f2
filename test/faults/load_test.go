package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/test/bench"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

const loadKey = "e2b_0123456789abcdef0123456789abcdef01234567"

// tally counts what every operation got.
type tally struct {
	mu    sync.Mutex
	lat   map[string][]time.Duration
	codes map[string]map[int]int
	bad   []string
}

func (y *tally) add(op string, code int, d time.Duration, detail string) {
	y.mu.Lock()
	defer y.mu.Unlock()
	if y.codes[op] == nil {
		y.codes[op] = map[int]int{}
	}
	y.codes[op][code]++
	y.lat[op] = append(y.lat[op], d)
	if code >= 500 || code == 0 || (code >= 400 && len(y.bad) < 20) {
		y.bad = append(y.bad, fmt.Sprintf("%s: %d %s", op, code, detail))
	}
}

func codeOf(err error) int {
	if err == nil {
		return 200
	}
	if s, ok := err.(apierrors.APIStatus); ok {
		return int(s.Status().Code)
	}
	return 0 // transport
}

// mixedLoad is 32 clients, half on the Kubernetes API and half on the E2B
// front, creating, capturing, listing and deleting Checkpoints of a few
// running sandboxes. Its clients never call require: what they see goes into
// a tally that the test goroutine checks.
type mixedLoad struct {
	e      *env
	front  string
	admin  *http.Client
	e2b    *http.Client
	sbxs   int
	rounds int
}

const loadClients = 32

func newMixedLoad(t *testing.T, extraArgs ...string) *mixedLoad {
	t.Helper()
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	require.NoError(t, os.WriteFile(keys, []byte("keys:\n- {key: "+loadKey+", user: loader, team: "+ns+"}\n"), 0o600))
	front := fmt.Sprintf("127.0.0.1:%d", framework.FreePort(t))
	// etcd in its own process, as deployed: the heap measured is the server's
	// alone (an embedded etcd keeps its raft log in the same heap).
	etcd := framework.StartEtcd(t)
	args := append([]string{"--e2b-bind-address=" + front, "--e2b-api-keys-file=" + keys, "--etcd-servers=" + etcd.URL}, extraArgs...)
	l := &mixedLoad{e: startEnv(t, args...), front: front, e2b: &http.Client{Timeout: 90 * time.Second}, sbxs: 4}
	for i := 0; i < l.sbxs; i++ {
		src := l.e.ctrd.RunPodContainer(t, ns, fmt.Sprintf("sb-%d", i), "main", framework.CounterScript)
		framework.WaitCounter(t, src.LogPath, 2)
	}
	var err error
	l.admin, err = rest.HTTPClientFor(l.e.srv.Config)
	require.NoError(t, err)
	return l
}

func (l *mixedLoad) call(method, path, body string) (int, []byte, error) {
	req, err := http.NewRequest(method, "http://"+l.front+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("X-API-Key", loadKey)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := l.e2b.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// roundResult is what one round acknowledged.
type roundResult struct {
	y         *tally
	alive     map[string]bool // Checkpoint names acknowledged and not deleted (Kubernetes API)
	snapshots map[string]bool // snapshot IDs acknowledged and not deleted (E2B)
	took      time.Duration
}

// round runs the load until each client has done ops operations (ops > 0)
// or until ctx ends. Every client draws the same sequence of operations in
// every round, so rounds of equal ops do equal work whatever the machine's
// speed.
func (l *mixedLoad) round(ctx context.Context, ops int) *roundResult {
	l.rounds++
	tag := fmt.Sprintf("r%d", l.rounds)
	r := &roundResult{y: &tally{lat: map[string][]time.Duration{}, codes: map[string]map[int]int{}},
		alive: map[string]bool{}, snapshots: map[string]bool{}}
	var mu sync.Mutex
	start := time.Now()
	var wg sync.WaitGroup
	for c := 0; c < loadClients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 7))
			var mine []string // this client's live objects
			for i := 0; ctx.Err() == nil && (ops <= 0 || i < ops); i++ {
				sandbox := fmt.Sprintf("sb-%d", rng.IntN(l.sbxs))
				start := time.Now()
				p := rng.IntN(100)
				if c%2 == 0 { // the Kubernetes API
					switch {
					case p < 40:
						name := fmt.Sprintf("k%s-%d-%d", tag, c, i)
						_, err := l.e.cps().Create(context.Background(), &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: name},
							Spec: v1alpha1.CheckpointSpec{PodName: sandbox}}, metav1.CreateOptions{})
						r.y.add("k8s create", codeOf(err), time.Since(start), fmt.Sprint(err))
						if err != nil {
							continue
						}
						mu.Lock()
						r.alive[name] = true
						mu.Unlock()
						mine = append(mine, name)
						if p < 15 {
							start = time.Now()
							cp, err := l.e.cps().Capture(context.Background(), name, &v1alpha1.CaptureOptions{}, metav1.CreateOptions{})
							code := codeOf(err)
							if err == nil && cp.Status.Phase != v1alpha1.PhaseSucceeded {
								code = 599 // a failed capture: none is expected here
								err = fmt.Errorf("%s", cp.Status.Message)
							}
							r.y.add("k8s capture", code, time.Since(start), fmt.Sprint(err))
						}
					case p < 70:
						_, err := l.e.cps().List(context.Background(), metav1.ListOptions{})
						r.y.add("k8s list", codeOf(err), time.Since(start), fmt.Sprint(err))
					case len(mine) > 0:
						name := mine[0]
						err := l.e.cps().Delete(context.Background(), name, metav1.DeleteOptions{})
						r.y.add("k8s delete", codeOf(err), time.Since(start), fmt.Sprint(err))
						if err == nil {
							mine = mine[1:]
							mu.Lock()
							delete(r.alive, name)
							mu.Unlock()
						}
					}
					continue
				}
				switch { // the E2B front
				case p < 30:
					code, body, err := l.call(http.MethodPost, "/sandboxes/"+sandbox+"/snapshots", `{"name":"load"}`)
					r.y.add("e2b snapshot", code, time.Since(start), fmt.Sprint(err, string(body)))
					var snap struct {
						SnapshotID string `json:"snapshotID"`
					}
					if code == http.StatusCreated && json.Unmarshal(body, &snap) == nil && snap.SnapshotID != "" {
						mu.Lock()
						r.snapshots[snap.SnapshotID] = true
						mu.Unlock()
						mine = append(mine, snap.SnapshotID)
					}
				case p < 70:
					code, body, err := l.call(http.MethodGet, "/snapshots?limit=20", "")
					r.y.add("e2b list", code, time.Since(start), fmt.Sprint(err, string(body)))
				case len(mine) > 0:
					id := mine[0]
					code, body, err := l.call(http.MethodDelete, "/templates/"+id, "")
					r.y.add("e2b delete", code, time.Since(start), fmt.Sprint(err, string(body)))
					if code == http.StatusNoContent || code == http.StatusOK {
						mine = mine[1:]
						mu.Lock()
						delete(r.snapshots, id)
						mu.Unlock()
					}
				}
			}
		}()
	}
	wg.Wait()
	r.took = time.Since(start)
	return r
}

// check asserts that every answer of the round was a success and that what
// is stored is exactly what it acknowledged and did not delete. It returns
// the number of requests.
func (l *mixedLoad) check(t *testing.T, name string, r *roundResult) int {
	t.Helper()
	ops := make([]string, 0, len(r.y.codes))
	for op := range r.y.codes {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	total := 0
	for _, op := range ops {
		s := bench.Summarize(r.y.lat[op])
		total += s.N
		t.Logf("%s: %-13s n=%-6d p50 %7.1f ms  p99 %7.1f ms  codes %v", name, op, s.N, s.P50Ms, s.P99Ms, r.y.codes[op])
	}
	t.Logf("%s: %d requests in %s (%.0f/s) by %d clients", name, total, r.took.Round(time.Millisecond), float64(total)/r.took.Seconds(), loadClients)
	for op, codes := range r.y.codes {
		for code, n := range codes {
			assert.False(t, code >= 500 || code == 0, "%s: %s: %d answers with code %d", name, op, n, code)
		}
	}
	assert.Empty(t, r.y.bad, "%s: every answer was a success", name)

	list, err := l.e.cps().List(context.Background(), metav1.ListOptions{})
	require.NoError(t, err)
	gotNames, gotSnaps := map[string]bool{}, map[string]bool{}
	for _, cp := range list.Items {
		if cp.DeletionTimestamp != nil {
			continue // deleted, its state going
		}
		if strings.HasPrefix(cp.Name, "snapshot-") {
			gotSnaps[cp.Status.CheckpointID] = true
		} else {
			gotNames[cp.Name] = true
		}
	}
	assert.Equal(t, r.alive, gotNames, "%s: Checkpoints stored = created and not deleted", name)
	assert.Equal(t, r.snapshots, gotSnaps, "%s: snapshots stored = created and not deleted", name)
	t.Logf("%s: left %d Checkpoints, %d snapshots", name, len(gotNames), len(gotSnaps))
	return total
}

// deleteAll deletes every Checkpoint and waits until they and their
// checkpoint images are gone.
func (l *mixedLoad) deleteAll(t *testing.T) {
	t.Helper()
	require.NoError(t, l.e.cps().DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{}))
	require.Eventually(t, func() bool {
		list, err := l.e.cps().List(context.Background(), metav1.ListOptions{})
		return err == nil && len(list.Items) == 0
	}, 5*time.Minute, time.Second, "every Checkpoint and its state deleted")
	assert.Zero(t, l.e.images(t, ""), "no checkpoint image left")
}

// liveHeap is the server's live heap once it is idle: the least of three
// reads a second apart, each after a forced collection, so a request still
// finishing or a pool not yet emptied does not count, and a leak (which is
// in every read) does.
func (l *mixedLoad) liveHeap(t *testing.T) int64 {
	t.Helper()
	least := int64(-1)
	for i := 0; i < 3; i++ {
		time.Sleep(time.Second)
		n, err := bench.LiveHeap(context.Background(), l.admin, l.e.srv.Config.Host)
		require.NoError(t, err)
		if least < 0 || n < least {
			least = n
		}
	}
	return least
}

// saveHeapProfile writes the server's heap profile (after a collection) to
// dir and returns its path.
func (l *mixedLoad) saveHeapProfile(t *testing.T, dir, name string) string {
	t.Helper()
	resp, err := l.admin.Get(l.e.srv.Config.Host + "/debug/pprof/heap?gc=1")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	path := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(path, b, 0o644))
	return path
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// TestMixedLoad runs the mixed load against the server as deployed (watch
// cache on) for LOAD_DURATION (60 s; make soak runs longer). No answer may
// be a 5xx, and the objects left must be exactly those acknowledged and not
// deleted.
func TestMixedLoad(t *testing.T) {
	duration := 60 * time.Second
	if v := os.Getenv("LOAD_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "LOAD_DURATION")
		duration = d
	}
	l := newMixedLoad(t)
	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	l.check(t, "load", l.round(ctx, 0))
	l.deleteAll(t)
}

// TestNoLeakUnderLoad looks for memory the server keeps per request,
// capture, container or E2B identity. A warm-up round, then LOAD_ROUNDS
// (2) equal rounds, each of LOAD_OPS (30) operations per client, with
// everything deleted after each: the live heap after the last round must not
// exceed the heap after the first measured round by more than
// LOAD_LEAK_BOUND (1 MiB). Equal work per round, not equal time, makes the
// check hold on a fast machine and a slow or busy one alike.
//
// kube's watch cache is off for this server (--watch-cache=false): it keeps
// the last 75 s of events, a bounded amount that depends on how many rounds
// fit in 75 s, that is on the machine's speed. Everything of this server's
// own (registry, capture, driver, lifecycle controller, E2B front) runs.
func TestNoLeakUnderLoad(t *testing.T) {
	ops, rounds, bound := 30, 2, int64(1<<20)
	if v := os.Getenv("LOAD_OPS"); v != "" {
		_, err := fmt.Sscan(v, &ops)
		require.NoError(t, err, "LOAD_OPS")
	}
	if v := os.Getenv("LOAD_ROUNDS"); v != "" {
		_, err := fmt.Sscan(v, &rounds)
		require.NoError(t, err, "LOAD_ROUNDS")
		require.GreaterOrEqual(t, rounds, 2, "LOAD_ROUNDS")
	}
	if v := os.Getenv("LOAD_LEAK_BOUND"); v != "" {
		var kib int64
		_, err := fmt.Sscan(v, &kib)
		require.NoError(t, err, "LOAD_LEAK_BOUND (KiB)")
		bound = kib << 10
	}
	// The profiles outlive the test (t.TempDir would not): they are what a
	// failure asks to be looked at.
	dir := os.Getenv("LOAD_HEAP_PROFILE_DIR")
	if dir == "" {
		var err error
		dir, err = os.MkdirTemp("", "TestNoLeakUnderLoad-heap-")
		require.NoError(t, err)
	}
	l := newMixedLoad(t, "--watch-cache=false")
	l.check(t, "warm-up", l.round(context.Background(), ops))
	l.deleteAll(t)
	heaps := []int64{l.liveHeap(t)}
	profiles := []string{l.saveHeapProfile(t, dir, "heap-warm-up.pb.gz")}
	for i := 1; i <= rounds; i++ {
		name := fmt.Sprintf("round %d", i)
		requests := l.check(t, name, l.round(context.Background(), ops))
		l.deleteAll(t)
		heaps = append(heaps, l.liveHeap(t))
		profiles = append(profiles, l.saveHeapProfile(t, dir, fmt.Sprintf("heap-round-%d.pb.gz", i)))
		t.Logf("%s: %d requests; live heap %.2f MiB once all is deleted (warm-up: %.2f MiB)", name, requests, mib(heaps[i]), mib(heaps[0]))
	}
	first, last := heaps[1], heaps[len(heaps)-1]
	if last > first+bound {
		t.Errorf("live heap grew with the load served: %.2f MiB after round 1, %.2f MiB after round %d, bound %.2f MiB over round 1 (warm-up %.2f MiB); "+
			"heap profiles: %s (compare with go tool pprof -base %s %s)",
			mib(first), mib(last), rounds, mib(bound), mib(heaps[0]), strings.Join(profiles, ", "), profiles[1], profiles[len(profiles)-1])
	} else {
		t.Logf("no leak: live heap %.2f MiB after round 1, %.2f MiB after round %d (bound +%.2f MiB; warm-up %.2f MiB)",
			mib(first), mib(last), rounds, mib(bound), mib(heaps[0]))
		if os.Getenv("LOAD_HEAP_PROFILE_DIR") == "" {
			_ = os.RemoveAll(dir) // kept only when they are needed
		}
	}
}
