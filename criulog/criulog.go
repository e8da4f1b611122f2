// Package criulog reads what CRIU says in its logs when a dump or a
// restore fails, and keeps those logs, bounded, after the directory CRIU
// wrote them in is gone.
package criulog

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Tail is the last n error or warning lines of the CRIU log at path (its
// last n lines when it has none), as a suffix for an error message
// ("; CRIU: line | line"), or "" when there is no such log.
func Tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 1<<20 {
		_, _ = f.Seek(fi.Size()-1<<20, io.SeekStart)
	}
	var all, errs, warns []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || isNoise(line) {
			continue
		}
		all = append(all, line)
		switch {
		case strings.Contains(line, "Error"):
			errs = append(errs, line)
		case strings.Contains(line, "Warn"):
			warns = append(warns, line)
		}
	}
	pick := errs
	if len(pick) == 0 {
		pick = warns
	}
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

// noise are lines CRIU logs on every run on these machines, failed or not.
var noise = []string{
	"Hardware breakpoints don't seem to work",
	"Can't setup RLIMIT_NOFILE for self",
}

func isNoise(line string) bool {
	for _, n := range noise {
		if strings.Contains(line, n) {
			return true
		}
	}
	return false
}

// Keep copies the logs named names out of dir into keepDir, as
// <time>-<label>-<name> (at most 4 MiB each, the end), and removes the
// oldest there beyond keep files.
func Keep(dir, keepDir, label string, keep int, names ...string) error {
	if err := os.MkdirAll(keepDir, 0o700); err != nil {
		return err
	}
	stamp := time.Now().UTC().Format("20060102T150405.000")
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		if len(data) > 4<<20 {
			data = data[len(data)-4<<20:]
		}
		if err := os.WriteFile(filepath.Join(keepDir, fmt.Sprintf("%s-%s-%s", stamp, label, name)), data, 0o600); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(keepDir)
	if err != nil {
		return err
	}
	files := make([]string, 0, len(entries))
	for _, e := range entries {
		if e.Type().IsRegular() {
			files = append(files, e.Name())
		}
	}
	sort.Strings(files)
	for len(files) > keep {
		_ = os.Remove(filepath.Join(keepDir, files[0]))
		files = files[1:]
	}
	return nil
}
