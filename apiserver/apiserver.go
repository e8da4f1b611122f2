package apiserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/apiserver/pkg/server/healthz"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	restclient "k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/apiserver/registration"
	"github.com/agents-kruise/checkpoint-apiserver/driver"
	"github.com/agents-kruise/checkpoint-apiserver/e2b"
	"github.com/agents-kruise/checkpoint-apiserver/encryption"
	"github.com/agents-kruise/checkpoint-apiserver/generated/clientset/versioned"
	"github.com/agents-kruise/checkpoint-apiserver/generated/informers/externalversions"
	checkpointstorage "github.com/agents-kruise/checkpoint-apiserver/registry/checkpoint"
	snapshotstorage "github.com/agents-kruise/checkpoint-apiserver/registry/snapshot"
)

// ExtraConfig is what this server adds to the generic configuration.
type ExtraConfig struct {
	// AdminGroups may act on every Checkpoint and set its owner explicitly.
	AdminGroups []string
	// Driver captures and restores; Resolver finds what to capture.
	Driver   driver.Driver
	Resolver driver.Resolver
	// Stopper ends the source of a keepRunning=false capture (nil: the Driver).
	Stopper driver.Stopper
	// Restorer makes clones (nil: the Driver's bare containers).
	Restorer driver.Restorer
	// Sandboxes are what the E2B front's sandbox routes act on.
	Sandboxes e2b.Sandboxes
	// CaptureTimeout bounds a capture whose request names none.
	CaptureTimeout time.Duration
	// NamespaceBytes bounds each namespace's checkpoint bytes (0: none), unless its annotation says otherwise.
	NamespaceBytes int64
	// DeclarativeCaptureDelay is how long a new Checkpoint is left to an
	// imperative capture call before the lifecycle controller captures it.
	DeclarativeCaptureDelay time.Duration
	ReplicaName             string
	OrphanSweepInterval     time.Duration
	// Kube is the server's kube-apiserver client, when sandboxes are Pods.
	Kube kubernetes.Interface
	// PausedSandboxTTL, with Kube, deletes the sandboxes paused through
	// the E2B front longer than it (0: never).
	PausedSandboxTTL time.Duration
	// Hibernations, when set (crd mode), deletes the hibernation
	// Checkpoints that are done; it runs beside the lifecycle controller.
	Hibernations func(ctx context.Context)
	// LeaderElection, when set, runs the lifecycle controller only on the
	// replica that holds the Lease (several replicas share one etcd).
	LeaderElection *LeaderElection
	// CRDMode captures Checkpoint custom resources in the kube-apiserver
	// (through KubeClientConfig) instead of serving agents.kruise.io itself.
	CRDMode          bool
	KubeClientConfig *restclient.Config
	// Recorder records Events in the kube-apiserver (nil without one).
	Recorder record.EventRecorder
	// Authorizer is the server's (delegated) authorizer, asked on behalf of
	// callers before acting for them with the server's rights.
	Authorizer authorizer.Authorizer
	// KEK, when set, wraps each capture's data key, which Keys keeps
	// (captures through the node agents are encrypted).
	KEK  encryption.Wrapper
	Keys *encryption.SecretKeys
	// Webhook serves (and registers) the admission webhooks (addWebhook).
	Webhook *WebhookServing
	// Registration, when set, registers the APIService (never over CRDs).
	Registration *registration.Config
	// E2BBindAddress, when set, serves the E2B front there with E2BKeys.
	E2BBindAddress string
	E2BKeys        *e2b.KeyStore
	// E2BTLSCertFile and E2BTLSKeyFile, when set, serve it over TLS.
	E2BTLSCertFile, E2BTLSKeyFile string
}

// LeaderElection says where the replicas' Lease lives.
type LeaderElection struct {
	Client    kubernetes.Interface
	Namespace string
	Name      string
}

// Config is the whole configuration of the server.
type Config struct {
	GenericConfig *genericapiserver.RecommendedConfig
	ExtraConfig   ExtraConfig
}

