package framework

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Server is a checkpoint-apiserver process started by a test.
type Server struct {
	DataDir    string
	Kubeconfig string
	Config     *rest.Config
	LogFile    string

	cmd  *exec.Cmd
	done chan error
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// OpenKruiseCRDs is the directory of OpenKruise Agents' own CRDs
// (third_party/openkruise-agents), for kubectl apply -f.
func OpenKruiseCRDs() string {
	return filepath.Join(RepoRoot(), "third_party", "openkruise-agents", "crds")
}

// RepoRoot is the checkout this package lives in.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// ServerBinary returns the server binary: $CHECKPOINT_APISERVER_BIN when set
// (make test builds it once), else one built for this test process.
func ServerBinary(t testing.TB) string {
	t.Helper()
	if bin := os.Getenv("CHECKPOINT_APISERVER_BIN"); bin != "" {
		return bin
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "checkpoint-apiserver-bin")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "checkpoint-apiserver")
		ldflags, err := exec.Command(filepath.Join(RepoRoot(), "hack", "version.sh")).Output()
		if err != nil {
			buildErr = fmt.Errorf("hack/version.sh: %w", err)
			return
		}
		cmd := exec.Command("go", "build", "-ldflags", strings.TrimSpace(string(ldflags)), "-o", builtBin, "./cmd/checkpoint-apiserver")
		cmd.Dir = RepoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// FreePortPair is a free port p whose next, p+1, is free too: local-up's
// etcd listens for peers on its client port + 1 (a CI run failed when
// only p had been checked: "bind: address already in use" on p+1).
func FreePortPair(t testing.TB) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		next, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		l.Close()
		if err == nil {
			next.Close()
			return p
		}
	}
	t.Fatal("no two free ports in a row on 127.0.0.1")
	return 0
}

// StartStandalone starts the server in standalone mode (embedded etcd under
// dataDir, its own PKI) and waits until it reports ready. The server is
// stopped when the test ends.
func StartStandalone(t testing.TB, dataDir string, extraArgs ...string) *Server {
	t.Helper()
	args := append([]string{
		"--standalone",
		"--data-dir=" + dataDir,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", FreePort(t)),
	}, extraArgs...)
	s := &Server{DataDir: dataDir, LogFile: filepath.Join(dataDir, fmt.Sprintf("server-%d.log", time.Now().UnixNano()))}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(s.LogFile)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(ServerBinary(t), args...)
	s.cmd.Stderr = logf
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.done = make(chan error, 1)
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, "stdout: "+line)
			if path, ok := strings.CutPrefix(line, "kubeconfig: "); ok {
				ready <- path
			}
		}
		s.done <- s.cmd.Wait()
		logf.Close()
	}()
	t.Cleanup(s.Stop)

	select {
	case s.Kubeconfig = <-ready:
	case err := <-s.done:
		s.done <- err
		t.Fatalf("server exited before it was ready: %v\n%s", err, s.LogTail())
	case <-time.After(90 * time.Second):
		t.Fatalf("server not ready after 90s\n%s", s.LogTail())
	}
	s.Config, err = clientcmd.BuildConfigFromFlags("", s.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Stop sends SIGTERM and waits for the process to exit (SIGKILL after 30 s).
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case err := <-s.done:
		s.done <- err
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		s.done <- err
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		s.done <- <-s.done
	}
}

// Kill stops the server at once (SIGKILL), as a crash would.
func (s *Server) Kill() {
	_ = s.cmd.Process.Kill()
	err := <-s.done
	s.done <- err
}

// Healthy says whether /readyz answers ok, through the admin identity.
func (s *Server) Healthy(ctx context.Context) error {
	client, err := rest.HTTPClientFor(s.Config)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.Config.Host+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz: %s", resp.Status)
	}
	return nil
}

// LogTail returns the last lines the server logged, for failure messages.
func (s *Server) LogTail() string {
	b, _ := os.ReadFile(s.LogFile)
	lines := strings.Split(string(b), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return strings.Join(lines, "\n")
}
