package bench

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/agents-kruise/checkpoint-apiserver/test/framework"
)

// LazyResult compares, for a process holding MemoryMiB, CRIU's eager
// restore (every page written back before the process runs) with its lazy
// one (userfaultfd: the process runs at once and `criu lazy-pages` serves
// each page when it is first touched, then pushes the rest), medians in ms.
type LazyResult struct {
	MemoryMiB int `json:"memoryMiB"`
	Runs      int `json:"runs"`
	// EagerMs and LazyMs: from `criu restore` starting until the process
	// printed its first line (its stamper thread ran again: ready).
	EagerMs float64 `json:"eagerMs"`
	LazyMs  float64 `json:"lazyMs"`
	// LazyAllPagesMs: until the lazy-pages daemon had served every page and exited.
	LazyAllPagesMs float64 `json:"lazyAllPagesMs"`
}

// MeasureLazyRestore dumps, with CRIU alone, a process holding each of
// sizes MiB (test/bench/sandbox.py in the Python sandbox image's root
// filesystem, chrooted), then restores it runs times each way, eager and
// lazy, interleaved, from images on /dev/shm. It is CRIU's own figure:
// containerd's CRI restore (what the kubelet runs) cannot ask for lazy
// pages, so no Pod restores this way.
func MeasureLazyRestore(t testing.TB, sizes []int, runs int) []LazyResult {
	criu := framework.CRIU(t)
	if out, err := exec.Command(criu, "check", "--feature", "uffd-noncoop").CombinedOutput(); err != nil {
		framework.Missing(t, "lazy pages: criu check --feature uffd-noncoop: %v: %s", err, out)
	}
	root := pythonRootfs(t)
	var out []LazyResult
	for _, size := range sizes {
		images, err := os.MkdirTemp("/dev/shm", "lazy-restore")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(images) })
		logPath := filepath.Join(t.TempDir(), "sandbox.log")
		dumped := lazyDump(t, criu, root, images, logPath, size)
		var eager, lazy, all []time.Duration
		for r := 0; r < runs; r++ {
			ready, _ := lazyRestore(t, criu, images, logPath, dumped, false)
			eager = append(eager, ready)
			ready, served := lazyRestore(t, criu, images, logPath, dumped, true)
			lazy, all = append(lazy, ready), append(all, served)
		}
		_ = os.RemoveAll(images) // before the next size: it is memory
		res := LazyResult{MemoryMiB: size, Runs: runs, EagerMs: Summarize(eager).P50Ms, LazyMs: Summarize(lazy).P50Ms, LazyAllPagesMs: Summarize(all).P50Ms}
		t.Logf("%d MiB: CRIU restore to the process's first line: eager %.1f ms, lazy %.1f ms (%.2fx); every page served after %.1f ms (n=%d)",
			size, res.EagerMs, res.LazyMs, res.LazyMs/res.EagerMs, res.LazyAllPagesMs, runs)
		out = append(out, res)
	}
	return out
}

// lazyDump starts the sandbox holding mib MiB, chrooted into root and
// logging to logPath, dumps it into images (which ends it), and returns
// its log as it was then.
func lazyDump(t testing.TB, criu, root, images, logPath string, mib int) []byte {
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command("chroot", append([]string{root}, sandboxCommand(mib)...)...)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own session: CRIU dumps and restores a whole session, not a shell job.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	framework.WaitCounter(t, logPath, 2)
	if out, err := exec.Command(criu, "dump", "-t", strconv.Itoa(cmd.Process.Pid), "-D", images, "-o", "dump.log").CombinedOutput(); err != nil {
		t.Fatalf("criu dump of %d MiB: %v: %s\n%s", mib, err, out, criuErrors(images, "dump.log"))
	}
	<-exited // dumped and killed: its pid is free for the restores
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// lazyRestore restores the dump in images once (lazy: with a lazy-pages
// daemon), and returns how long until the process printed past what it had
// at the dump and, when lazy, until the daemon had served every page; then
// it ends the process.
func lazyRestore(t testing.TB, criu, images, logPath string, dumped []byte, lazy bool) (ready, served time.Duration) {
	// The log as it was at the dump (CRIU checks the size of the files it reopens).
	if err := os.WriteFile(logPath, dumped, 0o644); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(images, "restored.pid")
	_ = os.Remove(pidFile) // CRIU does not write over one
	args := []string{"restore", "-D", images, "-d", "-o", "restore.log", "--pidfile", pidFile}
	var daemon *exec.Cmd
	daemonDone := make(chan struct{})
	if lazy {
		args = append(args, "--lazy-pages")
		socket := filepath.Join(images, "lazy-pages.socket")
		_ = os.Remove(socket) // the last daemon's
		daemon = exec.Command(criu, "lazy-pages", "-D", images, "-o", "lazy-pages.log")
		if err := daemon.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { _ = daemon.Wait(); close(daemonDone) }()
		defer func() { _ = daemon.Process.Kill(); <-daemonDone }() // on every way out: done, or failed
		waitListening(t, daemon.Process.Pid)
	}
	start := time.Now()
	if out, err := exec.Command(criu, args...).CombinedOutput(); err != nil {
		t.Fatalf("criu %v: %v: %s\n%s", args, err, out, criuErrors(images, "restore.log", "lazy-pages.log"))
	}
	pidText, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(pidText)))
	if err != nil {
		t.Fatal(err)
	}
	// Restored detached, its parent is init: it is gone once /proc says so,
	// and then its pid is free for the next restore.
	defer func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		for _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil; _, err = os.Stat(fmt.Sprintf("/proc/%d", pid)) {
			time.Sleep(5 * time.Millisecond)
		}
	}()
	for {
		st, err := os.Stat(logPath)
		if err == nil && st.Size() > int64(len(dumped)) {
			ready = time.Since(start)
			break
		}
		if time.Since(start) > 2*time.Minute {
			t.Fatalf("the restored process printed nothing in 2 min")
		}
		time.Sleep(time.Millisecond)
	}
	if lazy {
		select {
		case <-daemonDone:
		case <-time.After(2 * time.Minute):
			t.Fatalf("the lazy-pages daemon did not finish serving in 2 min (%s)", filepath.Join(images, "lazy-pages.log"))
		}
		served = time.Since(start)
	}
	return ready, served
}

