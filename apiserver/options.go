package apiserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spf13/pflag"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilerrors "k8s.io/apimachinery/pkg/util/errors"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/wait"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	genericoptions "k8s.io/apiserver/pkg/server/options"
	utilfeature "k8s.io/apiserver/pkg/util/feature"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	basecompatibility "k8s.io/component-base/compatibility"
	baseversion "k8s.io/component-base/version"
	"k8s.io/klog/v2"
	netutils "k8s.io/utils/net"

	"github.com/agents-kruise/checkpoint-apiserver/agent"
	"github.com/agents-kruise/checkpoint-apiserver/agentcert"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/apiserver/registration"
	containerddriver "github.com/agents-kruise/checkpoint-apiserver/driver/containerd"
	kuberesolver "github.com/agents-kruise/checkpoint-apiserver/driver/kube"
	"github.com/agents-kruise/checkpoint-apiserver/e2b"
	"github.com/agents-kruise/checkpoint-apiserver/encryption"
	"github.com/agents-kruise/checkpoint-apiserver/generated/openapi"
	"github.com/agents-kruise/checkpoint-apiserver/nodeimages"
	"github.com/agents-kruise/checkpoint-apiserver/ociregistry"
	"github.com/agents-kruise/checkpoint-apiserver/restorekeys"
	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
	"github.com/agents-kruise/checkpoint-apiserver/storage"
	"github.com/agents-kruise/checkpoint-apiserver/webhook"
)

const etcdPathPrefix = "/registry/agents.kruise.io"

// Options are the server's settings, filled from flags.
type Options struct {
	RecommendedOptions *genericoptions.RecommendedOptions

	// Standalone serves without a kube-apiserver (see standalone.go).
	Standalone bool
	// DataDir holds the embedded etcd's data, the standalone PKI and kubeconfig.
	DataDir string
	// AdminGroups may act on every Checkpoint and set its owner explicitly.
	AdminGroups []string
	// OwnerStampers may name another owner when they create a Checkpoint (crd mode).
	OwnerStampers []string

	// Driver names the checkpoint driver; only "containerd" exists so far.
	Driver              string
	ContainerdAddress   string
	ContainerdNamespace string
	// NodeName is the node whose containerd the driver speaks to; clones
	// restored from its checkpoints are bound to it.
	NodeName string
	// Resolver says how targets are found: "pod" (the Pod's container
	// statuses, through the kube-apiserver), "labels" (containerd's CRI
	// labels) or "auto" (pod when a kube-apiserver is configured).
	Resolver       string
	CaptureTimeout time.Duration
	// NamespaceCheckpointBytes bounds each namespace's checkpoint bytes
	// ("" or 0: no bound), unless its annotation says otherwise.
	NamespaceCheckpointBytes string
	DeclarativeCaptureDelay  time.Duration
	// ReplicaName tells this replica's captures from another's; OrphanSweepInterval
	// is how often driver state no Checkpoint owns is deleted.
	ReplicaName         string
	OrphanSweepInterval time.Duration
	// Mode is "aggregated" (this server owns agents.kruise.io/v1alpha1,
	// stored in its etcd) or "crd" (it captures OpenKruise Agents'
	// Checkpoint custom resources in the kube-apiserver).
	Mode string
	// WebhookPort serves the admission webhook of crd mode (0: off), with
	// the serving certificate; WebhookService (namespace/name) and
	// WebhookCAFile, when set, register it.
	WebhookPort    int
	WebhookService string
	WebhookCAFile  string
	// APIServiceService (namespace/name) and APIServicePort are where the
	// aggregator reaches this server; when set, the server registers its
	// own APIService, with the CA bundle in APIServiceCAFile, unless CRDs
	// serve its group-version.
	APIServiceService string
	APIServicePort    int32
	APIServiceCAFile  string
	// LeaderElect runs the lifecycle controller on one replica only, by a
	// Lease in LeaderElectNamespace (needs a kube-apiserver).
	LeaderElect          bool
	LeaderElectNamespace string
	// E2BBindAddress turns on the E2B front there; E2BKeysFile lists its API keys.
	E2BBindAddress string
	E2BKeysFile    string
	// E2BPausedTTL deletes a sandbox paused through the E2B front once it
	// has been paused this long (0: kept until killed).
	E2BPausedTTL time.Duration
	// E2BTLSCertFile and E2BTLSKeyFile, when set, serve the E2B front over TLS.
	E2BTLSCertFile string
	E2BTLSKeyFile  string

	// NodeAgents hands captures, stops and deletes to the node agent on
	// the Pod's node (at its InternalIP, AgentPort, TLS verified with
	// AgentCAFile), authenticated by the client certificate pair or, without
	// one, the server's own bearer token. It needs a CheckpointRegistry.
	NodeAgents                              bool
	AgentPort                               int
	AgentCAFile                             string
	AgentServerName                         string
	AgentClientCertFile, AgentClientKeyFile string
	// AgentSignerCertFile and AgentSignerKeyFile are the CA this server
	// signs node agents' own serving certificates with (their CSRs, signer
	// agentcert.SignerName), for the service accounts AgentUsers only.
	AgentSignerCertFile, AgentSignerKeyFile string
	AgentUsers                              []string
	// CheckpointRegistry receives every capture (through the agents); the
	// agent of a clone's node fetches the checkpoint from it by digest.
	CheckpointRegistry ociregistry.Config
	// EncryptionKeyFile holds the key-encryption keys (encryption.KeyFile)
	// that wrap each checkpoint's data key: required with node agents, so
	// memory leaves a node encrypted only.
	EncryptionKeyFile string
	// EncryptionKMSEndpoint is a KMS v2 plugin's socket (unix:///path): the
	// plugin wraps the data keys, and the key file, if any, only unwraps.
	EncryptionKMSEndpoint string
	EncryptionKMSName     string
	EncryptionKMSTimeout  time.Duration
	// InstallationID names this installation on the checkpoints it pushes,
	// so that its registry sweep leaves another's alone ("": the cluster's
	// kube-system namespace UID and KeyNamespace).
	InstallationID string
	// KeyNamespace is the server's own namespace, where each checkpoint's
	// wrapped data key is kept in a Secret no tenant reads.
	KeyNamespace string
	// RestoreRuntimeClass is the RuntimeClass of clone Pods: the nodes'
	// restore runtime (containerd-shim-checkpoint-v1).
	RestoreRuntimeClass string
	// SandboxControllers create OpenKruise Sandboxes' Pods; in crd mode the
	// Pod of a clone Sandbox (restore-from) is restored when they create it.
	SandboxControllers []string
	// SandboxAdminOwners are Sandbox owners (the admin team's API keys)
	// whose clones may restore any Checkpoint of their namespace.
	SandboxAdminOwners []string
	// CheckpointIDAnnotationKey is OpenKruise's sandbox controller's
	// --checkpoint-id-annotation-key: the Pod annotation naming the
	// filesystem Checkpoint a CheckpointRestore upgrade restores.
	CheckpointIDAnnotationKey string
	// RestoreSocket and RestoreImagesDir: where the server, capturing
	// through its node's containerd itself (no node agents), serves that
	// node's restore runtime, as a node agent does.
	RestoreSocket, RestoreImagesDir string

	// Out receives the "ready" message with the kubeconfig's path.
	Out io.Writer
}

