// Package bench drives this server and its peer, the same Checkpoint served
// by kube-apiserver as a CustomResourceDefinition from the same etcd, with one
// load generator: same objects, same concurrency, runs interleaved. It
// measures create, list, watch and memory; capture figures come from
// BenchmarkCapture in test/integration and are merged into the same Results.
//
// hack/bench.sh brings up the system and runs it all; see BENCHMARKS.md.
package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "embed"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
)

//go:embed crd.yaml
var crdYAML []byte

// Group of the peer CRD.
const CRDGroup = "crd.bench.local"

const (
	// Aggregated is this server reached through kube-apiserver's aggregator.
	Aggregated = "aggregated"
	// CRD is the peer: the same Checkpoint as a CRD in kube-apiserver.
	CRD = "crd"
	// Direct is this server reached on its own port, without the aggregator.
	Direct = "direct"

	encJSON     = "json"
	encProtobuf = "protobuf"

	benchNS  = "bench"
	directNS = "bench-direct"
	watchNS  = "bench-watch"
)

// Config says what to run against what.
type Config struct {
	// KAS is an admin client configuration for kube-apiserver.
	KAS *rest.Config
	// Server is the same for this server's own port (the aggregator's backend).
	Server *rest.Config
	// Steps are the object counts per side at which lists are timed; the
	// last is how many objects each side gets.
	Steps []int
	// Workers create concurrently on each side.
	Workers int
	// DirectObjects are created straight into this server, beside the others.
	DirectObjects int
	// ListRepeats is how many times each list is timed at each step.
	ListRepeats int
	// WatchObjects are created while Watchers watch, on each side.
	WatchObjects, Watchers int
	// ServerPID and KASPID are read for resident memory.
	ServerPID, KASPID int
	// Logf reports progress.
	Logf func(format string, args ...any)
}

// target is one way to reach a Checkpoint collection.
type target struct {
	name   string
	client *http.Client
	host   string
	group  string
}

func newTarget(name string, cfg *rest.Config, group string) (*target, error) {
	c, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	return &target{name: name, client: c, host: strings.TrimSuffix(cfg.Host, "/"), group: group}, nil
}

func (t *target) collection(ns string, query url.Values) string {
	u := fmt.Sprintf("%s/apis/%s/v1alpha1/namespaces/%s/checkpoints", t.host, t.group, ns)
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	return u
}

// body is the one object shape both sides get.
func (t *target) body(name string, i int) []byte {
	b, _ := json.Marshal(map[string]any{
		"apiVersion": t.group + "/v1alpha1",
		"kind":       "Checkpoint",
		"metadata": map[string]any{
			"name":   name,
			"labels": map[string]string{"app.kubernetes.io/name": "bench", "bench/index": strconv.Itoa(i)},
		},
		"spec": map[string]any{
			"podName":            fmt.Sprintf("code-interpreter-%05d", i),
			"sandboxName":        fmt.Sprintf("sandbox-%05d", i),
			"keepRunning":        true,
			"persistentContents": []string{"memory", "filesystem"},
			"ttlAfterFinished":   "30h",
		},
	})
	return b
}

// do sends one request and reads the whole answer.
func (t *target) do(ctx context.Context, method, u, accept string, body []byte, want int) ([]byte, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", accept)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := t.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != want {
		return out, fmt.Errorf("%s %s: %d %s", method, u, resp.StatusCode, truncate(out))
	}
	return out, nil
}

func truncate(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "..."
	}
	return string(b)
}

type runner struct {
	cfg     Config
	kas     *target // kube-apiserver, for namespaces and the CRD
	targets map[string]*target
	proto   runtime.Decoder
	res     *Results
}

