package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
)

// fakeHibernations is a FAKE store of hibernation Checkpoints, in memory.
type fakeHibernations struct {
	list    []Hibernation
	started []string // "<sandbox>/<pod UID>" of every Start
	broken  bool
}

func (f *fakeHibernations) Of(_ context.Context, ns, sandbox string) ([]Hibernation, error) {
	if f.broken {
		return nil, errors.New("the kube-apiserver did not answer")
	}
	var out []Hibernation
	for i := len(f.list) - 1; i >= 0; i-- { // newest first
		out = append(out, f.list[i])
	}
	return out, nil
}

func (f *fakeHibernations) Start(_ context.Context, sandbox string, sb Sandbox, pod *corev1.Pod) (string, error) {
	f.started = append(f.started, sandbox+"/"+string(pod.UID))
	name := fmt.Sprintf("%s-hibernation-%d", sandbox, len(f.started))
	f.list = append(f.list, Hibernation{Name: name, Phase: agents.PhasePending, SandboxUID: sb.UID, PodUID: string(pod.UID), Created: time.Now()})
	return name, nil
}

// end sets the newest hibernation's phase (and ID, when Succeeded).
func (f *fakeHibernations) end(phase agents.CheckpointPhase, id, msg string) {
	h := &f.list[len(f.list)-1]
	h.Phase, h.Message = phase, msg
	if phase == agents.PhaseSucceeded {
		h.ID = id
	}
}

const hibernationID = "ckpt-aaaaaaaaaaaaaaaaaaaaaaaa"

