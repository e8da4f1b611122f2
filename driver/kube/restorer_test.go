package kube

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"

	"github.com/agents-kruise/checkpoint-apiserver/driver"
)

// fakePreparer stands in for the containerd driver: it says which images
// a checkpoint's containers restore from, and counts its calls.
type fakePreparer struct {
	prepared driver.PreparedRestore
	calls    int
}

func (f *fakePreparer) PrepareRestore(context.Context, string, string, string) (driver.PreparedRestore, error) {
	f.calls++
	return f.prepared, nil
}

// allowOnly is a fake authorizer that allows one user only.
func allowOnly(name string) authorizer.Authorizer {
	return authorizer.AuthorizerFunc(func(_ context.Context, attrs authorizer.Attributes) (authorizer.Decision, string, error) {
		if attrs.GetUser().GetName() == name {
			return authorizer.DecisionAllow, "", nil
		}
		return authorizer.DecisionNoOpinion, "RBAC: no binding", nil
	})
}

func sourcePod() *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "src", Namespace: "ns"},
		Spec: corev1.PodSpec{
			NodeName:       "node-1",
			InitContainers: []corev1.Container{{Name: "init", Image: "busybox"}},
			Containers: []corev1.Container{{
				Name: "main", Image: "python", Command: []string{"python3"},
				Env:       []corev1.EnvVar{{Name: "A", Value: "1"}},
				Resources: corev1.ResourceRequirements{Limits: corev1.ResourceList{corev1.ResourceMemory: *resourceMust("128Mi")}},
				Lifecycle: &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"x"}}}},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "kube-api-access-x", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true},
					{Name: "config", MountPath: "/etc/app"},
					{Name: "host", MountPath: "/host"},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "kube-api-access-x", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{
					Sources: []corev1.VolumeProjection{{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "token"}}}}}},
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}},
				{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}},
			},
		},
	}
}

func TestCloneSpecDropsCredentials(t *testing.T) {
	spec := cloneSpec(&sourcePod().Spec)
	assert.Empty(t, spec.InitContainers, "init containers ran in the source")
	assert.Equal(t, ptr.To(false), spec.AutomountServiceAccountToken)
	require.Len(t, spec.Volumes, 3)
	assert.NotNil(t, spec.Volumes[0].EmptyDir, "the token volume is an empty directory at the same place")
	assert.NotNil(t, spec.Volumes[1].ConfigMap, "a ConfigMap volume stays")
	assert.NotNil(t, spec.Volumes[2].EmptyDir, "a host path is not the clone's to have")
	c := spec.Containers[0]
	assert.Len(t, c.VolumeMounts, 3, "every mount point of the captured processes is there")
	assert.Equal(t, []string{"python3"}, c.Command)
	assert.Equal(t, "1", c.Env[0].Value)
	assert.Equal(t, "128Mi", ptr.To(c.Resources.Limits[corev1.ResourceMemory]).String())
	assert.Nil(t, c.Lifecycle, "a postStart hook ran in the source")
}

func prepared(t *testing.T) *fakePreparer {
	tmpl, err := Template(sourcePod())
	require.NoError(t, err)
	return &fakePreparer{prepared: driver.PreparedRestore{
		Node: "node-1", Template: tmpl,
	}}
}

func asUser(name string) context.Context {
	return genericapirequest.WithUser(context.Background(), &user.DefaultInfo{Name: name})
}

// kubelet makes the fake clientset act as a kubelet would on create: the
// clone's containers run, or wait with reason.
func kubelet(client *fake.Clientset, reason string) {
	client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		p := a.(k8stesting.CreateAction).GetObject().(*corev1.Pod)
		p.UID = "uid-clone"
		for _, c := range p.Spec.Containers {
			st := corev1.ContainerStatus{Name: c.Name, ContainerID: "containerd://" + c.Name + "-id"}
			if reason == "" {
				p.Status.Phase = corev1.PodRunning
				st.State.Running = &corev1.ContainerStateRunning{}
			} else {
				p.Status.Phase = corev1.PodPending
				st.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: "criu failed"}
			}
			p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, st)
		}
		return false, nil, nil
	})
}

