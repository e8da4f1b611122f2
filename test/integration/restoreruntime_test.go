package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/diff"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/containerd/v2/pkg/rootfs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agents-kruise/checkpoint-apiserver/apis/agents"
	"github.com/agents-kruise/checkpoint-apiserver/driver"
	containerddriver "github.com/agents-kruise/checkpoint-apiserver/driver/containerd"
	"github.com/agents-kruise/checkpoint-apiserver/nodeimages"
	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime"
	restoreapi "github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// memoryScript holds 4 MiB of random bytes (base64) in the shell's memory
// only, writes their SHA-256 to /tmp/h0 once, counts in /tmp/n, and on
// request (/tmp/check) writes the SHA-256 of what it holds now to /tmp/h1,
// beside the count: a clone that did not get its memory back cannot write
// the source's hash.
const memoryScript = `blob=$(head -c 4194304 /dev/urandom | busybox base64 -w0)
h0=$(echo "$blob" | busybox sha256sum | cut -c1-64)
echo "$h0" > /tmp/h0
echo captured-files > /data/marker
i=0
while true; do
  i=$((i+1)); echo $i > /tmp/n
  if [ -e /tmp/check ]; then rm /tmp/check; echo "$i $(echo "$blob" | busybox sha256sum | cut -c1-64)" > /tmp/h1; fi
  sleep 0.05
done`

// runtimeEnv is a private containerd whose shims find the restore runtime's
// configuration, and a node images directory laid out as the agent does.
type runtimeEnv struct {
	ctrd   *framework.Containerd
	shim   string
	cfg    string
	images string
	logs   string
	// lease holds every diff the tests write until the environment goes:
	// containerd's garbage collector, which runs whenever a lease or a
	// container is deleted, would otherwise take a diff's new blob between
	// the differ's commit and its label update ("content digest ...: not
	// found").
	lease context.Context
}

func startRuntimeEnv(t *testing.T) *runtimeEnv {
	shim := framework.RestoreShim(t)
	dir := t.TempDir()
	e := &runtimeEnv{shim: shim, cfg: filepath.Join(dir, "restore-runtime.json"), images: filepath.Join(dir, "images"), logs: filepath.Join(dir, "logs")}
	e.configure(t, false, "")
	// containerd's environment is its shims': the configuration's path.
	t.Setenv(restoreruntime.ConfigEnv, e.cfg)
	e.ctrd = framework.StartContainerd(t, "k8s.io")
	ctx, done, err := e.ctrd.Client.WithLease(e.ctrd.Ctx())
	require.NoError(t, err)
	t.Cleanup(func() { _ = done(e.ctrd.Ctx()) })
	e.lease = ctx
	return e
}

func (e *runtimeEnv) configure(t *testing.T, lazy bool, criu string) {
	e.configureSocket(t, lazy, criu, "")
}

func (e *runtimeEnv) configureSocket(t *testing.T, lazy bool, criu, socket string) {
	t.Helper()
	data, err := json.Marshal(restoreruntime.Config{ImagesDir: e.images, Lazy: lazy, LogDir: e.logs, CRIU: criu, AgentSocket: socket})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(e.cfg, data, 0o600))
}

// start runs memoryScript in a busybox container under the restore
// runtime, with annotations (as containerd's CRI would pass a Pod's).
func (e *runtimeEnv) start(t *testing.T, id string, annotations map[string]string) (containerd.Container, containerd.Task, error) {
	return e.startScript(t, id, memoryScript, annotations)
}

// rootfs is the host path of a running container's root filesystem.
func (e *runtimeEnv) rootfs(id string) string {
	return filepath.Join(e.ctrd.Dir, "state", "io.containerd.runtime.v2.task", e.ctrd.Namespace, id, "rootfs")
}