// Run brings both sides to cfg.Steps objects, timing creates, lists at each
// step, then watches, and reads memory on the way.
func Run(ctx context.Context, cfg Config) (*Results, error) {
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	r := &runner{cfg: cfg, targets: map[string]*target{}, res: &Results{
		Machine: ReadMachine(), Started: time.Now().UTC(),
		Params: Params{Objects: cfg.Steps[len(cfg.Steps)-1], Steps: cfg.Steps, Workers: cfg.Workers, DirectObjects: cfg.DirectObjects,
			ListRepeats: cfg.ListRepeats, WatchObjects: cfg.WatchObjects, Watchers: cfg.Watchers},
	}}
	scheme := runtime.NewScheme()
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	r.proto = protobuf.NewSerializer(scheme, scheme)
	var err error
	if r.kas, err = newTarget("kube-apiserver", cfg.KAS, ""); err != nil {
		return nil, err
	}
	for name, c := range map[string]struct {
		cfg   *rest.Config
		group string
	}{Aggregated: {cfg.KAS, v1alpha1.GroupName}, CRD: {cfg.KAS, CRDGroup}, Direct: {cfg.Server, v1alpha1.GroupName}} {
		if r.targets[name], err = newTarget(name, c.cfg, c.group); err != nil {
			return nil, err
		}
	}
	if err := r.setup(ctx); err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	if err := r.createAndList(ctx); err != nil {
		return nil, err
	}
	if err := r.watch(ctx); err != nil {
		return nil, fmt.Errorf("watch: %w", err)
	}
	return r.res, nil
}

// setup makes the namespaces, installs the CRD and waits until every side
// answers a list.
func (r *runner) setup(ctx context.Context) error {
	for _, ns := range []string{benchNS, directNS, watchNS} {
		b, _ := json.Marshal(map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]string{"name": ns}})
		if out, err := r.kas.do(ctx, http.MethodPost, r.kas.host+"/api/v1/namespaces", "application/json", b, http.StatusCreated); err != nil &&
			!strings.Contains(string(out), "AlreadyExists") {
			return err
		}
	}
	crd, err := yaml.YAMLToJSON(crdYAML)
	if err != nil {
		return err
	}
	if out, err := r.kas.do(ctx, http.MethodPost, r.kas.host+"/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
		"application/json", crd, http.StatusCreated); err != nil && !strings.Contains(string(out), "AlreadyExists") {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, t := range r.targets {
		for {
			_, err := t.do(ctx, http.MethodGet, t.collection(benchNS, nil), "application/json", nil, http.StatusOK)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s never answered: %w", t.name, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	return nil
}

// create posts one object per name with workers in parallel and returns the
// latency of each.
func (r *runner) create(ctx context.Context, t *target, ns string, first, n int, sent func(name string)) ([]time.Duration, error) {
	idx := make(chan int)
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	var firstErr atomic.Pointer[error]
	for w := 0; w < r.cfg.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range idx {
				name := fmt.Sprintf("bench-%06d", first+i)
				body := t.body(name, first+i)
				if sent != nil {
					sent(name)
				}
				start := time.Now()
				if _, err := t.do(ctx, http.MethodPost, t.collection(ns, nil), "application/json", body, http.StatusCreated); err != nil {
					firstErr.CompareAndSwap(nil, &err)
					continue
				}
				lat[i] = time.Since(start)
			}
		}()
	}
	for i := 0; i < n && firstErr.Load() == nil; i++ {
		idx <- i
	}
	close(idx)
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		return nil, fmt.Errorf("create on %s: %w", t.name, *e)
	}
	return lat, nil
}

// listVariant is one way to list: a target, an encoding, and whether
// resourceVersion=0 (served from the watch cache as it stands) is asked.
type listVariant struct {
	t   *target
	enc string
	rv0 bool
}

func (r *runner) variants() []listVariant {
	var vs []listVariant
	for _, rv0 := range []bool{false, true} {
		vs = append(vs,
			listVariant{r.targets[Aggregated], encProtobuf, rv0},
			listVariant{r.targets[Aggregated], encJSON, rv0},
			listVariant{r.targets[CRD], encJSON, rv0},
			listVariant{r.targets[Direct], encProtobuf, rv0},
			listVariant{r.targets[Direct], encJSON, rv0},
		)
	}
	return vs
}

// list times one list of ns and returns the bytes and items it answered.
func (r *runner) list(ctx context.Context, v listVariant, ns string) (time.Duration, int, int, error) {
	q := url.Values{}
	if v.rv0 {
		q.Set("resourceVersion", "0")
	}
	accept := "application/json"
	if v.enc == encProtobuf {
		accept = "application/vnd.kubernetes.protobuf"
	}
	start := time.Now()
	body, err := v.t.do(ctx, http.MethodGet, v.t.collection(ns, q), accept, nil, http.StatusOK)
	d := time.Since(start)
	if err != nil {
		return 0, 0, 0, err
	}
	items, err := r.countItems(v.enc, body)
	return d, len(body), items, err
}

