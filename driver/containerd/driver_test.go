package containerd_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	certutil "k8s.io/client-go/util/cert"

	containerdclient "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/driver"
	"github.com/agents-kruise/checkpoint-apiserver/driver/containerd"
	"github.com/agents-kruise/checkpoint-apiserver/encryption"
	"github.com/agents-kruise/checkpoint-apiserver/nodeimages"
	"github.com/agents-kruise/checkpoint-apiserver/ociregistry"
	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

const ns = "k8s.io"

func newDriver(t *testing.T, c *framework.Containerd) *containerd.Driver {
	d, err := containerd.New(containerd.Config{Address: c.Address, Namespace: ns, LogDir: filepath.Join(c.Dir, "logs"),
		CRIUConfigDir: filepath.Join(c.Dir, "criu"), StopGracePeriod: 2 * time.Second})
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// source starts a counting pod and waits until it has counted a little.
func source(t *testing.T, c *framework.Containerd, pod string) *framework.PodContainer {
	pc := c.RunPodContainer(t, "team-a", pod, "main", framework.CounterScript)
	framework.WaitCounter(t, pc.LogPath, 5)
	return pc
}

func restoredCounter(t *testing.T, d *containerd.Driver, target driver.Target) (first int) {
	t.Helper()
	require.Len(t, target.Containers, 1)
	log := d.LogPath(target.Containers[0].ID)
	framework.WaitCounter(t, log, 1)
	first, _, _ = framework.Counter(t, log)
	return first
}

// hasMarker says whether the container has the marker file the counting
// script wrote (judged by exit code: exec output is not reliably captured).
func hasMarker(t *testing.T, c *framework.Containerd, id string) bool {
	t.Helper()
	ctr, err := c.Client.LoadContainer(c.Ctx(), id)
	require.NoError(t, err)
	_, code := c.Exec(t, ctr, "sh", "-c", `test "$(cat /data/marker)" = captured`)
	return code == 0
}

func TestCaptureAndRestore(t *testing.T) {
	c := framework.StartContainerd(t, ns)
	d := newDriver(t, c)
	ctx := context.Background()

	cases := []struct {
		contents      []driver.Content
		wantContinues bool // memory: the clone's counter continues from the capture
		wantMarker    bool // filesystem: the clone has the file the source wrote
	}{
		{[]driver.Content{driver.Memory, driver.Filesystem}, true, true},
		{[]driver.Content{driver.Filesystem}, false, true},
		{[]driver.Content{driver.Memory}, true, false},
	}
	for i, tc := range cases {
		t.Run(fmt.Sprint(tc.contents), func(t *testing.T) {
			pod := fmt.Sprintf("src-%d", i)
			src := source(t, c, pod)
			target, err := d.Resolve(ctx, "team-a", pod)
			require.NoError(t, err)
			require.Equal(t, []driver.Container{{ID: src.Container.ID(), Name: "main"}}, target.Containers)

			_, before, _ := framework.Counter(t, src.LogPath)
			id := fmt.Sprintf("ckpt-test-%d", i)
			res, err := d.Capture(ctx, target, driver.CaptureRequest{ID: id, Contents: tc.contents})
			require.NoError(t, err)
			_, after, _ := framework.Counter(t, src.LogPath)
			assert.Equal(t, id, res.ID)
			assert.Positive(t, res.SizeBytes)

			// The source keeps running, its state intact.
			framework.WaitCounter(t, src.LogPath, after+3)
			st, err := src.Task.Status(c.Ctx())
			require.NoError(t, err)
			assert.Equal(t, containerdclient.Running, st.Status)

			clone, err := d.Restore(ctx, id, driver.RestoreRequest{Namespace: "team-a", Name: pod + "-clone"})
			require.NoError(t, err)
			first := restoredCounter(t, d, clone)
			if tc.wantContinues {
				assert.GreaterOrEqual(t, first, before, "clone continues from the captured counter (%d..%d)", before, after)
				assert.LessOrEqual(t, first, after+1, "clone continues from the captured counter (%d..%d)", before, after)
			} else {
				assert.Equal(t, 1, first, "a filesystem-only clone starts its process afresh")
			}
			if tc.wantMarker {
				assert.True(t, hasMarker(t, c, clone.Containers[0].ID), "the clone has the file the source wrote")
			} else {
				assert.False(t, hasMarker(t, c, clone.Containers[0].ID), "memory-only capture carries no files")
			}

			// The clone is a pod container of the new sandbox: it can be found and captured again.
			found, err := d.Resolve(ctx, "team-a", pod+"-clone")
			require.NoError(t, err)
			assert.Equal(t, clone.Containers, found.Containers)
		})
	}
}

// execOK runs a shell command in container id and says whether it exited 0.
func execOK(t *testing.T, c *framework.Containerd, id, cmd string) bool {
	t.Helper()
	ctr, err := c.Client.LoadContainer(c.Ctx(), id)
	require.NoError(t, err)
	_, code := c.Exec(t, ctr, "sh", "-c", cmd)
	return code == 0
}

// A web sandbox holds a listening socket and an established connection.
// Both are dumped (CRIU 4.2 on this kernel). The source keeps its
// connection; in the clone the server listens again and answers, and the
// established connection comes back closed, as design.md says clients of a
// clone must expect.
func TestCaptureWebSandbox(t *testing.T) {
	c := framework.StartContainerd(t, ns)
	d := newDriver(t, c)
	ctx := context.Background()
	src := c.RunPodContainer(t, "team-a", "web", "main", framework.WebScript)
	c.LoopbackUp(t, src.Container.ID())
	if !assert.Eventually(t, func() bool { return logHasLine(src.LogPath, "web-ready") }, 30*time.Second, 100*time.Millisecond,
		"the web sandbox serves and holds its connection") {
		out, _ := os.ReadFile(src.LogPath)
		t.Fatalf("log of the web sandbox:\n%s", out)
	}
	framework.WaitCounter(t, src.LogPath, 3)
	const serves = `wget -q -O - http://127.0.0.1:8080/ | grep -q web-sandbox`
	const established = `netstat -tn | grep -q '127.0.0.1:9000 .*ESTABLISHED'`
	require.True(t, execOK(t, c, src.Container.ID(), serves))

	target, err := d.Resolve(ctx, "team-a", "web")
	require.NoError(t, err)
	_, before, _ := framework.Counter(t, src.LogPath)
	_, err = d.Capture(ctx, target, driver.CaptureRequest{ID: "ckpt-web", Contents: []driver.Content{driver.Memory, driver.Filesystem}})
	require.NoError(t, err, "a sandbox with TCP sockets is captured")
	_, after, _ := framework.Counter(t, src.LogPath)

	// The source: still serving, its connection still open.
	framework.WaitCounter(t, src.LogPath, after+3)
	assert.True(t, execOK(t, c, src.Container.ID(), serves), "the source still serves")
	assert.True(t, execOK(t, c, src.Container.ID(), established), "the source keeps its established connection")
	assert.False(t, logHasLine(src.LogPath, "conn-closed"), "the source's connection was not closed")

	id := restoreContinuing(t, c, d, "ckpt-web", "web-clone", before, after)
	assert.True(t, execOK(t, c, id, serves), "the clone's HTTP server listens again and answers")
	assert.Eventually(t, func() bool { return logHasLine(d.LogPath(id), "conn-closed") }, 10*time.Second, 100*time.Millisecond,
		"the established connection comes back closed in the clone")
	assert.False(t, execOK(t, c, id, established), "the clone holds no established connection")
}

// restoreContinuing restores checkpoint id into sandbox, asserts that its
// one container's counter continues from the captured one (before..after)
// and that its loopback is up (as a Pod's CNI leaves it: a bare clone has a
// network namespace of its own, which the driver brings up), and returns
// the container's ID.
func restoreContinuing(t *testing.T, c *framework.Containerd, d *containerd.Driver, id, sandbox string, before, after int) string {
	t.Helper()
	clone, err := d.Restore(context.Background(), id, driver.RestoreRequest{Namespace: "team-a", Name: sandbox})
	require.NoError(t, err)
	first := restoredCounter(t, d, clone)
	assert.GreaterOrEqual(t, first, before, "the clone continues from the captured counter (%d..%d)", before, after)
	assert.LessOrEqual(t, first, after+1, "the clone continues from the captured counter (%d..%d)", before, after)
	ctr, err := c.Client.LoadContainer(c.Ctx(), clone.Containers[0].ID)
	require.NoError(t, err)
	task, err := ctr.Task(c.Ctx(), nil)
	require.NoError(t, err)
	out, err := exec.Command("nsenter", fmt.Sprintf("--net=/proc/%d/ns/net", task.Pid()), "ip", "-o", "link", "show", "lo").CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), ",UP", "the clone's loopback is up: %s", out)
	return clone.Containers[0].ID
}

