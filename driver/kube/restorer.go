package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/agents-kruise/checkpoint-apiserver/access"
	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/driver"
)

// AnnotationRestoreFrom marks a clone with the checkpoint it was restored from.
const AnnotationRestoreFrom = "agents.kruise.io/restore-from"

// template is what a capture keeps of a Pod to remake it: the node it ran
// on and its spec, with nothing a restore must not copy.
type template struct {
	Node string         `json:"node,omitempty"`
	Spec corev1.PodSpec `json:"spec"`
}

// Template is pod's template as the driver keeps it with a capture.
func Template(pod *corev1.Pod) ([]byte, error) {
	return json.Marshal(template{Node: pod.Spec.NodeName, Spec: cloneSpec(&pod.Spec)})
}

// cloneSpec is the spec of a clone of a Pod with spec src: its app
// containers (image, pull policy, command, env, resources, ports, probes, the mount
// points their processes were captured with), its pod-level settings that
// the restored processes depend on, and nothing of its credentials. The
// service-account token volume becomes an empty directory at the same
// place: CRIU must find every mount point the captured processes had.
func cloneSpec(src *corev1.PodSpec) corev1.PodSpec {
	spec := corev1.PodSpec{
		RestartPolicy:                 src.RestartPolicy,
		TerminationGracePeriodSeconds: src.TerminationGracePeriodSeconds,
		DNSPolicy:                     src.DNSPolicy,
		DNSConfig:                     src.DNSConfig.DeepCopy(),
		SecurityContext:               src.SecurityContext.DeepCopy(),
		HostNetwork:                   src.HostNetwork,
		HostPID:                       src.HostPID,
		HostIPC:                       src.HostIPC,
		ShareProcessNamespace:         src.ShareProcessNamespace,
		HostUsers:                     src.HostUsers,
		RuntimeClassName:              src.RuntimeClassName,
		EnableServiceLinks:            src.EnableServiceLinks,
		ImagePullSecrets:              append([]corev1.LocalObjectReference(nil), src.ImagePullSecrets...),
		Tolerations:                   append([]corev1.Toleration(nil), src.Tolerations...),
		ServiceAccountName:            src.ServiceAccountName,
		AutomountServiceAccountToken:  ptr.To(false),
	}
	for _, v := range src.Volumes {
		switch {
		case v.ConfigMap != nil || v.Secret != nil || v.DownwardAPI != nil || v.EmptyDir != nil:
			spec.Volumes = append(spec.Volumes, *v.DeepCopy())
		default:
			// Tokens, host paths and claims are not the clone's to have.
			spec.Volumes = append(spec.Volumes, corev1.Volume{Name: v.Name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		}
	}
	// Native sidecars (init containers that restart Always) run beside the
	// app and were captured with it; plain init containers ran to
	// completion in the source and do not run again.
	for _, c := range src.InitContainers {
		if isSidecar(c) {
			spec.InitContainers = append(spec.InitContainers, cloneContainer(c))
		}
	}
	for _, c := range src.Containers {
		spec.Containers = append(spec.Containers, cloneContainer(c))
	}
	return spec
}

// isSidecar says whether init container c is a native sidecar.
func isSidecar(c corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// cloneContainer is container c of a clone's spec.
func cloneContainer(c corev1.Container) corev1.Container {
	out := corev1.Container{
		Name: c.Name, Image: c.Image, ImagePullPolicy: c.ImagePullPolicy, Command: c.Command, Args: c.Args, WorkingDir: c.WorkingDir,
		Ports: c.Ports, EnvFrom: c.EnvFrom, Env: c.Env, Resources: *c.Resources.DeepCopy(),
		VolumeMounts: c.VolumeMounts, LivenessProbe: c.LivenessProbe, ReadinessProbe: c.ReadinessProbe,
		StartupProbe: c.StartupProbe, TerminationMessagePath: c.TerminationMessagePath,
		TerminationMessagePolicy: c.TerminationMessagePolicy, SecurityContext: c.SecurityContext,
		Stdin: c.Stdin, StdinOnce: c.StdinOnce, TTY: c.TTY, RestartPolicy: c.RestartPolicy,
	}
	// A postStart hook ran in the source already.
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
		out.Lifecycle = &corev1.Lifecycle{PreStop: c.Lifecycle.PreStop}
	}
	return *out.DeepCopy()
}

// PodRestorer restores a checkpoint into a new Pod: the source's spec,
// annotated agents.kruise.io/restore-from and run under the restore
// runtime's RuntimeClass, whose shim restores each container from the
// checkpoint its node's agent puts on the node instead of starting it. The caller must be
// allowed to create Pods in the namespace; the Pod is then created as the
// caller (AsCaller), so that admission and every policy see who asked, and
// carries the caller as its owner.
type PodRestorer struct {
	Client kubernetes.Interface
	// AsCaller, when set, is a client that acts as u: the clone Pod is
	// created through it. Nil: with Client, the server's own rights.
	AsCaller func(u user.Info) (kubernetes.Interface, error)
	Preparer driver.RestorePreparer
	// Authorizer decides whether the caller may create the Pod (nil: no check).
	Authorizer authorizer.Authorizer
	// Timeout bounds the wait for the clone to run (default 45 s, and never
	// past the request's deadline).
	Timeout time.Duration
	// RuntimeClass is the clone's: the nodes' restore runtime (default
	// DefaultRuntimeClass).
	RuntimeClass string
	// Prefetcher, when set, has the clone's node start fetching the
	// checkpoint as soon as the node is known (named in the request, or
	// chosen by the scheduler), while the kubelet makes the Pod's sandbox.
	Prefetcher Prefetcher
}

// Prefetcher starts putting checkpoint id's containers on node for clone
// ns/pod (the node agents' client), without waiting for the fetch.
type Prefetcher interface {
	Prefetch(ctx context.Context, node, ns, pod, id string, containers []string) error
}

// DefaultRuntimeClass is the RuntimeClass artifacts/deploy installs for the
// restore runtime.
const DefaultRuntimeClass = "checkpoint"

var _ driver.Restorer = &PodRestorer{}

// Restore creates Pod req.Namespace/req.Name from checkpoint checkpointID
// and waits for its containers to run. A clone that does not come up is
// deleted: a failed restore leaves nothing behind.
func (r *PodRestorer) Restore(ctx context.Context, checkpointID string, req driver.RestoreRequest) (driver.Target, error) {
	caller, err := r.authorize(ctx, req)
	if err != nil {
		return driver.Target{}, err
	}
	owner := caller.GetName()
	pods := r.Client.CoreV1().Pods(req.Namespace)
	creator := pods
	if r.AsCaller != nil {
		c, err := r.AsCaller(caller)
		if err != nil {
			return driver.Target{}, fmt.Errorf("%w: a client acting as %s: %v", driver.ErrUnavailable, owner, err)
		}
		creator = c.CoreV1().Pods(req.Namespace)
	}
	if _, err := pods.Get(ctx, req.Name, metav1.GetOptions{}); err == nil {
		return driver.Target{}, apierrors.NewAlreadyExists(corev1.Resource("pods"), req.Name)
	} else if !apierrors.IsNotFound(err) {
		return driver.Target{}, fmt.Errorf("%w: read pod %s/%s: %v", driver.ErrUnavailable, req.Namespace, req.Name, err)
	}
	prepared, err := r.Preparer.PrepareRestore(ctx, req.Namespace, checkpointID, req.ImageDigest)
	if err != nil {
		return driver.Target{}, err
	}
	if len(req.Template) > 0 {
		prepared.Template = req.Template // the server's record wins over any copy
	}
	runtimeClass := r.RuntimeClass
	if runtimeClass == "" {
		runtimeClass = DefaultRuntimeClass
	}
	pod, err := clonePod(checkpointID, owner, runtimeClass, req, prepared)
	if err != nil {
		return driver.Target{}, err
	}
	prefetched := false
	prefetch := func(node string) {
		if r.Prefetcher == nil || prefetched || node == "" {
			return
		}
		prefetched = true
		names := make([]string, 0, len(pod.Spec.Containers))
		for _, c := range pod.Spec.Containers {
			names = append(names, c.Name)
		}
		// Best effort: the runtime's own request fetches what this did not.
		if err := r.Prefetcher.Prefetch(ctx, node, req.Namespace, req.Name, checkpointID, names); err != nil {
			klog.FromContext(ctx).V(2).Info("Could not start the checkpoint's fetch ahead of the clone", "node", node, "err", err)
		}
	}
	prefetch(pod.Spec.NodeName)
	created, err := creator.Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		var status apierrors.APIStatus
		if errors.As(err, &status) && (apierrors.IsAlreadyExists(err) || apierrors.IsInvalid(err) || apierrors.IsForbidden(err)) {
			return driver.Target{}, err // admission or validation said no: the caller's to read
		}
		return driver.Target{}, fmt.Errorf("%w: create pod %s/%s: %v", driver.ErrUnavailable, req.Namespace, req.Name, err)
	}
	running, err := r.waitRunning(ctx, created, prefetch)
	if err != nil {
		cleanupCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = pods.Delete(cleanupCtx, created.Name, metav1.DeleteOptions{
			GracePeriodSeconds: ptr.To[int64](0), Preconditions: &metav1.Preconditions{UID: &created.UID},
		})
		return driver.Target{}, err
	}
	t := driver.Target{Namespace: running.Namespace, Name: running.Name, UID: string(running.UID), Node: running.Spec.NodeName}
	for _, st := range runningStatuses(running) {
		_, id, _ := strings.Cut(st.ContainerID, "://")
		t.Containers = append(t.Containers, driver.Container{ID: id, Name: st.Name})
	}
	return t, nil
}

// authorize asks whether the caller may create the Pod, and returns it.
func (r *PodRestorer) authorize(ctx context.Context, req driver.RestoreRequest) (user.Info, error) {
	u, ok := genericapirequest.UserFrom(ctx)
	if !ok {
		return nil, apierrors.NewUnauthorized("a restore needs an authenticated user")
	}
	if err := access.Check(ctx, r.Authorizer, u, "create", corev1.SchemeGroupVersion.WithResource("pods"), req.Namespace, req.Name); err != nil {
		return nil, apierrors.NewForbidden(corev1.Resource("pods"), req.Name, fmt.Errorf("%v (a restore creates a Pod)", err))
	}
	return u, nil
}

// clonePod is the Pod a restore creates: the source's spec, images and
// all, marked for restore and run by the restore runtime, which restores
// each container from its checkpoint on whichever node it runs.
func clonePod(checkpointID, owner, runtimeClass string, req driver.RestoreRequest, prepared driver.PreparedRestore) (*corev1.Pod, error) {
	if len(prepared.Template) == 0 {
		return nil, fmt.Errorf("%w: checkpoint %s was not captured from a Pod, so it cannot be restored into one", driver.ErrUnsupported, checkpointID)
	}
	var tmpl template
	if err := json.Unmarshal(prepared.Template, &tmpl); err != nil {
		return nil, fmt.Errorf("pod template of checkpoint %s: %w", checkpointID, err)
	}
	spec := tmpl.Spec
	spec.RuntimeClassName = ptr.To(runtimeClass)
	if prepared.Anywhere {
		// Any node's agent fetches the checkpoint: the node asked for, or the scheduler's.
		spec.NodeName = req.Node
	} else {
		// The checkpoint is on the node that holds it.
		spec.NodeName = prepared.Node
		if spec.NodeName == "" {
			spec.NodeName = tmpl.Node
		}
		if req.Node != "" && req.Node != spec.NodeName {
			return nil, fmt.Errorf("%w: checkpoint %s is held on node %s only (no checkpoint registry is configured), not on %s",
				driver.ErrUnsupported, checkpointID, spec.NodeName, req.Node)
		}
	}
	annotations := map[string]string{AnnotationRestoreFrom: checkpointID}
	if owner != "" {
		annotations[agents.AnnotationOwner] = owner
	}
	labels := map[string]string{}
	for k, v := range req.Labels {
		labels[k] = v
	}
	labels[agents.LabelCheckpointID] = checkpointID
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: req.Name, Namespace: req.Namespace, Labels: labels, Annotations: annotations},
		Spec:       spec,
	}, nil
}

