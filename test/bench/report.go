package bench

import (
	"fmt"
	"image/color"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Row is one line of the table: this server's figure against the peer's.
type Row struct {
	Figure string
	Ours   string
	Peer   string
	Ratio  float64 // ours / peer
	Target string  // what we aim at, "" when none
	Met    *bool   // nil when there is no target
}

func yes(b bool) *bool { return &b }

// Rows are the comparisons the table prints, ours / peer in each.
func (r *Results) Rows() []Row {
	var rows []Row
	if a, ok := r.create(Aggregated); ok {
		if c, ok := r.create(CRD); ok {
			rows = append(rows,
				Row{Figure: fmt.Sprintf("create throughput, %d objects, %d workers, via kube-apiserver (obj/s, higher is better)", a.Objects, r.Params.Workers),
					Ours: f1(a.PerSecond), Peer: f1(c.PerSecond), Ratio: a.PerSecond / c.PerSecond},
				Row{Figure: "create p50 via kube-apiserver (ms)", Ours: f2(a.Latency.P50Ms), Peer: f2(c.Latency.P50Ms), Ratio: a.Latency.P50Ms / c.Latency.P50Ms},
				Row{Figure: "create p99 via kube-apiserver (ms)", Ours: f2(a.Latency.P99Ms), Peer: f2(c.Latency.P99Ms),
					Ratio: a.Latency.P99Ms / c.Latency.P99Ms, Target: "<= 1", Met: yes(a.Latency.P99Ms <= c.Latency.P99Ms)},
			)
			if d, ok := r.create(Direct); ok {
				rows = append(rows,
					Row{Figure: fmt.Sprintf("create throughput direct to this server, %d objects (obj/s)", d.Objects), Ours: f1(d.PerSecond), Peer: f1(c.PerSecond), Ratio: d.PerSecond / c.PerSecond},
					Row{Figure: "create p99 direct to this server (ms)", Ours: f2(d.Latency.P99Ms), Peer: f2(c.Latency.P99Ms), Ratio: d.Latency.P99Ms / c.Latency.P99Ms})
			}
		}
	}
	n := r.Params.Objects
	for _, rv0 := range []bool{false, true} {
		how := "resourceVersion unset"
		if rv0 {
			how = "resourceVersion=0"
		}
		peer, ok := r.list(CRD, encJSON, rv0, n)
		if !ok {
			continue
		}
		for _, o := range []struct{ target, enc string }{{Aggregated, encProtobuf}, {Aggregated, encJSON}, {Direct, encProtobuf}} {
			l, ok := r.list(o.target, o.enc, rv0, n)
			if !ok {
				continue
			}
			row := Row{Figure: fmt.Sprintf("list %d, %s, %s %s vs CRD JSON (ms)", n, how, o.target, o.enc),
				Ours: f1(l.MedianMs), Peer: f1(peer.MedianMs), Ratio: l.MedianMs / peer.MedianMs}
			if o.target == Aggregated && o.enc == encProtobuf && !rv0 {
				row.Target, row.Met = "<= 1/3", yes(row.Ratio <= 1.0/3)
			}
			rows = append(rows, row)
		}
		if !rv0 {
			for _, enc := range []string{encProtobuf, encJSON} {
				if l, ok := r.list(Aggregated, enc, false, n); ok {
					rows = append(rows, Row{Figure: fmt.Sprintf("list %d, bytes, %s vs CRD JSON", n, enc),
						Ours: mib(int64(l.Bytes)), Peer: mib(int64(peer.Bytes)), Ratio: float64(l.Bytes) / float64(peer.Bytes)})
				}
			}
		}
	}
	if a, ok := r.watch(Aggregated); ok {
		if c, ok := r.watch(CRD); ok {
			rows = append(rows,
				Row{Figure: fmt.Sprintf("watch, create to event, p50, %d objects x %d watchers (ms)", a.Objects, a.Watchers),
					Ours: f2(a.Latency.P50Ms), Peer: f2(c.Latency.P50Ms), Ratio: a.Latency.P50Ms / c.Latency.P50Ms},
				Row{Figure: "watch, create to event, p99 (ms)", Ours: f2(a.Latency.P99Ms), Peer: f2(c.Latency.P99Ms), Ratio: a.Latency.P99Ms / c.Latency.P99Ms})
		}
	}
	if m := r.Memory; m != nil && m.ServerObjects > 0 && m.CRDObjects > 0 {
		per10k := func(after, before int64, n int) float64 { return float64(after-before) * 10000 / float64(n) }
		ours, peer := per10k(m.ServerBytes, m.ServerBaselineBytes, m.ServerObjects), per10k(m.KASBytes, m.KASBaselineBytes, m.CRDObjects)
		oursHeap, peerHeap := per10k(m.ServerHeapBytes, m.ServerHeapBaselineBytes, m.ServerObjects), per10k(m.KASHeapBytes, m.KASHeapBaselineBytes, m.CRDObjects)
		rows = append(rows,
			Row{Figure: "memory growth per 10,000 objects: this server's RSS vs kube-apiserver's RSS for the CRD",
				Ours: mib(int64(ours)), Peer: mib(int64(peer)), Ratio: ours / peer, Target: "<= 1/4", Met: yes(ours <= peer/4)},
			Row{Figure: "live heap growth per 10,000 objects (after a forced GC)",
				Ours: mib(int64(oursHeap)), Peer: mib(int64(peerHeap)), Ratio: oursHeap / peerHeap, Target: "<= 1/4", Met: yes(oursHeap <= peerHeap/4)},
			Row{Figure: fmt.Sprintf("resident memory, this server in all (%d objects) vs kube-apiserver's growth for %d CRD objects", m.ServerObjects, m.CRDObjects),
				Ours: mib(m.ServerBytes), Peer: mib(m.KASBytes - m.KASBaselineBytes), Ratio: float64(m.ServerBytes) / float64(m.KASBytes-m.KASBaselineBytes)})
	}
	for _, c := range r.Capture {
		rows = append(rows, Row{Figure: fmt.Sprintf("capture, %d MiB container: subresource vs bare containerd checkpoint (ms)", c.MemoryMiB),
			Ours: f1(c.APIMs), Peer: f1(c.BareMs), Ratio: c.APIMs / c.BareMs,
			Target: "<= 1.05x + 20 ms", Met: yes(c.APIMs <= 1.05*c.BareMs+20)})
		if base, ok := r.captureAt(0); ok && c.MemoryMiB > 0 {
			// the slope from the empty container: what each GiB adds
			gib := float64(c.MemoryMiB) / 1024
			ours, peer := (c.APIMs-base.APIMs)/1000/gib, (c.BareMs-base.BareMs)/1000/gib
			rows = append(rows,
				Row{Figure: fmt.Sprintf("capture, 0 to %d MiB: seconds per GiB added (subresource vs bare)", c.MemoryMiB),
					Ours: f2(ours), Peer: f2(peer), Ratio: ours / peer, Target: "<= 2 s/GiB", Met: yes(ours <= 2)})
		}
		if c.DumpMs > 0 {
			rows = append(rows, Row{Figure: fmt.Sprintf("capture, %d MiB: the subresource vs CRIU's dump alone into a directory (ms)", c.MemoryMiB),
				Ours: f1(c.APIMs), Peer: f1(c.DumpMs), Ratio: c.APIMs / c.DumpMs})
		}
		if c.PauseMs > 0 {
			rows = append(rows, Row{Figure: fmt.Sprintf("pause, %d MiB: felt inside the sandbox vs status.pauseDuration, CRIU's frozen time (ms)", c.MemoryMiB),
				Ours: f1(c.FeltMs), Peer: f1(c.PauseMs), Ratio: c.FeltMs / c.PauseMs})
			if c.DumpMs > 0 {
				rows = append(rows, Row{Figure: fmt.Sprintf("pause, %d MiB: felt inside vs CRIU's dump alone (ms)", c.MemoryMiB),
					Ours: f1(c.FeltMs), Peer: f1(c.DumpMs), Ratio: c.FeltMs / c.DumpMs,
					Target: "<= dump + 20 ms", Met: yes(c.FeltMs <= c.DumpMs+20)})
			}
			limit := 300 + 700*float64(c.MemoryMiB)/1024
			rows = append(rows, Row{Figure: fmt.Sprintf("pause, %d MiB: felt inside (ms; peer: the 0.3 s + 0.7 s/GiB target)", c.MemoryMiB),
				Ours: f1(c.FeltMs), Peer: f1(limit), Ratio: c.FeltMs / limit, Target: "<= 1", Met: yes(c.FeltMs <= limit)})
			rows = append(rows, Row{Figure: fmt.Sprintf("pause, %d MiB: felt inside vs the whole capture (ms)", c.MemoryMiB),
				Ours: f1(c.FeltMs), Peer: f1(c.APIMs), Ratio: c.FeltMs / c.APIMs})
		}
		if c.RestoreMs > 0 {
			limit := 500 + 500*float64(c.MemoryMiB)/1024
			rows = append(rows, Row{Figure: fmt.Sprintf("restore, %d MiB (ms; peer: the 0.5 s + 0.5 s/GiB target)", c.MemoryMiB),
				Ours: f1(c.RestoreMs), Peer: f1(limit), Ratio: c.RestoreMs / limit, Target: "<= 1", Met: yes(c.RestoreMs <= limit)})
		}
	}
	return append(rows, r.nodeRows()...)
}

func (r *Results) captureAt(mib int) (CaptureResult, bool) {
	for _, c := range r.Capture {
		if c.MemoryMiB == mib {
			return c, true
		}
	}
	return CaptureResult{}, false
}

func f1(v float64) string { return fmt.Sprintf("%.1f", v) }
func f2(v float64) string { return fmt.Sprintf("%.2f", v) }
func mib(b int64) string  { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// Markdown is the table of Rows, with the machine and the sizes.
func (r *Results) Markdown() string {
	var b strings.Builder
	m := r.Machine
	fmt.Fprintf(&b, "Run %s on %d CPUs (%s), %d GiB, kernel %s, %s. Each side got %d objects (%d workers), lists were timed %d times at each of %v objects, %d objects x %d watchers for watch; %d objects went straight to this server.\n\n",
		r.Started.Format("2006-01-02 15:04 UTC"), m.CPUs, m.CPUModel, m.MemoryGiB, m.Kernel, m.Go,
		r.Params.Objects, r.Params.Workers, r.Params.ListRepeats, r.Params.Steps, r.Params.WatchObjects, r.Params.Watchers, r.Params.DirectObjects)
	b.WriteString("| figure | this server | peer | ratio (ours/peer) | target | met |\n|---|---:|---:|---:|---|---|\n")
	for _, row := range r.Rows() {
		met := ""
		if row.Met != nil {
			met = map[bool]string{true: "yes", false: "**no**"}[*row.Met]
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.3f | %s | %s |\n", row.Figure, row.Ours, row.Peer, row.Ratio, row.Target, met)
	}
	return b.String()
}

// Print writes the ratios as plain lines.
func (r *Results) Print(logf func(string, ...any)) {
	for _, row := range r.Rows() {
		met := ""
		if row.Met != nil {
			met = fmt.Sprintf("  target %s: %v", row.Target, *row.Met)
		}
		logf("%-100s ours %-12s peer %-12s ratio %.3f%s", row.Figure, row.Ours, row.Peer, row.Ratio, met)
	}
}

// Plot draws list latency against object count (list.png), capture,
// restore and pause against container memory (capture.png), and capture
// and clones on kubelet nodes against it (nodes.png) into dir.
func (r *Results) Plot(dir string) error {
	p := newPlot("List latency against object count (median)", "objects in the namespace")
	i := 0
	for _, rv0 := range []bool{false, true} {
		for _, o := range []struct{ target, enc string }{{Aggregated, encProtobuf}, {Aggregated, encJSON}, {CRD, encJSON}, {Direct, encProtobuf}} {
			var pts plotter.XYs
			for _, step := range r.Params.Steps {
				if l, ok := r.list(o.target, o.enc, rv0, step); ok {
					pts = append(pts, plotter.XY{X: float64(step), Y: l.MedianMs})
				}
			}
			if len(pts) == 0 {
				continue
			}
			name := o.target + " " + o.enc
			if rv0 {
				name += " rv=0"
			}
			if err := addLine(p, name, pts, i, rv0); err != nil {
				return err
			}
			i++
		}
	}
	if err := p.Save(8*vg.Inch, 5*vg.Inch, filepath.Join(dir, "list.png")); err != nil {
		return err
	}
	if len(r.Capture) > 0 {
		if err := r.plotCapture(dir); err != nil {
			return err
		}
	}
	if len(r.Nodes) > 0 {
		if err := r.plotNodes(dir); err != nil {
			return err
		}
		return r.plotRestore(dir)
	}
	return nil
}

// plotCapture draws capture.png.
func (r *Results) plotCapture(dir string) error {
	p := newPlot("Capture, restore and pause against container memory (median)", "container memory (MiB)")
	var api, bare, dump, restore, felt, pause plotter.XYs
	for _, c := range r.Capture {
		if c.DumpMs > 0 {
			dump = append(dump, plotter.XY{X: float64(c.MemoryMiB), Y: c.DumpMs})
		}
		if c.PauseMs > 0 {
			felt = append(felt, plotter.XY{X: float64(c.MemoryMiB), Y: c.FeltMs})
			pause = append(pause, plotter.XY{X: float64(c.MemoryMiB), Y: c.PauseMs})
		}
		api = append(api, plotter.XY{X: float64(c.MemoryMiB), Y: c.APIMs})
		bare = append(bare, plotter.XY{X: float64(c.MemoryMiB), Y: c.BareMs})
		if c.RestoreMs > 0 {
			restore = append(restore, plotter.XY{X: float64(c.MemoryMiB), Y: c.RestoreMs})
		}
	}
	for j, l := range []struct {
		name string
		pts  plotter.XYs
	}{{"capture subresource", api}, {"bare containerd checkpoint", bare}, {"restore subresource", restore}, {"CRIU dump alone", dump},
		{"pause felt inside", felt}, {"status.pauseDuration", pause}} {
		if len(l.pts) == 0 {
			continue
		}
		if err := addLine(p, l.name, l.pts, j, j >= 4); err != nil {
			return err
		}
	}
	return p.Save(8*vg.Inch, 5*vg.Inch, filepath.Join(dir, "capture.png"))
}

// nodesLine is one line of a plot of NodesResult figures against memory.
type nodesLine struct {
	name string
	f    func(NodesResult) float64
}

// plotNodes draws nodes.png.
func (r *Results) plotNodes(dir string) error {
	return r.plotNodesLines(dir, "nodes.png", "Capture and clone of a Pod on kubelet nodes against its memory (median)", 3, []nodesLine{
		{"through the agent, durable in the registry", func(n NodesResult) float64 { return n.AgentMs }},
		{"in the server's process, on the node", func(n NodesResult) float64 { return n.OwnNodeMs }},
		{"the kubelet's checkpoint API", func(n NodesResult) float64 { return n.KubeletMs }},
		{"clone Ready (lazy), capturing node", func(n NodesResult) float64 { return n.RestoreLocalMs }},
		{"clone Ready (lazy), other node", func(n NodesResult) float64 { return n.RestoreOtherMs }},
		{"push of the image alone", func(n NodesResult) float64 { return n.PushMs }},
	})
}

// plotRestore draws restore.png: clones, lazy and eager, on both nodes,
// against a fresh Pod (dashed: the other node).
func (r *Results) plotRestore(dir string) error {
	return r.plotNodesLines(dir, "restore.png", "Clone of a Pod holding random memory, by the restore runtime (median)", 4, []nodesLine{
		{"fresh Pod to Ready, capturing node (the floor)", func(n NodesResult) float64 { return n.FreshLocalMs }},
		{"lazy clone to Ready, capturing node", func(n NodesResult) float64 { return n.RestoreLocalMs }},
		{"lazy clone to every page in, capturing node", func(n NodesResult) float64 { return n.RestoreLocalPagesMs }},
		{"eager clone to Ready, capturing node", func(n NodesResult) float64 { return n.EagerLocalMs }},
		{"lazy clone to Ready, other node", func(n NodesResult) float64 { return n.RestoreOtherMs }},
		{"lazy clone to every page in, other node", func(n NodesResult) float64 { return n.RestoreOtherPagesMs }},
		{"eager clone to Ready, other node", func(n NodesResult) float64 { return n.EagerOtherMs }},
	})
}

// plotNodesLines draws lines (dashed from the dashed-th on, colours
// starting over there) into file.
func (r *Results) plotNodesLines(dir, file, title string, dashed int, lines []nodesLine) error {
	p := newPlot(title, "container memory (MiB)")
	for j, l := range lines {
		var pts plotter.XYs
		for _, n := range r.Nodes {
			if v := l.f(n); v > 0 {
				pts = append(pts, plotter.XY{X: float64(n.MemoryMiB), Y: v})
			}
		}
		if len(pts) == 0 {
			continue
		}
		if err := addLine(p, l.name, pts, j%len(palette), j >= dashed); err != nil {
			return err
		}
	}
	return p.Save(8*vg.Inch, 5*vg.Inch, filepath.Join(dir, file))
}

// newPlot is a plot of milliseconds against x, its legend top left.
func newPlot(title, x string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = "ms"
	p.Legend.Top, p.Legend.Left = true, true
	return p
}

var palette = []color.Color{
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
}

func addLine(p *plot.Plot, name string, pts plotter.XYs, i int, dashed bool) error {
	l, s, err := plotter.NewLinePoints(pts)
	if err != nil {
		return err
	}
	c := palette[i%len(palette)]
	l.Color, s.Color = c, c
	l.Width = vg.Points(1.5)
	s.Shape = draw.CircleGlyph{}
	if dashed {
		l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
	}
	p.Add(l, s)
	p.Legend.Add(name, l, s)
	return nil
}