// The clientset is client-go's fake: these test what PodRestorer asks of
// the API and what Pod it makes; the kubelet restoring it is tested on a
// real node (test/e2e TestRealNode).
func TestPodRestorer(t *testing.T) {
	req := driver.RestoreRequest{Namespace: "ns", Name: "clone", Labels: map[string]string{"team": "a"}}

	t.Run("MakesTheClonePod", func(t *testing.T) {
		client := fake.NewSimpleClientset()
		kubelet(client, "")
		r := &PodRestorer{Client: client, Preparer: prepared(t), Authorizer: allowOnly("alice")}
		target, err := r.Restore(asUser("alice"), "ckpt-1", req)
		require.NoError(t, err)
		assert.Equal(t, driver.Target{Namespace: "ns", Name: "clone", UID: "uid-clone", Node: "node-1",
			Containers: []driver.Container{{ID: "main-id", Name: "main"}}}, target)
		p, err := client.CoreV1().Pods("ns").Get(context.Background(), "clone", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, map[string]string{AnnotationRestoreFrom: "ckpt-1", "agents.kruise.io/owner": "alice"}, p.Annotations,
			"marked for the restore runtime, and no CRIU configuration named by the Pod")
		assert.Equal(t, "a", p.Labels["team"])
		assert.Equal(t, "ckpt-1", p.Labels["agents.kruise.io/checkpoint-id"])
		assert.Equal(t, "node-1", p.Spec.NodeName, "bound to the node holding the checkpoint")
		assert.Equal(t, sourcePod().Spec.Containers[0].Image, p.Spec.Containers[0].Image, "the source's own image")
		assert.Equal(t, ptr.To(DefaultRuntimeClass), p.Spec.RuntimeClassName, "run by the restore runtime")
	})

	t.Run("AnywhereFromTheRegistry", func(t *testing.T) {
		client := fake.NewSimpleClientset()
		kubelet(client, "")
		prep := prepared(t)
		prep.prepared.Node, prep.prepared.Anywhere = "", true
		r := &PodRestorer{Client: client, Preparer: prep, RuntimeClass: "restore"}
		_, err := r.Restore(asUser("alice"), "ckpt-1", driver.RestoreRequest{Namespace: "ns", Name: "clone", Node: "node-2"})
		require.NoError(t, err)
		p, err := client.CoreV1().Pods("ns").Get(context.Background(), "clone", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Equal(t, "node-2", p.Spec.NodeName, "the node asked for")
		assert.Equal(t, ptr.To("restore"), p.Spec.RuntimeClassName)
	})

	t.Run("PrefetchesOnTheClonesNode", func(t *testing.T) {
		// Named node: the fetch starts before the Pod exists. Scheduler's
		// node: as soon as the Pod is bound, once.
		for _, named := range []bool{true, false} {
			client := fake.NewSimpleClientset()
			kubelet(client, "")
			if !named {
				client.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
					a.(k8stesting.CreateAction).GetObject().(*corev1.Pod).Spec.NodeName = "node-3"
					return false, nil, nil
				})
			}
			prep := prepared(t)
			prep.prepared.Node, prep.prepared.Anywhere = "", true
			pf := &prefetches{client: client}
			r := &PodRestorer{Client: client, Preparer: prep, Prefetcher: pf}
			rr := driver.RestoreRequest{Namespace: "ns", Name: "clone"}
			want := "node-3"
			if named {
				rr.Node, want = "node-2", "node-2"
			}
			_, err := r.Restore(asUser("alice"), "ckpt-1", rr)
			require.NoError(t, err)
			require.Len(t, pf.calls, 1, "named %t: one prefetch", named)
			assert.Equal(t, want+" ns/clone ckpt-1 [main]", pf.calls[0])
			assert.Equal(t, !named, pf.podExisted, "named %t: the fetch starts before the Pod exists only when the node is known", named)
		}
	})

	t.Run("CallerMayNotCreatePods", func(t *testing.T) {
		client := fake.NewSimpleClientset()
		prep := prepared(t)
		r := &PodRestorer{Client: client, Preparer: prep, Authorizer: allowOnly("alice")}
		_, err := r.Restore(asUser("mallory"), "ckpt-1", req)
		require.True(t, apierrors.IsForbidden(err), "%v", err)
		assert.Contains(t, err.Error(), `user "mallory" may not create pods in namespace "ns"`)
		assert.Zero(t, prep.calls, "nothing is prepared for a caller who may not restore")
		assert.Empty(t, client.Actions(), "the API is not touched")
	})

	t.Run("PodExists", func(t *testing.T) {
		client := fake.NewSimpleClientset(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "clone", Namespace: "ns"}})
		r := &PodRestorer{Client: client, Preparer: prepared(t)}
		_, err := r.Restore(asUser("alice"), "ckpt-1", req)
		assert.True(t, apierrors.IsAlreadyExists(err), "%v", err)
	})

	t.Run("AFailedRestoreLeavesNoPod", func(t *testing.T) {
		client := fake.NewSimpleClientset()
		kubelet(client, "CreateContainerError")
		r := &PodRestorer{Client: client, Preparer: prepared(t), Timeout: 10 * time.Second}
		_, err := r.Restore(asUser("alice"), "ckpt-1", req)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "could not be restored: CreateContainerError: criu failed")
		_, err = client.CoreV1().Pods("ns").Get(context.Background(), "clone", metav1.GetOptions{})
		assert.True(t, apierrors.IsNotFound(err), "the clone Pod is deleted: %v", err)
	})

	t.Run("NotFromAPod", func(t *testing.T) {
		prep := prepared(t)
		prep.prepared.Template = nil
		r := &PodRestorer{Client: fake.NewSimpleClientset(), Preparer: prep}
		_, err := r.Restore(asUser("alice"), "ckpt-1", req)
		assert.ErrorIs(t, err, driver.ErrUnsupported)
	})
}

func resourceMust(s string) *resource.Quantity {
	q := resource.MustParse(s)
	return &q
}

type prefetches struct {
	client     *fake.Clientset
	calls      []string
	podExisted bool
}

func (p *prefetches) Prefetch(ctx context.Context, node, ns, pod, id string, containers []string) error {
	p.calls = append(p.calls, fmt.Sprintf("%s %s/%s %s %v", node, ns, pod, id, containers))
	_, err := p.client.CoreV1().Pods(ns).Get(ctx, pod, metav1.GetOptions{})
	p.podExisted = err == nil
	return nil
}
