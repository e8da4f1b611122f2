package restoreruntime

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestPagesServed(t *testing.T) {
	for name, tc := range map[string]struct {
		log  string
		want bool
	}{
		"all served": {"(00.4) uffd: 1-12: UFFD transferred pages: (1399/1399)\n", true},
		"one short":  {"(00.4) uffd: 1-12: UFFD transferred pages: (1398/1399)\n", false},
		"short but exited": {"(00.4) uffd: 14-13: EXIT\n(00.4) uffd: 14--13: UFFD transferred pages: (6/7)\n" +
			"(00.4) uffd: 1-12: UFFD transferred pages: (1399/1399)\n", true},
		"another exited": {"(00.4) uffd: 14-13: EXIT\n(00.4) uffd: 1-12: UFFD transferred pages: (5/7)\n", false},
		"no words":       {"", true},
	} {
		got, why := pagesServed([]byte(tc.log))
		assert.Equal(t, tc.want, got, "%s: %s", name, why)
		if !tc.want {
			assert.Contains(t, why, "of", name)
		}
	}
}

func TestRequestValidate(t *testing.T) {
	ok := Request{Namespace: "team-a", Pod: "p", Container: "app", CheckpointID: "ckpt-0123456789abcdef01234567"}
	assert.NoError(t, ok.Validate())
	for name, mut := range map[string]func(*Request){
		"path in ID":        func(r *Request) { r.CheckpointID = "../../etc" },
		"glob in ID":        func(r *Request) { r.CheckpointID = "ckpt-*" },
		"short ID":          func(r *Request) { r.CheckpointID = "ckpt-0123" },
		"path in namespace": func(r *Request) { r.Namespace = "../x" },
		"path in container": func(r *Request) { r.Container = "a/b" },
		"empty container":   func(r *Request) { r.Container = "" },
	} {
		r := ok
		mut(&r)
		assert.Error(t, r.Validate(), name)
	}
}

func TestCRIUConfig(t *testing.T) {
	assert.Equal(t, "tcp-close\n", criuConfig(false))
	assert.Equal(t, "tcp-close\nlazy-pages\n", criuConfig(true))
}
