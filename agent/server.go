package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/authenticatorfactory"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/client-go/kubernetes"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/driver"
	"github.com/agents-kruise/checkpoint-apiserver/driver/kube"
	"github.com/agents-kruise/checkpoint-apiserver/encryption"
	"github.com/agents-kruise/checkpoint-apiserver/nodeimages"
	"github.com/agents-kruise/checkpoint-apiserver/ociregistry"
	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
)

// NodeDriver is what the agent does on its node (the containerd driver).
type NodeDriver interface {
	Capture(ctx context.Context, target driver.Target, req driver.CaptureRequest) (driver.CaptureResult, error)
	Delete(ctx context.Context, checkpointID string) error
	Stop(ctx context.Context, target driver.Target) error
	Terminate(ctx context.Context, target driver.Target) error
	States(ctx context.Context) (map[string]time.Time, error)
	// CaptureToRegistry captures and publishes in one pass: what CRIU dumped
	// streams into the registry.
	CaptureToRegistry(ctx context.Context, target driver.Target, req driver.CaptureRequest, reg *ociregistry.Registry) (driver.CaptureResult, driver.Published, error)
	DeleteImages(ctx context.Context, names []string) error
	Ping(ctx context.Context) error
}

// Config is a node agent's.
type Config struct {
	// Node is the node the agent serves; it acts on that node's Pods only.
	Node   string
	Driver NodeDriver
	// Client reads Pods (and reviews tokens) with the agent's own rights.
	Client kubernetes.Interface
	// Registry receives every capture before it is answered (nil: captures
	// stay on the node, as in a one-node cluster).
	Registry *ociregistry.Registry
	// ServerUsers are the identities of the API server: nobody else is served.
	ServerUsers []string
	// ClientCAFile verifies client certificates, the only credential an
	// agent takes: a bearer token, even the server's, is refused (a node's
	// root must not hold a credential the kube-apiserver honours).
	ClientCAFile string
	// MetricsUsers may also read /metrics (a Prometheus' identity).
	MetricsUsers []string
	// Images is the node's store of checkpoints unpacked for the restore
	// runtime (nil: none): a capture pushed to the registry is unpacked
	// into it in the background, a delete removes it.
	Images *nodeimages.Store
	// Prefetch unpacks each capture into Images once it is durable.
	Prefetch bool
	// Keys holds the data keys the server gives (required with Registry):
	// the store decrypts with them.
	Keys *encryption.Ring
}

// Server serves one node's agent.
type Server struct {
	cfg      Config
	authn    authenticator.Request
	resolver *kube.PodResolver
}

// New checks the configuration and builds the authenticator.
func New(cfg Config) (*Server, error) {
	if cfg.Node == "" || cfg.Driver == nil || cfg.Client == nil {
		return nil, errors.New("node agent: a node name, a driver and a kube-apiserver client are needed")
	}
	if cfg.Registry != nil && cfg.Keys == nil {
		return nil, errors.New("node agent: a registry needs a key ring: memory leaves the node encrypted only")
	}
	if len(cfg.ServerUsers) == 0 {
		return nil, errors.New("node agent: no server identity to serve (--server-user)")
	}
	if cfg.ClientCAFile == "" {
		return nil, errors.New("node agent: a client CA is needed (--client-ca-file): it serves the server's client certificate only")
	}
	ca, err := dynamiccertificates.NewDynamicCAContentFromFile("client-ca", cfg.ClientCAFile)
	if err != nil {
		return nil, fmt.Errorf("node agent client CA: %w", err)
	}
	// Client certificates only: no TokenReview, so no token is ever honoured.
	ac := authenticatorfactory.DelegatingAuthenticatorConfig{ClientCertificateCAContentProvider: ca}
	authn, _, err := ac.New()
	if err != nil {
		return nil, err
	}
	registerMetrics()
	return &Server{cfg: cfg, authn: authn, resolver: &kube.PodResolver{Client: cfg.Client, Runtime: "containerd"}}, nil
}

