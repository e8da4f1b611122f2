// Package registration registers this server's APIService with the
// kube-apiserver, and never over CRDs: an APIService takes a whole
// group-version, so registering while CRDs serve agents.kruise.io/v1alpha1
// (OpenKruise Agents ships eleven) would make all of them unreachable.
package registration

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"reflect"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/record"
	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/klog/v2"
)

var (
	// CRDs and APIServices, read through the dynamic client: neither the
	// apiextensions nor the aggregator clientset is worth a dependency here.
	crdResource        = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	apiServiceResource = schema.GroupVersionResource{Group: "apiregistration.k8s.io", Version: "v1", Resource: "apiservices"}
)

// AutomanagedLabel marks the APIServices the aggregator makes for CRDs and
// built-in groups; one of those for our group-version means CRDs serve it.
const AutomanagedLabel = "kube-aggregator.kubernetes.io/automanaged"

// ConditionCRDConflict is the condition this server sets on its APIService
// while CRDs of its group-version exist (they are shadowed by it).
const ConditionCRDConflict = "CRDConflict"

// Event reasons.
const (
	ReasonNotRegistered = "GroupVersionServedByCRDs"
	ReasonShadowsCRDs   = "ShadowsCRDs"
	ReasonRegistered    = "Registered"
)

var conflictingCRDs = metrics.NewGauge(&metrics.GaugeOpts{
	Namespace:      "checkpoint_apiserver",
	Name:           "conflicting_crds",
	Help:           "CRDs that serve this server's group-version (agents.kruise.io/v1alpha1). Non-zero means either the server did not register its APIService, or its APIService shadows them.",
	StabilityLevel: metrics.ALPHA,
})

var registerMetrics sync.Once

// Config says what to register.
type Config struct {
	Client dynamic.Interface
	// Recorder, when set, records the Events that report a conflict.
	Recorder record.EventRecorder
	// Group and Version are the group-version served.
	Group, Version string
	// ServiceNamespace, ServiceName and ServicePort are where the
	// aggregator reaches this server.
	ServiceNamespace, ServiceName string
	ServicePort                   int32
	// CAFile holds the CA bundle that signed the serving certificate; it
	// is read again on every pass, so a rotated CA reaches the APIService.
	CAFile                                string
	GroupPriorityMinimum, VersionPriority int32
	// Interval between passes (default 10 s).
	Interval time.Duration
}

// Registrar keeps the APIService current, or stays off it, as the CRDs say.
type Registrar struct {
	cfg Config

	mu sync.Mutex
	// conflict names the CRDs serving our group-version, registered says
	// whether the APIService is ours, err is the last pass's failure.
	conflict   []string
	registered bool
	err        error
}

// New returns a registrar; Run starts it.
func New(cfg Config) *Registrar {
	if cfg.Interval == 0 {
		cfg.Interval = 10 * time.Second
	}
	registerMetrics.Do(func() { legacyregistry.MustRegister(conflictingCRDs) })
	return &Registrar{cfg: cfg}
}

// Name is the APIService's name.
func (r *Registrar) Name() string { return r.cfg.Version + "." + r.cfg.Group }

// Run reconciles until ctx ends.
func (r *Registrar) Run(ctx context.Context) {
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		err := r.Reconcile(ctx)
		r.mu.Lock()
		r.err = err
		r.mu.Unlock()
		if err != nil {
			klog.ErrorS(err, "APIService registration", "apiservice", r.Name())
		}
	}, r.cfg.Interval)
}

// Check is a readiness check: it fails, saying why and what to do, while
// the server does not serve its group-version because CRDs do.
func (r *Registrar) Check(_ *http.Request) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.conflict) > 0 && !r.registered {
		return errors.New(r.notRegisteredMessage(r.conflict))
	}
	return nil
}

func (r *Registrar) notRegisteredMessage(crds []string) string {
	return fmt.Sprintf("not registering APIService %s: CRDs serve %s/%s (%s), and an APIService would make every one of them unreachable. "+
		"To work with them (OpenKruise Agents' Checkpoint CRD among them), run this server with --mode=crd",
		r.Name(), r.cfg.Group, r.cfg.Version, strings.Join(crds, ", "))
}