func (e *runtimeEnv) bundleSpec(t *testing.T, id string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(e.ctrd.Dir, "state", "io.containerd.runtime.v2.task", e.ctrd.Namespace, id, "config.json"))
	require.NoError(t, err)
	var spec struct {
		Annotations map[string]string `json:"annotations"`
	}
	require.NoError(t, json.Unmarshal(data, &spec))
	return spec.Annotations
}

// captureInto checkpoints a running container the way a node agent lays a
// checkpoint out: CRIU's images and the rootfs diff under
// <images>/<namespace>/<id>/<container>/.
func (e *runtimeEnv) captureInto(t *testing.T, ctr containerd.Container, task containerd.Task, namespace, checkpointID, container string) {
	t.Helper()
	ctx := e.lease
	dir := filepath.Join(e.images, namespace, checkpointID, container)
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "checkpoint"), 0o700))
	// Paused throughout, as the driver does: the script writes /tmp/n all
	// the time, and a diff taken after the dump may hold it at a size CRIU
	// did not record, which the restore refuses.
	require.NoError(t, task.Pause(ctx))
	defer func() { _ = task.Resume(ctx) }()
	_, err := task.Checkpoint(ctx, containerd.WithCheckpointImagePath(filepath.Join(dir, "checkpoint")))
	require.NoError(t, err, "checkpoint")

	info, err := ctr.Info(ctx)
	require.NoError(t, err)
	desc, err := rootfs.CreateDiff(ctx, info.SnapshotKey, e.ctrd.Client.SnapshotService(info.Snapshotter), e.ctrd.Client.DiffService(),
		diff.WithMediaType(ocispec.MediaTypeImageLayer))
	require.NoError(t, err)
	ra, err := e.ctrd.Client.ContentStore().ReaderAt(ctx, desc)
	require.NoError(t, err)
	defer ra.Close()
	f, err := os.Create(filepath.Join(dir, "rootfs-diff.tar"))
	require.NoError(t, err)
	_, err = io.Copy(f, content.NewReader(ra))
	require.NoError(t, err)
	require.NoError(t, f.Close())
}

func readCount(t *testing.T, root string) int {
	t.Helper()
	var n int
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(filepath.Join(root, "tmp", "n"))
		if err != nil {
			return false
		}
		n, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil
	}, 30*time.Second, 20*time.Millisecond)
	return n
}

// memoryCheck asks the container for the hash of the memory it holds now.
func memoryCheck(t *testing.T, root string) (count int, hash string) {
	t.Helper()
	_ = os.Remove(filepath.Join(root, "tmp", "h1"))
	require.NoError(t, os.WriteFile(filepath.Join(root, "tmp", "check"), nil, 0o644))
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(filepath.Join(root, "tmp", "h1"))
		if err != nil {
			return false
		}
		f := strings.Fields(string(b))
		if len(f) != 2 || len(f[1]) != 64 {
			return false
		}
		count, _ = strconv.Atoi(f[0])
		hash = f[1]
		return true
	}, 60*time.Second, 20*time.Millisecond, "the container never answered the memory check")
	return count, hash
}

