package faults

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/generated/clientset/versioned"
	agentsv1alpha1 "github.com/agents-kruise/checkpoint-apiserver/generated/clientset/versioned/typed/agents/v1alpha1"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

const ns = "faults"

// env is a standalone server capturing through a private containerd.
type env struct {
	ctrd   *framework.Containerd
	srv    *framework.Server
	client versioned.Interface
	args   []string
}

func startEnv(t *testing.T, extraArgs ...string) *env {
	t.Helper()
	e := &env{ctrd: framework.StartContainerd(t, "k8s.io")}
	e.args = append([]string{
		"--containerd-address=" + e.ctrd.Address, "--containerd-namespace=k8s.io", "--resolver=labels",
		"--declarative-capture-delay=24h", "--orphan-sweep-interval=2s",
	}, extraArgs...)
	e.start(t)
	return e
}

// start (re)starts the server on the same data directory.
func (e *env) start(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	if e.srv != nil {
		dir = e.srv.DataDir
	}
	e.srv = framework.StartStandalone(t, dir, e.args...)
	cfg := rest.CopyConfig(e.srv.Config)
	cfg.ContentType, cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf", "application/vnd.kubernetes.protobuf"
	cfg.Timeout = 90 * time.Second
	cfg.QPS, cfg.Burst = 1000, 1000
	var err error
	e.client, err = versioned.NewForConfig(cfg)
	require.NoError(t, err)
}

func (e *env) cps() agentsv1alpha1.CheckpointInterface {
	return e.client.AgentsV1alpha1().Checkpoints(ns)
}

func (e *env) create(t *testing.T, name, pod string) {
	t.Helper()
	_, err := e.cps().Create(context.Background(), &v1alpha1.Checkpoint{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha1.CheckpointSpec{PodName: pod}}, metav1.CreateOptions{})
	require.NoError(t, err)
}

// images counts the checkpoint images containerd holds for id ("" for any).
func (e *env) images(t *testing.T, id string) int {
	t.Helper()
	filter := `labels."agents.kruise.io/checkpoint-id"`
	if id != "" {
		filter = fmt.Sprintf(`labels."agents.kruise.io/checkpoint-id"==%q`, id)
	}
	imgs, err := e.ctrd.Client.ImageService().List(e.ctrd.Ctx(), filter)
	require.NoError(t, err)
	return len(imgs)
}

// leases counts the capture leases containerd holds.
func (e *env) leases(t *testing.T) int {
	t.Helper()
	ls, err := e.ctrd.Client.LeasesService().List(e.ctrd.Ctx(), `labels."agents.kruise.io/checkpoint-id"`)
	require.NoError(t, err)
	return len(ls)
}

func readyReason(cp *v1alpha1.Checkpoint) string {
	for _, c := range cp.Status.Conditions {
		if c.Type == "Ready" {
			return c.Reason
		}
	}
	return ""
}

var listAll = metav1.ListOptions{}

// restHTTPClient is an HTTP client with the server's admin credentials.
func restHTTPClient(e *env) (*http.Client, error) { return rest.HTTPClientFor(e.srv.Config) }