// Handler is the agent's HTTP API, every path but /healthz authenticated
// and limited to the server's identities.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathHealthz, func(w http.ResponseWriter, r *http.Request) {
		if err := s.cfg.Driver.Ping(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.Handle("POST "+PathCapture, s.serve(s.capture))
	mux.Handle("POST "+PathDelete, s.serve(s.delete))
	mux.Handle("POST "+PathTerminate, s.serve(func(ctx context.Context, r *http.Request) (any, error) { return s.stop(ctx, r, true) }))
	mux.Handle("POST "+PathStop, s.serve(func(ctx context.Context, r *http.Request) (any, error) { return s.stop(ctx, r, false) }))
	mux.Handle("POST "+PathStates, s.serve(s.states))
	mux.Handle("POST "+PathPrefetch, s.serve(s.prefetchForRestore))
	mux.Handle("POST "+PathKey, s.serve(s.key))
	mux.Handle("GET "+PathMetrics, s.authorized(append(append([]string(nil), s.cfg.ServerUsers...), s.cfg.MetricsUsers...), legacyregistry.Handler()))
	return mux
}

// authorized serves h to the authenticated users named, and refuses
// everyone else: 401 without credentials, 403 with another identity.
func (s *Server) authorized(users []string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logger := klog.FromContext(r.Context()).WithValues("path", r.URL.Path, "remote", r.RemoteAddr)
		if r.Header.Get("Authorization") != "" {
			logger.Info("Refused a request with a bearer token")
			requests.WithLabelValues(r.URL.Path, code(http.StatusUnauthorized)).Inc()
			writeError(w, http.StatusUnauthorized, ErrorResponse{Kind: kindUnauthorized,
				Message: "bearer tokens are refused: the node agent takes the server's client certificate only"})
			return
		}
		resp, ok, err := s.authn.AuthenticateRequest(r)
		if err != nil || !ok {
			logger.Info("Refused an unauthenticated request", "err", err)
			requests.WithLabelValues(r.URL.Path, code(http.StatusUnauthorized)).Inc()
			writeError(w, http.StatusUnauthorized, ErrorResponse{Kind: kindUnauthorized, Message: "authentication required: the server's client certificate"})
			return
		}
		user := resp.User.GetName()
		if !slices.Contains(users, user) {
			logger.Info("Refused a request from a user who is not the server", "user", user)
			requests.WithLabelValues(r.URL.Path, code(http.StatusForbidden)).Inc()
			writeError(w, http.StatusForbidden, ErrorResponse{Kind: kindForbidden,
				Message: fmt.Sprintf("user %q may not call the node agent: it serves the checkpoint server only", user)})
			return
		}
		h.ServeHTTP(w, r)
	})
}

type handlerFunc func(ctx context.Context, r *http.Request) (any, error)

// serve authenticates and authorizes the caller, runs h, and writes its
// answer; a panic is an Internal error, never a dropped connection.
func (s *Server) serve(h handlerFunc) http.Handler {
	return s.authorized(s.cfg.ServerUsers, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logger := klog.FromContext(r.Context()).WithValues("path", r.URL.Path, "remote", r.RemoteAddr)
		r.Body = http.MaxBytesReader(w, r.Body, maxRequestBytes)
		out, err := func() (out any, err error) {
			defer func() {
				if p := recover(); p != nil {
					logger.Error(nil, "Panic in the node agent", "panic", p)
					err = fmt.Errorf("internal error: %v", p)
				}
			}()
			return h(r.Context(), r)
		}()
		if err != nil {
			code := http.StatusInternalServerError
			kind := kindOf(err)
			var bad badRequest
			switch {
			case errors.As(err, &bad):
				code, kind = http.StatusBadRequest, kindBadRequest
			case kind == kindForbidden:
				code = http.StatusForbidden
			case kind == kindTargetNotFound || kind == kindCheckpointNotFound:
				code = http.StatusNotFound
			case kind == kindUnavailable:
				code = http.StatusServiceUnavailable
			case kind == kindUnsupported:
				code = http.StatusUnprocessableEntity
			}
			logger.Info("Request failed", "kind", kind, "err", err)
			requests.WithLabelValues(r.URL.Path, strconv.Itoa(code)).Inc()
			writeError(w, code, ErrorResponse{Kind: kind, Message: err.Error()})
			return
		}
		requests.WithLabelValues(r.URL.Path, "200").Inc()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	}))
}