// criuErrors are the error lines of CRIU's logs in dir (it removes them with t).
func criuErrors(dir string, logs ...string) string {
	var out []string
	for _, l := range logs {
		b, _ := os.ReadFile(filepath.Join(dir, l))
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "Error") && !strings.Contains(line, "RLIMIT_NOFILE") {
				out = append(out, l+": "+line)
			}
		}
	}
	return strings.Join(out, "\n")
}

// waitListening waits until process pid has a listening unix socket, as
// /proc/net/unix tells (a connection would be taken for the restore's:
// the daemon serves one client).
func waitListening(t testing.TB, pid int) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		inodes := map[string]bool{}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			l, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if ino, ok := strings.CutPrefix(l, "socket:["); ok {
				inodes[strings.TrimSuffix(ino, "]")] = true
			}
		}
		b, err := os.ReadFile("/proc/net/unix")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			// Num RefCount Protocol Flags Type St Inode Path; Flags 00010000: accepting.
			if f := strings.Fields(line); len(f) >= 7 && f[3] == "00010000" && inodes[f[6]] {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("criu lazy-pages (pid %d) did not listen", pid)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// pythonRootfs unpacks the Python sandbox image hack/test-images.sh built
// (an OCI archive of one uncompressed layer) into a temporary directory.
func pythonRootfs(t testing.TB) string {
	archive := filepath.Join(framework.RepoRoot(), "_output", "images", "python.tar")
	blobs := map[string][]byte{}
	// The index and the manifest first (small), then the layer they name.
	var index ocispec.Index
	err := eachEntry(archive, func(name string, r io.Reader) error {
		b, err := io.ReadAll(io.LimitReader(r, 1<<16+1))
		if err == nil && len(b) <= 1<<16 { // not the layer
			blobs[name] = b
		}
		return err
	})
	if errors.Is(err, os.ErrNotExist) {
		framework.Missing(t, "%s not built (run hack/test-images.sh)", archive)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(blobs["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("%s: index.json: %v", archive, err)
	}
	var manifest ocispec.Manifest
	if err := json.Unmarshal(blobs["blobs/sha256/"+index.Manifests[0].Digest.Encoded()], &manifest); err != nil || len(manifest.Layers) != 1 {
		t.Fatalf("%s: the manifest: %v", archive, err)
	}
	layer := "blobs/sha256/" + manifest.Layers[0].Digest.Encoded()
	dir := t.TempDir()
	err = eachEntry(archive, func(name string, r io.Reader) error {
		if name != layer {
			return nil
		}
		untar := exec.Command("tar", "-C", dir, "-xf", "-")
		untar.Stdin = r
		if out, err := untar.CombinedOutput(); err != nil {
			return fmt.Errorf("unpack the layer: %v: %s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// eachEntry calls fn with each regular file of the tar archive at path.
func eachEntry(path string, fn func(name string, r io.Reader) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		if err := fn(h.Name, tr); err != nil {
			return err
		}
	}
}
