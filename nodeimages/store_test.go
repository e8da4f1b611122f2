package nodeimages

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/agents-kruise/checkpoint-apiserver/restoreruntime/api"
)

type entryT struct {
	name string
	typ  byte
	body string
	link string
}

func archive(t *testing.T, entries ...entryT) []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		require.NoError(t, tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: e.typ, Size: int64(len(e.body)), Mode: 0o600, Linkname: e.link}))
		_, err := tw.Write([]byte(e.body))
		require.NoError(t, err)
	}
	require.NoError(t, tw.Close())
	return b.Bytes()
}

type fakeLookup map[string]Checkpoint

func (f fakeLookup) Find(_ context.Context, ns, id string) (Checkpoint, error) {
	if cp, ok := f[ns+"/"+id]; ok {
		return cp, nil
	}
	return Checkpoint{}, ErrNotFound
}

type fakeArchives struct {
	data  []byte
	calls atomic.Int32
}

func (f *fakeArchives) Archive(context.Context, Checkpoint, api.Request) (io.ReadCloser, int64, error) {
	f.calls.Add(1)
	return io.NopCloser(bytes.NewReader(f.data)), int64(len(f.data)), nil
}

const id = "ckpt-0123456789abcdef01234567"

var good = []entryT{
	{name: "config.dump", typ: tar.TypeReg, body: "{}"},
	{name: "checkpoint/", typ: tar.TypeDir},
	{name: "checkpoint/inventory.img", typ: tar.TypeReg, body: "inv"},
	{name: "checkpoint/pages-1.img", typ: tar.TypeReg, body: "pages"},
	{name: "rootfs-diff.tar", typ: tar.TypeReg, body: "diff"},
}

func TestPrepareUnpacksOnceAndOnlyForItsNamespace(t *testing.T) {
	arch := &fakeArchives{data: archive(t, good...)}
	s := &Store{Dir: t.TempDir(), Lookup: fakeLookup{"team-a/" + id: {Namespace: "team-a", Name: "cp"}}, Archives: arch}
	require.NoError(t, s.Start())
	req := api.Request{Namespace: "team-a", Pod: "p", Container: "app", CheckpointID: id}
	for i := 0; i < 3; i++ {
		resp, err := s.Prepare(context.Background(), req)
		require.NoError(t, err)
		pages, err := os.ReadFile(filepath.Join(resp.Images, "pages-1.img"))
		require.NoError(t, err)
		assert.Equal(t, "pages", string(pages))
		assert.Equal(t, filepath.Join(s.Dir, "team-a", id, "app", "rootfs-diff.tar"), resp.RootfsDiff)
	}
	assert.Equal(t, int32(1), arch.calls.Load(), "fetched once, then read in place")
	_, err := os.Stat(filepath.Join(s.Dir, "team-a", id, "app", "config.dump"))
	assert.True(t, os.IsNotExist(err), "only what the runtime reads is unpacked")

	req.Namespace = "team-b"
	_, err = s.Prepare(context.Background(), req)
	assert.ErrorIs(t, err, ErrNotFound, "another namespace's checkpoint is not found")
	require.NoError(t, s.Remove(id))
	_, err = os.Stat(filepath.Join(s.Dir, "team-a", id))
	assert.True(t, os.IsNotExist(err))
}

func TestUnpackRefusesWhatIsNotACheckpoint(t *testing.T) {
	for name, entries := range map[string][]entryT{
		"path out":  {{name: "checkpoint/../../../etc/x", typ: tar.TypeReg, body: "x"}},
		"nested":    {{name: "checkpoint/a/b", typ: tar.TypeReg, body: "x"}},
		"symlink":   {{name: "checkpoint/inventory.img", typ: tar.TypeSymlink, link: "/etc/shadow"}},
		"hard link": {{name: "rootfs-diff.tar", typ: tar.TypeLink, link: "/etc/shadow"}},
		"device":    {{name: "checkpoint/inventory.img", typ: tar.TypeChar}},
		"twice":     {{name: "checkpoint/inventory.img", typ: tar.TypeReg, body: "a"}, {name: "checkpoint/inventory.img", typ: tar.TypeReg, body: "b"}},
		"no memory": {{name: "rootfs-diff.tar", typ: tar.TypeReg, body: "diff"}},
	} {
		arch := &fakeArchives{data: archive(t, entries...)}
		s := &Store{Dir: t.TempDir(), Lookup: fakeLookup{"team-a/" + id: {}}, Archives: arch}
		require.NoError(t, s.Start())
		_, err := s.Prepare(context.Background(), api.Request{Namespace: "team-a", Container: "app", CheckpointID: id})
		assert.Error(t, err, name)
		left, _ := filepath.Glob(filepath.Join(s.Dir, "team-a", id, "*"))
		assert.Empty(t, left, "%s: nothing is left of a refused archive", name)
	}
}

