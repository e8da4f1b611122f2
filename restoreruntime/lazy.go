package restoreruntime

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"
)

// lazyPages is one container's `criu lazy-pages` daemon: it serves the
// restored process's pages on first touch from the node-local images,
// pushes the rest, and exits once every page is in.
type lazyPages struct {
	cmd  *exec.Cmd
	ec   chan runc.Exit
	work string
	done chan struct{}
	// status is the daemon's exit status, set before done closes.
	status int
}

const lazyPagesLog = "lazy-pages.log"

// startLazyPages starts the daemon on images, meeting the restore in work,
// and waits until it listens. The shim reaps every child, so the daemon is
// started and waited for through the shim's reaper.
func startLazyPages(ctx context.Context, criu, images, work string) (*lazyPages, error) {
	if criu == "" {
		criu = "criu"
	}
	sock := filepath.Join(work, "lazy-pages.socket")
	_ = os.Remove(sock)
	cmd := exec.Command(criu, "lazy-pages", "--images-dir", images, "--work-dir", work, "--log-file", lazyPagesLog, "-v4")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	ec, err := reaper.Default.Start(cmd)
	if err != nil {
		return nil, fmt.Errorf("start criu lazy-pages: %w", err)
	}
	lp := &lazyPages{cmd: cmd, ec: ec, work: work, done: make(chan struct{})}
	go func() {
		lp.status, _ = reaper.Default.Wait(cmd, ec)
		close(lp.done)
	}()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(sock); err == nil {
			return lp, nil
		}
		select {
		case <-lp.done:
			return nil, fmt.Errorf("criu lazy-pages exited (status %d) before it listened%s", lp.status, criuLogTail(filepath.Join(work, lazyPagesLog), 8))
		case <-deadline.C:
			lp.stop()
			return nil, fmt.Errorf("criu lazy-pages did not listen within 10s%s", criuLogTail(filepath.Join(work, lazyPagesLog), 8))
		case <-ctx.Done():
			lp.stop()
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// The daemon's words on each restored process (logged at -v4): pages
// served of pages to serve, and that the process exited (its pages left
// unserved are then nobody's).
var (
	transferredPattern = regexp.MustCompile(`uffd: (\d+)-[-\d]*: UFFD transferred pages: \((\d+)/(\d+)\)`)
	exitPattern        = regexp.MustCompile(`uffd: (\d+)-[-\d]*: EXIT`)
)

// wait waits for the daemon to end and says whether every page was served,
// and if not, why not.
func (lp *lazyPages) wait() (bool, string) {
	<-lp.done
	if lp.status != 0 {
		return false, fmt.Sprintf("criu lazy-pages exited with status %d%s", lp.status, criuLogTail(filepath.Join(lp.work, lazyPagesLog), 4))
	}
	data, err := os.ReadFile(filepath.Join(lp.work, lazyPagesLog))
	if err != nil {
		return false, fmt.Sprintf("its log: %v", err)
	}
	return pagesServed(data)
}

// pagesServed reads a lazy-pages log that ended well: every process it
// served must have had every page, or have exited.
func pagesServed(log []byte) (bool, string) {
	exited := map[string]bool{}
	for _, m := range exitPattern.FindAllSubmatch(log, -1) {
		exited[string(m[1])] = true
	}
	for _, m := range transferredPattern.FindAllSubmatch(log, -1) {
		got, _ := strconv.ParseUint(string(m[2]), 10, 64)
		want, _ := strconv.ParseUint(string(m[3]), 10, 64)
		if got < want && !exited[string(m[1])] {
			return false, fmt.Sprintf("it served process %s %d of %d pages", m[1], got, want)
		}
	}
	return true, ""
}

// stop kills the daemon (its whole process group) and waits for it.
func (lp *lazyPages) stop() {
	select {
	case <-lp.done:
		return
	default:
	}
	_ = syscall.Kill(-lp.cmd.Process.Pid, syscall.SIGKILL)
	<-lp.done
}

// criuLogTail is the last n error or warning lines of a CRIU log (the
// last n lines when it has none), as a suffix of an error message.
func criuLogTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 1<<20 {
		_, _ = f.Seek(fi.Size()-1<<20, io.SeekStart)
	}
	var all, errs []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		all = append(all, line)
		if strings.Contains(line, "Error") || strings.Contains(line, "Warn") {
			errs = append(errs, line)
		}
	}
	pick := errs
	if len(pick) == 0 {
		pick = all
	}
	if len(pick) > n {
		pick = pick[len(pick)-n:]
	}
	if len(pick) == 0 {
		return ""
	}
	return "; CRIU: " + strings.Join(pick, " | ")
}

// keepLog copies a failed restore's CRIU logs out of the bundle (which
// containerd deletes with the container) into the log directory, keeping
// the newest LogKeep.
func (s *Service) keepLog(id string, rs *restore) {
	if err := os.MkdirAll(s.cfg.LogDir, 0o700); err != nil {
		return
	}
	for _, name := range []string{"restore.log", lazyPagesLog} {
		data, err := os.ReadFile(filepath.Join(rs.work, name))
		if err != nil {
			continue
		}
		if len(data) > 4<<20 {
			data = data[len(data)-4<<20:]
		}
		dst := filepath.Join(s.cfg.LogDir, fmt.Sprintf("%s-%s-%s", time.Now().UTC().Format("20060102T150405.000"), id, name))
		if err := os.WriteFile(dst, data, 0o600); err != nil {
			log.L.WithError(err).Warn("keep a CRIU log")
		}
	}
	entries, err := os.ReadDir(s.cfg.LogDir)
	if err != nil {
		return
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for len(names) > 2*s.cfg.LogKeep {
		_ = os.Remove(filepath.Join(s.cfg.LogDir, names[0]))
		names = names[1:]
	}
}
