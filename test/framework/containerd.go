package framework

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
)

// BusyboxImage is the image name of the busybox image the fixture imports.
const BusyboxImage = "docker.io/library/busybox:local"

// Containerd is a private containerd daemon started by a test: its own root,
// state and socket under a temporary directory, criu on its PATH.
type Containerd struct {
	Address   string
	Dir       string
	Namespace string
	Client    *containerd.Client
	cmd       *exec.Cmd
	exited    chan struct{}
	criu      string
}

// startDaemon starts containerd on the fixture's config, appending to its log.
func (c *Containerd) startDaemon() error {
	logf, err := os.OpenFile(filepath.Join(c.Dir, "containerd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	c.exited = make(chan struct{})
	c.cmd = exec.Command("containerd", "--config", filepath.Join(c.Dir, "config.toml"))
	// containerd -> shim -> runc -> criu: criu must be on containerd's PATH.
	// XDG_RUNTIME_DIR, when set, would take the checkpoint temporaries instead of temp.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "XDG_RUNTIME_DIR=") {
			c.cmd.Env = append(c.cmd.Env, kv)
		}
	}
	c.cmd.Env = append(c.cmd.Env, "PATH="+filepath.Dir(c.criu)+":"+os.Getenv("PATH"))
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	exited := c.exited
	go func() { _ = c.cmd.Wait(); logf.Close(); close(exited) }()
	return nil
}

// waitReady waits up to 30 s for containerd to answer.
func (c *Containerd) waitReady() error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.Client.Version(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd not ready: %v\n%s", err, readTail(filepath.Join(c.Dir, "containerd.log")))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// KillDaemon kills the containerd daemon alone (SIGKILL), as a crash would:
// the shims and the containers they run go on.
func (c *Containerd) KillDaemon(t testing.TB) {
	t.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
}

// RestartDaemon starts containerd again on the same root and state after
// KillDaemon, and waits until it answers.
func (c *Containerd) RestartDaemon(t testing.TB) {
	t.Helper()
	if err := c.startDaemon(); err != nil {
		t.Fatal(err)
	}
	if err := c.waitReady(); err != nil {
		t.Fatal(err)
	}
}

// CRIU is the path of CRIU >= 4.2 as hack/install-test-deps.sh installs
// it, or skips (fails under REQUIRE_REAL=1) when it is not there.
func CRIU(t testing.TB) string {
	t.Helper()
	p, err := criuPath()
	if err != nil {
		Missing(t, "criu not installed (run hack/install-test-deps.sh): %v", err)
	}
	return p
}

// criuPath finds CRIU >= 4.2 as hack/install-test-deps.sh installs it.
func criuPath() (string, error) {
	for _, p := range []string{"/usr/local/sbin/criu"} {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return exec.LookPath("criu")
}

// StartContainerd starts a private containerd with the busybox image
// imported into namespace, and stops it (and every task) when t ends. It
// skips (fails under REQUIRE_REAL=1) when containerd, runc, iptables or CRIU
// is missing or the process is not root.
func StartContainerd(t testing.TB, namespace string) *Containerd {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "containerd needs root")
	}
	for _, bin := range []string{"containerd", "runc", "iptables"} {
		if _, err := exec.LookPath(bin); err != nil {
			Missing(t, "%s not on PATH (run make deps: hack/install-test-deps.sh and hack/build-kube-tools.sh, then put _output/bin first on PATH)", bin)
		}
	}
	// The nodes run containerd 2.4, as shipped: the driver and the restore
	// runtime are tested against the same.
	if out, err := exec.Command("containerd", "--version").CombinedOutput(); err != nil || !strings.Contains(string(out), " v2.4.") {
		Missing(t, "containerd v2.4.x needed on PATH (hack/build-kube-tools.sh builds it into _output/bin), got %q", out)
	}
	criu := RequireCRIU(t)
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		busybox = "/bin/busybox"
	}
	if _, err := os.Stat(busybox); err != nil {
		Missing(t, "busybox not found (install busybox-static)")
	}

	// A short path: the socket path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "ctrd")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	c := &Containerd{Address: filepath.Join(dir, "containerd.sock"), Dir: dir, Namespace: namespace, exited: make(chan struct{})}
	// temp: containerd dumps a task checkpoint into a temporary directory it
	// removes only when the call returns; a daemon killed mid-capture (as the
	// fault tests do) leaves it, here under dir, not in the machine's /tmp.
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
temp = %q
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), filepath.Join(dir, "tmp"), c.Address, c.Address+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	c.criu = criu
	if err := c.startDaemon(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Stop(); _ = os.RemoveAll(dir) })

	c.Client, err = containerd.New(c.Address, containerd.WithDefaultNamespace(namespace))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.waitReady(); err != nil {
		t.Fatal(err)
	}
	if err := c.importBusybox(busybox); err != nil {
		t.Fatalf("import busybox: %v", err)
	}
	return c
}