// waitRunning waits until every container of pod runs, and fails at once
// when one cannot be restored.
func (r *PodRestorer) waitRunning(ctx context.Context, pod *corev1.Pod, bound func(node string)) (*corev1.Pod, error) {
	timeout := r.Timeout
	if timeout == 0 {
		timeout = 45 * time.Second
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl)-2*time.Second < timeout {
		timeout = time.Until(dl) - 2*time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last *corev1.Pod
	var failure error
	err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		p, err := r.Client.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) {
				failure = fmt.Errorf("clone pod %s/%s was deleted while it started", pod.Namespace, pod.Name)
				return false, failure
			}
			return false, nil
		}
		if p.UID != pod.UID {
			failure = fmt.Errorf("clone pod %s/%s was replaced while it started", pod.Namespace, pod.Name)
			return false, failure
		}
		last = p
		bound(p.Spec.NodeName)
		if failure = restoreFailure(p); failure != nil {
			return false, failure
		}
		return allRunning(p), nil
	})
	if err == nil {
		return last, nil
	}
	if failure != nil {
		return nil, failure
	}
	state := "not created"
	if last != nil {
		state = describe(last)
	}
	return nil, fmt.Errorf("%w: clone pod %s/%s did not run within %s: %s", driver.ErrUnavailable, pod.Namespace, pod.Name, timeout.Round(time.Second), state)
}