type badRequest struct{ error }

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest{fmt.Errorf("request body: %w", err)}
	}
	return nil
}

func writeError(w http.ResponseWriter, code int, e ErrorResponse) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(e)
}

// target reads the Pod from the kube-apiserver and refuses it unless it is
// bound to this node (and is the Pod the server meant).
func (s *Server) target(ctx context.Context, ref PodRef) (driver.Target, error) {
	if ref.Namespace == "" || ref.Name == "" {
		return driver.Target{}, badRequest{errors.New("pod.namespace and pod.name are required")}
	}
	t, err := s.resolver.Resolve(ctx, ref.Namespace, ref.Name)
	if err != nil {
		return driver.Target{}, err
	}
	if t.Node != s.cfg.Node {
		where := t.Node
		if where == "" {
			where = "no node"
		}
		return driver.Target{}, fmt.Errorf("%w: pod %s/%s is bound to %s; this agent acts only on node %s's Pods",
			ErrForbidden, ref.Namespace, ref.Name, where, s.cfg.Node)
	}
	if ref.UID != "" && ref.UID != t.UID {
		return driver.Target{}, fmt.Errorf("%w: pod %s/%s has UID %s, not %s (it was replaced)", driver.ErrTargetNotFound, ref.Namespace, ref.Name, t.UID, ref.UID)
	}
	return t, nil
}

func (s *Server) capture(ctx context.Context, r *http.Request) (any, error) {
	var req CaptureRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if req.ID == "" {
		return nil, badRequest{errors.New("id is required")}
	}
	t, err := s.target(ctx, req.Pod)
	if err != nil {
		return nil, err
	}
	logger := klog.FromContext(ctx).WithValues("pod", req.Pod.Namespace+"/"+req.Pod.Name, "id", req.ID)
	start := time.Now()
	dreq := driver.CaptureRequest{ID: req.ID, Contents: req.Contents, Key: req.Key, Installation: req.Installation}
	if s.cfg.Registry != nil {
		if len(req.Key) != encryption.DEKSize {
			return nil, badRequest{fmt.Errorf("a capture into the registry needs the checkpoint's %d-byte data key: memory leaves the node encrypted only", encryption.DEKSize)}
		}
		// The capturing node's own unpack (prefetch) decrypts with it.
		if err := s.cfg.Keys.Put(t.Namespace, req.ID, req.Key); err != nil {
			return nil, badRequest{err}
		}
		// Durable once in the registry, in one pass from CRIU's dump.
		res, pub, err := s.cfg.Driver.CaptureToRegistry(ctx, t, dreq, s.cfg.Registry)
		captureSeconds.WithLabelValues(result(err)).Observe(time.Since(start).Seconds())
		if err != nil {
			// Not durable, so not a checkpoint: nothing of it stays here.
			s.cleanup(ctx, req.ID)
			return nil, err
		}
		logger.Info("Captured into the registry", "bytes", res.SizeBytes, "paused", res.Pause, "image", pub.Image, "total", time.Since(start))
		s.prefetch(logger, t, res.ID, pub.Digest, !driver.Has(res.Contents, driver.Memory))
		return CaptureResponse{ID: res.ID, SizeBytes: res.SizeBytes, Contents: res.Contents, Pause: res.Pause, Published: &pub}, nil
	}
	res, err := s.cfg.Driver.Capture(ctx, t, dreq)
	captureSeconds.WithLabelValues(result(err)).Observe(time.Since(start).Seconds())
	if err != nil {
		return nil, err
	}
	logger.Info("Captured", "bytes", res.SizeBytes, "paused", res.Pause, "total", time.Since(start))
	return CaptureResponse{ID: res.ID, SizeBytes: res.SizeBytes, Contents: res.Contents, Pause: res.Pause}, nil
}

