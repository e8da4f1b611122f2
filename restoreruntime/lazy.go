package restoreruntime

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/sys/reaper"
	runc "github.com/containerd/go-runc"
	"github.com/containerd/log"

	"github.com/agents-kruise/checkpoint-apiserver/criulog"
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
			return nil, fmt.Errorf("criu lazy-pages exited (status %d) before it listened%s", lp.status, criulog.Tail(filepath.Join(work, lazyPagesLog), 8))
		case <-deadline.C:
			lp.stop()
			return nil, fmt.Errorf("criu lazy-pages did not listen within 10s%s", criulog.Tail(filepath.Join(work, lazyPagesLog), 8))
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
		return false, fmt.Sprintf("criu lazy-pages exited with status %d%s", lp.status, criulog.Tail(filepath.Join(lp.work, lazyPagesLog), 4))
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

// keepLog copies a failed restore's CRIU logs out of the bundle (which
// containerd deletes with the container) into the log directory, keeping
// the newest LogKeep.
func (s *Service) keepLog(id string, rs *restore) {
	if err := criulog.Keep(rs.work, s.cfg.LogDir, id, s.cfg.LogKeep, "restore.log", lazyPagesLog); err != nil {
		log.L.WithError(err).Warn("keep a failed restore's CRIU logs")
	}
}

// abortIfDaemonEnds kills container id's restored processes when its
// lazy-pages daemon ends before the restore does (started closes when runc's
// start returns). CRIU's restore waits on those processes, and they wait
// on the daemon for their pages: without it they, and the restore, would
// wait forever (the processes hold their userfaultfd themselves, so no
// zero page frees them). Killed, they end the restore, which fails.
func abortIfDaemonEnds(id string, lp *lazyPages, started <-chan struct{}) {
	select {
	case <-started:
		return
	case <-lp.done:
	}
	select {
	case <-started:
		return // the restore ended first: the container's watcher takes over
	default:
	}
	served, reason := lp.wait()
	if served {
		return // every page went in before the restore ended: nothing waits
	}
	n := killCgroupMembers(id)
	log.L.WithField("container", id).WithField("reason", reason).WithField("killed", n).
		Error("the lazy-pages daemon ended during the restore: its restored processes were killed")
}

// killCgroupMembers SIGKILLs every process whose cgroup names container id
// (both of runc's cgroup drivers put the ID in the path) and says how many.
func killCgroupMembers(id string) int {
	n := 0
	entries, _ := filepath.Glob("/proc/[0-9]*/cgroup")
	for _, e := range entries {
		data, err := os.ReadFile(e)
		if err != nil || !strings.Contains(string(data), id) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(e))); err == nil && pid != os.Getpid() {
			if syscall.Kill(pid, syscall.SIGKILL) == nil {
				n++
			}
		}
	}
	return n
}
