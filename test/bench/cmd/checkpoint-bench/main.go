// checkpoint-bench drives this server and the same Checkpoint as a CRD with
// one load generator (run), and renders what it measured (report). hack/bench.sh
// runs both; see BENCHMARKS.md.
//
//	checkpoint-bench run -kubeconfig K -server https://127.0.0.1:PORT -server-pid P -kas-pid P -out results.json
//	checkpoint-bench report -dir DIR   (DIR/results.json, merges DIR/capture.json and DIR/nodes.json; writes table.md, list.png, capture.png, nodes.png, restore.png)
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/agents-kruise/checkpoint-apiserver/test/bench"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: checkpoint-bench run|report [flags]")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = run(os.Args[2:])
	case "report":
		err = report(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: want run or report", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "checkpoint-bench:", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func run(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "admin kubeconfig of the kube-apiserver")
	server := fs.String("server", "", "this server's own URL (https://host:port); the kubeconfig's credentials are used")
	serverPID := fs.Int("server-pid", 0, "pid of this server, for its resident memory")
	kasPID := fs.Int("kas-pid", 0, "pid of the kube-apiserver, for its resident memory")
	steps := fs.String("steps", "1000,2500,5000,10000", "object counts per side at which lists are timed; the last is the total")
	workers := fs.Int("workers", 16, "concurrent creators per side")
	direct := fs.Int("direct", 5000, "objects created straight into this server")
	repeats := fs.Int("list-repeats", 5, "times each list is timed at each step")
	watchObjects := fs.Int("watch-objects", 1000, "objects created while watching, per side")
	watchers := fs.Int("watchers", 10, "watchers per side")
	out := fs.String("out", "results.json", "where the results go")
	_ = fs.Parse(args)

	kas, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	if *server == "" {
		return fmt.Errorf("-server is required")
	}
	srv := rest.CopyConfig(kas)
	srv.Host = *server
	cfg := bench.Config{KAS: kas, Server: srv, Workers: *workers, DirectObjects: *direct, ListRepeats: *repeats,
		WatchObjects: *watchObjects, Watchers: *watchers, ServerPID: *serverPID, KASPID: *kasPID, Logf: logf}
	for _, s := range strings.Split(*steps, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return fmt.Errorf("-steps: %q is not a positive count", s)
		}
		cfg.Steps = append(cfg.Steps, n)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	return res.Save(*out)
}

func report(args []string) error {
	fs := flag.NewFlagSet("report", flag.ExitOnError)
	dir := fs.String("dir", ".", "directory holding results.json (and capture.json)")
	_ = fs.Parse(args)
	res, err := bench.Load(filepath.Join(*dir, "results.json"))
	if err != nil {
		return err
	}
	if cs, err := bench.LoadCapture(filepath.Join(*dir, "capture.json")); err == nil {
		res.Capture = cs
		if err := res.Save(filepath.Join(*dir, "results.json")); err != nil {
			return err
		}
	} else if !os.IsNotExist(err) {
		return err
	}
	if ns, err := bench.LoadNodes(filepath.Join(*dir, "nodes.json")); err == nil {
		res.Nodes = ns
		if err := res.Save(filepath.Join(*dir, "results.json")); err != nil {
			return err
		}
	} else if !os.IsNotExist(err) {
		return err
	}
	if err := os.WriteFile(filepath.Join(*dir, "table.md"), []byte(res.Markdown()), 0o644); err != nil {
		return err
	}
	if err := res.Plot(*dir); err != nil {
		return err
	}
	res.Print(logf)
	logf("wrote %s", strings.Join([]string{"results.json", "table.md", "list.png", "capture.png", "nodes.png"}, ", "))
	return nil
}