// secretOf reads the secret a Python sandbox printed at start.
func secretOf(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), "secret="); ok {
			return v
		}
	}
	return ""
}

// A Python sandbox, E2B's code interpreter in shape: an interpreter holding
// state in memory and serving it on a listening TCP socket. The clone's
// interpreter answers with the source's secret and a counter that went on
// from the capture: its memory, not a fresh start.
func TestCapturePythonSandbox(t *testing.T) {
	c := framework.StartContainerd(t, ns)
	c.ImportTestImage(t, "python.tar")
	d := newDriver(t, c)
	ctx := context.Background()
	src := c.RunPodImage(t, "team-a", "py", "main", framework.PythonImage)
	c.LoopbackUp(t, src.Container.ID())
	framework.WaitCounter(t, src.LogPath, 3)
	secret := secretOf(t, src.LogPath)
	require.NotEmpty(t, secret)
	// Exit code 0 when the interpreter answers with secret and a counter >= min.
	answers := func(min int) string {
		return fmt.Sprintf(`python3 -c "
import sys, urllib.request
b = urllib.request.urlopen('http://127.0.0.1:8000/', timeout=5).read().decode().split()
sys.exit(0 if b[1] == 'secret=%s' and int(b[0][2:]) >= %d else 1)"`, secret, min)
	}
	require.True(t, execOK(t, c, src.Container.ID(), answers(1)), "the source's interpreter answers")

	target, err := d.Resolve(ctx, "team-a", "py")
	require.NoError(t, err)
	_, before, _ := framework.Counter(t, src.LogPath)
	res, err := d.Capture(ctx, target, driver.CaptureRequest{ID: "ckpt-py", Contents: []driver.Content{driver.Memory, driver.Filesystem}})
	require.NoError(t, err)
	_, after, _ := framework.Counter(t, src.LogPath)
	t.Logf("captured the Python sandbox: %d bytes, frozen %s", res.SizeBytes, res.Pause)
	assert.Positive(t, res.Pause, "CRIU's frozen time is read from the dump's statistics")
	left, _ := os.ReadDir(filepath.Join(c.Dir, "criu", "work"))
	assert.Empty(t, left, "CRIU's work directory is removed once read")
	framework.WaitCounter(t, src.LogPath, after+3)

	id := restoreContinuing(t, c, d, "ckpt-py", "py-clone", before, after)
	assert.True(t, execOK(t, c, id, answers(before)), "the clone's interpreter answers with the source's secret and its counter")
}