// prefetch unpacks a checkpoint just pushed into the node's restore
// images, in the background, so a clone on the capturing node starts
// without a pull.
func (s *Server) prefetch(logger klog.Logger, t driver.Target, id, digest string, filesystemOnly bool) {
	if s.cfg.Images == nil || !s.cfg.Prefetch {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		cp := nodeimages.Checkpoint{Namespace: t.Namespace, Name: t.Name, ImageDigest: digest, FilesystemOnly: filesystemOnly}
		for _, c := range t.Containers {
			err := s.cfg.Images.Prefetch(ctx, cp, api.Request{Namespace: t.Namespace, Pod: t.Name, Container: c.Name, CheckpointID: id})
			if err != nil {
				logger.Info("Could not unpack a capture for clones on this node; a clone here fetches it", "container", c.Name, "err", err)
				return
			}
		}
	}()
}

// prefetchForRestore starts putting a checkpoint on the node for a clone
// about to run here, and answers at once: the restore runtime's own
// request joins the fetch in flight. Like the runtime's, it resolves the
// checkpoint in the clone's namespace.
func (s *Server) prefetchForRestore(ctx context.Context, r *http.Request) (any, error) {
	var req PrefetchRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if s.cfg.Images == nil {
		return nil, fmt.Errorf("%w: this agent serves no restore runtime (--restore-socket)", driver.ErrUnsupported)
	}
	reqs := make([]api.Request, 0, len(req.Containers))
	for _, c := range req.Containers {
		one := api.Request{Namespace: req.Namespace, Pod: req.Pod, Container: c, CheckpointID: req.ID}
		if err := one.Validate(); err != nil {
			return nil, badRequest{err}
		}
		reqs = append(reqs, one)
	}
	logger := klog.FromContext(ctx).WithValues("namespace", req.Namespace, "pod", req.Pod, "checkpoint", req.ID)
	go func() {
		pctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		for _, one := range reqs {
			if _, err := s.cfg.Images.Prepare(pctx, one); err != nil {
				logger.Info("Could not put a checkpoint on the node ahead of its clone; the runtime's own request says why", "container", one.Container, "err", err)
				return
			}
		}
		logger.V(2).Info("Checkpoint on the node ahead of its clone")
	}()
	return struct{}{}, nil
}

// cleanup deletes what a capture that cannot be answered left.
func (s *Server) cleanup(ctx context.Context, id string) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := s.cfg.Driver.Delete(dctx, id); err != nil {
		klog.FromContext(ctx).Error(err, "Could not remove a failed capture's state; the sweep will", "id", id)
	}
}