func TestHibernation(t *testing.T) {
	sandboxes := map[string]Sandbox{
		"hib":      {UID: "u-hib", Owner: "key-alice", Paused: true, PauseStrategy: PauseHibernate, HibernateMedium: HibernateSnapshot},
		"awake":    {UID: "u-awake", Owner: "key-alice", PauseStrategy: PauseHibernate},
		"stop":     {UID: "u-stop", Owner: "key-alice", Paused: true, PauseStrategy: PauseStop},
		"deleting": {UID: "u-deleting", Owner: "key-alice", Paused: true, PauseStrategy: PauseHibernate, Deleting: true},
		"tape":     {UID: "u-tape", Owner: "key-alice", Paused: true, PauseStrategy: PauseHibernate, HibernateMedium: "Tape"},
		"clone":    {UID: "u-clone", Owner: "key-alice", RestoreFrom: podID, PauseStrategy: PauseHibernate},
	}
	store := &fakeHibernations{}
	p := &RestorePods{RuntimeClass: "checkpoint",
		Lookup: func(_ context.Context, ns, id string) (Checkpoint, error) {
			if id == hibernationID || id == podID {
				return Checkpoint{Name: "cp", Owner: "key-alice"}, nil
			}
			return Checkpoint{}, errors.New("no Checkpoint with ID " + id)
		},
		Clones: &SandboxClones{Controllers: []string{controller}, Hibernations: store, CheckpointIDKey: "agents.kruise.io/checkpoint-id",
			Sandboxes: func(_ context.Context, ns, name string) (Sandbox, error) {
				if name == "broken" {
					return Sandbox{}, errors.New("the kube-apiserver did not answer")
				}
				if sb, ok := sandboxes[name]; ok {
					return sb, nil
				}
				return Sandbox{}, apierrors.NewNotFound(agents.Resource("sandboxes"), name)
			}},
	}
	pod := func(sandbox, uid string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: sandbox, Namespace: "team-a", UID: types.UID("pod-" + sandbox),
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "agents.kruise.io/v1alpha1", Kind: "Sandbox", Name: sandbox, UID: types.UID(uid), Controller: ptr.To(true)}}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main", Image: "busybox"}}}}
	}
	p.Clones.Pods = func(_ context.Context, ns, name string) (*corev1.Pod, error) {
		if name == "evicted" {
			return pod("hib", "u-hib"), nil
		}
		return nil, apierrors.NewNotFound(corev1.Resource("pods"), name)
	}
	del := func(pd *corev1.Pod, dryRun bool) *admissionv1.AdmissionResponse {
		raw, err := json.Marshal(pd)
		require.NoError(t, err)
		return p.reviewDelete(&admissionv1.AdmissionRequest{Operation: admissionv1.Delete, Namespace: "team-a", Name: pd.Name, DryRun: &dryRun,
			UserInfo: authnv1.UserInfo{Username: controller}, OldObject: runtime.RawExtension{Raw: raw}})
	}
	refused := func(resp *admissionv1.AdmissionResponse, code int32, says string) {
		t.Helper()
		require.False(t, resp.Allowed)
		assert.Equal(t, code, resp.Result.Code)
		assert.Contains(t, resp.Result.Message, says)
	}

	t.Run("OtherPodsGoAsBefore", func(t *testing.T) {
		deleting := pod("hib", "u-hib")
		deleting.DeletionTimestamp = &metav1.Time{Time: time.Now()}
		for name, pd := range map[string]*corev1.Pod{
			"a Stop Sandbox's":                  pod("stop", "u-stop"),
			"an unpaused Hibernate Sandbox's":   pod("awake", "u-awake"),
			"a Sandbox being deleted's":         pod("deleting", "u-deleting"),
			"a Sandbox gone's":                  pod("gone", "u-gone"),
			"an earlier Sandbox of that name's": pod("hib", "u-earlier"),
			"one already being deleted":         deleting,
			"one no Sandbox owns":               {ObjectMeta: metav1.ObjectMeta{Name: "plain", UID: "pod-plain"}},
		} {
			assert.True(t, del(pd, false).Allowed, name)
		}
		assert.Empty(t, store.started, "nothing is captured for them")
		refused(del(pod("broken", "u-x"), false), http.StatusServiceUnavailable, "cannot tell whether Sandbox team-a/broken hibernates")
		refused(del(pod("tape", "u-tape"), false), http.StatusForbidden, `hibernateStrategy.type "Tape"`)
		assert.Empty(t, store.started)
	})

	t.Run("APausedHibernateSandboxsPodWaitsForItsCapture", func(t *testing.T) {
		refused(del(pod("hib", "u-hib"), true), http.StatusConflict, "a dry run starts no capture")
		assert.Empty(t, store.started, "a dry run starts nothing")
		refused(del(pod("hib", "u-hib"), false), http.StatusConflict, "its memory is being captured (Checkpoint hib-hibernation-1)")
		assert.Equal(t, []string{"hib/pod-hib"}, store.started, "the first delete starts the capture of that very Pod")
		refused(del(pod("hib", "u-hib"), false), http.StatusConflict, "being captured")
		assert.Len(t, store.started, 1, "a delete while it runs starts no other")

		// A failed capture is tried again, up to maxHibernationAttempts.
		for i := 1; i < maxHibernationAttempts; i++ {
			store.end(agents.PhaseFailed, "", fmt.Sprintf("failure %d", i))
			refused(del(pod("hib", "u-hib"), false), http.StatusConflict, "being captured")
			assert.Len(t, store.started, i+1)
		}
		store.end(agents.PhaseFailed, "", "CRIU could not dump")
		refused(del(pod("hib", "u-hib"), false), http.StatusForbidden, "capturing its memory failed 3 times (the last, Checkpoint hib-hibernation-3: CRIU could not dump)")
		assert.Len(t, store.started, maxHibernationAttempts, "then nothing more until someone acts")

		store.list = nil
		store.started = nil
		refused(del(pod("hib", "u-hib"), false), http.StatusConflict, "being captured")
		store.end(agents.PhaseSucceeded, hibernationID, "captured")
		assert.True(t, del(pod("hib", "u-hib"), false).Allowed, "the Pod goes once its memory is captured")

		store.broken = true
		refused(del(pod("hib", "u-hib"), false), http.StatusServiceUnavailable, "cannot list the hibernations")
		store.broken = false
	})

	t.Run("AnEvictionIsHeldTooAndToldToRetry", func(t *testing.T) {
		// An eviction (a node drain) names its Pod only; the Pod is read.
		store.list, store.started = nil, nil
		evict := func(name string) *admissionv1.AdmissionResponse {
			return p.reviewDelete(&admissionv1.AdmissionRequest{Operation: admissionv1.Create, SubResource: "eviction",
				Namespace: "team-a", Name: name, UserInfo: authnv1.UserInfo{Username: "system:serviceaccount:kube-system:drain"}})
		}
		refused(evict("evicted"), http.StatusTooManyRequests, "its memory is being captured")
		assert.Equal(t, []string{"hib/pod-hib"}, store.started, "the eviction starts the capture")
		refused(evict("evicted"), http.StatusTooManyRequests, "being captured")
		store.end(agents.PhaseSucceeded, hibernationID, "captured")
		assert.True(t, evict("evicted").Allowed, "evicted once its memory is captured")
		assert.True(t, evict("gone").Allowed, "a Pod that is gone")
	})

	var raw []byte // the newest Pod create's
	create := func(sandbox, uid, who string, annotations map[string]string) *admissionv1.AdmissionResponse {
		pd := pod(sandbox, uid)
		pd.UID = ""
		pd.Annotations = annotations
		var err error
		raw, err = json.Marshal(pd)
		require.NoError(t, err)
		return p.markClone(&admissionv1.AdmissionRequest{Operation: admissionv1.Create, Namespace: "team-a", Name: sandbox,
			UserInfo: authnv1.UserInfo{Username: who}, Object: runtime.RawExtension{Raw: raw}})
	}
	resumed := func(resp *admissionv1.AdmissionResponse) corev1.Pod {
		t.Helper()
		_, pd := patched(t, resp, raw)
		return pd
	}

	t.Run("TheResumedPodIsRestoredFromIt", func(t *testing.T) {
		marked := resumed(create("hib", "u-hib", controller, nil))
		assert.Equal(t, hibernationID, marked.Annotations[api.AnnotationRestoreFrom])
		assert.Equal(t, "checkpoint", *marked.Spec.RuntimeClassName)
		// Even when an upgrade annotation is there: the memory comes first.
		marked = resumed(create("hib", "u-hib", controller, map[string]string{"agents.kruise.io/checkpoint-id": podID}))
		assert.Equal(t, hibernationID, marked.Annotations[api.AnnotationRestoreFrom])
		resp := create("hib", "u-hib", "mallory", nil)
		require.False(t, resp.Allowed, "only its controller recreates a hibernated Sandbox's Pod")
		assert.Contains(t, resp.Result.Message, "resumes its hibernation "+hibernationID+", and its Pod is created by its controller")
		// A later Sandbox of that name does not get the earlier one's memory.
		sandboxes["hib"] = Sandbox{UID: "u-hib2", Owner: "key-alice", PauseStrategy: PauseHibernate}
		assert.Nil(t, create("hib", "u-hib2", controller, nil).Patch, "a new Sandbox of that name starts fresh")
		// A hibernating clone resumes its hibernation, not its source.
		store.list = append(store.list, Hibernation{Name: "clone-h", ID: hibernationID, Phase: agents.PhaseSucceeded, SandboxUID: "u-clone", PodUID: "pod-clone"})
		marked = resumed(create("clone", "u-clone", controller, nil))
		assert.Equal(t, hibernationID, marked.Annotations[api.AnnotationRestoreFrom])
		// A failed hibernation is not resumed: its clone source is.
		store.list[len(store.list)-1].Phase = agents.PhaseFailed
		marked = resumed(create("clone", "u-clone", controller, nil))
		assert.Equal(t, podID, marked.Annotations[api.AnnotationRestoreFrom])
	})
}
