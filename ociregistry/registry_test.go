package ociregistry

import (
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNewRefusesBadRepositories(t *testing.T) {
	for _, bad := range []string{"", "registry.example", "https://registry.example/checkpoints", "registry.example/Checkpoints",
		"registry.example/checkpoints:latest", "registry.example/checkpoints@sha256:00", "/checkpoints"} {
		_, err := New(Config{Repository: bad})
		assert.Error(t, err, "%q", bad)
	}
	r, err := New(Config{Repository: "198.18.0.1:5443/team/checkpoints"})
	require.NoError(t, err)
	assert.Equal(t, "198.18.0.1:5443", r.Host())
	assert.Equal(t, "198.18.0.1:5443/team/checkpoints:ckpt-1", r.TagRef("ckpt-1"))
	assert.Equal(t, "198.18.0.1:5443/team/checkpoints@sha256:ab", r.DigestRef("sha256:ab"))
}

func TestCredentialsFromADockerConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o600))
		return p
	}
	auth := base64.StdEncoding.EncodeToString([]byte("robot:s3cret:with:colons"))
	r, err := New(Config{Repository: "reg.example:5443/cp",
		AuthFile: write("auth.json", `{"auths":{"other.example":{"auth":"eDp5"},"https://reg.example:5443/":{"auth":"`+auth+`"}}}`)})
	require.NoError(t, err)
	assert.Equal(t, "robot", r.user)
	assert.Equal(t, "s3cret:with:colons", r.pass)

	r, err = New(Config{Repository: "reg.example/cp", AuthFile: write("plain.json", `{"auths":{"reg.example":{"username":"u","password":"p"}}}`)})
	require.NoError(t, err)
	assert.Equal(t, "u", r.user)
	assert.Equal(t, "p", r.pass)

	_, err = New(Config{Repository: "reg.example/cp", AuthFile: write("none.json", `{"auths":{"other.example":{"auth":"eDp5"}}}`)})
	assert.ErrorContains(t, err, "nothing for reg.example")
	_, err = New(Config{Repository: "reg.example/cp", AuthFile: write("bad.json", `{"auths":{"reg.example":{"auth":"%%%"}}}`)})
	assert.Error(t, err)
	_, err = New(Config{Repository: "reg.example/cp", CAFile: filepath.Join(dir, "missing.crt")})
	assert.ErrorContains(t, err, "checkpoint registry CA")
}

func TestEachNamespaceHasItsOwnRepository(t *testing.T) {
	r, err := New(Config{Repository: "198.18.0.1:5443/team/checkpoints"})
	require.NoError(t, err)
	a, err := r.In("team-a")
	require.NoError(t, err)
	assert.Equal(t, "198.18.0.1:5443/team/checkpoints/team-a", a.Repository())
	assert.Equal(t, "198.18.0.1:5443/team/checkpoints/team-a@sha256:ab", a.DigestRef("sha256:ab"))
	assert.Equal(t, "https://198.18.0.1:5443/v2/team/checkpoints/team-a/tags/list", a.url("/tags/list"))
	b, err := a.In("team-b")
	require.NoError(t, err)
	assert.Equal(t, "198.18.0.1:5443/team/checkpoints/team-b", b.Repository(), "a namespace's repository is under the prefix, never nested")
	for _, bad := range []string{"", "Team", "../x", "a/b", "a@b", "*", "-a", strings.Repeat("a", 64)} {
		_, err := r.In(bad)
		assert.Error(t, err, "%q", bad)
	}

	sha := "sha256:" + strings.Repeat("ab", 32)
	for ref, owned := range map[string]bool{
		a.DigestRef(digest.Digest(sha)):                    true,
		"198.18.0.1:5443/team/checkpoints/team-b@" + sha:   true,
		"198.18.0.1:5443/team/checkpoints@" + sha:          false, // the prefix itself holds none
		"198.18.0.1:5443/team/checkpoints/a/b@" + sha:      false,
		"198.18.0.1:5443/team/checkpoints/team-a:ckpt-1":   false,
		"198.18.0.1:5443/team/checkpoints/team-a@sha256:0": false,
		"198.18.0.2:5443/team/checkpoints/team-a@" + sha:   false,
		"198.18.0.1:5443/team/checkpointsx/team-a@" + sha:  false,
		"docker.io/library/busybox@" + sha:                 false,
	} {
		assert.Equal(t, owned, r.OwnsImage(ref), ref)
	}
}

func TestCatalogPages(t *testing.T) {
	page := func(link string) *http.Response {
		return &http.Response{Header: http.Header{"Link": []string{link}}}
	}
	assert.Equal(t, "https://reg:5443/v2/_catalog?last=cp%2Fa&n=1000", nextPage(page(`</v2/_catalog?last=cp%2Fa&n=1000>; rel="next"`), "reg:5443"))
	assert.Equal(t, "", nextPage(page(""), "reg:5443"))
	assert.Equal(t, "", nextPage(page(`<https://elsewhere/v2/_catalog?n=1>; rel="next"`), "reg:5443"), "never another host")
	assert.Equal(t, "", nextPage(page(`</v2/x/tags/list>; rel="next"`), "reg:5443"), "only the catalog")
}