// Ctx is a context in the fixture's containerd namespace.
func (c *Containerd) Ctx() context.Context {
	return namespaces.WithNamespace(context.Background(), c.Namespace)
}

// Stop kills every task, stops containerd and unmounts what it left.
func (c *Containerd) Stop() {
	select {
	case <-c.exited:
		return
	default:
	}
	if c.Client != nil {
		ctx, cancel := context.WithTimeout(c.Ctx(), 20*time.Second)
		nss, _ := c.Client.NamespaceService().List(ctx)
		for _, ns := range nss {
			nctx := namespaces.WithNamespace(ctx, ns)
			ctrs, _ := c.Client.Containers(nctx)
			for _, ctr := range ctrs {
				if task, err := ctr.Task(nctx, nil); err == nil {
					_, _ = task.Delete(nctx, containerd.WithProcessKill)
				}
				_ = ctr.Delete(nctx, containerd.WithSnapshotCleanup)
			}
		}
		cancel()
		_ = c.Client.Close()
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(15 * time.Second):
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.exited
	}
	unmountUnder(c.Dir)
}

func unmountUnder(dir string) {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	var targets []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			targets = append(targets, f[1])
		}
	}
	for i := len(targets) - 1; i >= 0; i-- {
		_ = syscall.Unmount(targets[i], syscall.MNT_DETACH)
	}
}

// RequireCRIU returns the path of CRIU >= 4.2, or skips (fails under
// REQUIRE_REAL=1) when there is none: CRIU < 4.2 cannot dump TCP or UDP
// sockets on kernels >= 6.16.
func RequireCRIU(t testing.TB) string {
	t.Helper()
	criu, err := criuPath()
	if err != nil {
		Missing(t, "criu not found (run hack/install-test-deps.sh)")
	}
	if out, err := exec.Command(criu, "--version").CombinedOutput(); err != nil || !criuAtLeast42(string(out)) {
		Missing(t, "CRIU >= 4.2 needed at %s, got %q", criu, out)
	}
	return criu
}

// criuAtLeast42 reads `criu --version` output ("Version: 4.2.1").
func criuAtLeast42(out string) bool {
	var major, minor int
	for _, line := range strings.Split(out, "\n") {
		if _, err := fmt.Sscanf(strings.TrimSpace(line), "Version: %d.%d", &major, &minor); err == nil {
			return major > 4 || (major == 4 && minor >= 2)
		}
	}
	return false
}