// logHasLine says whether the container log at path has a line equal to line.
func logHasLine(path, line string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(l) == line {
			return true
		}
	}
	return false
}

func TestRestoreOneToMany(t *testing.T) {
	c := framework.StartContainerd(t, ns)
	d := newDriver(t, c)
	ctx := context.Background()
	src := source(t, c, "origin")
	target, err := d.Resolve(ctx, "team-a", "origin")
	require.NoError(t, err)
	_, before, _ := framework.Counter(t, src.LogPath)
	_, err = d.Capture(ctx, target, driver.CaptureRequest{ID: "ckpt-many", Contents: []driver.Content{driver.Memory, driver.Filesystem}})
	require.NoError(t, err)

	var clones []driver.Target
	for i := 0; i < 3; i++ {
		clone, err := d.Restore(ctx, "ckpt-many", driver.RestoreRequest{Namespace: "team-a", Name: fmt.Sprintf("many-%d", i)})
		require.NoError(t, err)
		clones = append(clones, clone)
	}
	for _, clone := range clones {
		first := restoredCounter(t, d, clone)
		assert.GreaterOrEqual(t, first, before)
	}
	// Independent: stopping one leaves the others counting.
	require.NoError(t, d.Stop(ctx, clones[0]))
	for _, clone := range clones[1:] {
		log := d.LogPath(clone.Containers[0].ID)
		_, last, _ := framework.Counter(t, log)
		framework.WaitCounter(t, log, last+3)
	}
	_, err = d.Restore(ctx, "ckpt-many", driver.RestoreRequest{Namespace: "team-a", Name: "many-1"})
	assert.Error(t, err, "restoring into a sandbox that exists is refused")
}

