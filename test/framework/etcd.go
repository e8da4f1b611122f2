package framework

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Etcd is an etcd process started by a test from _output/bin/etcd, with
// its data under a temporary directory, so that it can be killed and
// started again on the same data.
type Etcd struct {
	URL  string
	dir  string
	bin  string
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

// StartEtcd starts etcd and stops it when t ends. It skips (fails under
// REQUIRE_REAL=1) when etcd is not built.
func StartEtcd(t testing.TB) *Etcd {
	t.Helper()
	bin := filepath.Join(RepoRoot(), "_output", "bin", "etcd")
	if _, err := os.Stat(bin); err != nil {
		Missing(t, "_output/bin/etcd not built (run hack/build-kube-tools.sh)")
	}
	e := &Etcd{dir: t.TempDir(), bin: bin, port: FreePort(t)}
	e.URL = fmt.Sprintf("http://127.0.0.1:%d", e.port)
	e.Start(t)
	t.Cleanup(func() { e.Kill(t) })
	return e
}

// Start starts etcd (again) on its data directory and waits until it is healthy.
func (e *Etcd) Start(t testing.TB) {
	t.Helper()
	peer := fmt.Sprintf("http://127.0.0.1:%d", FreePort(t))
	e.cmd = exec.Command(e.bin, "--data-dir", filepath.Join(e.dir, "data"), "--name", "test",
		"--listen-client-urls", e.URL, "--advertise-client-urls", e.URL,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
		"--initial-cluster", "test="+peer, "--log-level", "warn")
	logf, err := os.OpenFile(filepath.Join(e.dir, "etcd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	e.cmd.Stdout, e.cmd.Stderr = logf, logf
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := e.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	e.done = make(chan struct{})
	done := e.done
	go func() { _ = e.cmd.Wait(); logf.Close(); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(e.URL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("etcd not healthy: %v\n%s", err, readTail(filepath.Join(e.dir, "etcd.log")))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Kill stops etcd at once (SIGKILL), as a crash would.
func (e *Etcd) Kill(t testing.TB) {
	if e.cmd == nil || e.cmd.Process == nil {
		return
	}
	select {
	case <-e.done:
		return
	default:
	}
	_ = e.cmd.Process.Kill()
	<-e.done
}