func readTail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// importBusybox builds a one-layer OCI image of the static busybox and imports it.
func (c *Containerd) importBusybox(busybox string) error {
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return err
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	epoch := time.Unix(0, 0)
	for _, d := range []string{"bin", "dev", "etc", "proc", "sys", "tmp", "data"} {
		if err := tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch}); err != nil {
			return err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin)), ModTime: epoch}); err != nil {
		return err
	}
	if _, err := tw.Write(bin); err != nil {
		return err
	}
	for _, applet := range []string{"sh", "cat", "echo", "sleep", "ls", "ps", "date", "head", "dd", "true", "test", "yes",
		"httpd", "nc", "wget", "mkdir", "mkfifo", "grep", "netstat", "kill"} {
		if err := tw.WriteHeader(&tar.Header{Name: "bin/" + applet, Typeflag: tar.TypeSymlink, Linkname: "busybox", ModTime: epoch}); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}

	blobs := map[string][]byte{}
	add := func(b []byte) (string, int) {
		sum := sha256.Sum256(b)
		d := hex.EncodeToString(sum[:])
		blobs[d] = b
		return d, len(b)
	}
	layerDigest, layerSize := add(layer.Bytes())
	config, _ := json.Marshal(map[string]interface{}{
		"architecture": "amd64", "os": "linux",
		"config": map[string]interface{}{"Env": []string{"PATH=/bin"}, "Cmd": []string{"/bin/sh"}},
		"rootfs": map[string]interface{}{"type": "layers", "diff_ids": []string{"sha256:" + layerDigest}},
	})
	configDigest, configSize := add(config)
	manifest, _ := json.Marshal(map[string]interface{}{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]interface{}{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + configDigest, "size": configSize},
		"layers": []interface{}{map[string]interface{}{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + layerDigest, "size": layerSize}},
	})
	manifestDigest, manifestSize := add(manifest)
	index, _ := json.Marshal(map[string]interface{}{
		"schemaVersion": 2,
		"manifests": []interface{}{map[string]interface{}{
			"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + manifestDigest, "size": manifestSize,
			"annotations": map[string]string{"io.containerd.image.name": BusyboxImage},
			"platform":    map[string]string{"architecture": "amd64", "os": "linux"},
		}},
	})

	var archive bytes.Buffer
	aw := tar.NewWriter(&archive)
	write := func(name string, b []byte) error {
		if err := aw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := aw.Write(b)
		return err
	}
	if err := write("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := write("index.json", index); err != nil {
		return err
	}
	for d, b := range blobs {
		if err := write("blobs/sha256/"+d, b); err != nil {
			return err
		}
	}
	if err := aw.Close(); err != nil {
		return err
	}
	ctx := c.Ctx()
	imgs, err := c.Client.Import(ctx, &archive)
	if err != nil {
		return err
	}
	for _, im := range imgs {
		if err := containerd.NewImage(c.Client, im).Unpack(ctx, "overlayfs"); err != nil {
			return err
		}
	}
	return nil
}

// PodContainer is a running container labelled as a pod's container by CRI.
type PodContainer struct {
	Container containerd.Container
	Task      containerd.Task
	LogPath   string
}

// RunPodContainer starts busybox running script as container name of pod
// namespace/pod, labelled as containerd's CRI plugin labels pod containers.
func (c *Containerd) RunPodContainer(t testing.TB, namespace, pod, name, script string) *PodContainer {
	t.Helper()
	return c.RunPodImage(t, namespace, pod, name, BusyboxImage, "/bin/sh", "-c", script)
}

// PythonImage is the Python sandbox image hack/test-images.sh builds.
const PythonImage = "docker.io/library/python-sandbox:local"

// ImportTestImage imports an image archive hack/test-images.sh built
// (_output/images/<file>), or skips (fails under REQUIRE_REAL=1) when it is
// not built.
func (c *Containerd) ImportTestImage(t testing.TB, file string) {
	t.Helper()
	path := filepath.Join(RepoRoot(), "_output", "images", file)
	f, err := os.Open(path)
	if err != nil {
		Missing(t, "%s not built (run hack/test-images.sh)", path)
	}
	defer f.Close()
	ctx := c.Ctx()
	imgs, err := c.Client.Import(ctx, f)
	if err != nil {
		t.Fatalf("import %s: %v", path, err)
	}
	for _, im := range imgs {
		if err := containerd.NewImage(c.Client, im).Unpack(ctx, "overlayfs"); err != nil {
			t.Fatalf("unpack %s: %v", im.Name, err)
		}
	}
}