func TestDeleteRemovesState(t *testing.T) {
	c := framework.StartContainerd(t, ns)
	d := newDriver(t, c)
	ctx := context.Background()
	source(t, c, "to-delete")
	target, err := d.Resolve(ctx, "team-a", "to-delete")
	require.NoError(t, err)
	_, err = d.Capture(ctx, target, driver.CaptureRequest{ID: "ckpt-del", Contents: []driver.Content{driver.Memory, driver.Filesystem}})
	require.NoError(t, err)

	imgs, err := c.Client.ImageService().List(c.Ctx(), `labels."agents.kruise.io/checkpoint-id"=="ckpt-del"`)
	require.NoError(t, err)
	require.Len(t, imgs, 1)
	blobs := countBlobs(t, c)
	// The CRI keeps every image also under its ID (sha256:<config>): the
	// base image's record must outlive the checkpoint's delete.
	all, err := c.Client.ImageService().List(c.Ctx())
	require.NoError(t, err)
	var others []string
	for _, img := range all {
		if img.Labels["agents.kruise.io/checkpoint-id"] == "" {
			others = append(others, img.Name)
			if !strings.HasPrefix(img.Name, "sha256:") {
				id := images.Image{Name: fmt.Sprintf("sha256:%064x", len(others)), Target: img.Target}
				_, err := c.Client.ImageService().Create(c.Ctx(), id)
				require.NoError(t, err)
				others = append(others, id.Name)
			}
		}
	}
	require.NotEmpty(t, others)

	require.NoError(t, d.Delete(ctx, "ckpt-del"))
	for _, name := range others {
		_, err := c.Client.ImageService().Get(c.Ctx(), name)
		assert.NoError(t, err, "image %s outlives the checkpoint's delete", name)
	}
	imgs, err = c.Client.ImageService().List(c.Ctx(), `labels."agents.kruise.io/checkpoint-id"=="ckpt-del"`)
	require.NoError(t, err)
	assert.Empty(t, imgs)
	assert.Less(t, countBlobs(t, c), blobs, "the dump and diff blobs were garbage collected")

	assert.NoError(t, d.Delete(ctx, "ckpt-del"), "deleting again succeeds")
	_, err = d.Restore(ctx, "ckpt-del", driver.RestoreRequest{Namespace: "team-a", Name: "x"})
	assert.ErrorIs(t, err, driver.ErrCheckpointNotFound)
}

func countBlobs(t *testing.T, c *framework.Containerd) int {
	n := 0
	require.NoError(t, c.Client.ContentStore().Walk(c.Ctx(), func(_ content.Info) error { n++; return nil }))
	return n
}

func TestStopAndErrors(t *testing.T) {
	c := framework.StartContainerd(t, ns)
	d := newDriver(t, c)
	ctx := context.Background()
	src := source(t, c, "to-stop")

	_, err := d.Resolve(ctx, "team-a", "missing-pod")
	assert.ErrorIs(t, err, driver.ErrTargetNotFound)
	_, err = d.Capture(ctx, driver.Target{Namespace: "team-a", Name: "ghost", Containers: []driver.Container{{ID: "nope", Name: "main"}}},
		driver.CaptureRequest{ID: "ckpt-ghost", Contents: []driver.Content{driver.Memory}})
	assert.ErrorIs(t, err, driver.ErrTargetNotFound)

	target, err := d.Resolve(ctx, "team-a", "to-stop")
	require.NoError(t, err)
	require.NoError(t, d.Stop(ctx, target))
	_, err = src.Container.Task(c.Ctx(), nil)
	assert.Error(t, err, "the task is gone after Stop")
	_, err = d.Capture(ctx, target, driver.CaptureRequest{ID: "ckpt-stopped", Contents: []driver.Content{driver.Memory}})
	assert.ErrorIs(t, err, driver.ErrTargetNotFound, "memory of a stopped container cannot be captured")

	gone, err := containerd.New(containerd.Config{Address: filepath.Join(t.TempDir(), "nothing.sock"), Namespace: ns, CRIUConfigDir: t.TempDir()})
	require.NoError(t, err)
	_, err = gone.Capture(ctx, target, driver.CaptureRequest{ID: "x", Contents: []driver.Content{driver.Memory}})
	assert.True(t, errors.Is(err, driver.ErrUnavailable), "unreachable containerd: %v", err)
}

// TestMultiContainerPod captures every app container of a pod (the pause
// container excluded) and restores them all into the clone.
func TestMultiContainerPod(t *testing.T) {
	c := framework.StartContainerd(t, ns)
	d := newDriver(t, c)
	ctx := context.Background()
	main := c.RunPodContainer(t, "team-a", "duo", "main", framework.CounterScript)
	side := c.RunPodContainer(t, "team-a", "duo", "sidecar", framework.CounterScript)
	pause := c.RunPodContainer(t, "team-a", "duo", "POD", "sleep 3600")
	setKind(t, c, pause, "sandbox")
	framework.WaitCounter(t, main.LogPath, 3)
	framework.WaitCounter(t, side.LogPath, 3)

	target, err := d.Resolve(ctx, "team-a", "duo")
	require.NoError(t, err)
	names := map[string]bool{}
	for _, ctr := range target.Containers {
		names[ctr.Name] = true
	}
	assert.Equal(t, map[string]bool{"main": true, "sidecar": true}, names, "app containers only")

	_, err = d.Capture(ctx, target, driver.CaptureRequest{ID: "ckpt-duo", Contents: []driver.Content{driver.Memory, driver.Filesystem}})
	require.NoError(t, err)
	clone, err := d.Restore(ctx, "ckpt-duo", driver.RestoreRequest{Namespace: "team-a", Name: "duo-clone"})
	require.NoError(t, err)
	require.Len(t, clone.Containers, 2)
	for _, ctr := range clone.Containers {
		first := restoredCounter(t, d, driver.Target{Containers: []driver.Container{ctr}})
		assert.Greater(t, first, 1, "%s continues from the capture", ctr.Name)
	}
}

