package bench

import (
	"encoding/json"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Results is everything one bench run measured; hack/bench.sh saves it as
// results.json and renders the table and the plots from it.
type Results struct {
	Machine Machine           `json:"machine"`
	Started time.Time         `json:"started"`
	Params  Params            `json:"params"`
	Create  []CreateResult    `json:"create"`
	List    []ListResult      `json:"list"`
	Watch   []WatchResult     `json:"watch"`
	Memory  *MemoryResult     `json:"memory,omitempty"`
	Capture []CaptureResult   `json:"capture,omitempty"`
	Nodes   []NodesResult     `json:"nodes,omitempty"`
	Notes   map[string]string `json:"notes,omitempty"`
}

// Machine is where the figures came from.
type Machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpuModel"`
	MemoryGiB int64  `json:"memoryGiB"`
	Kernel    string `json:"kernel"`
	Go        string `json:"go"`
}

// Params are the sizes of the run.
type Params struct {
	Objects       int   `json:"objects"`
	Steps         []int `json:"steps"`
	Workers       int   `json:"workers"`
	DirectObjects int   `json:"directObjects"`
	ListRepeats   int   `json:"listRepeats"`
	WatchObjects  int   `json:"watchObjects"`
	Watchers      int   `json:"watchers"`
}

// Latency summarizes a set of timings in milliseconds.
type Latency struct {
	N     int     `json:"n"`
	P50Ms float64 `json:"p50Ms"`
	P99Ms float64 `json:"p99Ms"`
	MinMs float64 `json:"minMs"`
	MaxMs float64 `json:"maxMs"`
}

// CreateResult is one side's creates.
type CreateResult struct {
	Target    string  `json:"target"`
	Objects   int     `json:"objects"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"perSecond"`
	Latency   Latency `json:"latency"`
}

// ListResult is one way of listing at one object count.
type ListResult struct {
	Target   string  `json:"target"`
	Encoding string  `json:"encoding"`
	RV0      bool    `json:"resourceVersion0"`
	Objects  int     `json:"objects"`
	Runs     int     `json:"runs"`
	MedianMs float64 `json:"medianMs"`
	MinMs    float64 `json:"minMs"`
	Bytes    int     `json:"bytes"`
}

// WatchResult is the create-to-event time seen by every watcher of one side.
type WatchResult struct {
	Target   string  `json:"target"`
	Objects  int     `json:"objects"`
	Watchers int     `json:"watchers"`
	Latency  Latency `json:"latency"`
}

// MemoryResult is resident memory (and live heap) before and after the objects were created.
type MemoryResult struct {
	ServerBaselineBytes int64 `json:"serverBaselineBytes"`
	ServerBytes         int64 `json:"serverBytes"`
	ServerObjects       int   `json:"serverObjects"`
	KASBaselineBytes    int64 `json:"kasBaselineBytes"`
	KASBytes            int64 `json:"kasBytes"`
	CRDObjects          int   `json:"crdObjects"`
	// Live heap after a forced garbage collection, before and after.
	ServerHeapBaselineBytes int64 `json:"serverHeapBaselineBytes"`
	ServerHeapBytes         int64 `json:"serverHeapBytes"`
	KASHeapBaselineBytes    int64 `json:"kasHeapBaselineBytes"`
	KASHeapBytes            int64 `json:"kasHeapBytes"`
}

// CaptureResult is the capture subresource against a bare containerd
// checkpoint of the same container, and a restore from it, at one memory size.
type CaptureResult struct {
	MemoryMiB int     `json:"memoryMiB"`
	Runs      int     `json:"runs"`
	APIMs     float64 `json:"apiMs"`
	BareMs    float64 `json:"bareMs"`
	RestoreMs float64 `json:"restoreMs"`
	// DumpMs is CRIU alone: the task checkpointed into a directory, without
	// the copy into containerd's content store.
	DumpMs float64 `json:"dumpMs"`
	// PauseMs is the captures' status.pauseDuration (CRIU's frozen time);
	// FeltMs the longest the sandbox's own clock stood still across a
	// capture, as a process in it saw (its CLOCK_BOOTTIME stamped every ~1 ms).
	PauseMs float64 `json:"pauseMs,omitempty"`
	FeltMs  float64 `json:"feltMs,omitempty"`
}

// ReadMachine describes this machine.
func ReadMachine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	m.MemoryGiB = (procValue("/proc/meminfo", "MemTotal:") + 1<<29) >> 30
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// procValue reads the number after key in a /proc file of "key value kB"
// lines, in bytes; 0 when it cannot.
func procValue(path, key string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == key {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// Save writes r as indented JSON.
func (r *Results) Save(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Load reads results saved by Save.
func Load(path string) (*Results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := &Results{}
	return r, json.Unmarshal(b, r)
}

// LoadCapture reads the capture figures BenchmarkCapture wrote.
func LoadCapture(path string) ([]CaptureResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cs []CaptureResult
	return cs, json.Unmarshal(b, &cs)
}

// SaveCapture writes capture figures for LoadCapture.
func SaveCapture(path string, cs []CaptureResult) error { return saveJSON(path, cs) }

// saveJSON writes v to path as indented JSON.
func saveJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// list finds one list figure.
func (r *Results) list(target, enc string, rv0 bool, objects int) (ListResult, bool) {
	for _, l := range r.List {
		if l.Target == target && l.Encoding == enc && l.RV0 == rv0 && l.Objects == objects {
			return l, true
		}
	}
	return ListResult{}, false
}

func (r *Results) create(target string) (CreateResult, bool) {
	for _, c := range r.Create {
		if c.Target == target {
			return c, true
		}
	}
	return CreateResult{}, false
}

func (r *Results) watch(target string) (WatchResult, bool) {
	for _, w := range r.Watch {
		if w.Target == target {
			return w, true
		}
	}
	return WatchResult{}, false
}