func TestBoundRefusesAndEvicts(t *testing.T) {
	data := archive(t, good...)
	s := &Store{Dir: t.TempDir(), Limit: int64(len(data)) - 1, Lookup: fakeLookup{"team-a/" + id: {}}, Archives: &fakeArchives{data: data}}
	require.NoError(t, s.Start())
	_, err := s.Prepare(context.Background(), api.Request{Namespace: "team-a", Container: "app", CheckpointID: id})
	assert.True(t, errors.Is(err, ErrTooLarge), "a checkpoint over the bound is refused: %v", err)
}

// Checkpoints go to the memory tier while they fit its bound, else to
// disk; either is found in place, and removed with its checkpoint.
func TestMemoryTierFirstThenDisk(t *testing.T) {
	withPages := func(n int) []byte {
		return archive(t, append(append([]entryT{}, good...), entryT{name: "checkpoint/pages-2.img", typ: tar.TypeReg, body: strings.Repeat("p", n)})...)
	}
	small, big := withPages(8192), withPages(32768)
	const other = "ckpt-ffffffffffffffffffffffff"
	archives := byID{id: &fakeArchives{data: small}, other: &fakeArchives{data: big}}
	s := &Store{Dir: t.TempDir(), MemDir: t.TempDir(), MemLimit: int64(len(small)) + 4096,
		Lookup: fakeLookup{"team-a/" + id: {}, "team-a/" + other: {}}, Archives: &archives}
	require.NoError(t, s.Start())
	resp, err := s.Prepare(context.Background(), api.Request{Namespace: "team-a", Container: "app", CheckpointID: id})
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(s.MemDir, "team-a", id, "app", "checkpoint"), resp.Images, "what fits goes to memory")
	resp, err = s.Prepare(context.Background(), api.Request{Namespace: "team-a", Container: "app", CheckpointID: other})
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(s.Dir, "team-a", other, "app", "checkpoint"), resp.Images, "what does not fit goes to disk")
	// Found again where it is, not fetched again.
	resp, err = s.Prepare(context.Background(), api.Request{Namespace: "team-a", Container: "app", CheckpointID: id})
	require.NoError(t, err)
	assert.Equal(t, filepath.Join(s.MemDir, "team-a", id, "app", "checkpoint"), resp.Images)
	assert.Equal(t, int32(1), archives[id].calls.Load())
	// A second small one does not fit beside the first (used just now): disk.
	archives["ckpt-eeeeeeeeeeeeeeeeeeeeeeee"] = &fakeArchives{data: small}
	s.Lookup.(fakeLookup)["team-a/ckpt-eeeeeeeeeeeeeeeeeeeeeeee"] = Checkpoint{}
	resp, err = s.Prepare(context.Background(), api.Request{Namespace: "team-a", Container: "app", CheckpointID: "ckpt-eeeeeeeeeeeeeeeeeeeeeeee"})
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(resp.Images, s.Dir), "the memory tier stays within its bound: %s", resp.Images)
	for _, cp := range []string{id, other} {
		require.NoError(t, s.Remove(cp))
	}
	left, _ := filepath.Glob(filepath.Join(s.MemDir, "team-a", "*"))
	assert.Empty(t, left)
	left, _ = filepath.Glob(filepath.Join(s.Dir, "team-a", "ckpt-f*"))
	assert.Empty(t, left)
}

// byID streams each checkpoint's own archive.
type byID map[string]*fakeArchives

func (b *byID) Archive(ctx context.Context, cp Checkpoint, req api.Request) (io.ReadCloser, int64, error) {
	return (*b)[req.CheckpointID].Archive(ctx, cp, req)
}

func TestInvalidRequests(t *testing.T) {
	s := &Store{Dir: t.TempDir(), Lookup: fakeLookup{}, Archives: &fakeArchives{}}
	for _, req := range []api.Request{
		{Namespace: "team-a", Container: "app", CheckpointID: "../x"},
		{Namespace: "../x", Container: "app", CheckpointID: id},
		{Namespace: "team-a", Container: "../../x", CheckpointID: id},
	} {
		_, err := s.Prepare(context.Background(), req)
		assert.Error(t, err)
	}
	assert.Error(t, s.Remove("*"))
}