func setKind(t *testing.T, c *framework.Containerd, pc *framework.PodContainer, kind string) {
	t.Helper()
	labels, err := pc.Container.Labels(c.Ctx())
	require.NoError(t, err)
	labels["io.cri-containerd.kind"] = kind
	_, err = pc.Container.SetLabels(c.Ctx(), labels)
	require.NoError(t, err)
}

// TestResolvePrefersTheRunningAttempt: a node keeps the exited container of
// an earlier attempt with the same labels; the running one is the pod's.
func TestResolvePrefersTheRunningAttempt(t *testing.T) {
	c := framework.StartContainerd(t, ns)
	d := newDriver(t, c)
	ctx := context.Background()
	old := c.RunPodContainer(t, "team-a", "restarted", "main", "exit 1")
	exited, err := old.Task.Wait(c.Ctx())
	require.NoError(t, err)
	<-exited
	current := c.RunPodContainer(t, "team-a", "restarted", "main", framework.CounterScript)
	framework.WaitCounter(t, current.LogPath, 2)

	target, err := d.Resolve(ctx, "team-a", "restarted")
	require.NoError(t, err)
	assert.Equal(t, []driver.Container{{ID: current.Container.ID(), Name: "main"}}, target.Containers)
	_, err = d.Capture(ctx, target, driver.CaptureRequest{ID: "ckpt-restarted", Contents: []driver.Content{driver.Memory}})
	assert.NoError(t, err)
}