func (r *runner) countItems(enc string, body []byte) (int, error) {
	if enc == encProtobuf {
		var l v1alpha1.CheckpointList
		if _, _, err := r.proto.Decode(body, nil, &l); err != nil {
			return 0, fmt.Errorf("decode protobuf list: %w", err)
		}
		return len(l.Items), nil
	}
	var l struct {
		Items []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(body, &l); err != nil {
		return 0, fmt.Errorf("decode JSON list: %w", err)
	}
	return len(l.Items), nil
}

func (r *runner) createAndList(ctx context.Context) error {
	total := map[string]int{}
	lat := map[string][]time.Duration{}
	busy := map[string]time.Duration{}
	r.res.Memory = &MemoryResult{ServerBaselineBytes: rss(r.cfg.ServerPID), KASBaselineBytes: rss(r.cfg.KASPID)}
	if err := r.liveHeaps(ctx, &r.res.Memory.ServerHeapBaselineBytes, &r.res.Memory.KASHeapBaselineBytes); err != nil {
		return err
	}
	last := r.cfg.Steps[len(r.cfg.Steps)-1]
	const chunk = 250
	for _, step := range r.cfg.Steps {
		want := map[string]int{Aggregated: step, CRD: step, Direct: r.cfg.DirectObjects * step / last}
		// Interleave the sides chunk by chunk so neither runs on a quieter machine.
		for more := true; more; {
			more = false
			for _, name := range []string{Aggregated, CRD, Direct} {
				n := min(chunk, want[name]-total[name])
				if n <= 0 {
					continue
				}
				more = true
				ns := benchNS
				if name == Direct {
					ns = directNS
				}
				start := time.Now()
				l, err := r.create(ctx, r.targets[name], ns, total[name], n, nil)
				if err != nil {
					return err
				}
				busy[name] += time.Since(start)
				lat[name] = append(lat[name], l...)
				total[name] += n
			}
		}
		r.cfg.Logf("bench: %d objects on each side (%d direct); timing lists", step, total[Direct])
		if err := r.listStep(ctx, step); err != nil {
			return err
		}
	}
	for _, name := range []string{Aggregated, CRD, Direct} {
		if total[name] == 0 {
			continue
		}
		s := Summarize(lat[name])
		r.res.Create = append(r.res.Create, CreateResult{Target: name, Objects: total[name], Seconds: busy[name].Seconds(),
			PerSecond: float64(total[name]) / busy[name].Seconds(), Latency: s})
	}
	time.Sleep(3 * time.Second) // let both settle after the last writes
	m := r.res.Memory
	m.ServerBytes, m.KASBytes = rss(r.cfg.ServerPID), rss(r.cfg.KASPID)
	m.ServerObjects, m.CRDObjects = total[Aggregated]+total[Direct], total[CRD]
	return r.liveHeaps(ctx, &m.ServerHeapBytes, &m.KASHeapBytes)
}

// liveHeaps reads the live heap of this server and of kube-apiserver.
func (r *runner) liveHeaps(ctx context.Context, server, kas *int64) error {
	var err error
	if *server, err = LiveHeap(ctx, r.targets[Direct].client, r.targets[Direct].host); err != nil {
		return err
	}
	*kas, err = LiveHeap(ctx, r.kas.client, r.kas.host)
	return err
}

// LiveHeap is the live heap of the Go API server at host: it is made to
// collect garbage (pprof's heap?gc=1), then go_gc_heap_live_bytes is read
// from /metrics: the bytes that collection marked live. (HeapAlloc,
// go_memstats_heap_alloc_bytes, would also count what was allocated after
// the collection, by the /metrics request itself among others.) client must
// carry credentials allowed both.
func LiveHeap(ctx context.Context, client *http.Client, host string) (int64, error) {
	t := &target{client: client, host: host}
	if _, err := t.do(ctx, http.MethodGet, host+"/debug/pprof/heap?gc=1", "*/*", nil, http.StatusOK); err != nil {
		return 0, fmt.Errorf("collect garbage on %s: %w", host, err)
	}
	metrics, err := t.do(ctx, http.MethodGet, host+"/metrics", "text/plain", nil, http.StatusOK)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(metrics), "\n") {
		if v, ok := strings.CutPrefix(line, "go_gc_heap_live_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("go_gc_heap_live_bytes: %w", err)
			}
			return int64(f), nil
		}
	}
	return 0, fmt.Errorf("%s/metrics has no go_gc_heap_live_bytes", host)
}