type completedConfig struct {
	GenericConfig genericapiserver.CompletedConfig
	ExtraConfig   *ExtraConfig
}

// CompletedConfig is a Config with every default filled in; only it can build a server.
type CompletedConfig struct {
	*completedConfig
}

// Complete fills in the defaults that depend on other settings.
func (cfg *Config) Complete() CompletedConfig {
	return CompletedConfig{&completedConfig{
		GenericConfig: cfg.GenericConfig.Complete(),
		ExtraConfig:   &cfg.ExtraConfig,
	}}
}

// Server is the running checkpoint API server.
type Server struct {
	GenericAPIServer *genericapiserver.GenericAPIServer
}

// New builds the server and installs the agents.kruise.io API group.
func (c CompletedConfig) New() (*Server, error) {
	generic, err := c.GenericConfig.New("checkpoint-apiserver", genericapiserver.NewEmptyDelegate())
	if err != nil {
		return nil, fmt.Errorf("create generic server: %w", err)
	}
	s := &Server{GenericAPIServer: generic}
	opts := checkpointstorage.Options{
		AdminGroups:    c.ExtraConfig.AdminGroups,
		Driver:         c.ExtraConfig.Driver,
		Resolver:       c.ExtraConfig.Resolver,
		Stopper:        c.ExtraConfig.Stopper,
		Restorer:       c.ExtraConfig.Restorer,
		CaptureTimeout: c.ExtraConfig.CaptureTimeout,
		Replica:        c.ExtraConfig.ReplicaName,
		Recorder:       c.ExtraConfig.Recorder,
		KEK:            c.ExtraConfig.KEK,
	}
	if c.ExtraConfig.Keys != nil {
		opts.Keys = c.ExtraConfig.Keys
	}
	opts.BytesLimit = bytesLimit(nil, c.ExtraConfig.NamespaceBytes)
	if c.ExtraConfig.KubeClientConfig != nil {
		kube, err := kubernetes.NewForConfig(c.ExtraConfig.KubeClientConfig)
		if err != nil {
			return nil, err
		}
		opts.BytesLimit = bytesLimit(kube, c.ExtraConfig.NamespaceBytes)
		// Pods and their RBAC are the kube-apiserver's: a Checkpoint's
		// creator and a capture's caller need rights on the Pod.
		opts.Authorizer = c.ExtraConfig.Authorizer
		// The kube-apiserver's quota admission does not see an aggregated
		// API's creates (crd mode's CRs it does).
		if !c.ExtraConfig.CRDMode {
			opts.Quota = quotaLimit(kube)
		}
	}
	if le := c.ExtraConfig.LeaderElection; le != nil {
		// Replicas: each renews a Lease of its own, so the leader tells a
		// capture whose process is gone at once.
		opts.Incarnation = string(uuid.NewUUID())
		leases := newReplicaLeases(le.Client.CoordinationV1(), le.Namespace, c.ExtraConfig.ReplicaName, opts.Incarnation)
		opts.Liveness = leases
		if err := generic.AddPostStartHook("replica-lease", func(hookCtx genericapiserver.PostStartHookContext) error {
			go leases.Run(hookCtx)
			return nil
		}); err != nil {
			return nil, err
		}
	}
	if c.ExtraConfig.CRDMode {
		return s, s.runCRDMode(c.ExtraConfig, opts)
	}

	store, err := checkpointstorage.NewStorage(Scheme, c.GenericConfig.RESTOptionsGetter, opts)
	if err != nil {
		return nil, err
	}
	apiGroupInfo := genericapiserver.NewDefaultAPIGroupInfo(agents.GroupName, Scheme, metav1.ParameterCodec, Codecs)
	apiGroupInfo.VersionedResourcesStorageMap[v1alpha1.SchemeGroupVersion.Version] = map[string]rest.Storage{
		"checkpoints":         store.Checkpoint,
		"checkpoints/status":  store.Status,
		"checkpoints/capture": store.Capture,
		"checkpoints/restore": store.Restore,
		"snapshots":           snapshotstorage.NewREST(store.Checkpoint.Store, c.ExtraConfig.AdminGroups),
	}
	if err := s.GenericAPIServer.InstallAPIGroup(&apiGroupInfo); err != nil {
		return nil, fmt.Errorf("install %s: %w", agents.GroupName, err)
	}
	extra := c.ExtraConfig
	if extra.Registration != nil {
		if err := s.addRegistration(*extra.Registration); err != nil {
			return nil, err
		}
	}
	if err := s.addWebhook(extra); err != nil {
		return nil, err
	}
	if err := s.GenericAPIServer.AddPostStartHook("checkpoint-lifecycle", func(hookCtx genericapiserver.PostStartHookContext) error {
		// Protobuf over loopback: cheaper to decode than JSON, and what it
		// decodes is the informer's copy of every Checkpoint.
		loopback := restclient.CopyConfig(hookCtx.LoopbackClientConfig)
		loopback.ContentType = runtime.ContentTypeProtobuf
		loopback.AcceptContentTypes = runtime.ContentTypeProtobuf
		return startLifecycle(hookCtx, loopback, store.Capturer, extra)
	}); err != nil {
		return nil, err
	}
	if err := s.addE2B(extra, nil); err != nil {
		return nil, err
	}
	return s, nil
}

