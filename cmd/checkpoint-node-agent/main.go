// Command checkpoint-node-agent runs on every node (a DaemonSet): it
// captures its node's Pods through the node's containerd and CRIU for the
// checkpoint API server, pushes the checkpoints to the checkpoint
// registry, and removes them from the node when asked. See package agent.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	goflag "flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
	"k8s.io/apimachinery/pkg/api/resource"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/agent"
	"github.com/agents-kruise/checkpoint-apiserver/agentcert"
	containerddriver "github.com/agents-kruise/checkpoint-apiserver/driver/containerd"
	"github.com/agents-kruise/checkpoint-apiserver/encryption"
	"github.com/agents-kruise/checkpoint-apiserver/nodeimages"
	"github.com/agents-kruise/checkpoint-apiserver/ociregistry"
	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime"
)

type options struct {
	node, kubeconfig                string
	containerdAddress, namespace    string
	dataDir, criuConfigDir          string
	bindAddress                     string
	port                            int
	certFile, keyFile, clientCAFile string
	requestCert                     bool
	serverUsers, metricsUsers       []string
	registry                        ociregistry.Config
	sweepInterval                   time.Duration
	cacheMax                        string
	dumpDir, dumpDirLimit           string
	diskDumpLimit                   string
	prefetch                        bool
	restoreSocket, restoreImages    string
	restoreImagesLimit              string
	restoreMemDir, restoreMemLimit  string
}

