package ociregistry

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"

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