type recordedEvents struct{ got []api.Failure }

func (r *recordedEvents) RestoreFailed(_ context.Context, cp Checkpoint, f api.Failure) {
	f.Reason = cp.Name + ": " + f.Reason
	r.got = append(r.got, f)
}

// A restore the runtime reports failed becomes an Event on the Checkpoint
// of the Pod's own namespace, and on nothing else.
func TestFailuresReachTheirCheckpoint(t *testing.T) {
	events := &recordedEvents{}
	s := &Store{Dir: t.TempDir(), Lookup: fakeLookup{"team-a/" + id: {Namespace: "team-a", Name: "snap"}}, Archives: &fakeArchives{}, Events: events}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	post := func(body string) int {
		resp, err := http.Post(srv.URL+api.FailurePath, "application/json", strings.NewReader(body))
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	assert.Equal(t, http.StatusNoContent, post(`{"namespace":"team-a","pod":"clone","container":"app","checkpointId":"`+id+`","reason":"pages lost"}`))
	assert.Equal(t, http.StatusNotFound, post(`{"namespace":"team-b","pod":"clone","container":"app","checkpointId":"`+id+`","reason":"x"}`),
		"another namespace's Pod names no Checkpoint")
	assert.Equal(t, http.StatusBadRequest, post(`{"namespace":"../x","pod":"clone","container":"app","checkpointId":"`+id+`"}`))
	assert.Equal(t, http.StatusBadRequest, post(`not json`))
	require.Len(t, events.got, 1)
	assert.Equal(t, "snap: pages lost", events.got[0].Reason)
	assert.Equal(t, "clone", events.got[0].Pod)
}

// noContainer is a checkpoint that holds nothing of the container asked for.
type noContainer struct{}

func (noContainer) Archive(context.Context, Checkpoint, api.Request) (io.ReadCloser, int64, error) {
	return nil, 0, ErrNoContainer
}

// A filesystem checkpoint (no memory) gives its layer and no CRIU images;
// a container it has no layer of starts from its image. A memory
// checkpoint gets neither: without its images nothing is restored.
func TestFilesystemOnlyCheckpoints(t *testing.T) {
	layer := archive(t, entryT{name: "checkpoint/", typ: tar.TypeDir}, entryT{name: "rootfs-diff.tar", typ: tar.TypeReg, body: "diff"})
	req := api.Request{Namespace: "team-a", Pod: "p", Container: "app", CheckpointID: id}
	fs := Checkpoint{Namespace: "team-a", Name: "up", FilesystemOnly: true}
	s := &Store{Dir: t.TempDir(), Lookup: fakeLookup{"team-a/" + id: fs}, Archives: &fakeArchives{data: layer}}
	require.NoError(t, s.Start())
	for i := 0; i < 2; i++ { // unpacked, then found in place
		resp, err := s.Prepare(context.Background(), req)
		require.NoError(t, err)
		assert.True(t, resp.FilesystemOnly)
		assert.Empty(t, resp.Images, "no memory to restore")
		diff, err := os.ReadFile(resp.RootfsDiff)
		require.NoError(t, err)
		assert.Equal(t, "diff", string(diff))
	}

	s = &Store{Dir: t.TempDir(), Lookup: fakeLookup{"team-a/" + id: fs}, Archives: noContainer{}}
	resp, err := s.Prepare(context.Background(), req)
	require.NoError(t, err)
	assert.Equal(t, api.Response{FilesystemOnly: true}, resp, "a container the checkpoint has no layer of starts from its image")

	memory := Checkpoint{Namespace: "team-a", Name: "snap"}
	for name, archives := range map[string]Archives{"layer only": &fakeArchives{data: layer}, "no such container": noContainer{}} {
		s = &Store{Dir: t.TempDir(), Lookup: fakeLookup{"team-a/" + id: memory}, Archives: archives}
		_, err = s.Prepare(context.Background(), req)
		assert.Error(t, err, "%s: a memory checkpoint without its images restores nothing", name)
	}
	// And a filesystem checkpoint's unpacked layer never answers for memory.
	s = &Store{Dir: t.TempDir(), Lookup: fakeLookup{"team-a/" + id: fs}, Archives: &fakeArchives{data: layer}}
	_, err = s.Prepare(context.Background(), req)
	require.NoError(t, err)
	s.Lookup = fakeLookup{"team-a/" + id: memory}
	_, err = s.Prepare(context.Background(), req)
	assert.Error(t, err)
}