// addE2B serves the E2B front once serving, when it is configured; crd is
// its backend in crd mode (nil: this server's own Checkpoints).
func (s *Server) addE2B(extra *ExtraConfig, crd *e2b.CRDBackend) error {
	if extra.E2BBindAddress == "" {
		return nil
	}
	return s.GenericAPIServer.AddPostStartHook("e2b-front", func(hookCtx genericapiserver.PostStartHookContext) error {
		return startE2B(hookCtx, extra, crd)
	})
}

// addRegistration registers the APIService once serving, reporting a
// conflict with CRDs on readyz, in the log, as Events and as a metric.
func (s *Server) addRegistration(cfg registration.Config) error {
	reg := registration.New(cfg)
	if err := s.GenericAPIServer.AddReadyzChecks(healthz.NamedCheck("apiservice-registration", reg.Check)); err != nil {
		return err
	}
	return s.GenericAPIServer.AddPostStartHook("apiservice-registration", func(hookCtx genericapiserver.PostStartHookContext) error {
		go reg.Run(hookCtx)
		return nil
	})
}

// startE2B serves the E2B front; it reaches this server through the loopback
// connection, impersonating each API key's user.
func startE2B(hookCtx genericapiserver.PostStartHookContext, extra *ExtraConfig, crd *e2b.CRDBackend) error {
	ln, err := net.Listen("tcp", extra.E2BBindAddress)
	if err != nil {
		return fmt.Errorf("e2b front: %w", err)
	}
	scheme := "http"
	if extra.E2BTLSCertFile != "" {
		cert, err := dynamiccertificates.NewDynamicServingContentFromFiles("e2b-serving", extra.E2BTLSCertFile, extra.E2BTLSKeyFile)
		if err != nil {
			ln.Close()
			return fmt.Errorf("e2b front: %w", err)
		}
		// The apiserver library's own: the TLS configuration follows the files.
		serving := dynamiccertificates.NewDynamicServingCertificateController(&tls.Config{MinVersion: tls.VersionTLS12}, nil, cert, nil, nil)
		cert.AddListener(serving)
		if err := serving.RunOnce(); err != nil {
			ln.Close()
			return fmt.Errorf("e2b front: %w", err)
		}
		go cert.Run(hookCtx, 1)
		go serving.Run(1, hookCtx.Done())
		ln = tls.NewListener(ln, &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: serving.GetConfigForClient})
		scheme = "https"
	}
	front := e2b.New(e2b.Config{
		Keys: extra.E2BKeys, Loopback: hookCtx.LoopbackClientConfig,
		Sandboxes: extra.Sandboxes, CRD: crd,
	})
	// Bodies are at most 1 MiB: a client that takes a minute to send one,
	// or holds a connection idle for two, is cut off.
	srv := &http.Server{Handler: front.Handler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, IdleTimeout: 2 * time.Minute}
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			klog.ErrorS(err, "E2B front stopped")
		}
	}()
	go extra.E2BKeys.Watch(hookCtx, 2*time.Second)
	go func() {
		<-hookCtx.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()
	klog.InfoS("E2B front serving", "address", ln.Addr().String(), "scheme", scheme)
	return nil
}