func main() {
	if restoreruntime.IsShim() {
		restoreruntime.Main()
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "install-runtime" {
		installRuntime(os.Args[2:])
		return
	}
	o := options{
		node: os.Getenv("NODE_NAME"), containerdAddress: "/run/containerd/containerd.sock", namespace: "k8s.io",
		dataDir: "/var/lib/checkpoint-agent", bindAddress: "0.0.0.0", port: 10370,
		serverUsers:   []string{"system:serviceaccount:checkpoint-system:checkpoint-apiserver"},
		sweepInterval: 5 * time.Minute, cacheMax: "20Gi", dumpDir: containerddriver.DefaultDumpDir, dumpDirLimit: "0", diskDumpLimit: "0",
		prefetch: true, restoreSocket: nodeimages.DefaultSocket, restoreImages: "/var/lib/checkpoint-agent/restore-images", restoreImagesLimit: "20Gi",
		restoreMemDir: "/dev/shm/checkpoint-agent-restore-images", restoreMemLimit: "0",
	}
	fs := pflag.NewFlagSet("checkpoint-node-agent", pflag.ExitOnError)
	fs.StringVar(&o.node, "node-name", o.node, "The node this agent serves (default $NODE_NAME); it acts on Pods bound to it only.")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig of the agent's own identity (empty: in-cluster). It reads Pods and reviews tokens.")
	fs.StringVar(&o.containerdAddress, "containerd-address", o.containerdAddress, "The node's containerd socket.")
	fs.StringVar(&o.namespace, "containerd-namespace", o.namespace, "containerd namespace of the kubelet's containers.")
	fs.StringVar(&o.dataDir, "data-dir", o.dataDir, "Where the agent keeps container logs of captures.")
	fs.StringVar(&o.criuConfigDir, "criu-config-dir", "", "Where the CRIU configuration for restores is written, on the node (default <data-dir>/criu); the server's --node-criu-config names the file in it.")
	fs.StringVar(&o.dumpDir, "dump-dir", o.dumpDir, containerddriver.DumpDirHelp)
	fs.StringVar(&o.dumpDirLimit, "dump-dir-limit", o.dumpDirLimit, containerddriver.DumpDirLimitHelp)
	fs.StringVar(&o.diskDumpLimit, "disk-dump-limit", o.diskDumpLimit, containerddriver.DiskDumpLimitHelp)
	fs.BoolVar(&o.prefetch, "prefetch", o.prefetch,
		"Unpack each capture from the registry into --restore-images-dir in the background once it is durable, so clones on this node start without a pull.")
	fs.StringVar(&o.restoreSocket, "restore-socket", o.restoreSocket,
		"Node-local socket (root only) where the restore runtime asks for a checkpoint to be put on the node (empty: no restores on this node).")
	fs.StringVar(&o.restoreImages, "restore-images-dir", o.restoreImages,
		"Where checkpoints are unpacked for the restore runtime, which reads them in place (its configuration's imagesDir).")
	fs.StringVar(&o.restoreImagesLimit, "restore-images-limit", o.restoreImagesLimit,
		"Bound of --restore-images-dir (a quantity; 0: unbounded); the least recently used checkpoints go first.")
	fs.StringVar(&o.restoreMemDir, "restore-images-mem-dir", o.restoreMemDir,
		"A tmpfs (memory) where checkpoints are unpacked for the restore runtime while they fit in --restore-images-mem-limit, "+
			"before --restore-images-dir (disk); CRIU reads them in place (empty: disk only).")
	fs.StringVar(&o.restoreMemLimit, "restore-images-mem-limit", o.restoreMemLimit,
		"Bound of --restore-images-mem-dir (a quantity; 0: a quarter of its filesystem, beside the dumps' half).")
	fs.StringVar(&o.bindAddress, "bind-address", o.bindAddress, "Address to serve the API server on.")
	fs.IntVar(&o.port, "port", o.port, "Port to serve the API server on (TLS).")
	fs.StringVar(&o.certFile, "tls-cert-file", "", "Serving certificate (its SAN: the node's name, which the server checks), unless --request-serving-certificate.")
	fs.BoolVar(&o.requestCert, "request-serving-certificate", false,
		"Ask the server's signer ("+agentcert.SignerName+") for this node's own serving certificate with a CSR under this Pod's "+
			"service-account token, keep its key in memory only, and renew it; the signer signs only for the node this Pod runs on.")
	fs.StringVar(&o.keyFile, "tls-private-key-file", "", "Serving key.")
	fs.StringVar(&o.clientCAFile, "client-ca-file", "", "CA of client certificates (required): the agent takes the server's client certificate only; one from another CA fails the handshake, and every bearer token is refused.")
	fs.StringSliceVar(&o.serverUsers, "server-user", o.serverUsers, "The API server's user names; every other identity is refused.")
	fs.StringSliceVar(&o.metricsUsers, "metrics-user", o.metricsUsers, "Users who may also read /metrics (a Prometheus' service account), nothing else.")
	fs.StringVar(&o.registry.Repository, "checkpoint-registry", "", "host[:port]/prefix that receives every capture, each in its namespace's repository prefix/<namespace> (empty: captures stay on the node).")
	fs.StringVar(&o.registry.CAFile, "checkpoint-registry-ca-file", "", "CA of the checkpoint registry's serving certificate (empty: the system's).")
	fs.StringVar(&o.registry.AuthFile, "checkpoint-registry-auth-file", "", "Docker config.json with the registry's credentials (a kubernetes.io/dockerconfigjson Secret's .dockerconfigjson).")
	fs.DurationVar(&o.sweepInterval, "orphan-sweep-interval", o.sweepInterval,
		"How often the node's checkpoint state that no live Checkpoint owns is deleted, once at least that old (0: never).")
	fs.StringVar(&o.cacheMax, "cache-max-size", o.cacheMax,
		"Bound of the captured state the node keeps of checkpoints the registry holds (a quantity; 0: unbounded). The oldest go first.")
	klogFlags := goflag.NewFlagSet("klog", goflag.ExitOnError)
	klog.InitFlags(klogFlags)
	fs.AddGoFlagSet(klogFlags)
	_ = fs.Parse(os.Args[1:])

	ctx := genericapiserver.SetupSignalContext()
	if err := run(ctx, o); err != nil {
		klog.ErrorS(err, "checkpoint-node-agent failed")
		klog.Flush()
		os.Exit(1)
	}
}

// installRuntime installs this binary as the node's restore runtime shim
// and writes the runtime's configuration (the agent DaemonSet's init
// container runs it).
func installRuntime(args []string) {
	fs := pflag.NewFlagSet("checkpoint-node-agent install-runtime", pflag.ExitOnError)
	binDir := fs.String("bin-dir", "/opt/checkpoint-apiserver/bin", "Where the shim goes; the node's containerd names <bin-dir>/"+restoreruntime.ShimName+" as the runtime_path of the checkpoint runtime.")
	config := fs.String("config", restoreruntime.DefaultConfigPath, "Where the runtime's configuration goes (the shim reads $"+restoreruntime.ConfigEnv+", or this default).")
	cfg := restoreruntime.Config{Lazy: true, AgentSocket: nodeimages.DefaultSocket, ImagesDir: "/var/lib/checkpoint-agent/restore-images"}
	fs.StringVar(&cfg.ImagesDir, "images-dir", cfg.ImagesDir, "The agent's --restore-images-dir.")
	cfg.MemImagesDir = "/dev/shm/checkpoint-agent-restore-images"
	fs.StringVar(&cfg.MemImagesDir, "mem-images-dir", cfg.MemImagesDir, "The agent's --restore-images-mem-dir (empty: none).")
	fs.StringVar(&cfg.AgentSocket, "agent-socket", cfg.AgentSocket, "The agent's --restore-socket.")
	fs.StringVar(&cfg.LogDir, "log-dir", "", "Where CRIU's logs of failed restores are kept (default <images-dir>/.logs).")
	fs.BoolVar(&cfg.Lazy, "lazy", cfg.Lazy, "Restore lazily (criu lazy-pages); false: eagerly, as a node without userfaultfd must.")
	_ = fs.Parse(args)
	if err := restoreruntime.Install(*binDir, *config, cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("installed %s/%s and %s\n", *binDir, restoreruntime.ShimName, *config)
}

func run(ctx context.Context, o options) error {
	if o.node == "" {
		return errors.New("--node-name (or $NODE_NAME) is required")
	}
	if (o.certFile == "") != (o.keyFile == "") {
		return errors.New("--tls-cert-file and --tls-private-key-file go together")
	}
	if (o.certFile != "") == o.requestCert {
		return errors.New("either --tls-cert-file and --tls-private-key-file, or --request-serving-certificate")
	}
	rc, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return fmt.Errorf("kube-apiserver client: %w", err)
	}
	rc.UserAgent = "checkpoint-node-agent/" + o.node
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	if o.criuConfigDir == "" {
		o.criuConfigDir = filepath.Join(o.dataDir, "criu")
	}
	abs, err := filepath.Abs(o.criuConfigDir)
	if err != nil {
		return err
	}
	dumpLimit, err := resource.ParseQuantity(o.dumpDirLimit)
	if err != nil {
		return fmt.Errorf("--dump-dir-limit=%q: %w", o.dumpDirLimit, err)
	}
	diskLimit, err := resource.ParseQuantity(o.diskDumpLimit)
	if err != nil {
		return fmt.Errorf("--disk-dump-limit=%q: %w", o.diskDumpLimit, err)
	}
	d, err := containerddriver.New(containerddriver.Config{
		Address: o.containerdAddress, Namespace: o.namespace, Node: o.node,
		LogDir: filepath.Join(o.dataDir, "containers"), CRIUConfigDir: abs,
		DumpDir: o.dumpDir, DumpDirLimit: dumpLimit.Value(), DiskDumpLimit: diskLimit.Value(),
	})
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Ping(ctx); err != nil {
		klog.InfoS("containerd is not reachable yet: captures fail until it is", "address", o.containerdAddress, "err", err)
	}
	cfg := agent.Config{Node: o.node, Driver: d, Client: client, ServerUsers: o.serverUsers, MetricsUsers: o.metricsUsers, ClientCAFile: o.clientCAFile}
	if o.registry.Repository != "" {
		if cfg.Registry, err = ociregistry.New(o.registry); err != nil {
			return err
		}
		// Data keys live in this process's memory only, given by the server.
		cfg.Keys = &encryption.Ring{}
	}
	dyn, err := dynamic.NewForConfig(rc)
	if err != nil {
		return err
	}
	if o.restoreSocket != "" {
		limit, err := resource.ParseQuantity(o.restoreImagesLimit)
		if err != nil {
			return fmt.Errorf("--restore-images-limit=%q: %w", o.restoreImagesLimit, err)
		}
		memLimit, err := resource.ParseQuantity(o.restoreMemLimit)
		if err != nil {
			return fmt.Errorf("--restore-images-mem-limit=%q: %w", o.restoreMemLimit, err)
		}
		mem := memLimit.Value()
		if o.restoreMemDir != "" && mem == 0 {
			if err := os.MkdirAll(o.restoreMemDir, 0o700); err != nil {
				return fmt.Errorf("--restore-images-mem-dir: %w", err)
			}
			var st unix.Statfs_t
			if err := unix.Statfs(o.restoreMemDir, &st); err != nil {
				return fmt.Errorf("--restore-images-mem-dir: %w", err)
			}
			mem = int64(st.Blocks) * st.Bsize / 4
		}
		store := &nodeimages.Store{Dir: o.restoreImages, Limit: limit.Value(), MemDir: o.restoreMemDir, MemLimit: mem, Lookup: nodeimages.APILookup{Client: dyn},
			Archives: nodeimages.DriverArchives{Driver: d},
			Events:   nodeimages.KubeEvents{Client: client, Component: "checkpoint-node-agent", Node: o.node}}
		if cfg.Registry != nil {
			store.Archives = nodeimages.RegistryArchives{Registry: cfg.Registry, Keys: cfg.Keys}
		}
		cfg.Images, cfg.Prefetch = store, o.prefetch
		go func() {
			if err := store.Serve(ctx, o.restoreSocket); err != nil {
				klog.ErrorS(err, "The restore runtime's socket stopped: no clone starts on this node")
			}
		}()
	}
	srv, err := agent.New(cfg)
	if err != nil {
		return err
	}
	cacheMax, err := resource.ParseQuantity(o.cacheMax)
	if err != nil {
		return fmt.Errorf("--cache-max-size=%q: %w", o.cacheMax, err)
	}
	go srv.RunSweep(ctx, agent.SweepConfig{Checkpoints: dyn, Interval: o.sweepInterval, CacheMaxBytes: cacheMax.Value()})
	var getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	if o.requestCert {
		// This node's own certificate, from the server's signer: the key
		// stays in this process.
		req := &agentcert.Requester{Client: client, Node: o.node}
		if err := req.Start(ctx); err != nil {
			return err
		}
		getCert = req.GetCertificate
	} else {
		cert, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
		if err != nil {
			return fmt.Errorf("node agent serving certificate: %w", err)
		}
		getCert = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return srv.Serve(ctx, net.JoinHostPort(o.bindAddress, strconv.Itoa(o.port)), getCert)
}