// key keeps a checkpoint's data key for a Pod bound to this node.
func (s *Server) key(ctx context.Context, r *http.Request) (any, error) {
	var req KeyRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if s.cfg.Keys == nil {
		return nil, fmt.Errorf("%w: this agent pushes to no registry, so it holds no keys", driver.ErrUnsupported)
	}
	if !api.ValidCheckpointID(req.CheckpointID) {
		return nil, badRequest{fmt.Errorf("checkpointId %q is not one this server makes", req.CheckpointID)}
	}
	if req.Pod.Namespace == "" || req.Pod.Name == "" || req.Pod.UID == "" {
		return nil, badRequest{errors.New("pod.namespace, pod.name and pod.uid are required")}
	}
	pod, err := s.cfg.Client.CoreV1().Pods(req.Pod.Namespace).Get(ctx, req.Pod.Name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%w: pod %s/%s: %v", driver.ErrTargetNotFound, req.Pod.Namespace, req.Pod.Name, err)
		}
		return nil, fmt.Errorf("%w: read pod %s/%s: %v", driver.ErrUnavailable, req.Pod.Namespace, req.Pod.Name, err)
	}
	if pod.Spec.NodeName != s.cfg.Node || string(pod.UID) != req.Pod.UID {
		return nil, fmt.Errorf("%w: pod %s/%s (UID %s) is not bound to node %s: no key for it here",
			ErrForbidden, req.Pod.Namespace, req.Pod.Name, req.Pod.UID, s.cfg.Node)
	}
	if req.Refusal != "" {
		s.cfg.Keys.Refuse(req.Pod.Namespace, req.CheckpointID, req.Refusal)
		return struct{}{}, nil
	}
	if err := s.cfg.Keys.Put(req.Pod.Namespace, req.CheckpointID, req.Key); err != nil {
		return nil, badRequest{err}
	}
	return struct{}{}, nil
}

func (s *Server) delete(ctx context.Context, r *http.Request) (any, error) {
	var req DeleteRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	if req.ID == "" {
		return nil, badRequest{errors.New("id is required")}
	}
	if s.cfg.Keys != nil {
		s.cfg.Keys.Drop(req.ID)
	}
	if err := s.cfg.Driver.Delete(ctx, req.ID); err != nil {
		return nil, err
	}
	if s.cfg.Images != nil {
		if err := s.cfg.Images.Remove(req.ID); err != nil {
			return nil, err
		}
	}
	if s.cfg.Registry != nil {
		// Only the registry's images of a checkpoint: a request cannot name others.
		var names []string
		for _, n := range req.Images {
			if s.cfg.Registry.OwnsImage(n) {
				names = append(names, n)
			}
		}
		if err := s.cfg.Driver.DeleteImages(ctx, names); err != nil {
			return nil, err
		}
	}
	return struct{}{}, nil
}

func (s *Server) stop(ctx context.Context, r *http.Request, terminate bool) (any, error) {
	var req StopRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	t, err := s.target(ctx, req.Pod)
	if err != nil {
		return nil, err
	}
	if terminate {
		err = s.cfg.Driver.Terminate(ctx, t)
	} else {
		err = s.cfg.Driver.Stop(ctx, t)
	}
	return struct{}{}, err
}

func (s *Server) states(ctx context.Context, _ *http.Request) (any, error) {
	st, err := s.cfg.Driver.States(ctx)
	if err != nil {
		return nil, err
	}
	out := StatesResponse{States: map[string]string{}}
	for id, t := range st {
		out.States[id] = t.UTC().Format(time.RFC3339Nano)
	}
	return out, nil
}

// httpServer is the agent's listener's server. A request's body is at most
// 1 MiB, so a client that takes a minute to send one, or holds a
// connection idle for two, is cut off; answers take as long as a capture.
func (s *Server) httpServer(ctx context.Context, tc *tls.Config) *http.Server {
	return &http.Server{Handler: s.Handler(), TLSConfig: tc, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute,
		IdleTimeout: 2 * time.Minute, BaseContext: func(net.Listener) context.Context { return ctx }}
}

// Serve serves the agent on addr with the certificate getCert gives (a
// file pair's, or this node's own from its CSR) until ctx ends. Clients
// present a certificate, verified against the client CA (one from any
// other CA fails the handshake); only /healthz is served without one.
func (s *Server) Serve(ctx context.Context, addr string, getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)) error {
	pool, err := certutil.NewPool(s.cfg.ClientCAFile)
	if err != nil {
		return fmt.Errorf("node agent client CA: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: getCert, ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := s.httpServer(ctx, tc)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	klog.InfoS("Node agent serving", "node", s.cfg.Node, "address", ln.Addr().String())
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