// TestDumpDirectory: through a node agent, CRIU dumps into the fast
// directory (a tmpfs) when the container fits in its limit and to disk when
// it does not; either way the dump streams into a real registry as the
// kubelet's checkpoint archive, tagged with the checkpoint's ID, and no
// dump is left behind.
func TestDumpDirectory(t *testing.T) {
	c := framework.StartContainerd(t, ns)
	lr := framework.StartRegistry(t)
	reg, err := ociregistry.New(ociregistry.Config{Repository: lr.Repository, CAFile: lr.CAFile, AuthFile: lr.AuthFile})
	require.NoError(t, err)
	ctx := context.Background()
	fast, err := os.MkdirTemp("/dev/shm", "dump-test-")
	require.NoError(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(fast) })
	for _, tc := range []struct {
		name  string
		limit int64
		fast  bool
	}{{"fits", 0, true}, {"over the limit", 1, false}} {
		t.Run(tc.name, func(t *testing.T) {
			slug := strings.ReplaceAll(tc.name, " ", "-")
			criu := filepath.Join(c.Dir, "criu-"+slug)
			d, err := containerd.New(containerd.Config{Address: c.Address, Namespace: ns, LogDir: filepath.Join(c.Dir, "logs"),
				CRIUConfigDir: criu, DumpDir: fast, DumpDirLimit: tc.limit})
			require.NoError(t, err)
			t.Cleanup(func() { _ = d.Close() })
			var dirs []string
			var fastSeen []bool
			defer containerd.SetDumpHook(func(dir string, f bool) { dirs, fastSeen = append(dirs, dir), append(fastSeen, f) })()

			pod := "dump-" + slug
			// The sandbox holds a random token in its memory (and its spec).
			token := "tok" + strings.ReplaceAll(string(uuid.NewUUID()), "-", "")
			pc := c.RunPodContainer(t, "team-a", pod, "main", "T="+token+"; "+framework.CounterScript)
			framework.WaitCounter(t, pc.LogPath, 5)
			target, err := d.Resolve(ctx, "team-a", pod)
			require.NoError(t, err)
			id := agents.CheckpointID(types.UID("dump-" + slug))
			dek, err := encryption.NewDEK()
			require.NoError(t, err)
			res, pub, err := d.CaptureToRegistry(ctx, target, driver.CaptureRequest{ID: id, Contents: []driver.Content{driver.Memory, driver.Filesystem}, Key: dek}, reg)
			require.NoError(t, err)
			assert.False(t, framework.TreeContains(t, lr.Dir, token), "the registry's storage holds the sandbox's token in clear")
			assert.Positive(t, res.Pause)

			require.Len(t, dirs, 1)
			assert.Equal(t, tc.fast, fastSeen[0])
			if tc.fast {
				assert.Equal(t, filepath.Join(fast, id, "main"), dirs[0])
			} else {
				assert.Equal(t, filepath.Join(criu, "dumps", id, "main"), dirs[0])
			}
			assert.NoDirExists(t, filepath.Dir(dirs[0]), "the dump is removed once pushed")

			// In the registry, in the namespace's own repository: the index
			// by its tag, one CRI checkpoint image whose one layer is the
			// kubelet archive of the capture.
			teamA, err := reg.In("team-a")
			require.NoError(t, err)
			idx, err := teamA.Index(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, pub.Digest, idx.Digest.String())
			assert.Equal(t, teamA.DigestRef(idx.Digest), pub.Image)
			assert.True(t, strings.HasPrefix(pub.Image, reg.Repository()+"/team-a@"), pub.Image)
			_, err = reg.Index(ctx, id)
			assert.ErrorIs(t, err, ociregistry.ErrNotFound, "nothing goes to the prefix's own repository")
			assert.NoError(t, encryption.VerifyIndex(idx.Annotations[ociregistry.AnnotationMAC], dek, id, "team-a", idx.Manifests,
				ociregistry.AnnotationContainerName), "the index carries the MAC of the checkpoint's data key")
			require.Len(t, idx.Manifests, 1)
			assert.Equal(t, "main", idx.Manifests[0].Annotations[ociregistry.AnnotationContainerName])
			var manifest ocispec.Manifest
			require.NoError(t, json.Unmarshal(registryGet(t, lr, "manifests/"+idx.Manifests[0].Digest.String()), &manifest))
			require.Len(t, manifest.Layers, 1)
			assert.Equal(t, res.SizeBytes, manifest.Layers[0].Size, "the state's size is the archive pushed")
			assert.Equal(t, "main", manifest.Annotations[containerd.CheckpointAnnotationName])
			layerDesc := manifest.Layers[0]
			assert.Equal(t, encryption.MediaTypeEncryptedLayer, layerDesc.MediaType)
			assert.NotEmpty(t, layerDesc.Annotations[encryption.AnnotationPubOpts])
			layer := registryGet(t, lr, "blobs/"+layerDesc.Digest.String())
			assert.Equal(t, layerDesc.Digest, digest.FromBytes(layer))
			plain, err := encryption.DecryptLayer(bytes.NewReader(layer), layerDesc, dek, id, "main")
			require.NoError(t, err)
			clear, err := io.ReadAll(plain)
			require.NoError(t, err)
			assert.True(t, bytes.Contains(clear, []byte(token)), "decrypted, the archive holds the token (the grep above would have found it)")
			names := map[string]bool{}
			tr := tar.NewReader(bytes.NewReader(clear))
			for {
				hdr, err := tr.Next()
				if err == io.EOF {
					break
				}
				require.NoError(t, err)
				names[hdr.Name] = true
			}
			for _, want := range []string{"config.dump", "spec.dump", "status.dump", "checkpoint/inventory.img", "rootfs-diff.tar"} {
				assert.True(t, names[want], "the archive has %s: %v", want, names)
			}

			// A node's agent unpacks it from the registry by the index's
			// digest for the restore runtime, and refuses an index that is
			// another checkpoint's.
			// With another data key (this node was given the wrong one),
			// nothing is unpacked.
			wrong, err := encryption.NewDEK()
			require.NoError(t, err)
			wrongRing := &encryption.Ring{}
			require.NoError(t, wrongRing.Put("team-a", id, wrong))
			store := &nodeimages.Store{Dir: t.TempDir(), Lookup: digestLookup(pub.Digest), Archives: nodeimages.RegistryArchives{Registry: reg, Keys: wrongRing}}
			require.NoError(t, store.Start())
			_, err = store.Prepare(ctx, api.Request{Namespace: "team-a", Pod: "clone", Container: "main", CheckpointID: id})
			require.ErrorIs(t, err, encryption.ErrWrongKey)
			ring := &encryption.Ring{}
			require.NoError(t, ring.Put("team-a", id, dek))
			store = &nodeimages.Store{Dir: t.TempDir(), Lookup: digestLookup(pub.Digest), Archives: nodeimages.RegistryArchives{Registry: reg, Keys: ring}}
			require.NoError(t, store.Start())
			got, err := store.Prepare(ctx, api.Request{Namespace: "team-a", Pod: "clone", Container: "main", CheckpointID: id})
			require.NoError(t, err)
			assert.True(t, framework.TreeContains(t, store.Dir, token), "unpacked on the node, the checkpoint is in clear")
			assert.FileExists(t, filepath.Join(got.Images, "inventory.img"))
			assert.FileExists(t, got.RootfsDiff)
			_, err = store.Prepare(ctx, api.Request{Namespace: "team-a", Pod: "clone", Container: "main", CheckpointID: agents.CheckpointID("another")})
			assert.ErrorContains(t, err, "refused")

			// Whoever may push to the registry can write an index naming
			// this checkpoint, its namespace and its (or other) manifests;
			// without the data key it carries no valid MAC, and nothing of
			// it is unpacked: no MAC, a MAC of another key, or the real MAC
			// over other manifests.
			other, err := encryption.NewDEK()
			require.NoError(t, err)
			otherMAC, err := encryption.IndexMAC(other, id, "team-a", idx.Manifests, ociregistry.AnnotationContainerName)
			require.NoError(t, err)
			moved := append([]ocispec.Descriptor(nil), idx.Manifests...)
			moved[0].Size++
			for name, forge := range map[string]func(a map[string]string, m *[]ocispec.Descriptor){
				"no MAC":               func(a map[string]string, _ *[]ocispec.Descriptor) { delete(a, ociregistry.AnnotationMAC) },
				"another key's MAC":    func(a map[string]string, _ *[]ocispec.Descriptor) { a[ociregistry.AnnotationMAC] = otherMAC },
				"the MAC, other parts": func(_ map[string]string, m *[]ocispec.Descriptor) { *m = moved },
			} {
				forged := idx.Index
				forged.Annotations = maps.Clone(idx.Annotations)
				forged.Manifests = append([]ocispec.Descriptor(nil), idx.Manifests...)
				forge(forged.Annotations, &forged.Manifests)
				data, err := json.Marshal(forged)
				require.NoError(t, err)
				fd, err := teamA.PushManifest(ctx, "", ocispec.MediaTypeImageIndex, data)
				require.NoError(t, err)
				store := &nodeimages.Store{Dir: t.TempDir(), Lookup: digestLookup(fd.Digest.String()), Archives: nodeimages.RegistryArchives{Registry: reg, Keys: ring}}
				require.NoError(t, store.Start())
				_, err = store.Prepare(ctx, api.Request{Namespace: "team-a", Pod: "clone", Container: "main", CheckpointID: id})
				require.ErrorIs(t, err, encryption.ErrIndexNotAuthentic, name)
				assert.False(t, framework.TreeContains(t, store.Dir, token), "%s: nothing was unpacked", name)
			}

			// A dump left behind (a crash), with nothing else of its
			// checkpoint, is state of it, which the sweep's Delete removes.
			orphan := id + "-orphan"
			left := filepath.Join(filepath.Dir(filepath.Dir(dirs[0])), orphan, "main")
			require.NoError(t, os.MkdirAll(left, 0o700))
			states, err := d.States(ctx)
			require.NoError(t, err)
			assert.Contains(t, states, orphan)
			require.NoError(t, d.Delete(ctx, orphan))
			assert.NoDirExists(t, filepath.Dir(left))
			require.NoError(t, d.Delete(ctx, id))
			imgs, err := c.Client.ImageService().List(c.Ctx(), fmt.Sprintf("labels.%q==%q", containerd.LabelCheckpointID, id))
			require.NoError(t, err)
			assert.Empty(t, imgs, "Delete removes every image of the checkpoint")
		})
	}
	left, err := os.ReadDir(fast)
	require.NoError(t, err)
	assert.Empty(t, left, "nothing left in the dump directory")

	t.Run("over both bounds", func(t *testing.T) {
		criu := filepath.Join(c.Dir, "criu-over-both")
		d, err := containerd.New(containerd.Config{Address: c.Address, Namespace: ns, LogDir: filepath.Join(c.Dir, "logs"),
			CRIUConfigDir: criu, DumpDir: fast, DumpDirLimit: 1, DiskDumpLimit: 1})
		require.NoError(t, err)
		t.Cleanup(func() { _ = d.Close() })
		source(t, c, "dump-over-both")
		target, err := d.Resolve(ctx, "team-a", "dump-over-both")
		require.NoError(t, err)
		dek, err := encryption.NewDEK()
		require.NoError(t, err)
		_, _, err = d.CaptureToRegistry(ctx, target, driver.CaptureRequest{ID: agents.CheckpointID("dump-over-both"),
			Contents: []driver.Content{driver.Memory, driver.Filesystem}, Key: dek}, reg)
		require.ErrorIs(t, err, containerd.ErrDumpTooLarge)
		assert.Contains(t, err.Error(), "disk bound", "the capture says which bound")
		dumps, _ := os.ReadDir(filepath.Join(criu, "dumps"))
		assert.Empty(t, dumps, "no dump was written")
		states, err := d.States(ctx)
		require.NoError(t, err)
		assert.NotContains(t, states, agents.CheckpointID("dump-over-both"), "nothing of the capture is left")
	})
}