func defaultReplicaName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		return "checkpoint-apiserver"
	}
	return strings.ReplaceAll(host, "/", "-")
}

// storageCodec writes v1alpha1 protobuf to etcd (smaller than JSON and
// cheaper to decode in the watch cache) and reads JSON or protobuf.
// (RecommendedOptions' simple storage factory encodes with the codec it is
// given, whatever --storage-media-type says.)
func storageCodec() runtime.Codec {
	info, ok := runtime.SerializerInfoForMediaType(Codecs.SupportedMediaTypes(), runtime.ContentTypeProtobuf)
	if !ok {
		panic("no protobuf serializer in the scheme")
	}
	return Codecs.CodecForVersions(info.Serializer, Codecs.UniversalDeserializer(),
		schema.GroupVersions{v1alpha1.SchemeGroupVersion}, runtime.InternalGroupVersioner)
}

// NewOptions returns the defaults: delegated authentication and
// authorization against a kube-apiserver, etcd given by flags, objects
// stored as protobuf.
func NewOptions(out io.Writer) *Options {
	ro := genericoptions.NewRecommendedOptions(etcdPathPrefix, storageCodec())
	ro.Etcd.StorageConfig.EncodeVersioner = runtime.NewMultiGroupVersioner(v1alpha1.SchemeGroupVersion,
		schema.GroupKind{Group: v1alpha1.GroupName})
	// Only a storage factory reads this; the codec above is what really encodes.
	ro.Etcd.DefaultStorageMediaType = runtime.ContentTypeProtobuf
	return &Options{
		RecommendedOptions:      ro,
		DataDir:                 "checkpoint-apiserver-data",
		AdminGroups:             []string{"system:masters", e2b.AdminGroup},
		Driver:                  "containerd",
		ContainerdAddress:       "/run/containerd/containerd.sock",
		NodeName:                os.Getenv("NODE_NAME"),
		APIServicePort:          443,
		Mode:                    ModeAggregated,
		ContainerdNamespace:     "k8s.io",
		Resolver:                "auto",
		CaptureTimeout:          50 * time.Second,
		EncryptionKMSName:       "kms",
		EncryptionKMSTimeout:    10 * time.Second,
		DeclarativeCaptureDelay: 2 * time.Second,
		ReplicaName:             defaultReplicaName(),
		OrphanSweepInterval:     5 * time.Minute,
		AgentPort:               10370,
		RestoreRuntimeClass:     "checkpoint",
		SandboxControllers:      []string{"system:serviceaccount:sandbox-system:sandbox-controller-manager"},
		LeaderElect:             true,
		LeaderElectNamespace:    "checkpoint-system",
		KeyNamespace:            "checkpoint-system",
		AgentUsers:              []string{"system:serviceaccount:checkpoint-system:checkpoint-node-agent"},
		Out:                     out,
	}
}