func (r *Registrar) shadowMessage(crds []string) string {
	return fmt.Sprintf("APIService %s, registered by checkpoint-apiserver, shadows CRDs of %s/%s (%s): the kube-apiserver serves none of them while it exists. "+
		"The server keeps serving its own Checkpoints (their data is in its etcd) and moves nothing. "+
		"To use the CRDs, move the Checkpoints you need, delete this APIService and run the server with --mode=crd",
		r.Name(), r.cfg.Group, r.cfg.Version, strings.Join(crds, ", "))
}

// Reconcile is one pass.
func (r *Registrar) Reconcile(ctx context.Context) error {
	crds, err := r.crdsServingUs(ctx)
	if err != nil {
		return fmt.Errorf("list CRDs: %w", err)
	}
	apiServices := r.cfg.Client.Resource(apiServiceResource)
	existing, err := apiServices.Get(ctx, r.Name(), metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("read APIService %s: %w", r.Name(), err)
	}
	if apierrors.IsNotFound(err) {
		existing = nil
	}
	ours := existing != nil && existing.GetLabels()[AutomanagedLabel] == "" && r.isOurs(existing)
	conflictingCRDs.Set(float64(len(crds)))

	if len(crds) > 0 {
		r.report(crds, ours, existing)
		if ours {
			return r.setConflictCondition(ctx, existing, crds)
		}
		return nil
	}
	desired, err := r.desired()
	if err != nil {
		return err
	}
	if existing == nil {
		if _, err := apiServices.Create(ctx, desired, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create APIService %s: %w", r.Name(), err)
		}
		klog.InfoS("Registered APIService", "apiservice", r.Name())
		r.event(desired, corev1.EventTypeNormal, ReasonRegistered, "checkpoint-apiserver registered APIService "+r.Name())
	} else if existing.GetLabels()[AutomanagedLabel] != "" {
		// The aggregator removes its automanaged APIService once no CRD
		// serves the group-version; a later pass registers ours.
		return nil
	} else if !specMatches(existing, desired) {
		existing.Object["spec"] = desired.Object["spec"]
		if _, err := apiServices.Update(ctx, existing, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update APIService %s: %w", r.Name(), err)
		}
		klog.InfoS("Updated APIService", "apiservice", r.Name())
	} else if err := r.clearConflictCondition(ctx, existing); err != nil {
		return err
	}
	r.mu.Lock()
	r.conflict, r.registered = nil, true
	r.mu.Unlock()
	return nil
}

// specMatches compares the fields this server sets (the API server may
// default others).
func specMatches(have, want *unstructured.Unstructured) bool {
	for _, path := range [][]string{{"group"}, {"version"}, {"groupPriorityMinimum"}, {"versionPriority"}, {"caBundle"},
		{"service", "namespace"}, {"service", "name"}, {"service", "port"}, {"insecureSkipTLSVerify"}} {
		h, _, _ := unstructured.NestedFieldNoCopy(have.Object, append([]string{"spec"}, path...)...)
		w, _, _ := unstructured.NestedFieldNoCopy(want.Object, append([]string{"spec"}, path...)...)
		if fmt.Sprint(h) != fmt.Sprint(w) && !(h == false && w == nil) {
			return false
		}
	}
	return true
}

func encodeBase64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// isOurs says whether an APIService sends the group-version to our Service.
func (r *Registrar) isOurs(u *unstructured.Unstructured) bool {
	ns, _, _ := unstructured.NestedString(u.Object, "spec", "service", "namespace")
	name, _, _ := unstructured.NestedString(u.Object, "spec", "service", "name")
	return ns == r.cfg.ServiceNamespace && name == r.cfg.ServiceName
}

