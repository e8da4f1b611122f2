package criulog

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTailPrefersErrorsAndDropsNoise(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "dump.log")
	require.NoError(t, os.WriteFile(log, []byte(strings.Join([]string{
		"(00.1) Warn  (criu/kerndat.c:1799): Hardware breakpoints don't seem to work (status=137f)",
		"(00.1) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted",
		"(00.2) dumping",
		"(00.3) Warn  (criu/x.c:1): something odd",
		"(00.4) Error (criu/cr-dump.c:1545): Dump files (pid: 7) failed with -1",
		"(00.5) Error (criu/cr-dump.c:1975): Dumping FAILED.",
	}, "\n")), 0o600))
	assert.Equal(t, "; CRIU: (00.4) Error (criu/cr-dump.c:1545): Dump files (pid: 7) failed with -1 | (00.5) Error (criu/cr-dump.c:1975): Dumping FAILED.",
		Tail(log, 8))
	assert.Equal(t, "; CRIU: (00.5) Error (criu/cr-dump.c:1975): Dumping FAILED.", Tail(log, 1))
	assert.Empty(t, Tail(filepath.Join(dir, "none.log"), 8))
}

func TestKeepIsBounded(t *testing.T) {
	work, keep := t.TempDir(), t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(work, "restore.log"), []byte("x"), 0o600))
	for i := 0; i < 5; i++ {
		require.NoError(t, Keep(work, keep, "c"+string(rune('a'+i)), 3, "restore.log", "absent.log"))
	}
	left, err := os.ReadDir(keep)
	require.NoError(t, err)
	assert.Len(t, left, 3, "only the newest are kept")
}