// AddFlags registers every option on fs.
func (o *Options) AddFlags(fs *pflag.FlagSet) {
	o.RecommendedOptions.AddFlags(fs)
	utilfeature.DefaultMutableFeatureGate.AddFlag(fs)
	fs.BoolVar(&o.Standalone, "standalone", o.Standalone,
		"Serve without a kube-apiserver: embedded etcd (unless --etcd-servers is set), self-signed serving certificate, "+
			"client-certificate authentication from its own CA, the admin groups allowed and everyone else denied. "+
			"Writes an admin kubeconfig under --data-dir.")
	fs.StringVar(&o.DataDir, "data-dir", o.DataDir,
		"Directory for the embedded etcd's data and, in standalone mode, the certificates and kubeconfig.")
	fs.StringSliceVar(&o.OwnerStampers, "owner-stampers", o.OwnerStampers,
		"crd mode: users who may name another owner (agents.kruise.io/owner) when they create a Checkpoint, such as OpenKruise's "+
			"sandbox-manager, which stamps its API keys' IDs. Everyone else, but --admin-groups, owns what they create.")
	fs.StringSliceVar(&o.AdminGroups, "admin-groups", o.AdminGroups,
		"Groups whose members may act on every Checkpoint and set its owner annotation explicitly.")
	fs.StringVar(&o.Driver, "driver", o.Driver, "Checkpoint driver: containerd.")
	fs.StringVar(&o.ContainerdAddress, "containerd-address", o.ContainerdAddress, "containerd's gRPC socket.")
	fs.BoolVar(&o.NodeAgents, "node-agents", o.NodeAgents,
		"Capture through the node agent (checkpoint-node-agent) of each Pod's node instead of a local containerd; needs --checkpoint-registry.")
	fs.IntVar(&o.AgentPort, "agent-port", o.AgentPort, "Port the node agents serve on, at their node's InternalIP.")
	fs.StringVar(&o.AgentCAFile, "agent-ca-file", o.AgentCAFile, "CA of the node agents' serving certificates (default: --agent-signer-cert-file).")
	fs.StringVar(&o.AgentServerName, "agent-server-name", o.AgentServerName,
		"One name every node agent's serving certificate is checked for (empty: each agent's own node name, so one node's agent cannot pose as another's).")
	fs.StringVar(&o.AgentClientCertFile, "agent-client-cert-file", o.AgentClientCertFile,
		"Client certificate the server presents to node agents (required with --node-agents: agents take no token).")
	fs.StringVar(&o.AgentClientKeyFile, "agent-client-key-file", o.AgentClientKeyFile, "Key of --agent-client-cert-file.")
	fs.StringVar(&o.AgentSignerCertFile, "agent-signer-cert-file", o.AgentSignerCertFile,
		"CA certificate with which this server signs each node agent's serving certificate for its own node (CSRs of signer "+
			agentcert.SignerName+" from --agent-user Pods, for the node the Pod runs on); it is also --agent-ca-file's default, and "+
			"--agent-server-name stays empty so that each agent is checked for its node's name.")
	fs.StringVar(&o.AgentSignerKeyFile, "agent-signer-key-file", o.AgentSignerKeyFile, "Key of --agent-signer-cert-file.")
	fs.StringSliceVar(&o.AgentUsers, "agent-user", o.AgentUsers, "The node agents' service-account users, the only ones whose CSRs are signed.")
	fs.StringVar(&o.CheckpointRegistry.Repository, "checkpoint-registry", o.CheckpointRegistry.Repository,
		"host[:port]/prefix of the OCI registry that holds checkpoints, so that clones start on any node: each namespace's go to the repository prefix/<namespace>.")
	fs.StringVar(&o.CheckpointRegistry.CAFile, "checkpoint-registry-ca-file", o.CheckpointRegistry.CAFile,
		"CA of the checkpoint registry's serving certificate (empty: the system's roots). TLS is always verified.")
	fs.StringVar(&o.CheckpointRegistry.AuthFile, "checkpoint-registry-auth-file", o.CheckpointRegistry.AuthFile,
		"Docker config.json with the registry's credentials (the .dockerconfigjson of a kubernetes.io/dockerconfigjson Secret).")
	fs.StringVar(&o.EncryptionKeyFile, "encryption-key-file", o.EncryptionKeyFile,
		"Key-encryption keys (YAML: keys: [{name, secret: base64 of 32 bytes}], the first wraps, all unwrap) that wrap each checkpoint's "+
			"own data key; checkpoints leave the nodes encrypted with it. Required with --node-agents. Mount it from a Secret.")
	fs.StringVar(&o.EncryptionKMSEndpoint, "encryption-kms-endpoint", o.EncryptionKMSEndpoint,
		"A KMS v2 plugin's gRPC socket (unix:///path, the plugins the kube-apiserver's KMS v2 encryption uses): it wraps each "+
			"checkpoint's data key, and its key-encryption key never leaves the KMS. With --encryption-key-file as well, that file's keys "+
			"only unwrap (moving to a KMS); either is required with --node-agents.")
	fs.StringVar(&o.EncryptionKMSName, "encryption-kms-name", o.EncryptionKMSName, "The KMS plugin's name, recorded with each key it wraps.")
	fs.DurationVar(&o.EncryptionKMSTimeout, "encryption-kms-timeout", o.EncryptionKMSTimeout, "How long a call waits for the KMS plugin.")
	fs.StringVar(&o.InstallationID, "installation-id", o.InstallationID,
		"Names this installation on every checkpoint it pushes; its registry sweep deletes only its own installation's "+
			"(empty: <the kube-system namespace's UID>/<--key-namespace>). Replicas of one installation share it.")
	fs.StringVar(&o.KeyNamespace, "key-namespace", o.KeyNamespace,
		"The server's own namespace, where each checkpoint's wrapped data key is kept in a Secret (deleted with its Checkpoint). No tenant may read Secrets there.")
	fs.StringVar(&o.RestoreRuntimeClass, "restore-runtime-class", o.RestoreRuntimeClass,
		"RuntimeClass of clone Pods: the nodes' restore runtime, which restores a Pod annotated agents.kruise.io/restore-from.")
	fs.StringSliceVar(&o.SandboxControllers, "sandbox-controllers", o.SandboxControllers,
		"crd mode: the users that create OpenKruise Sandboxes' Pods (its sandbox controller's service account). The Pod of a Sandbox annotated "+
			"agents.kruise.io/restore-from is restored from that checkpoint when one of them creates it; anyone else's is refused.")
	fs.StringSliceVar(&o.SandboxAdminOwners, "sandbox-admin-owners", o.SandboxAdminOwners,
		"crd mode: Sandbox owners (agents.kruise.io/owner: the admin team's API key IDs) whose clones may restore any Checkpoint of their namespace; "+
			"any other Sandbox only a Checkpoint of its own owner.")
	fs.StringVar(&o.CheckpointIDAnnotationKey, "checkpoint-id-annotation-key", o.CheckpointIDAnnotationKey,
		"crd mode: the key OpenKruise's sandbox controller is given as its --checkpoint-id-annotation-key. A Pod of a Sandbox carrying it, "+
			"created by a --sandbox-controllers user, gets its writable layers back from that filesystem Checkpoint of the same Sandbox "+
			"(OpenKruise's CheckpointRestore upgrade). Empty: not restored.")
	fs.StringVar(&o.RestoreSocket, "restore-socket", o.RestoreSocket,
		"Without node agents, with a kube-apiserver: the node-local socket where this server puts its node's checkpoints for the restore runtime (empty: none).")
	fs.StringVar(&o.RestoreImagesDir, "restore-images-dir", o.RestoreImagesDir,
		"Where --restore-socket unpacks checkpoints for the restore runtime (default <data-dir>/restore-images).")
	fs.StringVar(&o.NodeName, "node-name", o.NodeName,
		"Name of the Kubernetes node whose containerd --containerd-address is (default $NODE_NAME); Pods restored from its checkpoints are bound to it.")
	fs.StringVar(&o.ContainerdNamespace, "containerd-namespace", o.ContainerdNamespace,
		"containerd namespace of the pod containers (k8s.io on a Kubernetes node).")
	fs.StringVar(&o.Resolver, "resolver", o.Resolver,
		"How a Checkpoint's target is found: pod (the Pod's container statuses, through the kube-apiserver), "+
			"labels (containerd's CRI labels), or auto (pod when --kubeconfig is set, else labels).")
	fs.StringVar(&o.NamespaceCheckpointBytes, "namespace-checkpoint-bytes", o.NamespaceCheckpointBytes,
		"Bound on the bytes each namespace's Succeeded Checkpoints hold together (a quantity: 20Gi; empty or 0: none). "+
			"A Namespace's annotation "+agents.AnnotationBytesLimit+" overrides it. A capture that would pass it ends Failed, QuotaExceeded.")
	fs.DurationVar(&o.CaptureTimeout, "capture-timeout", o.CaptureTimeout,
		"Default bound of a capture; at most 55s, under the aggregator's 60s request limit.")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect,
		"With a kube-apiserver, run the lifecycle controller (declarative capture, TTL, finalizer) on the replica holding a Lease only. Standalone mode never elects.")
	fs.StringVar(&o.LeaderElectNamespace, "leader-elect-namespace", o.LeaderElectNamespace, "Namespace of the leader-election Lease.")
	fs.StringVar(&o.Mode, "mode", o.Mode,
		"aggregated: serve agents.kruise.io/v1alpha1 from this server's etcd behind an APIService. "+
			"crd: capture the Checkpoint custom resources of OpenKruise Agents' CRD in the kube-apiserver (no etcd, no APIService).")
	fs.IntVar(&o.WebhookPort, "webhook-port", o.WebhookPort,
		"Serve the admission webhooks on this port (TLS, the serving certificate). 0: off. With a kube-apiserver: the review of Pods "+
			"marked agents.kruise.io/restore-from (admitted only when their creator may restore that Checkpoint); in --mode=crd also "+
			"the validating and defaulting webhook for Checkpoint custom resources.")
	fs.StringVar(&o.WebhookService, "webhook-service", o.WebhookService,
		"namespace/name of the Service in front of --webhook-port. When set, the server registers and keeps current its "+
			"ValidatingWebhookConfiguration (marked Pods; in crd mode Checkpoints, with a MutatingWebhookConfiguration), failurePolicy Fail, with --webhook-ca-file as caBundle.")
	fs.StringVar(&o.WebhookCAFile, "webhook-ca-file", o.WebhookCAFile, "PEM CA bundle that signed the serving certificate, for the webhooks' caBundle.")
	fs.StringVar(&o.APIServiceService, "apiservice-service", o.APIServiceService,
		"namespace/name of the Service in front of this server. When set (with a kube-apiserver), the server registers and keeps current "+
			"its APIService v1alpha1.agents.kruise.io, unless CRDs serve agents.kruise.io/v1alpha1: then it does not register, and says so. "+
			"In --mode=crd it registers v1alpha1.subresources.agents.kruise.io instead (capture, restore, snapshots).")
	fs.Int32Var(&o.APIServicePort, "apiservice-port", o.APIServicePort, "Port of the Service named by --apiservice-service.")
	fs.StringVar(&o.APIServiceCAFile, "apiservice-ca-file", o.APIServiceCAFile,
		"PEM CA bundle that signed the serving certificate: the APIService's caBundle (read again as it changes).")
	fs.StringVar(&o.E2BBindAddress, "e2b-bind-address", o.E2BBindAddress,
		"Serve the E2B-compatible API (plain HTTP) at this address, such as 127.0.0.1:3000. Off when empty.")
	fs.StringVar(&o.E2BTLSCertFile, "e2b-tls-cert-file", o.E2BTLSCertFile,
		"Serve the E2B API over TLS with this certificate (and --e2b-tls-private-key-file); reloaded on change. Plain HTTP when empty.")
	fs.StringVar(&o.E2BTLSKeyFile, "e2b-tls-private-key-file", o.E2BTLSKeyFile, "Private key of --e2b-tls-cert-file.")
	fs.StringVar(&o.E2BKeysFile, "e2b-api-keys-file", o.E2BKeysFile,
		"YAML or JSON file of E2B API keys: keys: [{key: e2b_<40 hex> | sha256: <hex>, user: ..., team: <namespace>}]. "+
			"Reloaded on change. In standalone mode a file with one key is written under --data-dir when none is given.")
	fs.DurationVar(&o.E2BPausedTTL, "e2b-paused-sandbox-ttl", o.E2BPausedTTL,
		"Delete a sandbox paused through the E2B front (its pause Checkpoint) once it has been paused this long, as E2B's retention of "+
			"paused sandboxes does. A resumed sandbox's pause is kept while it runs. 0 keeps paused sandboxes until they are killed.")
	fs.StringVar(&o.ReplicaName, "replica-name", o.ReplicaName,
		"Name of this replica among those sharing one etcd, stable across its restarts (the pod name; default the host name). "+
			"A restarted replica fails the captures its previous run left Creating at once; another replica's only after they must have ended.")
	fs.DurationVar(&o.OrphanSweepInterval, "orphan-sweep-interval", o.OrphanSweepInterval,
		"How often the lifecycle controller deletes checkpoint state in the driver that no live Checkpoint owns "+
			"(left by a capture that died half way, or by a failed one), once it is at least this old. 0 turns the sweep off.")
	fs.DurationVar(&o.DeclarativeCaptureDelay, "declarative-capture-delay", o.DeclarativeCaptureDelay,
		"How long a new Pending Checkpoint is left to an imperative capture call before the server captures it itself.")
}