func allRunning(p *corev1.Pod) bool {
	statuses := runningStatuses(p)
	if p.Status.Phase != corev1.PodRunning || len(statuses) < len(runningContainers(p)) {
		return false
	}
	for _, st := range statuses {
		if st.State.Running == nil {
			return false
		}
	}
	return true
}

// restoreFailure says why a clone's container cannot come up, if it cannot.
func restoreFailure(p *corev1.Pod) error {
	if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
		return fmt.Errorf("clone pod %s/%s ended %s before it ran: %s", p.Namespace, p.Name, p.Status.Phase, describe(p))
	}
	for _, st := range runningStatuses(p) {
		if w := st.State.Waiting; w != nil {
			switch w.Reason {
			case "CreateContainerError", "CreateContainerConfigError", "RunContainerError", "ErrImageNeverPull",
				"InvalidImageName", "CrashLoopBackOff", "StartError":
				return fmt.Errorf("container %s of clone pod %s/%s could not be restored: %s: %s", st.Name, p.Namespace, p.Name, w.Reason, w.Message)
			}
		}
		if t := st.State.Terminated; t != nil {
			return fmt.Errorf("container %s of clone pod %s/%s exited (%s, code %d) right after its restore: %s",
				st.Name, p.Namespace, p.Name, t.Reason, t.ExitCode, t.Message)
		}
	}
	return nil
}

func describe(p *corev1.Pod) string {
	parts := []string{"phase " + string(p.Status.Phase)}
	for _, st := range runningStatuses(p) {
		if w := st.State.Waiting; w != nil {
			parts = append(parts, fmt.Sprintf("%s waiting (%s: %s)", st.Name, w.Reason, w.Message))
		}
	}
	return strings.Join(parts, ", ")
}
