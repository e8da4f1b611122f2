package framework

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
)

// Exec runs args in the running container ctr and returns its output and exit code.
func (c *Containerd) Exec(t testing.TB, ctr containerd.Container, args ...string) (string, uint32) {
	t.Helper()
	ctx := c.Ctx()
	spec, err := ctr.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	task, err := ctr.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := *spec.Process
	p.Args = args
	p.Terminal = false
	var out bytes.Buffer
	id := fmt.Sprintf("exec-%d", time.Now().UnixNano())
	proc, err := task.Exec(ctx, id, &p, cio.NewCreator(cio.WithStreams(nil, &out, &out)))
	if err != nil {
		t.Fatal(err)
	}
	defer proc.Delete(ctx) //nolint:errcheck
	exited, err := proc.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := proc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	st := <-exited
	proc.IO().Wait()
	return out.String(), st.ExitCode()
}

// Counter reads the numbers a counting container printed to its log: the
// first and the last.
func Counter(t testing.TB, logPath string) (first, last int, ok bool) {
	t.Helper()
	data, err := os.ReadFile(logPath)
	if err != nil {
		return 0, 0, false
	}
	seen := false
	for _, line := range strings.Split(string(data), "\n") {
		n, err := strconv.Atoi(strings.TrimSpace(line))
		if err != nil {
			continue
		}
		if !seen {
			first, seen = n, true
		}
		last = n
	}
	return first, last, seen
}

// WaitCounter waits until the counting container at logPath printed at least min.
func WaitCounter(t testing.TB, logPath string, min int) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, last, ok := Counter(t, logPath); ok && last >= min {
			return last
		}
		time.Sleep(50 * time.Millisecond)
	}
	data, _ := os.ReadFile(logPath)
	t.Fatalf("counter at %s did not reach %d in 30s; log:\n%s", logPath, min, data)
	return 0
}

// CounterScript counts in memory only (a shell variable) and leaves a marker
// file in the writable layer.
const CounterScript = `echo captured > /data/marker; i=0; while true; do i=$((i+1)); echo $i; sleep 0.1; done`

// SecretCounterScript is CounterScript that also keeps a secret in its
// memory alone: 12 random bytes drawn once at its start into a shell
// variable, never written to a file, printed as "secret <hex>" after each
// count. A sandbox restored with its memory prints the same secret; one
// started afresh draws another.
const SecretCounterScript = `S=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n'); echo captured > /data/marker; ` +
	`i=0; while true; do i=$((i+1)); echo $i; echo "secret $S"; sleep 0.1; done`

// WebScript is a web sandbox: an HTTP server listening on 127.0.0.1:8080,
// and one established TCP connection held open between two processes of
// the container (a client on 127.0.0.1:9000), which prints "conn-closed"
// when the connection ends; then CounterScript. It waits for the loopback
// interface (Containerd.LoopbackUp) before it opens anything.
const WebScript = `mkdir -p /www; echo web-sandbox > /www/index.html; httpd -f -p 127.0.0.1:8080 -h /www &
until wget -q -O /dev/null http://127.0.0.1:8080/; do sleep 0.1; done
sleep 1000000 | nc -l -p 9000 >/dev/null &
sleep 0.3
mkfifo /tmp/hold; sleep 1000000 >/tmp/hold &
(nc 127.0.0.1 9000 </tmp/hold; echo conn-closed) &
until netstat -tn | grep -q '127.0.0.1:9000 .*ESTABLISHED'; do sleep 0.1; done
echo web-ready
` + CounterScript

// MemoryScript holds mib MiB resident in a shell variable, then runs
// CounterScript: a container whose capture has that much memory to dump.
func MemoryScript(mib int) string {
	if mib <= 0 {
		return CounterScript
	}
	return fmt.Sprintf(`a=$(yes 0123456789abcdef | head -c %d); `, mib<<20) + CounterScript
}