// Validate checks the options before anything starts.
func (o *Options) Validate() error {
	var errs []error
	if len(o.AdminGroups) == 0 {
		errs = append(errs, errors.New("--admin-groups must name at least one group"))
	}
	if o.Standalone && o.DataDir == "" {
		errs = append(errs, errors.New("--standalone needs --data-dir"))
	}
	if o.Driver != "containerd" {
		errs = append(errs, fmt.Errorf("--driver=%q: only containerd is supported", o.Driver))
	}
	if o.Resolver != "auto" && o.Resolver != "pod" && o.Resolver != "labels" {
		errs = append(errs, fmt.Errorf("--resolver=%q: must be auto, pod or labels", o.Resolver))
	}
	if o.ReplicaName == "" || strings.Contains(o.ReplicaName, "/") {
		errs = append(errs, fmt.Errorf("--replica-name=%q: must be set and must not contain '/'", o.ReplicaName))
	}
	if o.NodeAgents && o.CheckpointRegistry.Repository == "" {
		errs = append(errs, errors.New("--node-agents needs --checkpoint-registry: a checkpoint must outlive the node it was taken on"))
	}
	if o.NodeAgents && (o.AgentClientCertFile == "" || o.AgentClientKeyFile == "") {
		errs = append(errs, errors.New("--node-agents needs --agent-client-cert-file and --agent-client-key-file: agents take the server's client certificate only"))
	}
	if o.NodeAgents && o.EncryptionKeyFile == "" && o.EncryptionKMSEndpoint == "" {
		errs = append(errs, errors.New("--node-agents needs --encryption-key-file or --encryption-kms-endpoint: a checkpoint is a memory dump, and it leaves the node encrypted only"))
	}
	if o.EncryptionKMSEndpoint != "" && !strings.HasPrefix(o.EncryptionKMSEndpoint, "unix://") {
		errs = append(errs, fmt.Errorf("--encryption-kms-endpoint=%s: want unix:///path", o.EncryptionKMSEndpoint))
	}
	if o.EncryptionKMSTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--encryption-kms-timeout=%s: must be positive", o.EncryptionKMSTimeout))
	}
	if o.NodeAgents && o.Standalone {
		errs = append(errs, errors.New("--node-agents needs a cluster: the standalone server captures in process"))
	}
	if (o.AgentSignerCertFile == "") != (o.AgentSignerKeyFile == "") {
		errs = append(errs, errors.New("--agent-signer-cert-file and --agent-signer-key-file go together"))
	}
	if o.AgentSignerCertFile != "" && o.AgentServerName != "" {
		errs = append(errs, errors.New("--agent-signer-cert-file signs each agent for its own node: --agent-server-name (one name for every agent) must stay empty"))
	}
	if o.NodeAgents && o.AgentCAFile == "" && o.AgentSignerCertFile == "" {
		errs = append(errs, errors.New("--node-agents needs --agent-ca-file: agents' certificates are always verified"))
	}
	if (o.E2BTLSCertFile == "") != (o.E2BTLSKeyFile == "") {
		errs = append(errs, errors.New("--e2b-tls-cert-file and --e2b-tls-private-key-file go together"))
	}
	if (o.AgentClientCertFile == "") != (o.AgentClientKeyFile == "") {
		errs = append(errs, errors.New("--agent-client-cert-file and --agent-client-key-file go together"))
	}
	if k := o.CheckpointIDAnnotationKey; k != "" {
		if bad := validation.IsQualifiedName(k); len(bad) > 0 {
			errs = append(errs, fmt.Errorf("--checkpoint-id-annotation-key=%q: %s", k, strings.Join(bad, "; ")))
		} else if k == api.AnnotationRestoreFrom {
			errs = append(errs, fmt.Errorf("--checkpoint-id-annotation-key=%q: that is the clone mark itself, which restores memory", k))
		}
	}
	if o.E2BPausedTTL < 0 {
		errs = append(errs, fmt.Errorf("--e2b-paused-sandbox-ttl=%s: must not be negative", o.E2BPausedTTL))
	}
	if o.OrphanSweepInterval < 0 {
		errs = append(errs, fmt.Errorf("--orphan-sweep-interval=%s: must not be negative", o.OrphanSweepInterval))
	}
	if o.NamespaceCheckpointBytes != "" {
		if q, err := resource.ParseQuantity(o.NamespaceCheckpointBytes); err != nil || q.Sign() < 0 {
			errs = append(errs, fmt.Errorf("--namespace-checkpoint-bytes=%s: not a non-negative quantity", o.NamespaceCheckpointBytes))
		}
	}
	if o.CaptureTimeout <= 0 || o.CaptureTimeout > 55*time.Second {
		errs = append(errs, fmt.Errorf("--capture-timeout=%s: must be in (0, 55s]", o.CaptureTimeout))
	}
	if o.WebhookService != "" && (o.WebhookPort <= 0 || o.WebhookCAFile == "") {
		errs = append(errs, errors.New("--webhook-service needs --webhook-port and --webhook-ca-file"))
	}
	switch o.Mode {
	case ModeAggregated:
		if !o.Standalone && len(o.RecommendedOptions.Etcd.StorageConfig.Transport.ServerList) == 0 {
			errs = append(errs, errors.New("--etcd-servers must be set unless --standalone"))
		}
	case ModeCRD:
		if o.Standalone {
			errs = append(errs, errors.New("--mode=crd works on custom resources in a kube-apiserver: it cannot be --standalone"))
		}
	default:
		errs = append(errs, fmt.Errorf("--mode=%q: must be aggregated or crd", o.Mode))
	}
	return utilerrors.NewAggregate(errs)
}