// driverFor is a containerd driver on e's containerd, its logs under name.
func (e *runtimeEnv) driverFor(t *testing.T, name string) *containerddriver.Driver {
	t.Helper()
	d, err := containerddriver.New(containerddriver.Config{Address: e.ctrd.Address, Namespace: e.ctrd.Namespace,
		LogDir: filepath.Join(e.ctrd.Dir, name+"-logs"), CRIUConfigDir: filepath.Join(e.ctrd.Dir, name+"-criu")})
	require.NoError(t, err)
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// serveStore serves store on a socket of its own, as a node agent does,
// and returns the socket's path.
func serveStore(t *testing.T, store *nodeimages.Store) string {
	t.Helper()
	socket := filepath.Join(t.TempDir(), "restore.sock")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go func() { _ = store.Serve(ctx, socket) }()
	require.Eventually(t, func() bool { _, err := os.Stat(socket); return err == nil }, 10*time.Second, 10*time.Millisecond)
	return socket
}

// startHash is the SHA-256 of the memory memoryScript drew at its start.
func startHash(t *testing.T, root string) string {
	t.Helper()
	var h string
	require.Eventually(t, func() bool {
		b, err := os.ReadFile(filepath.Join(root, "tmp", "h0"))
		h = strings.TrimSpace(string(b))
		return err == nil && len(h) == 64
	}, 30*time.Second, 20*time.Millisecond)
	return h
}

func cloneAnnotations(checkpointID, container string) map[string]string {
	return map[string]string{
		restoreruntime.AnnotationRestoreFrom:  checkpointID,
		"io.kubernetes.cri.container-type":    "container",
		"io.kubernetes.cri.container-name":    container,
		"io.kubernetes.cri.sandbox-namespace": sandboxNS,
		"io.kubernetes.cri.sandbox-name":      "clone",
	}
}

// TestRestoreRuntime runs containers under the restore runtime on a real
// containerd + runc + CRIU: unmarked ones as runc, marked ones from their
// checkpoint, eagerly and lazily, never fresh, never on lost pages.
func TestRestoreRuntime(t *testing.T) {
	e := startRuntimeEnv(t)
	const id = "ckpt-0123456789abcdef01234567"

	// A Pod cannot name a CRIU configuration: the runtime removes it.
	src, srcTask, err := e.start(t, "source", map[string]string{"org.criu.config": "/etc/passwd"})
	require.NoError(t, err, "an unmarked container runs under the restore runtime as under runc")
	assert.NotContains(t, e.bundleSpec(t, "source"), "org.criu.config")
	h0 := startHash(t, e.rootfs("source"))
	// The count before the capture: the captured one is at least that.
	before := readCount(t, e.rootfs("source"))
	e.captureInto(t, src, srcTask, sandboxNS, id, "app")

	for _, lazy := range []bool{false, true} {
		name := map[bool]string{false: "eager", true: "lazy"}[lazy]
		t.Run(name, func(t *testing.T) {
			e.configure(t, lazy, "")
			cloneID := "clone-" + name
			cloneCtr, cloneTask, err := e.start(t, cloneID, cloneAnnotations(id, "app"))
			require.NoError(t, err, "restore %s", name)
			root := e.rootfs(cloneID)
			defer func() {
				if t.Failed() {
					e.dumpLogs(t, cloneID)
				}
			}()
			n, h := memoryCheck(t, root)
			assert.Equal(t, h0, h, "the clone holds the source's memory")
			assert.GreaterOrEqual(t, n, before, "the counter goes on from the capture")
			marker, err := os.ReadFile(filepath.Join(root, "data", "marker"))
			require.NoError(t, err, "the rootfs diff was applied")
			assert.Equal(t, "captured-files\n", string(marker))
			conf := e.bundleSpec(t, cloneID)["org.criu.config"]
			require.NotEmpty(t, conf, "the runtime names its own CRIU configuration")
			assert.Equal(t, "criu-restore.conf", filepath.Base(conf), "in the clone's bundle")
			_, err = os.Stat(conf)
			assert.True(t, os.IsNotExist(err), "the restore's configuration is gone once restored (a later dump would run with lazy-pages and wait forever): %v", err)

			// The clone captures again (a snapshot of a clone), and that
			// capture restores with the source's memory.
			again := map[bool]string{false: "ckpt-aaaaaaaaaaaaaaaaaaaaaaaa", true: "ckpt-bbbbbbbbbbbbbbbbbbbbbbbb"}[lazy]
			e.captureInto(t, cloneCtr, cloneTask, sandboxNS, again, "app")
			_, _, err = e.start(t, cloneID+"-again", cloneAnnotations(again, "app"))
			require.NoError(t, err, "restore the clone's own capture")
			_, h2 := memoryCheck(t, e.rootfs(cloneID+"-again"))
			assert.Equal(t, h0, h2, "the clone of the clone holds the source's memory")
		})
	}

	t.Run("never-fresh", func(t *testing.T) {
		e.configure(t, false, "")
		for name, ann := range map[string]map[string]string{
			"unknown-checkpoint": cloneAnnotations("ckpt-ffffffffffffffffffffffff", "app"),
			"unknown-container":  cloneAnnotations(id, "other"),
			"path-in-id":         cloneAnnotations("../../../etc", "app"),
		} {
			_, task, err := e.start(t, "fresh-"+name, ann)
			require.Error(t, err, "%s: a marked container must not start fresh", name)
			if task != nil {
				st, serr := task.Status(e.ctrd.Ctx())
				if serr == nil {
					assert.NotEqual(t, containerd.Running, st.Status, name)
				}
			}
			_, statErr := os.Stat(filepath.Join(e.rootfs("fresh-"+name), "tmp", "h0"))
			assert.True(t, os.IsNotExist(statErr), "%s: the script never ran fresh", name)
		}
	})

	t.Run("stopped-after-checkpoint-exits-0", func(t *testing.T) {
		// A keepRunning=false capture marks the container (a task update
		// with the annotation and no resources) before it ends it: the
		// runtime reports exit 0 in Wait, State and Delete. An unmarked
		// container killed alike reports 137.
		e.configure(t, false, "")
		for _, marked := range []bool{true, false} {
			id := fmt.Sprintf("ended-%t", marked)
			_, task, err := e.startScript(t, id, "while true; do sleep 1; done", nil)
			require.NoError(t, err)
			ctx := e.ctrd.Ctx()
			if marked {
				require.NoError(t, task.Update(ctx, func(_ context.Context, _ *containerd.Client, u *containerd.UpdateTaskInfo) error {
					u.Annotations = map[string]string{restoreapi.AnnotationStopAfterCheckpoint: "true"}
					return nil
				}))
			}
			exited, err := task.Wait(ctx)
			require.NoError(t, err)
			require.NoError(t, task.Kill(ctx, syscall.SIGKILL))
			want := uint32(137)
			if marked {
				want = 0
			}
			select {
			case st := <-exited:
				assert.Equal(t, want, st.ExitCode(), "Wait, marked %t", marked)
			case <-time.After(60 * time.Second):
				t.Fatal("a killed container still runs")
			}
			st, err := task.Status(ctx)
			require.NoError(t, err)
			assert.Equal(t, want, st.ExitStatus, "State, marked %t", marked)
			deleted, err := task.Delete(ctx)
			require.NoError(t, err)
			assert.Equal(t, want, deleted.ExitCode(), "Delete, marked %t", marked)
		}
	})

	t.Run("through-the-node-agent", func(t *testing.T) {
		// The node's store unpacks what the containerd driver captured of a
		// Pod's container, on the runtime's request over the agent's socket,
		// for a Pod of the checkpoint's own namespace only.
		d := e.driverFor(t, "driver")
		pc := e.ctrd.RunPodContainer(t, sandboxNS, "agent-source", "app", memoryScript)
		src0 := startHash(t, e.rootfs(pc.Container.ID()))
		target, err := d.Resolve(context.Background(), sandboxNS, "agent-source")
		require.NoError(t, err)
		agentID := agents.CheckpointID("agent-source-uid")
		_, err = d.Capture(context.Background(), target, driver.CaptureRequest{ID: agentID, Contents: []driver.Content{driver.Memory, driver.Filesystem}})
		require.NoError(t, err)

		store := &nodeimages.Store{Dir: e.images, Archives: nodeimages.DriverArchives{Driver: d},
			Lookup: namespaceLookup{ns: sandboxNS, id: agentID}}
		socket := serveStore(t, store)
		e.configureSocket(t, true, "", socket)
		defer e.configure(t, false, "")

		_, _, err = e.start(t, "agent-clone", cloneAnnotations(agentID, "app"))
		require.NoError(t, err)
		_, h := memoryCheck(t, e.rootfs("agent-clone"))
		assert.Equal(t, src0, h, "the clone holds the source's memory")

		other := cloneAnnotations(agentID, "app")
		other["io.kubernetes.cri.sandbox-namespace"] = "team-b"
		_, _, err = e.start(t, "agent-other-ns", other)
		require.Error(t, err, "a Pod of another namespace does not get the checkpoint")
		assert.Contains(t, err.Error(), "no Checkpoint")
	})

	t.Run("a-file-written-throughout", func(t *testing.T) {
		// A process that never stops appending to a file it holds open:
		// CRIU records the file's size, and the restore refuses a writable
		// layer where it differs. The driver's diff and dump must see the
		// same instant.
		d := e.driverFor(t, "driver-writer")
		pc := e.ctrd.RunPodContainer(t, sandboxNS, "writer", "app",
			`exec 3>>/data/log; i=0; while true; do i=$((i+1)); echo "line $i" >&3; echo $i > /tmp/n; done`)
		root := e.rootfs(pc.Container.ID())
		for readCount(t, root) <= 1000 {
			time.Sleep(50 * time.Millisecond)
		}
		target, err := d.Resolve(context.Background(), sandboxNS, "writer")
		require.NoError(t, err)
		wID := agents.CheckpointID("writer-uid")
		res, err := d.Capture(context.Background(), target, driver.CaptureRequest{ID: wID, Contents: []driver.Content{driver.Memory, driver.Filesystem}})
		require.NoError(t, err)
		assert.Positive(t, res.Pause, "the pause is measured")
		assert.Greater(t, readCount(t, root), 0, "the source runs on")

		store := &nodeimages.Store{Dir: e.images, Archives: nodeimages.DriverArchives{Driver: d},
			Lookup: namespaceLookup{ns: sandboxNS, id: wID}}
		e.configureSocket(t, false, "", serveStore(t, store))
		defer e.configure(t, false, "")
		_, _, err = e.start(t, "writer-clone", cloneAnnotations(wID, "app"))
		require.NoError(t, err, "the clone of a process writing throughout its capture restores")
		cloneRoot := e.rootfs("writer-clone")
		first := readCount(t, cloneRoot)
		require.Eventually(t, func() bool { return readCount(t, cloneRoot) > first }, 30*time.Second, 20*time.Millisecond,
			"the clone writes on")
		log, err := os.ReadFile(filepath.Join(cloneRoot, "data", "log"))
		require.NoError(t, err)
		assert.Contains(t, string(log), "line 1000\n", "the log written before the capture came back")
	})

	t.Run("filesystem-only", func(t *testing.T) {
		// A filesystem checkpoint (OpenKruise's CheckpointRestore upgrade):
		// the marked container starts afresh on the captured writable
		// layer; one the checkpoint holds nothing of, from its image.
		d := e.driverFor(t, "driver-fs")
		pc := e.ctrd.RunPodContainer(t, sandboxNS, "fs-source", "app", memoryScript)
		root := e.rootfs(pc.Container.ID())
		src0 := startHash(t, root)
		require.NoError(t, os.WriteFile(filepath.Join(root, "data", "kept"), []byte("written before the upgrade"), 0o644))
		for readCount(t, root) <= 20 { // it has counted a while
			time.Sleep(100 * time.Millisecond)
		}
		target, err := d.Resolve(context.Background(), sandboxNS, "fs-source")
		require.NoError(t, err)
		fsID := agents.CheckpointID("fs-source-uid")
		res, err := d.Capture(context.Background(), target, driver.CaptureRequest{ID: fsID, Contents: []driver.Content{driver.Filesystem}})
		require.NoError(t, err)
		assert.False(t, driver.Has(res.Contents, driver.Memory))

		store := &nodeimages.Store{Dir: e.images, Archives: nodeimages.DriverArchives{Driver: d},
			Lookup: namespaceLookup{ns: sandboxNS, id: fsID, filesystemOnly: true}}
		socket := serveStore(t, store)
		e.configureSocket(t, true, "", socket)
		defer e.configure(t, false, "")

		_, _, err = e.start(t, "fs-upgraded", cloneAnnotations(fsID, "app"))
		require.NoError(t, err)
		up := e.rootfs("fs-upgraded")
		kept, err := os.ReadFile(filepath.Join(up, "data", "kept"))
		require.NoError(t, err, "the writable layer is back")
		assert.Equal(t, "written before the upgrade", string(kept))
		n, h := memoryCheck(t, up)
		assert.NotEqual(t, src0, h, "a fresh process: its memory is its own")
		assert.Less(t, n, readCount(t, root), "its count started over")
		assert.NotContains(t, e.bundleSpec(t, "fs-upgraded"), "org.criu.config", "nothing of CRIU's for a fresh start")

		_, _, err = e.start(t, "fs-new-sidecar", cloneAnnotations(fsID, "sidecar"))
		require.NoError(t, err, "a container the filesystem checkpoint holds nothing of starts from its image")
		_, err = os.Stat(filepath.Join(e.rootfs("fs-new-sidecar"), "data", "kept"))
		assert.True(t, os.IsNotExist(err), "with nothing of another container's layer")

		// The same checkpoint looked up as a memory one restores nothing.
		store.Lookup = namespaceLookup{ns: sandboxNS, id: fsID}
		_, _, err = e.start(t, "fs-as-memory", cloneAnnotations(fsID, "app"))
		require.Error(t, err, "no memory images: never fresh")
	})

	t.Run("lazy-pages-daemon-dies", func(t *testing.T) {
		// 128 MiB, so the daemon is still pushing pages when it is stopped.
		bigID := "ckpt-00000000000000000000000b"
		big, bigTask, err := e.startBig(t, "big-source")
		require.NoError(t, err)
		e.captureInto(t, big, bigTask, sandboxNS, bigID, "app")
		e.configure(t, true, "")
		for attempt := 1; ; attempt++ {
			cloneID := fmt.Sprintf("big-clone-%d", attempt)
			ctr, task, err := e.startBigClone(t, cloneID, bigID)
			require.NoError(t, err)
			daemon := lazyPagesDaemon(t, filepath.Join(e.images, sandboxNS, bigID, "app", "checkpoint"))
			if daemon == 0 || syscall.Kill(daemon, syscall.SIGSTOP) != nil {
				// It served every page before the test could stop it: that
				// clone is whole; try again, no test of a kill without one
				// (a busy machine makes the race harder to win: up to ten).
				require.Less(t, attempt, 10, "the lazy-pages daemon finished every time before it could be stopped")
				continue
			}
			require.NoError(t, syscall.Kill(daemon, syscall.SIGKILL))
			status, err := task.Wait(e.ctrd.Ctx())
			require.NoError(t, err)
			select {
			case st := <-status:
				assert.Equal(t, uint32(137), st.ExitCode(), "the clone was killed")
			case <-time.After(60 * time.Second):
				t.Fatal("a clone whose lazy-pages daemon died still runs")
			}
			_, err = os.Stat(filepath.Join(e.rootfs(ctr.ID()), "tmp", "h1"))
			assert.True(t, os.IsNotExist(err), "the clone never answered a memory check")
			logs, _ := os.ReadDir(e.logs)
			assert.NotEmpty(t, logs, "the lazy-pages log is kept")
			return
		}
	})
}

// bigScript holds 128 MiB (base64 of 96 MiB of random bytes) in memory.
const bigScript = `blob=$(head -c 100663296 /dev/urandom | busybox base64 -w0)
echo ready > /tmp/ready
while true; do sleep 1; done`

func (e *runtimeEnv) startBig(t *testing.T, id string) (containerd.Container, containerd.Task, error) {
	ctr, task, err := e.startScript(t, id, bigScript, nil)
	if err == nil {
		require.Eventually(t, func() bool {
			_, err := os.Stat(filepath.Join(e.rootfs(id), "tmp", "ready"))
			return err == nil
		}, 60*time.Second, 50*time.Millisecond)
	}
	return ctr, task, err
}

func (e *runtimeEnv) startBigClone(t *testing.T, id, checkpointID string) (containerd.Container, containerd.Task, error) {
	return e.startScript(t, id, bigScript, cloneAnnotations(checkpointID, "app"))
}

func (e *runtimeEnv) startScript(t *testing.T, id, script string, annotations map[string]string) (containerd.Container, containerd.Task, error) {
	t.Helper()
	ctx := e.ctrd.Ctx()
	img, err := e.ctrd.Client.GetImage(ctx, framework.BusyboxImage)
	require.NoError(t, err)
	ctr, err := e.ctrd.Client.NewContainer(ctx, id,
		containerd.WithImage(img), containerd.WithSnapshotter("overlayfs"), containerd.WithNewSnapshot(id+"-snapshot", img),
		containerd.WithRuntime(e.shim, &options.Options{}),
		containerd.WithNewSpec(oci.WithImageConfig(img), oci.WithHostname("sandbox"), oci.WithProcessArgs("/bin/sh", "-c", script),
			oci.WithAnnotations(annotations)),
	)
	require.NoError(t, err)
	t.Cleanup(func() {
		cctx, cancel := context.WithTimeout(e.ctrd.Ctx(), 20*time.Second)
		defer cancel()
		if task, err := ctr.Task(cctx, nil); err == nil {
			_, _ = task.Delete(cctx, containerd.WithProcessKill)
		}
		_ = ctr.Delete(cctx, containerd.WithSnapshotCleanup)
	})
	task, err := ctr.NewTask(ctx, cio.LogFile(filepath.Join(e.ctrd.Dir, id+".log")))
	if err != nil {
		return ctr, nil, err
	}
	return ctr, task, task.Start(ctx)
}

// lazyPagesDaemon is the pid of the criu lazy-pages daemon serving images,
// or 0 when none runs.
func lazyPagesDaemon(t *testing.T, images string) int {
	t.Helper()
	procs, err := os.ReadDir("/proc")
	require.NoError(t, err)
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", p.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if len(args) > 3 && filepath.Base(args[0]) == "criu" && args[1] == "lazy-pages" && args[2] == "--images-dir" && args[3] == images {
			return pid
		}
	}
	return 0
}

