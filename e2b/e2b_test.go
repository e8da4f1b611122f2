package e2b

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseKeys(t *testing.T) {
	key := "e2b_" + strings.Repeat("ab", 20)
	digest := sha256.Sum256([]byte("e2b_" + strings.Repeat("cd", 20)))
	table, err := ParseKeys([]byte("keys:\n- {key: " + key + ", user: alice, team: team-a}\n- {sha256: " +
		hex.EncodeToString(digest[:]) + ", user: bob, team: team-b}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ks := &KeyStore{byDigest: table}
	if id, err := ks.Lookup(key); err != nil || id != (Identity{User: "alice", Team: "team-a"}) {
		t.Errorf("alice's key: %v %v", id, err)
	}
	if id, err := ks.Lookup("e2b_" + strings.Repeat("cd", 20)); err != nil || id.User != "bob" {
		t.Errorf("bob's key by digest: %v %v", id, err)
	}
	for _, bad := range []string{"", "e2b_", key + "0", strings.ToUpper(key), "e2b_" + strings.Repeat("ef", 20)} {
		if _, err := ks.Lookup(bad); err == nil {
			t.Errorf("Lookup(%q) accepted", bad)
		}
	}
	for name, doc := range map[string]string{
		"bad shape":      "keys:\n- {key: e2b_XYZ, user: a, team: t}\n",
		"no user":        "keys:\n- {key: " + key + ", team: t}\n",
		"no team":        "keys:\n- {key: " + key + ", user: a}\n",
		"both":           "keys:\n- {key: " + key + ", sha256: " + hex.EncodeToString(digest[:]) + ", user: a, team: t}\n",
		"neither":        "keys:\n- {user: a, team: t}\n",
		"short sha256":   "keys:\n- {sha256: abcd, user: a, team: t}\n",
		"duplicate":      "keys:\n- {key: " + key + ", user: a, team: t}\n- {key: " + key + ", user: b, team: t}\n",
		"unknown field":  "keys:\n- {key: " + key + ", user: a, team: t, role: x}\n",
		"not a document": "keys: [",
	} {
		if _, err := ParseKeys([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		} else if strings.Contains(err.Error(), key) {
			t.Errorf("%s: the error repeats the key: %v", name, err)
		}
	}
}

func TestPageToken(t *testing.T) {
	for _, n := range []int{0, 1, 99, 1 << 30} {
		got, err := decodeToken(encodeToken(n))
		if err != nil || got != n {
			t.Errorf("round trip of %d: %d, %v", n, got, err)
		}
	}
	for _, bad := range []string{"!!", "eyJvIjotNX0", "bm90IGpzb24", "eyJvIjoiYSJ9"} {
		if _, err := decodeToken(bad); err == nil {
			t.Errorf("decodeToken(%q) accepted", bad)
		}
	}
}

// FuzzPageToken: any string decodes to a non-negative offset or an error, never a panic.
func FuzzPageToken(f *testing.F) {
	f.Add(encodeToken(3))
	f.Add("eyJvIjotNX0")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		if n, err := decodeToken(s); err == nil && n < 0 {
			t.Fatalf("decodeToken(%q) = %d", s, n)
		}
	})
}

// FuzzDecodeBody: request bodies decode into the routes' types or fail
// cleanly; a decoded body re-decodes the same way.
func FuzzDecodeBody(f *testing.F) {
	for _, s := range []string{``, `{}`, `{"name":"x"}`, `{"name":42}`, `{"templateID":"ckpt-1","timeout":30,"metadata":{"a":"b"}}`, `[`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var snap struct {
			Name *string `json:"name"`
		}
		_ = DecodeBody(data, &snap)
		var sbx struct {
			TemplateID string            `json:"templateID"`
			Timeout    *int64            `json:"timeout"`
			Metadata   map[string]string `json:"metadata"`
		}
		if err := DecodeBody(data, &sbx); err == nil && len(data) > 0 {
			var again struct {
				TemplateID string `json:"templateID"`
			}
			if err := DecodeBody(data, &again); err != nil || again.TemplateID != sbx.TemplateID {
				t.Fatalf("decoded once, not twice: %v", err)
			}
		}
	})
}

// FuzzAPIKey: any X-API-Key value either is the one key on file or is
// refused, and a keys file either parses into identities with a user and a
// team or is refused, never a panic.
func FuzzAPIKey(f *testing.F) {
	const known = "e2b_0123456789abcdef0123456789abcdef01234567"
	ks := &KeyStore{}
	table, err := ParseKeys([]byte("keys:\n- {key: " + known + ", user: u, team: t}\n"))
	if err != nil {
		f.Fatal(err)
	}
	ks.byDigest = table
	for _, s := range []string{known, "", "e2b_", known + "0", strings.ToUpper(known), "keys:\n- {key: x, user: a, team: b}", "keys: [{sha256: zz, user: a, team: b}]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ks.Lookup(s)
		if (err == nil) != (s == known) {
			t.Fatalf("Lookup(%q) = %v, %v", s, id, err)
		}
		if err == nil && (id.User != "u" || id.Team != "t") {
			t.Fatalf("Lookup(%q) = %+v", s, id)
		}
		ids, err := ParseKeys([]byte(s))
		if err == nil {
			for _, id := range ids {
				if id.User == "" || id.Team == "" {
					t.Fatalf("ParseKeys(%q) gave an identity without user or team", s)
				}
			}
		}
	})
}

// TestKeyRevocationFailsClosed: a keys file that is deleted or turns bad
// revokes every key (the last table is not kept), until it is good again.
func TestKeyRevocationFailsClosed(t *testing.T) {
	const key = "e2b_0123456789abcdef0123456789abcdef01234567"
	path := filepath.Join(t.TempDir(), "keys.yaml")
	good := []byte("keys:\n- {key: " + key + ", user: alice, team: team-a}\n")
	require.NoError(t, os.WriteFile(path, good, 0o600))
	ks, err := LoadKeys(path)
	require.NoError(t, err)
	_, err = ks.Lookup(key)
	require.NoError(t, err)

	require.NoError(t, os.Remove(path))
	ks.refresh()
	_, err = ks.Lookup(key)
	assert.Error(t, err, "a deleted keys file leaves no key working")

	require.NoError(t, os.WriteFile(path, []byte("keys: [{{{"), 0o600))
	ks.refresh()
	_, err = ks.Lookup(key)
	assert.Error(t, err, "a broken keys file leaves no key working")

	require.NoError(t, os.WriteFile(path, good, 0o600))
	ks.refresh()
	id, err := ks.Lookup(key)
	require.NoError(t, err)
	assert.Equal(t, "alice", id.User)
}