// Run starts everything the options ask for and serves until ctx ends.
func (o *Options) Run(ctx context.Context) error {
	if err := o.Validate(); err != nil {
		return err
	}
	var sa *standalone
	if o.Standalone {
		if len(o.RecommendedOptions.Etcd.StorageConfig.Transport.ServerList) == 0 {
			etcd, err := storage.StartEmbeddedEtcd(filepath.Join(o.DataDir, "etcd"), time.Minute)
			if err != nil {
				return err
			}
			defer etcd.Stop()
			klog.InfoS("Embedded etcd started", "url", etcd.ClientURL, "dataDir", filepath.Join(o.DataDir, "etcd"))
			o.RecommendedOptions.Etcd.StorageConfig.Transport.ServerList = []string{etcd.ClientURL}
		}
		var err error
		if sa, err = newStandalone(o.DataDir, o.AdminGroups); err != nil {
			return err
		}
		o.useStandalone(sa)
	}
	if o.Mode == ModeCRD {
		o.RecommendedOptions.Etcd = nil // Checkpoints are the kube-apiserver's custom resources
	}
	if errs := o.RecommendedOptions.Validate(); len(errs) > 0 {
		return utilerrors.NewAggregate(errs)
	}

	config, err := o.Config(sa)
	if err != nil {
		return err
	}
	server, err := config.Complete().New()
	if err != nil {
		return err
	}
	host := "https://" + net.JoinHostPort(hostFor(o.RecommendedOptions.SecureServing.BindAddress),
		strconv.Itoa(o.RecommendedOptions.SecureServing.BindPort))
	var kubeconfig string
	if sa != nil {
		if kubeconfig, err = sa.writeKubeconfig(o.DataDir, host); err != nil {
			return err
		}
	}
	server.GenericAPIServer.AddPostStartHookOrDie("announce-ready", func(hookCtx genericapiserver.PostStartHookContext) error {
		go o.announceWhenReady(hookCtx, hookCtx.LoopbackClientConfig, host, kubeconfig)
		return nil
	})
	return server.GenericAPIServer.PrepareRun().RunWithContext(ctx)
}

// useStandalone turns off everything that needs a kube-apiserver, and serves
// with the standalone PKI unless a certificate was given.
func (o *Options) useStandalone(sa *standalone) {
	ro := o.RecommendedOptions
	ro.Authentication = nil
	ro.Authorization = nil
	ro.CoreAPI = nil
	ro.Admission = nil
	ro.Features.EnablePriorityAndFairness = false
	if ro.SecureServing.ServerCert.CertKey.CertFile == "" {
		ro.SecureServing.ServerCert.CertKey.CertFile, ro.SecureServing.ServerCert.CertKey.KeyFile = sa.servingCertFiles()
	}
}

// The server's modes.
const (
	ModeAggregated = "aggregated"
	ModeCRD        = "crd"
)

