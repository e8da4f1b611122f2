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

// heap is the server's live heap after a forced collection.
func heap(t *testing.T, c *http.Client, host string) int64 {
	t.Helper()
	n, err := bench.LiveHeap(context.Background(), c, host)
	require.NoError(t, err)
	return n
}

// TestMixedLoad runs 32 clients, half on the Kubernetes API and half on the
// E2B front, creating, capturing, listing and deleting for LOAD_DURATION
// (default 60 s; make soak runs longer). No answer may be a 5xx, the
// objects left must be exactly those acknowledged and not deleted, and the
// server's live heap must come back to its baseline once all are deleted.
func TestMixedLoad(t *testing.T) {
	duration := 60 * time.Second
	if v := os.Getenv("LOAD_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		require.NoError(t, err, "LOAD_DURATION")
		duration = d
	}
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	require.NoError(t, os.WriteFile(keys, []byte("keys:\n- {key: "+loadKey+", user: loader, team: "+ns+"}\n"), 0o600))
	front := fmt.Sprintf("127.0.0.1:%d", framework.FreePort(t))
	// etcd in its own process, as deployed: the heap measured is the server's
	// alone (an embedded etcd keeps its raft log in the same heap).
	etcd := framework.StartEtcd(t)
	e := startEnv(t, "--e2b-bind-address="+front, "--e2b-api-keys-file="+keys, "--etcd-servers="+etcd.URL)
	const sandboxes = 4
	for i := 0; i < sandboxes; i++ {
		src := e.ctrd.RunPodContainer(t, ns, fmt.Sprintf("sb-%d", i), "main", framework.CounterScript)
		framework.WaitCounter(t, src.LogPath, 2)
	}
	admin, err := rest.HTTPClientFor(e.srv.Config)
	require.NoError(t, err)
	e2b := &http.Client{Timeout: 90 * time.Second}
	call := func(method, path, body string) (int, []byte, error) {
		req, err := http.NewRequest(method, "http://"+front+path, strings.NewReader(body))
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("X-API-Key", loadKey)
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := e2b.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}

	var (
		y         *tally
		mu        sync.Mutex
		alive     map[string]bool // Checkpoint names acknowledged and not deleted (Kubernetes API)
		snapshots map[string]bool // snapshot IDs acknowledged and not deleted (E2B)
	)
	run := func(duration time.Duration, tag string) {
		y = &tally{lat: map[string][]time.Duration{}, codes: map[string]map[int]int{}}
		alive, snapshots = map[string]bool{}, map[string]bool{}
		ctx, cancel := context.WithTimeout(context.Background(), duration)
		defer cancel()
		var wg sync.WaitGroup
		for c := 0; c < 32; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(c), 7))
				var mine []string // this client's live objects
				for i := 0; ctx.Err() == nil; i++ {
					sandbox := fmt.Sprintf("sb-%d", rng.IntN(sandboxes))
					start := time.Now()
					p := rng.IntN(100)
					if c%2 == 0 { // the Kubernetes API
						switch {
						case p < 40:
							name := fmt.Sprintf("k%s%d-%d", tag, c, i)
							_, err := e.cps().Create(context.Background(), &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: name},
								Spec: v1alpha1.CheckpointSpec{PodName: sandbox}}, metav1.CreateOptions{})
							y.add("k8s create", codeOf(err), time.Since(start), fmt.Sprint(err))
							if err != nil {
								continue
							}
							mu.Lock()
							alive[name] = true
							mu.Unlock()
							mine = append(mine, name)
							if p < 15 {
								start = time.Now()
								cp, err := e.cps().Capture(context.Background(), name, &v1alpha1.CaptureOptions{}, metav1.CreateOptions{})
								code := codeOf(err)
								if err == nil && cp.Status.Phase != v1alpha1.PhaseSucceeded {
									code = 599 // a failed capture: none is expected here
									err = fmt.Errorf("%s", cp.Status.Message)
								}
								y.add("k8s capture", code, time.Since(start), fmt.Sprint(err))
							}
						case p < 70:
							_, err := e.cps().List(context.Background(), metav1.ListOptions{})
							y.add("k8s list", codeOf(err), time.Since(start), fmt.Sprint(err))
						case len(mine) > 0:
							name := mine[0]
							err := e.cps().Delete(context.Background(), name, metav1.DeleteOptions{})
							y.add("k8s delete", codeOf(err), time.Since(start), fmt.Sprint(err))
							if err == nil {
								mine = mine[1:]
								mu.Lock()
								delete(alive, name)
								mu.Unlock()
							}
						}
						continue
					}
					switch { // the E2B front
					case p < 30:
						code, body, err := call(http.MethodPost, "/sandboxes/"+sandbox+"/snapshots", `{"name":"load"}`)
						y.add("e2b snapshot", code, time.Since(start), fmt.Sprint(err, string(body)))
						var snap struct {
							SnapshotID string `json:"snapshotID"`
						}
						if code == http.StatusCreated && json.Unmarshal(body, &snap) == nil && snap.SnapshotID != "" {
							mu.Lock()
							snapshots[snap.SnapshotID] = true
							mu.Unlock()
							mine = append(mine, snap.SnapshotID)
						}
					case p < 70:
						code, body, err := call(http.MethodGet, "/snapshots?limit=20", "")
						y.add("e2b list", code, time.Since(start), fmt.Sprint(err, string(body)))
					case len(mine) > 0:
						id := mine[0]
						code, body, err := call(http.MethodDelete, "/templates/"+id, "")
						y.add("e2b delete", code, time.Since(start), fmt.Sprint(err, string(body)))
						if code == http.StatusNoContent || code == http.StatusOK {
							mine = mine[1:]
							mu.Lock()
							delete(snapshots, id)
							mu.Unlock()
						}
					}
				}
			}()
		}
		wg.Wait()
	}
	deleteAll := func() {
		require.NoError(t, e.cps().DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{}))
		require.Eventually(t, func() bool {
			l, err := e.cps().List(context.Background(), metav1.ListOptions{})
			return err == nil && len(l.Items) == 0
		}, 2*time.Minute, time.Second, "every Checkpoint and its state deleted")
	}
	// Warm up: the same load briefly, then everything deleted. What the
	// server keeps bounded (the watch cache's recent history, buffer pools)
	// is then in the baseline; what it leaks is not.
	run(min(15*time.Second, duration/4), "w")
	require.Empty(t, y.bad, "every answer of the warm-up was a success")
	deleteAll()
	baseline := heap(t, admin, e.srv.Config.Host)
	run(duration, "")
	peak := heap(t, admin, e.srv.Config.Host)

	ops := make([]string, 0, len(y.codes))
	for op := range y.codes {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	total := 0
	for _, op := range ops {
		s := bench.Summarize(y.lat[op])
		total += s.N
		t.Logf("%-13s n=%-6d p50 %7.1f ms  p99 %7.1f ms  codes %v", op, s.N, s.P50Ms, s.P99Ms, y.codes[op])
	}
	t.Logf("%d requests in %s (%.0f/s) by 32 clients", total, duration, float64(total)/duration.Seconds())
	for op, codes := range y.codes {
		for code, n := range codes {
			assert.False(t, code >= 500 || code == 0, "%s: %d answers with code %d", op, n, code)
		}
	}
	assert.Empty(t, y.bad, "every answer was a success")

	// What is stored is exactly what was acknowledged and not deleted.
	list, err := e.cps().List(context.Background(), metav1.ListOptions{})
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
	assert.Equal(t, alive, gotNames, "Checkpoints stored = created and not deleted")
	assert.Equal(t, snapshots, gotSnaps, "snapshots stored = created and not deleted")
	t.Logf("left: %d Checkpoints, %d snapshots", len(gotNames), len(gotSnaps))

	// Delete everything; memory comes back.
	deleteAll()
	assert.Zero(t, e.images(t, ""), "no checkpoint image left")
	// LOAD_HEAP_PROFILE=<file> saves a heap profile here, to see what stays.
	if out := os.Getenv("LOAD_HEAP_PROFILE"); out != "" {
		time.Sleep(20 * time.Second)
		resp, err := admin.Get(e.srv.Config.Host + "/debug/pprof/heap?gc=1")
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, os.WriteFile(out, b, 0o644))
	}
	var after int64
	// The watch cache keeps recent events (75 s) and trims them as new ones
	// come: a little traffic elsewhere, as on any live server, lets it.
	ticks := e.client.AgentsV1alpha1().Checkpoints("tick")
	require.Eventually(t, func() bool {
		_, err := ticks.Create(context.Background(), &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{GenerateName: "tick-"},
			Spec: v1alpha1.CheckpointSpec{PodName: "none"}}, metav1.CreateOptions{})
		require.NoError(t, err)
		require.NoError(t, ticks.DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{}))
		after = heap(t, admin, e.srv.Config.Host)
		return after <= baseline+baseline/4+8<<20
	}, 3*time.Minute, 10*time.Second, "the live heap returns to its baseline")
	t.Logf("live heap: baseline %.1f MiB, after the load %.1f MiB, after deleting everything %.1f MiB (baseline taken after a warm-up load, all deleted)",
		float64(baseline)/(1<<20), float64(peak)/(1<<20), float64(after)/(1<<20))
}