// runCRDMode is the executor for OpenKruise Agents' Checkpoint CRD: the
// same Capturer, driver and lifecycle controller, on the custom resources
// in the kube-apiserver. This server installs no API group of its own.
func (s *Server) runCRDMode(extra *ExtraConfig, opts checkpointstorage.Options) error {
	if extra.KubeClientConfig == nil {
		return fmt.Errorf("--mode=crd needs a kube-apiserver (--kubeconfig)")
	}
	kube := restclient.CopyConfig(extra.KubeClientConfig)
	kube.ContentType, kube.AcceptContentTypes = runtime.ContentTypeJSON, runtime.ContentTypeJSON // a CRD speaks JSON
	client, err := versioned.NewForConfig(kube)
	if err != nil {
		return err
	}
	capturer, err := checkpointstorage.NewCRDCapturer(checkpointstorage.NewCRDStore(client), opts)
	if err != nil {
		return err
	}
	// The subresources OpenKruise's CRD cannot have, in a group of this
	// server's own (as KubeVirt serves subresources.kubevirt.io).
	crs := checkpointstorage.NewCRDREST(client)
	group := genericapiserver.NewDefaultAPIGroupInfo(SubresourcesGroupVersion.Group, CRDModeScheme, metav1.ParameterCodec, CRDModeCodecs)
	group.VersionedResourcesStorageMap[SubresourcesGroupVersion.Version] = map[string]rest.Storage{
		"checkpoints":         crs,
		"checkpoints/capture": capturer.CaptureREST(),
		"checkpoints/restore": capturer.RestoreREST(extra.AdminGroups),
		"snapshots":           snapshotstorage.NewREST(crs, extra.AdminGroups),
	}
	if err := s.GenericAPIServer.InstallAPIGroup(&group); err != nil {
		return fmt.Errorf("install %s: %w", SubresourcesGroupVersion.Group, err)
	}
	if extra.Registration != nil {
		if err := s.addRegistration(*extra.Registration); err != nil {
			return err
		}
	}
	pods, err := kubernetes.NewForConfig(kube)
	if err != nil {
		return err
	}
	templates, err := dynamic.NewForConfig(kube)
	if err != nil {
		return err
	}
	if err := s.addE2B(extra, &e2b.CRDBackend{Kube: client, Authorizer: extra.Authorizer, Pods: pods, Templates: templates}); err != nil {
		return err
	}
	if err := s.addWebhook(extra); err != nil {
		return err
	}
	return s.GenericAPIServer.AddPostStartHook("checkpoint-lifecycle", func(hookCtx genericapiserver.PostStartHookContext) error {
		klog.InfoS("Capturing the Checkpoint custom resources of the kube-apiserver (--mode=crd)")
		return startLifecycle(hookCtx, kube, capturer, extra)
	})
}