// RunPodImage starts image running args (its own command when none) as
// container name of pod namespace/pod, labelled as containerd's CRI plugin
// labels pod containers.
func (c *Containerd) RunPodImage(t testing.TB, namespace, pod, name, image string, args ...string) *PodContainer {
	t.Helper()
	ctx := c.Ctx()
	img, err := c.Client.GetImage(ctx, image)
	if err != nil {
		t.Fatal(err)
	}
	specOpts := []oci.SpecOpts{oci.WithImageConfig(img), oci.WithHostname(pod)}
	if len(args) > 0 {
		specOpts = append(specOpts, oci.WithProcessArgs(args...))
	}
	id := fmt.Sprintf("%s-%s-%d", pod, name, time.Now().UnixNano())
	ctr, err := c.Client.NewContainer(ctx, id,
		containerd.WithImage(img),
		containerd.WithSnapshotter("overlayfs"),
		containerd.WithNewSnapshot(id+"-snapshot", img),
		containerd.WithRuntime("io.containerd.runc.v2", nil),
		containerd.WithNewSpec(specOpts...),
		containerd.WithContainerLabels(map[string]string{
			"io.kubernetes.pod.namespace":  namespace,
			"io.kubernetes.pod.name":       pod,
			"io.kubernetes.container.name": name,
			"io.cri-containerd.kind":       "container",
		}),
	)
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(c.Dir, id+".log")
	task, err := ctr.NewTask(ctx, cio.LogFile(logPath))
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return &PodContainer{Container: ctr, Task: task, LogPath: logPath}
}

// LoopbackUp brings up the loopback interface in the network namespace of
// container id's task, as a CNI plugin would: the fixture's containers get
// a network namespace of their own with lo down, and no CAP_NET_ADMIN.
func (c *Containerd) LoopbackUp(t testing.TB, id string) {
	t.Helper()
	ctr, err := c.Client.LoadContainer(c.Ctx(), id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.Task(c.Ctx(), nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("nsenter", fmt.Sprintf("--net=/proc/%d/ns/net", task.Pid()), "ip", "link", "set", "lo", "up").CombinedOutput()
	if err != nil {
		t.Fatalf("lo up in %s: %v: %s", id, err, out)
	}
}

// RemovePod kills and deletes every container labelled as a container of pod
// (a clone the restore subresource made, for example).
func (c *Containerd) RemovePod(t testing.TB, pod string) {
	t.Helper()
	ctx := c.Ctx()
	ctrs, err := c.Client.Containers(ctx, fmt.Sprintf(`labels."io.kubernetes.pod.name"==%q`, pod))
	if err != nil {
		t.Fatal(err)
	}
	for _, ctr := range ctrs {
		if task, err := ctr.Task(ctx, nil); err == nil {
			if _, err := task.Delete(ctx, containerd.WithProcessKill); err != nil {
				t.Fatalf("delete task of %s: %v", ctr.ID(), err)
			}
		}
		if err := ctr.Delete(ctx, containerd.WithSnapshotCleanup); err != nil {
			t.Fatalf("delete %s: %v", ctr.ID(), err)
		}
	}
}

// RestoreShim is the path of the restore runtime's shim
// (containerd-shim-checkpoint-v1, which make build puts in _output/bin), or
// skips (fails under REQUIRE_REAL=1) when it is not built.
func RestoreShim(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("containerd-shim-checkpoint-v1"); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
	}
	p := filepath.Join(RepoRoot(), "_output", "bin", "containerd-shim-checkpoint-v1")
	if _, err := os.Stat(p); err != nil {
		Missing(t, "containerd-shim-checkpoint-v1 not built (make build)")
	}
	return p
}
