package registration

import (
	"context"
	"fmt"
	"os"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

// WebhookConfig says where the admission webhook of crd mode is served.
type WebhookConfig struct {
	Client kubernetes.Interface
	// Name names both webhook configurations.
	Name                          string
	Group, Version, Resource      string
	ServiceNamespace, ServiceName string
	ServicePort                   int32
	// ValidatePath and MutatePath serve the Checkpoint resource (crd mode;
	// "": no webhook for it).
	ValidatePath, MutatePath string
	// RestorePodsPath reviews Pods marked for restore ("": none).
	RestorePodsPath string
	// SandboxPodsPath marks the Pods of OpenKruise's clone Sandboxes for
	// restore ("": none; crd mode).
	SandboxPodsPath string
	// SandboxPodDeletesPath reviews the DELETEs of Sandboxes' Pods: a
	// paused Hibernate Sandbox's goes once its memory is captured ("": none).
	SandboxPodDeletesPath string
	// CAFile holds the CA bundle that signed the webhook's serving certificate.
	CAFile   string
	Interval time.Duration
}

// RunWebhooks keeps the validating and mutating webhook configurations
// current until ctx ends. They match only the Checkpoint resource, and
// fail closed: a Checkpoint is never written unchecked, and no other kind
// depends on this server.
func RunWebhooks(ctx context.Context, cfg WebhookConfig) {
	if cfg.Interval == 0 {
		cfg.Interval = 10 * time.Second
	}
	wait.UntilWithContext(ctx, func(ctx context.Context) {
		if err := ReconcileWebhooks(ctx, cfg); err != nil {
			klog.ErrorS(err, "Admission webhook registration", "name", cfg.Name)
		}
	}, cfg.Interval)
}

// ReconcileWebhooks is one pass.
func ReconcileWebhooks(ctx context.Context, cfg WebhookConfig) error {
	ca, err := os.ReadFile(cfg.CAFile)
	if err != nil {
		return fmt.Errorf("read the webhook's CA: %w", err)
	}
	rules := []admissionregistrationv1.RuleWithOperations{{
		Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
		Rule: admissionregistrationv1.Rule{APIGroups: []string{cfg.Group}, APIVersions: []string{cfg.Version},
			Resources: []string{cfg.Resource}, Scope: ptr.To(admissionregistrationv1.NamespacedScope)},
	}}
	client := func(path string) admissionregistrationv1.WebhookClientConfig {
		return admissionregistrationv1.WebhookClientConfig{CABundle: ca, Service: &admissionregistrationv1.ServiceReference{
			Namespace: cfg.ServiceNamespace, Name: cfg.ServiceName, Port: ptr.To(cfg.ServicePort), Path: ptr.To(path)}}
	}
	fail := ptr.To(admissionregistrationv1.Fail)
	none := ptr.To(admissionregistrationv1.SideEffectClassNone)
	meta := metav1.ObjectMeta{Name: cfg.Name, Labels: map[string]string{"app.kubernetes.io/managed-by": "checkpoint-apiserver"}}
	validating := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: meta}
	if cfg.ValidatePath != "" {
		// Status writes too: status.checkpointId is the server's.
		withStatus := []admissionregistrationv1.RuleWithOperations{rules[0]}
		withStatus[0].Resources = []string{cfg.Resource, cfg.Resource + "/status"}
		validating.Webhooks = append(validating.Webhooks, admissionregistrationv1.ValidatingWebhook{
			Name: "validate.checkpoints." + cfg.Group, ClientConfig: client(cfg.ValidatePath), Rules: withStatus,
			FailurePolicy: fail, SideEffects: none, AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](10),
		})
	}
	if cfg.RestorePodsPath != "" {
		// Only Pods that carry the mark reach the webhook: no other Pod
		// depends on this server, and a marked one is never admitted unchecked.
		validating.Webhooks = append(validating.Webhooks, admissionregistrationv1.ValidatingWebhook{
			Name: "restore-pods." + cfg.Group, ClientConfig: client(cfg.RestorePodsPath),
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"},
					Resources: []string{"pods"}, Scope: ptr.To(admissionregistrationv1.NamespacedScope)},
			}},
			MatchConditions: []admissionregistrationv1.MatchCondition{{Name: "marked-for-restore",
				Expression: `has(object.metadata.annotations) && 'agents.kruise.io/restore-from' in object.metadata.annotations`}},
			FailurePolicy: fail, SideEffects: none, AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](10),
		})
	}
	if cfg.SandboxPodDeletesPath != "" {
		// Only the first DELETE of a Pod a Sandbox controls reaches it. It
		// may start a capture (never on a dry run), and fails closed, since
		// a Hibernate Sandbox's Pod that went unchecked would lose its memory.
		validating.Webhooks = append(validating.Webhooks, admissionregistrationv1.ValidatingWebhook{
			Name: "hibernate-sandbox-pods." + cfg.Group, ClientConfig: client(cfg.SandboxPodDeletesPath),
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Delete},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"},
					Resources: []string{"pods"}, Scope: ptr.To(admissionregistrationv1.NamespacedScope)},
			}},
			MatchConditions: []admissionregistrationv1.MatchCondition{{Name: "owned-by-a-sandbox",
				Expression: `!has(oldObject.metadata.deletionTimestamp) && has(oldObject.metadata.ownerReferences) && ` +
					`oldObject.metadata.ownerReferences.exists(r, r.kind == 'Sandbox' && ` +
					`r.apiVersion.startsWith('agents.kruise.io/') && has(r.controller) && r.controller)`}},
			FailurePolicy: fail, SideEffects: ptr.To(admissionregistrationv1.SideEffectClassNoneOnDryRun),
			AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](10),
		})
		// An eviction (a node drain) deletes without the DELETE review: it
		// is reviewed as the CREATE of pods/eviction, which names the Pod
		// only, so every eviction of the cluster reaches it. It ignores
		// failures: failing closed would stop every drain while this server
		// is down (a Hibernate Sandbox's Pod evicted then loses its memory).
		validating.Webhooks = append(validating.Webhooks, admissionregistrationv1.ValidatingWebhook{
			Name: "hibernate-sandbox-evictions." + cfg.Group, ClientConfig: client(cfg.SandboxPodDeletesPath),
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"},
					Resources: []string{"pods/eviction"}, Scope: ptr.To(admissionregistrationv1.NamespacedScope)},
			}},
			FailurePolicy: ptr.To(admissionregistrationv1.Ignore), SideEffects: ptr.To(admissionregistrationv1.SideEffectClassNoneOnDryRun),
			AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](5),
		})
	}
	mutating := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: meta}
	if cfg.MutatePath != "" {
		mutating.Webhooks = append(mutating.Webhooks, admissionregistrationv1.MutatingWebhook{
			Name: "default.checkpoints." + cfg.Group, ClientConfig: client(cfg.MutatePath), Rules: rules,
			FailurePolicy: fail, SideEffects: none, AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](10),
			ReinvocationPolicy: ptr.To(admissionregistrationv1.NeverReinvocationPolicy),
		})
	}
	if cfg.SandboxPodsPath != "" {
		// Only Pods a Sandbox controls reach it: a clone's Pod is never
		// created unmarked (fail closed), and Pods unrelated to sandboxes
		// never wait on this server.
		mutating.Webhooks = append(mutating.Webhooks, admissionregistrationv1.MutatingWebhook{
			Name: "restore-sandbox-pods." + cfg.Group, ClientConfig: client(cfg.SandboxPodsPath),
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"},
					Resources: []string{"pods"}, Scope: ptr.To(admissionregistrationv1.NamespacedScope)},
			}},
			MatchConditions: []admissionregistrationv1.MatchCondition{{Name: "owned-by-a-sandbox",
				Expression: `has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(r, r.kind == 'Sandbox' && ` +
					`r.apiVersion.startsWith('agents.kruise.io/') && has(r.controller) && r.controller)`}},
			FailurePolicy: fail, SideEffects: none, AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](10),
			ReinvocationPolicy: ptr.To(admissionregistrationv1.NeverReinvocationPolicy),
		})
	}

	vs := cfg.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	if have, err := vs.Get(ctx, cfg.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		if _, err := vs.Create(ctx, validating, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create ValidatingWebhookConfiguration %s: %w", cfg.Name, err)
		}
		klog.InfoS("Registered the validating webhook", "name", cfg.Name)
	} else if err != nil {
		return err
	} else if !apiequality.Semantic.DeepDerivative(validating.Webhooks, have.Webhooks) {
		have.Webhooks = validating.Webhooks
		if _, err := vs.Update(ctx, have, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update ValidatingWebhookConfiguration %s: %w", cfg.Name, err)
		}
	}
	if len(mutating.Webhooks) == 0 {
		return nil
	}
	ms := cfg.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if have, err := ms.Get(ctx, cfg.Name, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		if _, err := ms.Create(ctx, mutating, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create MutatingWebhookConfiguration %s: %w", cfg.Name, err)
		}
		klog.InfoS("Registered the defaulting webhook", "name", cfg.Name)
	} else if err != nil {
		return err
	} else if !apiequality.Semantic.DeepDerivative(mutating.Webhooks, have.Webhooks) {
		have.Webhooks = mutating.Webhooks
		if _, err := ms.Update(ctx, have, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update MutatingWebhookConfiguration %s: %w", cfg.Name, err)
		}
	}
	return nil
}
