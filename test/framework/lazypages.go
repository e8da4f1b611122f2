package framework

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// LazyPagesDaemon is the pid and work directory of a criu lazy-pages
// daemon serving checkpoint id on this machine (the nodes' processes are
// this machine's), or 0 and "".
func LazyPagesDaemon(id string) (int, string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(data), "\x00")
		if !slices.Contains(args, "lazy-pages") || !strings.Contains(string(data), "/"+id+"/") {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		work := ""
		if i := slices.Index(args, "--work-dir"); i >= 0 && i+1 < len(args) {
			work = args[i+1]
		}
		return pid, work
	}
	return 0, ""
}