// Config builds the server configuration from the options.
func (o *Options) Config(sa *standalone) (*Config, error) {
	ro := o.RecommendedOptions
	if err := ro.SecureServing.MaybeDefaultWithSelfSignedCerts("localhost", nil,
		[]net.IP{netutils.ParseIPSloppy("127.0.0.1")}); err != nil {
		return nil, fmt.Errorf("create self-signed certificates: %w", err)
	}

	codecs, scheme := Codecs, Scheme
	if o.Mode == ModeCRD {
		codecs, scheme = CRDModeCodecs, CRDModeScheme
	}
	cfg := genericapiserver.NewRecommendedConfig(codecs)
	namer := openapinamer.NewDefinitionNamer(scheme)
	cfg.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(openapi.GetOpenAPIDefinitions, namer)
	cfg.OpenAPIConfig.Info.Title = "checkpoint-apiserver"
	cfg.OpenAPIConfig.Info.Version = "v1alpha1"
	cfg.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(openapi.GetOpenAPIDefinitions, namer)
	cfg.OpenAPIV3Config.Info.Title = "checkpoint-apiserver"
	cfg.OpenAPIV3Config.Info.Version = "v1alpha1"
	cfg.FeatureGate = utilfeature.DefaultFeatureGate
	cfg.EffectiveVersion = basecompatibility.NewEffectiveVersionFromString(baseversion.DefaultKubeBinaryVersion, "", "")

	if err := ro.ApplyTo(cfg); err != nil {
		return nil, err
	}
	if sa != nil {
		if err := sa.applyTo(&cfg.Config); err != nil {
			return nil, err
		}
	}
	extra := ExtraConfig{
		AdminGroups:             o.AdminGroups,
		CaptureTimeout:          o.CaptureTimeout,
		NamespaceBytes:          o.namespaceBytes(),
		DeclarativeCaptureDelay: o.DeclarativeCaptureDelay,
		ReplicaName:             o.ReplicaName,
		OrphanSweepInterval:     o.OrphanSweepInterval,
		CRDMode:                 o.Mode == ModeCRD,
	}
	if err := o.applyDriver(cfg, &extra); err != nil {
		return nil, err
	}
	if o.E2BBindAddress != "" {
		if o.E2BKeysFile == "" && o.Standalone {
			path, err := writeDefaultE2BKeys(o.DataDir)
			if err != nil {
				return nil, err
			}
			o.E2BKeysFile = path
		}
		if o.E2BKeysFile == "" {
			return nil, errors.New("--e2b-bind-address needs --e2b-api-keys-file")
		}
		keys, err := e2b.LoadKeys(o.E2BKeysFile)
		if err != nil {
			return nil, err
		}
		extra.E2BBindAddress, extra.E2BKeys = o.E2BBindAddress, keys
		extra.E2BTLSCertFile, extra.E2BTLSKeyFile = o.E2BTLSCertFile, o.E2BTLSKeyFile
		extra.PausedSandboxTTL = o.E2BPausedTTL
	}
	return &Config{GenericConfig: cfg, ExtraConfig: extra}, nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// applyDriver builds the driver and the resolver. An unreachable containerd
// is not fatal: the server serves, and captures fail with DriverUnavailable.
func (o *Options) applyDriver(cfg *genericapiserver.RecommendedConfig, extra *ExtraConfig) error {
	if o.NodeAgents {
		return o.applyNodeAgents(cfg, extra)
	}
	d, err := containerddriver.New(containerddriver.Config{
		Address:   o.ContainerdAddress,
		Namespace: o.ContainerdNamespace,
		LogDir:    filepath.Join(o.DataDir, "containers"),
		// runc reads it from the host: an absolute path.
		CRIUConfigDir: absPath(filepath.Join(o.DataDir, "criu")),
		Node:          o.NodeName,
	})
	if err != nil {
		return err
	}
	if err := d.Ping(context.Background()); err != nil {
		klog.InfoS("containerd is not reachable: captures fail with DriverUnavailable until it is", "address", o.ContainerdAddress, "err", err)
	}
	extra.Driver = d
	extra.Resolver = d
	extra.KubeClientConfig = cfg.ClientConfig
	extra.Authorizer = cfg.Authorization.Authorizer
	extra.Sandboxes = driverSandboxes{resolver: d, driver: d}
	var client kubernetes.Interface
	if cfg.ClientConfig != nil {
		if client, err = kubernetes.NewForConfig(cfg.ClientConfig); err != nil {
			return fmt.Errorf("kube-apiserver client: %w", err)
		}
	}
	o.recorder(client, extra)
	if o.Resolver == "pod" || (o.Resolver == "auto" && client != nil) {
		if client == nil {
			return errors.New("--resolver=pod needs a kube-apiserver (--kubeconfig)")
		}
		extra.Resolver = &kuberesolver.PodResolver{Client: client, Runtime: "containerd"}
		// A kubelet runs the Pod: keepRunning=false ends it through the API,
		// and a restore makes a Pod the kubelet runs.
		extra.Stopper = &kuberesolver.PodStopper{Client: client, Processes: d, Sandboxes: o.sandboxes(cfg)}
		extra.Restorer = &kuberesolver.PodRestorer{Client: client, Preparer: d, Authorizer: cfg.Authorization.Authorizer, RuntimeClass: o.RestoreRuntimeClass,
			AsCaller: kuberesolver.AsCaller(cfg.ClientConfig, client)}
		extra.Sandboxes = &e2b.PodSandboxes{Client: client, Authorizer: cfg.Authorization.Authorizer}
		extra.Kube = client
		if o.RestoreSocket != "" {
			if err := o.serveRestoreImages(cfg, d); err != nil {
				return err
			}
		}
	}
	return o.applyRegistrations(cfg, client, extra)
}

// serveRestoreImages serves the node's restore runtime from the server's
// own containerd (a node with no agent), once the server runs.
func (o *Options) serveRestoreImages(cfg *genericapiserver.RecommendedConfig, d *containerddriver.Driver) error {
	dyn, err := dynamic.NewForConfig(cfg.ClientConfig)
	if err != nil {
		return err
	}
	dir := o.RestoreImagesDir
	if dir == "" {
		dir = filepath.Join(o.DataDir, "restore-images")
	}
	client, err := kubernetes.NewForConfig(cfg.ClientConfig)
	if err != nil {
		return err
	}
	store := &nodeimages.Store{Dir: absPath(dir), Lookup: nodeimages.APILookup{Client: dyn}, Archives: nodeimages.DriverArchives{Driver: d},
		Events: nodeimages.KubeEvents{Client: client, Component: "checkpoint-apiserver", Node: o.NodeName}}
	socket := o.RestoreSocket
	return cfg.AddPostStartHook("restore-images", func(ctx genericapiserver.PostStartHookContext) error {
		go func() {
			if err := store.Serve(ctx, socket); err != nil {
				klog.ErrorS(err, "The restore runtime's socket stopped: no clone starts on this node")
			}
		}()
		return nil
	})
}

// recorder sends Events on Checkpoints (and on the APIService and CRDs
// when they conflict) to the kube-apiserver.
func (o *Options) recorder(client kubernetes.Interface, extra *ExtraConfig) {
	if client == nil {
		return
	}
	broadcaster := record.NewBroadcaster()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	extra.Recorder = broadcaster.NewRecorder(clientgoscheme.Scheme, corev1.EventSource{Component: "checkpoint-apiserver", Host: o.ReplicaName})
}

// applyNodeAgents makes the server a client of the node agents: they
// capture on each Pod's node and push to the checkpoint registry, from
// which clone Pods are pulled on any node.
func (o *Options) applyNodeAgents(cfg *genericapiserver.RecommendedConfig, extra *ExtraConfig) error {
	if cfg.ClientConfig == nil {
		return errors.New("--node-agents needs a kube-apiserver (--kubeconfig)")
	}
	client, err := kubernetes.NewForConfig(cfg.ClientConfig)
	if err != nil {
		return fmt.Errorf("kube-apiserver client: %w", err)
	}
	reg, err := ociregistry.New(o.CheckpointRegistry)
	if err != nil {
		return err
	}
	kek, err := o.keyWrapper()
	if err != nil {
		return err
	}
	installation, err := o.installation(client)
	if err != nil {
		return err
	}
	caFile := o.AgentCAFile
	if caFile == "" {
		caFile = o.AgentSignerCertFile // the agents' certificates are this server's own
	}
	agents, err := agent.NewClient(agent.ClientConfig{
		Client: client, Port: o.AgentPort, CAFile: caFile, ServerName: o.AgentServerName,
		CertFile: o.AgentClientCertFile, KeyFile: o.AgentClientKeyFile, Registry: reg, Installation: installation,
	})
	if err != nil {
		return err
	}
	extra.Driver = agents
	extra.KEK = kek
	extra.Keys = &encryption.SecretKeys{Client: client, Namespace: o.KeyNamespace}
	extra.KubeClientConfig = cfg.ClientConfig
	extra.Authorizer = cfg.Authorization.Authorizer
	extra.Resolver = &kuberesolver.PodResolver{Client: client, Runtime: "containerd"}
	extra.Stopper = &kuberesolver.PodStopper{Client: client, Processes: agents, Sandboxes: o.sandboxes(cfg)}
	extra.Restorer = &kuberesolver.PodRestorer{Client: client, Authorizer: cfg.Authorization.Authorizer, RuntimeClass: o.RestoreRuntimeClass,
		Preparer: &ociregistry.Preparer{Registry: reg}, Prefetcher: agents, AsCaller: kuberesolver.AsCaller(cfg.ClientConfig, client)}
	extra.Sandboxes = &e2b.PodSandboxes{Client: client, Authorizer: cfg.Authorization.Authorizer}
	extra.Kube = client
	o.recorder(client, extra)
	dyn, err := dynamic.NewForConfig(cfg.ClientConfig)
	if err != nil {
		return err
	}
	if o.AgentSignerCertFile != "" {
		ca, caKey, err := agentcert.LoadCA(o.AgentSignerCertFile, o.AgentSignerKeyFile)
		if err != nil {
			return fmt.Errorf("--agent-signer-cert-file: %w", err)
		}
		signer := &agentcert.Signer{Client: client, Users: o.AgentUsers, CA: ca, CAKey: caKey}
		if err := cfg.AddPostStartHook("node-agent-certificates", func(ctx genericapiserver.PostStartHookContext) error {
			go signer.Run(ctx)
			return nil
		}); err != nil {
			return err
		}
	}
	keys := &restorekeys.Distributor{Client: client, Lookup: nodeimages.APILookup{Client: dyn}, KEK: kek, Keys: extra.Keys,
		Agents: agents, Recorder: extra.Recorder}
	if err := cfg.AddPostStartHook("restore-keys", func(ctx genericapiserver.PostStartHookContext) error {
		go keys.Run(ctx)
		return nil
	}); err != nil {
		return err
	}
	return o.applyRegistrations(cfg, client, extra)
}

// installation is --installation-id, or this cluster's kube-system
// namespace UID with the key namespace: the same for every replica.
func (o *Options) installation(client kubernetes.Interface) (string, error) {
	if o.InstallationID != "" {
		return o.InstallationID, nil
	}
	var uid string
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		ns, err := client.CoreV1().Namespaces().Get(ctx, metav1.NamespaceSystem, metav1.GetOptions{})
		if err != nil {
			last = err
			return false, nil // the kube-apiserver may still be starting
		}
		uid = string(ns.UID)
		return true, nil
	})
	if err != nil {
		return "", fmt.Errorf("name this installation (--installation-id, else the kube-system namespace's UID): %v: %w", err, last)
	}
	return uid + "/" + o.KeyNamespace, nil
}