// registryGet reads /v2/checkpoints/<suffix> from lr.
func registryGet(t *testing.T, lr framework.LocalRegistry, suffix string) []byte {
	t.Helper()
	pool, err := certutil.NewPool(lr.CAFile)
	require.NoError(t, err)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	host, _, _ := strings.Cut(lr.Repository, "/")
	req, err := http.NewRequest(http.MethodGet, "https://"+host+"/v2/checkpoints/team-a/"+suffix, nil)
	require.NoError(t, err)
	req.SetBasicAuth("checkpoints", "test-password")
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, suffix)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return b
}

// digestLookup finds every checkpoint ID at one registry digest.
type digestLookup string

func (d digestLookup) Find(_ context.Context, ns, _ string) (nodeimages.Checkpoint, error) {
	return nodeimages.Checkpoint{Namespace: ns, Name: "cp", ImageDigest: string(d)}, nil
}

// TestCaptureFailureQuotesCRIU makes CRIU refuse a dump (the process holds
// an io_uring, which CRIU cannot dump): the error carries CRIU's own error
// lines, and the whole log is kept after its work directory is gone.
func TestCaptureFailureQuotesCRIU(t *testing.T) {
	c := framework.StartContainerd(t, ns)
	d := newDriver(t, c)
	ctx := context.Background()
	c.ImportTestImage(t, "python.tar")
	src := c.RunPodImage(t, "team-a", "ring", "main", framework.PythonImage, "python3", "-u", "-c",
		"import ctypes, time\nring = ctypes.CDLL(None).syscall(425, 4, ctypes.create_string_buffer(120))\nassert ring >= 0\n"+
			"i = 0\nwhile True:\n    i += 1\n    print(i)\n    time.sleep(0.1)\n")
	framework.WaitCounter(t, src.LogPath, 2)
	target, err := d.Resolve(ctx, "team-a", "ring")
	require.NoError(t, err)
	_, err = d.Capture(ctx, target, driver.CaptureRequest{ID: "ckpt-ring", Contents: []driver.Content{driver.Memory}})
	require.Error(t, err, "CRIU refuses an io_uring")
	assert.Contains(t, err.Error(), "; CRIU: ", "CRIU's own words are in the error")
	assert.Contains(t, err.Error(), "Error (criu/cr-dump.c", "CRIU's own error lines are in the error: %v", err)
	kept, _ := filepath.Glob(filepath.Join(c.Dir, "criu", "logs", "*-ckpt-ring-main-dump.log"))
	assert.Len(t, kept, 1, "the whole dump log is kept")
	_, last, _ := framework.Counter(t, src.LogPath)
	framework.WaitCounter(t, src.LogPath, last+3)
}