func (r *runner) listStep(ctx context.Context, step int) error {
	vs := r.variants()
	times := make([][]time.Duration, len(vs))
	sizes := make([]int, len(vs))
	for rep := 0; rep < r.cfg.ListRepeats; rep++ {
		for i, v := range vs {
			d, n, items, err := r.list(ctx, v, benchNS)
			if err != nil {
				return fmt.Errorf("list %s %s: %w", v.t.name, v.enc, err)
			}
			if items != step {
				return fmt.Errorf("list %s %s rv0=%v: %d items, want %d", v.t.name, v.enc, v.rv0, items, step)
			}
			times[i] = append(times[i], d)
			sizes[i] = n
		}
	}
	for i, v := range vs {
		s := Summarize(times[i])
		r.res.List = append(r.res.List, ListResult{Target: v.t.name, Encoding: v.enc, RV0: v.rv0, Objects: step,
			Runs: s.N, MedianMs: s.P50Ms, MinMs: s.MinMs, Bytes: sizes[i]})
	}
	return nil
}

// watch opens Watchers watches on each side, creates WatchObjects on each,
// interleaved, and times each ADDED event from just before its create was sent.
func (r *runner) watch(ctx context.Context) error {
	sides := []string{Aggregated, CRD}
	type side struct {
		sent sync.Map // name -> time.Time
		mu   sync.Mutex
		lat  []time.Duration
		seen []atomic.Int64
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	state := map[string]*side{}
	errs := make(chan error, 2*r.cfg.Watchers)
	var wg sync.WaitGroup
	for _, name := range sides {
		s := &side{seen: make([]atomic.Int64, r.cfg.Watchers)}
		state[name] = s
		t := r.targets[name]
		for w := 0; w < r.cfg.Watchers; w++ {
			req, err := http.NewRequestWithContext(wctx, http.MethodGet, t.collection(watchNS, url.Values{"watch": {"1"}}), nil)
			if err != nil {
				return err
			}
			req.Header.Set("Accept", "application/json")
			resp, err := t.client.Do(req)
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				resp.Body.Close()
				return fmt.Errorf("watch %s: %d", name, resp.StatusCode)
			}
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				defer resp.Body.Close()
				dec := json.NewDecoder(resp.Body)
				for {
					var ev struct {
						Type   string `json:"type"`
						Object struct {
							Metadata struct {
								Name string `json:"name"`
							} `json:"metadata"`
						} `json:"object"`
					}
					if err := dec.Decode(&ev); err != nil {
						if wctx.Err() == nil {
							errs <- fmt.Errorf("watch %s: %w", name, err)
						}
						return
					}
					if ev.Type != "ADDED" {
						continue
					}
					now := time.Now()
					if v, ok := s.sent.Load(ev.Object.Metadata.Name); ok {
						s.mu.Lock()
						s.lat = append(s.lat, now.Sub(v.(time.Time)))
						s.mu.Unlock()
						s.seen[w].Add(1)
					}
				}
			}(w)
		}
	}
	const chunk = 100
	for first := 0; first < r.cfg.WatchObjects; first += chunk {
		n := min(chunk, r.cfg.WatchObjects-first)
		for _, name := range sides {
			s := state[name]
			if _, err := r.create(ctx, r.targets[name], watchNS, first, n, func(obj string) { s.sent.Store(obj, time.Now()) }); err != nil {
				return err
			}
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, name := range sides {
		for w := range state[name].seen {
			for state[name].seen[w].Load() < int64(r.cfg.WatchObjects) {
				select {
				case err := <-errs:
					return err
				default:
				}
				if time.Now().After(deadline) {
					return fmt.Errorf("%s watcher %d saw %d of %d events", name, w, state[name].seen[w].Load(), r.cfg.WatchObjects)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
	cancel()
	wg.Wait()
	for _, name := range sides {
		r.res.Watch = append(r.res.Watch, WatchResult{Target: name, Objects: r.cfg.WatchObjects, Watchers: r.cfg.Watchers,
			Latency: Summarize(state[name].lat)})
	}
	return nil
}

// rss is the resident memory of pid in bytes, 0 when it cannot be read.
func rss(pid int) int64 { return procValue(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:") }

// Summarize gives the count, median, 99th percentile, min and max of ds.
func Summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	q := func(p float64) float64 { return ms(s[min(len(s)-1, int(p*float64(len(s))))]) }
	return Latency{N: len(s), P50Ms: q(0.5), P99Ms: q(0.99), MinMs: ms(s[0]), MaxMs: ms(s[len(s)-1])}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
