package encryption

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ErrIndexNotAuthentic: a checkpoint's index has no MAC, or one its data
// key did not make. Whoever may push to the registry could have written it.
var ErrIndexNotAuthentic = errors.New("checkpoint index not authentic")

// IndexMAC authenticates what a restore reads of a checkpoint's index:
// its ID, its namespace, and each container's manifest (name, digest,
// size), under a key derived from the checkpoint's data key. The manifests
// and their layers are content-addressed, and each layer carries its own
// HMAC: the MAC of the index covers the whole checkpoint.
func IndexMAC(dek []byte, id, namespace string, manifests []ocispec.Descriptor, containerAnnotation string) (string, error) {
	if len(dek) != DEKSize {
		return "", fmt.Errorf("a data key has %d bytes, not %d", DEKSize, len(dek))
	}
	key, err := hkdf.Key(sha256.New, dek, nil, "agents.kruise.io/checkpoint-index/v1", 32)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, key)
	field := func(s string) { m.Write([]byte(strconv.Itoa(len(s)) + ":" + s)) }
	field(id)
	field(namespace)
	entries := make([]string, 0, len(manifests))
	for _, d := range manifests {
		entries = append(entries, d.Annotations[containerAnnotation]+"\x00"+d.Digest.String()+"\x00"+strconv.FormatInt(d.Size, 10))
	}
	// The order of an index's manifests means nothing to a restore.
	slices.Sort(entries)
	field(strconv.Itoa(len(entries)))
	for _, e := range entries {
		field(e)
	}
	return base64.StdEncoding.EncodeToString(m.Sum(nil)), nil
}

// VerifyIndex checks mac (the index's annotation) against IndexMAC.
func VerifyIndex(mac string, dek []byte, id, namespace string, manifests []ocispec.Descriptor, containerAnnotation string) error {
	if strings.TrimSpace(mac) == "" {
		return fmt.Errorf("%w: checkpoint %s's index carries no MAC", ErrIndexNotAuthentic, id)
	}
	want, err := IndexMAC(dek, id, namespace, manifests, containerAnnotation)
	if err != nil {
		return err
	}
	if !hmac.Equal([]byte(mac), []byte(want)) {
		return fmt.Errorf("%w: checkpoint %s's index in namespace %s was not made with its data key: refused", ErrIndexNotAuthentic, id, namespace)
	}
	return nil
}