// dumpLogs logs what a failed restore left: CRIU's logs in the bundle,
// containerd's (and its shims') log tail.
func (e *runtimeEnv) dumpLogs(t *testing.T, id string) {
	work := filepath.Join(e.ctrd.Dir, "state", "io.containerd.runtime.v2.task", e.ctrd.Namespace, id, "criu-restore")
	for _, name := range []string{"restore.log", "lazy-pages.log"} {
		if b, err := os.ReadFile(filepath.Join(work, name)); err == nil {
			t.Logf("%s:\n%s", name, tail(b, 3000))
		}
	}
	if b, err := os.ReadFile(filepath.Join(e.ctrd.Dir, "containerd.log")); err == nil {
		t.Logf("containerd.log:\n%s", tail(b, 3000))
	}
	if b, err := os.ReadFile(filepath.Join(e.ctrd.Dir, id+".log")); err == nil {
		t.Logf("container log:\n%s", tail(b, 2000))
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// namespaceLookup holds one Succeeded Checkpoint, with ID id, in namespace ns.
type namespaceLookup struct {
	ns, id         string
	filesystemOnly bool
}

func (l namespaceLookup) Find(_ context.Context, ns, id string) (nodeimages.Checkpoint, error) {
	if ns != l.ns || id != l.id {
		return nodeimages.Checkpoint{}, fmt.Errorf("%w: namespace %s has no Checkpoint with ID %s", nodeimages.ErrNotFound, ns, id)
	}
	return nodeimages.Checkpoint{Namespace: ns, Name: "cp", FilesystemOnly: l.filesystemOnly}, nil
}