// crdsServingUs names the CRDs that serve our group-version, sorted.
func (r *Registrar) crdsServingUs(ctx context.Context) ([]string, error) {
	list, err := r.cfg.Client.Resource(crdResource).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, crd := range list.Items {
		if group, _, _ := unstructured.NestedString(crd.Object, "spec", "group"); group != r.cfg.Group {
			continue
		}
		versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
		for _, v := range versions {
			m, _ := v.(map[string]interface{})
			if m["name"] == r.cfg.Version && m["served"] == true {
				out = append(out, crd.GetName())
				break
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// report logs and records a conflict once per change of what it is.
func (r *Registrar) report(crds []string, registered bool, apiService *unstructured.Unstructured) {
	r.mu.Lock()
	changed := !reflect.DeepEqual(r.conflict, crds) || r.registered != registered
	r.conflict, r.registered = crds, registered
	r.mu.Unlock()
	if !changed {
		return
	}
	if registered {
		msg := r.shadowMessage(crds)
		klog.ErrorS(nil, msg, "apiservice", r.Name(), "crds", crds)
		r.event(apiService, corev1.EventTypeWarning, ReasonShadowsCRDs, msg)
		return
	}
	msg := r.notRegisteredMessage(crds)
	klog.ErrorS(nil, msg, "apiservice", r.Name(), "crds", crds)
	// On the CRDs themselves: what the conflict is about, and where an
	// operator looking at them sees it.
	for _, name := range crds {
		crd := &unstructured.Unstructured{}
		crd.SetAPIVersion("apiextensions.k8s.io/v1")
		crd.SetKind("CustomResourceDefinition")
		crd.SetName(name)
		r.event(crd, corev1.EventTypeWarning, ReasonNotRegistered, msg)
	}
}

func (r *Registrar) event(obj *unstructured.Unstructured, eventType, reason, msg string) {
	if r.cfg.Recorder != nil && obj != nil {
		r.cfg.Recorder.Event(obj, eventType, reason, msg)
	}
}

// desired is the APIService this server registers.
func (r *Registrar) desired() (*unstructured.Unstructured, error) {
	ca, err := os.ReadFile(r.cfg.CAFile)
	if err != nil {
		return nil, fmt.Errorf("read the serving CA for the APIService's caBundle: %w", err)
	}
	if !bytes.Contains(ca, []byte("BEGIN CERTIFICATE")) {
		return nil, fmt.Errorf("%s holds no PEM certificate for the APIService's caBundle", r.cfg.CAFile)
	}
	u := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "apiregistration.k8s.io/v1",
		"kind":       "APIService",
		"metadata":   map[string]interface{}{"name": r.Name(), "labels": map[string]interface{}{"app.kubernetes.io/managed-by": "checkpoint-apiserver"}},
		"spec": map[string]interface{}{
			"group":                r.cfg.Group,
			"version":              r.cfg.Version,
			"groupPriorityMinimum": int64(r.cfg.GroupPriorityMinimum),
			"versionPriority":      int64(r.cfg.VersionPriority),
			"caBundle":             encodeBase64(ca),
			"service": map[string]interface{}{
				"namespace": r.cfg.ServiceNamespace,
				"name":      r.cfg.ServiceName,
				"port":      int64(r.cfg.ServicePort),
			},
		},
	}}
	return u, nil
}

// setConflictCondition puts CRDConflict=True on our APIService's status
// (the aggregator's availability controller keeps conditions of other types).
func (r *Registrar) setConflictCondition(ctx context.Context, apiService *unstructured.Unstructured, crds []string) error {
	msg := r.shadowMessage(crds)
	conds, _, _ := unstructured.NestedSlice(apiService.Object, "status", "conditions")
	for _, c := range conds {
		if m, _ := c.(map[string]interface{}); m["type"] == ConditionCRDConflict && m["status"] == "True" && m["message"] == msg {
			return nil
		}
	}
	conds = append(withoutConflict(conds), map[string]interface{}{
		"type": ConditionCRDConflict, "status": "True", "reason": ReasonShadowsCRDs, "message": msg,
		"lastTransitionTime": metav1.Now().UTC().Format(time.RFC3339),
	})
	return r.writeConditions(ctx, apiService, conds)
}

func (r *Registrar) clearConflictCondition(ctx context.Context, apiService *unstructured.Unstructured) error {
	conds, _, _ := unstructured.NestedSlice(apiService.Object, "status", "conditions")
	kept := withoutConflict(conds)
	if len(kept) == len(conds) {
		return nil
	}
	return r.writeConditions(ctx, apiService, kept)
}

func withoutConflict(conds []interface{}) []interface{} {
	var out []interface{}
	for _, c := range conds {
		if m, _ := c.(map[string]interface{}); m["type"] != ConditionCRDConflict {
			out = append(out, c)
		}
	}
	return out
}

func (r *Registrar) writeConditions(ctx context.Context, apiService *unstructured.Unstructured, conds []interface{}) error {
	u := apiService.DeepCopy()
	if err := unstructured.SetNestedSlice(u.Object, conds, "status", "conditions"); err != nil {
		return err
	}
	if _, err := r.cfg.Client.Resource(apiServiceResource).UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("write the conditions of APIService %s: %w", r.Name(), err)
	}
	return nil
}
