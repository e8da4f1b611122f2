package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/driver"
	"github.com/agents-kruise/checkpoint-apiserver/ociregistry"
)

// ClientConfig is how the server reaches node agents.
type ClientConfig struct {
	// Client reads Nodes: an agent is at its node's InternalIP and Port.
	Client kubernetes.Interface
	Port   int
	// CAFile verifies agents' serving certificates, for ServerName (one
	// certificate for every agent) or, when empty, each agent's own node's
	// name: an agent's certificate for another node is refused.
	CAFile     string
	ServerName string
	// CertFile and KeyFile are the server's client certificate, the only
	// credential agents take.
	CertFile, KeyFile string
	// Registry, when set, holds every checkpoint: a Delete removes it there too.
	Registry *ociregistry.Registry
	// Installation names this installation on every checkpoint it pushes;
	// States reports only its own (a registry may be shared).
	Installation string
	// Timeout bounds a call that has no deadline of its own.
	Timeout time.Duration
}

// ErrUnreachable: no agent answers on the node (it is down, or has none).
var ErrUnreachable = errors.New("unreachable")

// Client is a driver.Driver that runs each call on the agent of the
// node concerned: a capture on the Pod's node, a delete on every node.
type Client struct {
	cfg  ClientConfig
	http *http.Client
	// addrs caches node name to agent address.
	mu    sync.Mutex
	addrs map[string]string
	// where remembers checkpoint ID to namespace (its repository in the
	// registry), from captures, deletes and the registry's listing.
	where sync.Map
}

var _ driver.Driver = &Client{}

// NewClient loads the CA and the client certificate.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Client == nil || cfg.Port <= 0 {
		return nil, errors.New("node agents: a kube-apiserver client and the agents' port are needed")
	}
	if cfg.CAFile == "" {
		return nil, errors.New("node agents: the CA of their serving certificates is needed (--agent-ca-file)")
	}
	pool, err := certutil.NewPool(cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("node agents' CA: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: cfg.ServerName}
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("node agents: the server needs its client certificate to call them (--agent-client-cert-file, --agent-client-key-file)")
	}
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("client certificate for node agents: %w", err)
	}
	tc.Certificates = []tls.Certificate{cert}
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Minute
	}
	c := &Client{cfg: cfg, addrs: map[string]string{}}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	c.http = &http.Client{Transport: &http.Transport{
		TLSClientConfig: tc, Proxy: nil, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second,
		// A request names the node (so TLS checks the certificate for
		// it); the connection goes to that node's InternalIP.
		DialContext: func(ctx context.Context, network, hostPort string) (net.Conn, error) {
			if host, _, err := net.SplitHostPort(hostPort); err == nil && cfg.ServerName == "" && net.ParseIP(host) == nil {
				addr, err := c.address(ctx, host)
				if err != nil {
					return nil, err
				}
				hostPort = addr
			}
			return dialer.DialContext(ctx, network, hostPort)
		},
	}}
	return c, nil
}

// url is where path is on node's agent: named by the node, whose name its
// certificate must bear, unless every agent shares one (ServerName).
func (c *Client) url(node, addr, path string) string {
	if c.cfg.ServerName != "" {
		return "https://" + addr + path
	}
	return "https://" + net.JoinHostPort(node, strconv.Itoa(c.cfg.Port)) + path
}

// address is node's agent's host:port, from its InternalIP.
func (c *Client) address(ctx context.Context, node string) (string, error) {
	c.mu.Lock()
	a, ok := c.addrs[node]
	c.mu.Unlock()
	if ok {
		return a, nil
	}
	n, err := c.cfg.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return "", fmt.Errorf("%w: node %s does not exist", driver.ErrTargetNotFound, node)
		}
		return "", fmt.Errorf("%w: read node %s: %v", driver.ErrUnavailable, node, err)
	}
	a = nodeAddress(n, c.cfg.Port)
	if a == "" {
		return "", fmt.Errorf("%w: node %s reports no InternalIP", driver.ErrUnavailable, node)
	}
	c.mu.Lock()
	c.addrs[node] = a
	c.mu.Unlock()
	return a, nil
}

func nodeAddress(n *corev1.Node, port int) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return net.JoinHostPort(a.Address, strconv.Itoa(port))
		}
	}
	return ""
}