// sandboxes is the client that pauses OpenKruise's Sandboxes for
// keepRunning false: crd mode only (in aggregated mode no Sandbox is served).
func (o *Options) sandboxes(cfg *genericapiserver.RecommendedConfig) dynamic.Interface {
	if o.Mode != ModeCRD || cfg.ClientConfig == nil {
		return nil
	}
	dyn, err := dynamic.NewForConfig(cfg.ClientConfig)
	if err != nil {
		return nil
	}
	return dyn
}

// applyRegistrations configures what the server registers in the
// kube-apiserver: its APIService, its webhooks, its leader election.
func (o *Options) applyRegistrations(cfg *genericapiserver.RecommendedConfig, client kubernetes.Interface, extra *ExtraConfig) error {
	if o.APIServiceService != "" {
		reg, err := o.registration(cfg)
		if err != nil {
			return err
		}
		reg.Recorder = extra.Recorder
		extra.Registration = reg
	}
	if o.WebhookPort > 0 && (o.Mode == ModeCRD || client != nil) {
		ro := o.RecommendedOptions.SecureServing
		extra.Webhook = &WebhookServing{
			Address:  net.JoinHostPort(hostFor(ro.BindAddress), strconv.Itoa(o.WebhookPort)),
			CertFile: ro.ServerCert.CertKey.CertFile, KeyFile: ro.ServerCert.CertKey.KeyFile,
		}
		self := selfName(client)
		if o.Mode == ModeCRD {
			extra.Webhook.Checkpoints = &webhook.Checkpoints{Self: self, AdminGroups: o.AdminGroups, OwnerStampers: o.OwnerStampers,
				Authorizer: cfg.Authorization.Authorizer}
		}
		if client != nil {
			pods, err := o.restorePods(cfg, client, self, extra)
			if err != nil {
				return err
			}
			extra.Webhook.RestorePods = pods
		}
		if o.WebhookService != "" {
			ns, name, ok := strings.Cut(o.WebhookService, "/")
			if !ok || ns == "" || name == "" || client == nil {
				return fmt.Errorf("--webhook-service=%q: must be namespace/name, with a kube-apiserver", o.WebhookService)
			}
			reg := &registration.WebhookConfig{
				Client: client, Name: "checkpoint-apiserver", Group: agents.GroupName, Version: v1alpha1.SchemeGroupVersion.Version,
				Resource: "checkpoints", ServiceNamespace: ns, ServiceName: name, ServicePort: int32(o.WebhookPort),
				RestorePodsPath: webhook.RestorePodsPath, CAFile: o.WebhookCAFile,
			}
			if o.Mode == ModeCRD {
				reg.ValidatePath, reg.MutatePath = webhook.ValidatePath, webhook.MutatePath
				reg.SandboxPodsPath, reg.SandboxPodDeletesPath = webhook.SandboxPodsPath, webhook.SandboxPodDeletesPath
			}
			extra.Webhook.Registration = reg
		}
	}
	if o.LeaderElect && client != nil {
		extra.LeaderElection = &LeaderElection{Client: client, Namespace: o.LeaderElectNamespace, Name: "checkpoint-apiserver-lifecycle"}
	}
	return nil
}

