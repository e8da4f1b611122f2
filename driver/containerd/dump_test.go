package containerd

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDumpReservations: dumps share the fast directory up to its limit;
// what would exceed it, or its free space, is refused (and goes to disk),
// and a released reservation makes room again.
func TestDumpReservations(t *testing.T) {
	d := &Driver{cfg: Config{DumpDir: filepath.Join(t.TempDir(), "dumps"), DumpDirLimit: 100 << 20}}
	assert.Empty(t, d.reserveFast(60<<20))
	assert.Contains(t, d.reserveFast(60<<20), "would exceed the limit", "60 MiB more than 100 MiB allow")
	assert.Empty(t, d.reserveFast(40<<20), "exactly the limit")
	d.releaseDump(dumpSlot{Dir: filepath.Join(d.cfg.DumpDir, "a"), Fast: true, bytes: 60 << 20})
	assert.Empty(t, d.reserveFast(60<<20), "released room is reused")
	assert.EqualValues(t, 100<<20, d.dumpReserved)

	// No limit: half the filesystem, and never more than is free.
	d = &Driver{cfg: Config{DumpDir: filepath.Join(t.TempDir(), "dumps")}}
	free, limit, err := dumpSpace(d.cfg.DumpDir, 0)
	require.NoError(t, err)
	assert.Positive(t, limit)
	assert.NotEmpty(t, d.reserveFast(limit+1))
	assert.NotEmpty(t, d.reserveFast(free+1))
	assert.Empty(t, d.reserveFast(1<<20))

	// A directory that cannot be made is refused, with why.
	file := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	d = &Driver{cfg: Config{DumpDir: filepath.Join(file, "dumps")}}
	assert.NotEmpty(t, d.reserveFast(1))
	assert.Zero(t, d.dumpReserved)
}