// TestNoSandboxIsLeftPaused: a container a capture paused and could not
// resume (containerd or the driver died in between) is resumed by the next
// driver, and an unmarked paused container, paused by someone else, is left
// alone.
func TestNoSandboxIsLeftPaused(t *testing.T) {
	c := framework.StartContainerd(t, ns)
	mine := source(t, c, "left-paused")
	theirs := source(t, c, "paused-by-them")
	ctx := c.Ctx()
	for _, pc := range []*framework.PodContainer{mine, theirs} {
		require.NoError(t, pc.Task.Pause(ctx))
	}
	// What a capture cut between its pause and its resume leaves behind.
	marker := filepath.Join(c.Dir, "criu", "paused", mine.Container.ID())
	require.NoError(t, os.MkdirAll(filepath.Dir(marker), 0o700))
	require.NoError(t, os.WriteFile(marker, nil, 0o600))

	newDriver(t, c)
	require.Eventually(t, func() bool {
		st, err := mine.Task.Status(ctx)
		return err == nil && st.Status == containerdclient.Running
	}, 30*time.Second, 100*time.Millisecond, "the marked container runs again")
	_, err := os.Stat(marker)
	assert.True(t, os.IsNotExist(err), "its marker is gone")
	n := framework.Counter
	_, before, _ := n(t, mine.LogPath)
	require.Eventually(t, func() bool { _, now, _ := n(t, mine.LogPath); return now > before }, 30*time.Second, 100*time.Millisecond,
		"and counts on")
	st, err := theirs.Task.Status(ctx)
	require.NoError(t, err)
	assert.Equal(t, containerdclient.Paused, st.Status, "a container someone else paused stays paused")
}