// startLifecycle runs the lifecycle controller over an informer that reads
// Checkpoints through clientConfig (this server's loopback, or in crd mode
// the kube-apiserver), on the leader only when leader election is configured.
func startLifecycle(hookCtx genericapiserver.PostStartHookContext, clientConfig *restclient.Config, capturer *checkpointstorage.Capturer, extra *ExtraConfig) error {
	client, err := versioned.NewForConfig(clientConfig)
	if err != nil {
		return fmt.Errorf("lifecycle client: %w", err)
	}
	run := func(ctx context.Context) {
		factory := externalversions.NewSharedInformerFactoryWithOptions(client, 10*time.Minute,
			externalversions.WithTransform(checkpointstorage.TrimForLifecycle))
		lifecycle, err := capturer.NewLifecycle(factory.Agents().V1alpha1().Checkpoints(), extra.DeclarativeCaptureDelay, extra.OrphanSweepInterval)
		if err != nil {
			klog.ErrorS(err, "Cannot start the checkpoint lifecycle controller")
			return
		}
		factory.Start(ctx.Done())
		if extra.Hibernations != nil {
			go extra.Hibernations(ctx)
		}
		if extra.PausedSandboxTTL > 0 && extra.Kube != nil {
			if dyn, err := dynamic.NewForConfig(clientConfig); err != nil {
				klog.ErrorS(err, "Cannot start the retention of paused sandboxes")
			} else {
				retention := e2b.PausedRetention{Checkpoints: dyn, Pods: extra.Kube, TTL: extra.PausedSandboxTTL}
				go retention.Run(ctx, min(max(extra.PausedSandboxTTL/4, time.Second), 30*time.Second))
			}
		}
		lifecycle.Run(ctx, 4)
	}
	le := extra.LeaderElection
	if le == nil {
		go run(hookCtx)
		return nil
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: le.Namespace, Name: le.Name},
		Client:     le.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: extra.ReplicaName + "_" + string(uuid.NewUUID())},
	}
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		ReleaseOnCancel: true,
		LeaseDuration:   15 * time.Second,
		RenewDeadline:   10 * time.Second,
		RetryPeriod:     2 * time.Second,
		Name:            le.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				klog.InfoS("Leading the checkpoint lifecycle controller", "identity", lock.Identity())
				run(ctx)
			},
			OnStoppedLeading: func() {
				klog.InfoS("No longer the leader of the checkpoint lifecycle controller", "identity", lock.Identity())
			},
		},
	})
	if err != nil {
		return fmt.Errorf("leader election: %w", err)
	}
	go func() {
		// Run returns when leadership is lost; stand again until the server stops.
		for hookCtx.Err() == nil {
			elector.Run(hookCtx)
		}
	}()
	return nil
}

// addWebhook serves (and registers) the admission webhooks, when
// configured: the Pods marked for restore in both modes, the Checkpoint
// custom resources in crd mode.
func (s *Server) addWebhook(extra *ExtraConfig) error {
	if extra.Webhook == nil {
		return nil
	}
	wh := *extra.Webhook
	return s.GenericAPIServer.AddPostStartHook("checkpoint-webhook", func(hookCtx genericapiserver.PostStartHookContext) error {
		return wh.start(hookCtx)
	})
}

// bytesLimit is a namespace's bound on its checkpoint bytes: its
// annotation agents.AnnotationBytesLimit (when kube is set), else def.
func bytesLimit(kube kubernetes.Interface, def int64) checkpointstorage.BytesLimit {
	return func(ctx context.Context, ns string) (int64, string, error) {
		if kube != nil {
			n, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if err != nil {
				return 0, "", err
			}
			if v, ok := n.Annotations[agents.AnnotationBytesLimit]; ok {
				q, err := resource.ParseQuantity(v)
				if err != nil {
					return 0, "", fmt.Errorf("namespace %s's annotation %s=%q is not a quantity", ns, agents.AnnotationBytesLimit, v)
				}
				return q.Value(), "the namespace's annotation " + agents.AnnotationBytesLimit, nil
			}
		}
		return def, "--namespace-checkpoint-bytes", nil
	}
}

// quotaLimit reads a namespace's ResourceQuotas for their tightest hard
// limit on the count of Checkpoints.
func quotaLimit(kube kubernetes.Interface) checkpointstorage.QuotaLimit {
	return func(ctx context.Context, ns string) (int64, string, bool, error) {
		quotas, err := kube.CoreV1().ResourceQuotas(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return 0, "", false, err
		}
		var limit int64
		name, found := "", false
		for _, q := range quotas.Items {
			hard, ok := q.Spec.Hard[corev1.ResourceName(checkpointstorage.QuotaResource)]
			if ok && (!found || hard.Value() < limit) {
				limit, name, found = hard.Value(), q.Name, true
			}
		}
		return limit, name, found, nil
	}
}