// call POSTs in to node's agent and decodes its answer into out.
func (c *Client) call(ctx context.Context, node, path string, in, out any) error {
	if node == "" {
		return fmt.Errorf("%w: the Pod is not bound to a node", driver.ErrTargetNotFound)
	}
	addr, err := c.address(ctx, node)
	if err != nil {
		return err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url(node, addr, path), bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		// The node may have a new address: read it again next time.
		c.mu.Lock()
		delete(c.addrs, node)
		c.mu.Unlock()
		if ctx.Err() != nil {
			return fmt.Errorf("node agent of %s (%s): %w", node, addr, ctx.Err())
		}
		return fmt.Errorf("%w: %w: node agent of %s (%s): %v", driver.ErrUnavailable, ErrUnreachable, node, addr, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxRequestBytes))
	if err != nil {
		return fmt.Errorf("%w: node agent of %s: read answer: %v", driver.ErrUnavailable, node, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e ErrorResponse
		if json.Unmarshal(data, &e) != nil || e.Message == "" {
			e = ErrorResponse{Kind: kindInternal, Message: fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(data))}
		}
		return e.asError(node)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(data, out)
}

// Capture runs on the agent of the Pod's node.
func (c *Client) Capture(ctx context.Context, t driver.Target, req driver.CaptureRequest) (driver.CaptureResult, error) {
	var out CaptureResponse
	err := c.call(ctx, t.Node, PathCapture, CaptureRequest{
		Pod: PodRef{Namespace: t.Namespace, Name: t.Name, UID: t.UID}, ID: req.ID, Contents: req.Contents, Key: req.Key,
		Installation: c.cfg.Installation,
	}, &out)
	if err != nil {
		return driver.CaptureResult{}, err
	}
	c.where.Store(out.ID, t.Namespace)
	return driver.CaptureResult{ID: out.ID, SizeBytes: out.SizeBytes, Contents: out.Contents, Published: out.Published, Pause: out.Pause}, nil
}

// Restore is the Pod restorer's (driver/kube): a clone is a Pod the kubelet pulls.
func (c *Client) Restore(context.Context, string, driver.RestoreRequest) (driver.Target, error) {
	return driver.Target{}, fmt.Errorf("%w: node agents restore only into Pods", driver.ErrUnsupported)
}

// Stop stops the Pod's containers on its node.
func (c *Client) Stop(ctx context.Context, t driver.Target) error {
	return c.call(ctx, t.Node, PathStop, StopRequest{Pod: PodRef{Namespace: t.Namespace, Name: t.Name, UID: t.UID}}, nil)
}

// Prefetch has node's agent start putting checkpoint id's containers on
// the node for clone ns/pod; it does not wait for the fetch.
func (c *Client) Prefetch(ctx context.Context, node, ns, pod, id string, containers []string) error {
	return c.call(ctx, node, PathPrefetch, PrefetchRequest{Namespace: ns, Pod: pod, ID: id, Containers: containers}, nil)
}

// GiveKey hands checkpoint id's data key to node's agent, for Pod pod
// (bound there) to restore from.
func (c *Client) GiveKey(ctx context.Context, node string, pod PodRef, id string, key []byte) error {
	return c.call(ctx, node, PathKey, KeyRequest{Pod: pod, CheckpointID: id, Key: key}, nil)
}

// RefuseKey tells node's agent why Pod pod gets no key for checkpoint id.
func (c *Client) RefuseKey(ctx context.Context, node string, pod PodRef, id, reason string) error {
	return c.call(ctx, node, PathKey, KeyRequest{Pod: pod, CheckpointID: id, Refusal: reason}, nil)
}

// Terminate ends the Pod's processes on its node and leaves the rest to its kubelet.
func (c *Client) Terminate(ctx context.Context, t driver.Target) error {
	return c.call(ctx, t.Node, PathTerminate, StopRequest{Pod: PodRef{Namespace: t.Namespace, Name: t.Name, UID: t.UID}}, nil)
}

// Delete removes the checkpoint from every node (what its capture wrote,
// and what kubelets pulled of it), then from the registry: the registry
// goes last, so that a retry still finds which images the nodes pulled. A
// node where no agent answers does not hold the delete up (one dead node
// would keep every Checkpoint Terminating and its namespace undeletable):
// its agent's sweep removes what no live Checkpoint owns when it is back,
// and a node that is gone took its copies with it. An agent that answers
// with an error fails the delete (it is retried).
func (c *Client) Delete(ctx context.Context, id string) error {
	var idx *ociregistry.Index
	var reg *ociregistry.Registry
	var pulled []string
	if c.cfg.Registry != nil {
		var err error
		reg, idx, err = c.find(ctx, id)
		if err != nil {
			return fmt.Errorf("%w: %v", driver.ErrUnavailable, err)
		}
		if idx != nil {
			for _, ref := range reg.Images(idx) {
				pulled = append(pulled, ref)
			}
		}
	}
	if err := c.eachNode(ctx, func(node string) error {
		err := c.call(ctx, node, PathDelete, DeleteRequest{ID: id, Images: pulled}, nil)
		if errors.Is(err, ErrUnreachable) {
			klog.FromContext(ctx).Info("No node agent answers; its sweep removes the checkpoint when it is back", "node", node, "id", id, "err", err)
			return nil
		}
		return err
	}); err != nil {
		return err
	}
	if idx != nil {
		if err := reg.Delete(ctx, idx); err != nil {
			return fmt.Errorf("%w: %v", driver.ErrUnavailable, err)
		}
	}
	c.where.Delete(id)
	return nil
}

// DeleteIn is Delete of namespace's checkpoint id: its repository is known.
func (c *Client) DeleteIn(ctx context.Context, namespace, id string) error {
	c.where.Store(id, namespace)
	return c.Delete(ctx, id)
}

// find reads checkpoint id's index (by its tag) in its namespace's
// repository: the one remembered, or else the first of the registry's
// that has it. A checkpoint in none has no index (nil, nil, nil).
func (c *Client) find(ctx context.Context, id string) (*ociregistry.Registry, *ociregistry.Index, error) {
	var namespaces []string
	if ns, ok := c.where.Load(id); ok {
		namespaces = []string{ns.(string)}
	} else {
		var err error
		if namespaces, err = c.cfg.Registry.Namespaces(ctx); err != nil {
			return nil, nil, err
		}
	}
	for _, ns := range namespaces {
		reg, err := c.cfg.Registry.In(ns)
		if err != nil {
			return nil, nil, err
		}
		idx, err := reg.Index(ctx, id)
		switch {
		case errors.Is(err, ociregistry.ErrNotFound):
			continue
		case err != nil:
			return nil, nil, err
		}
		if idx.Annotations[ociregistry.AnnotationCheckpointID] != id {
			continue // a tag someone else moved: not this checkpoint's
		}
		return reg, idx, nil
	}
	return nil, nil, nil
}

// States is what this installation holds in the registry, each with when
// it was pushed: the agents sweep their own nodes (SweepConfig), the
// server's sweep the registry. A checkpoint another installation pushed
// (a shared registry), or one whose index cannot be read, is not this
// server's to sweep. A Delete of an orphan still reaches every node.
func (c *Client) States(ctx context.Context) (map[string]time.Time, error) {
	out := map[string]time.Time{}
	if c.cfg.Registry == nil {
		return out, nil
	}
	namespaces, err := c.cfg.Registry.Namespaces(ctx)
	var errs []error
	for _, ns := range namespaces {
		reg, rerr := c.cfg.Registry.In(ns)
		if rerr != nil {
			continue
		}
		tags, terr := reg.Tags(ctx)
		if terr != nil {
			errs = append(errs, terr)
		}
		for _, id := range tags {
			if !strings.HasPrefix(id, "ckpt-") {
				continue
			}
			idx, ierr := reg.Index(ctx, id)
			if ierr != nil {
				continue
			}
			if idx.Annotations[ociregistry.AnnotationInstallation] != c.cfg.Installation ||
				idx.Annotations[ociregistry.AnnotationCheckpointID] != id || idx.Annotations[ociregistry.AnnotationNamespace] != ns {
				continue
			}
			pushed, perr := time.Parse(time.RFC3339, idx.Annotations[ociregistry.AnnotationCreated])
			if perr != nil {
				continue // not one this server pushed
			}
			out[id] = pushed
			c.where.Store(id, ns)
		}
	}
	return out, errors.Join(append([]error{err}, errs...)...)
}

// Ping answers: whether an agent answers depends on the node.
func (c *Client) Ping(context.Context) error { return nil }

// eachNode runs f for every node, in parallel; errors are joined.
func (c *Client) eachNode(ctx context.Context, f func(node string) error) error {
	nodes, err := c.cfg.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return fmt.Errorf("%w: list nodes: %v", driver.ErrUnavailable, err)
	}
	errs := make([]error, len(nodes.Items))
	var wg sync.WaitGroup
	for i := range nodes.Items {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = f(nodes.Items[i].Name)
		}(i)
	}
	wg.Wait()
	err = errors.Join(errs...)
	if err != nil {
		klog.FromContext(ctx).V(2).Info("A node agent call failed", "err", err)
	}
	return err
}