// selfName is who the server is to the kube-apiserver (client's user),
// asked once it answers ("" until then, or without one).
func selfName(client kubernetes.Interface) func(context.Context) string {
	var mu sync.Mutex
	name := ""
	return func(ctx context.Context) string {
		mu.Lock()
		defer mu.Unlock()
		if name == "" && client != nil {
			r, err := client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
			if err == nil {
				name = r.Status.UserInfo.Username
			}
		}
		return name
	}
}

// restorePods is the review of Pods marked for restore: by the restore
// subresource's rule, as the Pod's creator, the Checkpoint found through
// the kube-apiserver in the Pod's namespace.
func (o *Options) restorePods(cfg *genericapiserver.RecommendedConfig, client kubernetes.Interface, self func(context.Context) string, extra *ExtraConfig) (*webhook.RestorePods, error) {
	dyn, err := dynamic.NewForConfig(cfg.ClientConfig)
	if err != nil {
		return nil, err
	}
	lookup := nodeimages.APILookup{Client: dyn}
	restore := v1alpha1.SchemeGroupVersion.WithResource("checkpoints")
	if o.Mode == ModeCRD {
		restore = v1alpha1.SubresourcesGroupVersion.WithResource("checkpoints")
	}
	var clones *webhook.SandboxClones
	if o.Mode == ModeCRD {
		h := hibernations{dyn: dyn, kube: client}
		clones = &webhook.SandboxClones{Controllers: o.SandboxControllers, AdminOwners: o.SandboxAdminOwners,
			Sandboxes: h.sandbox, CheckpointIDKey: o.CheckpointIDAnnotationKey, Hibernations: h,
			Pods: func(ctx context.Context, ns, name string) (*corev1.Pod, error) {
				return client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
			}}
		extra.Hibernations = func(ctx context.Context) { h.run(ctx, 2*time.Second) }
	}
	return &webhook.RestorePods{
		Clones:     clones,
		Authorizer: cfg.Authorization.Authorizer, Restore: restore, AdminGroups: o.AdminGroups, RuntimeClass: o.RestoreRuntimeClass,
		Self: self,
		Lookup: func(ctx context.Context, ns, id string) (webhook.Checkpoint, error) {
			cp, err := lookup.Find(ctx, ns, id)
			return webhook.Checkpoint{Name: cp.Name, Owner: cp.Owner, Sandbox: cp.Sandbox, Created: cp.Created, FilesystemOnly: cp.FilesystemOnly}, err
		},
	}, nil
}

// registration configures the APIService registrar.
func (o *Options) registration(cfg *genericapiserver.RecommendedConfig) (*registration.Config, error) {
	ns, name, ok := strings.Cut(o.APIServiceService, "/")
	if !ok || ns == "" || name == "" {
		return nil, fmt.Errorf("--apiservice-service=%q: must be namespace/name", o.APIServiceService)
	}
	if o.APIServiceCAFile == "" {
		return nil, errors.New("--apiservice-service needs --apiservice-ca-file (the APIService's caBundle; it is never skipped)")
	}
	if cfg.ClientConfig == nil {
		return nil, errors.New("--apiservice-service needs a kube-apiserver (--kubeconfig)")
	}
	dyn, err := dynamic.NewForConfig(cfg.ClientConfig)
	if err != nil {
		return nil, err
	}
	group := agents.GroupName
	if o.Mode == ModeCRD {
		// agents.kruise.io/v1alpha1 is the CRDs'; this server owns only its subresources group.
		group = SubresourcesGroupVersion.Group
	}
	return &registration.Config{
		Client: dyn, Group: group, Version: v1alpha1.SchemeGroupVersion.Version,
		ServiceNamespace: ns, ServiceName: name, ServicePort: o.APIServicePort, CAFile: o.APIServiceCAFile,
		GroupPriorityMinimum: 1000, VersionPriority: 15,
	}, nil
}

// writeDefaultE2BKeys makes, once, a keys file with one key for user
// "developer" in team (namespace) "default", for local use.
func writeDefaultE2BKeys(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "e2b-keys.yaml")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	b := make([]byte, 20)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	content := fmt.Sprintf("# E2B API keys of the standalone server (keep this file private).\nkeys:\n- key: e2b_%s\n  user: developer\n  team: default\n", hex.EncodeToString(b))
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", err
	}
	return path, os.WriteFile(path, []byte(content), 0o600)
}

func hostFor(ip net.IP) string {
	if ip == nil || ip.IsUnspecified() {
		return "127.0.0.1"
	}
	return ip.String()
}

// announceWhenReady prints how to reach the server once /readyz passes.
func (o *Options) announceWhenReady(ctx context.Context, loopback *rest.Config, host, kubeconfig string) {
	client, err := rest.HTTPClientFor(loopback)
	if err != nil {
		klog.ErrorS(err, "Cannot check readiness")
		return
	}
	err = wait.PollUntilContextCancel(ctx, 200*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, loopback.Host+"/readyz", nil)
		if err != nil {
			return false, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, nil
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil || o.Out == nil {
		return
	}
	fmt.Fprintf(o.Out, "checkpoint-apiserver is ready at %s\n", host)
	if o.E2BBindAddress != "" {
		scheme := "http"
		if o.E2BTLSCertFile != "" {
			scheme = "https"
		}
		fmt.Fprintf(o.Out, "E2B API: E2B_API_URL=%s://%s (API keys in %s)\n", scheme, o.E2BBindAddress, o.E2BKeysFile)
	}
	if kubeconfig != "" {
		fmt.Fprintf(o.Out, "kubeconfig: %s\n  export KUBECONFIG=%s\n  kubectl get checkpoints\n", kubeconfig, kubeconfig)
	}
}

// namespaceBytes is --namespace-checkpoint-bytes in bytes (0: none).
func (o *Options) namespaceBytes() int64 {
	q, err := resource.ParseQuantity(o.NamespaceCheckpointBytes)
	if err != nil {
		return 0 // Validate refused it
	}
	return q.Value()
}

// keyWrapper is what wraps the checkpoints' data keys: the KMS plugin, then
// the key file's keys (which wrap only without a plugin).
func (o *Options) keyWrapper() (encryption.Wrapper, error) {
	var chain encryption.Chain
	if o.EncryptionKMSEndpoint != "" {
		kms, err := encryption.NewKMS(context.Background(), o.EncryptionKMSName, o.EncryptionKMSEndpoint, o.EncryptionKMSTimeout)
		if err != nil {
			return nil, err
		}
		chain = append(chain, kms)
	}
	if o.EncryptionKeyFile != "" {
		kek, err := encryption.LoadKEK(o.EncryptionKeyFile)
		if err != nil {
			return nil, err
		}
		chain = append(chain, kek)
	}
	return chain, nil
}
