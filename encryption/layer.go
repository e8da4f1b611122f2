package encryption

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// The OCI encrypted-layer format (github.com/containers/ocicrypt's spec):
// an encrypted layer's media type ends in +encrypted, its descriptor's
// annotation org.opencontainers.image.enc.pubopts holds the public cipher
// options (base64 JSON: cipher, HMAC), and annotations
// org.opencontainers.image.enc.keys.<scheme> say how to get the private
// ones. Ours is the keyprovider scheme, named for this server: it holds the
// nonce and what the key is derived for, never key material (the data key
// stays in its Checkpoint).
const (
	MediaTypeEncryptedLayer = ocispec.MediaTypeImageLayer + "+encrypted"
	AnnotationPubOpts       = "org.opencontainers.image.enc.pubopts"
	AnnotationKeyProvider   = "org.opencontainers.image.enc.keys.provider.agents.kruise.io"
	cipherAES256CTR         = "AES_256_CTR_HMAC_SHA256"
)

// pubOpts are ocicrypt's public layer block cipher options.
type pubOpts struct {
	Cipher        string            `json:"cipher"`
	HMAC          []byte            `json:"hmac"`
	CipherOptions map[string][]byte `json:"cipheroptions"`
}

// providerOpts are what our key provider annotation holds.
type providerOpts struct {
	CheckpointID string `json:"checkpointId"`
	Container    string `json:"container"`
	Nonce        []byte `json:"nonce"`
	// KeyCheck tells a wrong key at once, before any byte is decrypted.
	KeyCheck []byte `json:"keyCheck"`
}

// keyCheck is a MAC of a fixed text under the layer key.
func keyCheck(key []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("agents.kruise.io/checkpoint-layer/key-check"))
	return m.Sum(nil)
}

// layerKey is the key of one container's layer of a checkpoint: derived
// from the data key, so a layer moved to another container or checkpoint
// fails its HMAC.
func layerKey(dek []byte, id, container string) ([]byte, error) {
	if len(dek) != DEKSize {
		return nil, fmt.Errorf("a data key has %d bytes, not %d", DEKSize, len(dek))
	}
	return hkdf.Key(sha256.New, dek, nil, "agents.kruise.io/checkpoint-layer/v1\x00"+id+"\x00"+container, 32)
}

// Encrypter encrypts one layer as it is read.
type Encrypter struct {
	r      io.Reader
	stream cipher.Stream
	mac    hash.Hash
	nonce  []byte
	id     string
	ctr    string
	check  []byte
	done   bool
}

// EncryptLayer encrypts container's layer of checkpoint id, read from r,
// with a key derived from dek. Read it to its end, then ask Annotations.
func EncryptLayer(r io.Reader, dek []byte, id, container string) (*Encrypter, error) {
	key, err := layerKey(dek, id, container)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, aes.BlockSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return &Encrypter{r: r, stream: cipher.NewCTR(block, nonce), mac: hmac.New(sha256.New, key), nonce: nonce, id: id, ctr: container, check: keyCheck(key)}, nil
}

func (e *Encrypter) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.stream.XORKeyStream(p[:n], p[:n])
	e.mac.Write(p[:n])
	if err == io.EOF {
		e.done = true
	}
	return n, err
}

// Annotations are the encrypted layer descriptor's, once all was read.
func (e *Encrypter) Annotations() (map[string]string, error) {
	if !e.done {
		return nil, errors.New("the layer was not read to its end")
	}
	pub, err := json.Marshal(pubOpts{Cipher: cipherAES256CTR, HMAC: e.mac.Sum(nil), CipherOptions: map[string][]byte{}})
	if err != nil {
		return nil, err
	}
	prov, err := json.Marshal(providerOpts{CheckpointID: e.id, Container: e.ctr, Nonce: e.nonce, KeyCheck: e.check})
	if err != nil {
		return nil, err
	}
	return map[string]string{
		AnnotationPubOpts:     base64.StdEncoding.EncodeToString(pub),
		AnnotationKeyProvider: base64.StdEncoding.EncodeToString(prov),
	}, nil
}

// ErrNotEncrypted: a layer that should be encrypted is not.
var ErrNotEncrypted = errors.New("the checkpoint's layer is not encrypted")

// DecryptLayer decrypts layer desc of container of checkpoint id, read
// from r. Its reader fails at the end unless the HMAC matches: a caller
// uses nothing it read before then.
func DecryptLayer(r io.Reader, desc ocispec.Descriptor, dek []byte, id, container string) (io.Reader, error) {
	if desc.MediaType != MediaTypeEncryptedLayer {
		return nil, fmt.Errorf("%w: its media type is %q", ErrNotEncrypted, desc.MediaType)
	}
	var pub pubOpts
	var prov providerOpts
	if err := decodeAnnotation(desc.Annotations[AnnotationPubOpts], &pub); err != nil {
		return nil, fmt.Errorf("encrypted layer %s: %s: %w", desc.Digest, AnnotationPubOpts, err)
	}
	if err := decodeAnnotation(desc.Annotations[AnnotationKeyProvider], &prov); err != nil {
		return nil, fmt.Errorf("encrypted layer %s: %s: %w", desc.Digest, AnnotationKeyProvider, err)
	}
	if pub.Cipher != cipherAES256CTR || len(pub.HMAC) != sha256.Size || len(prov.Nonce) != aes.BlockSize {
		return nil, fmt.Errorf("encrypted layer %s: cipher %q is not %s with its HMAC and nonce", desc.Digest, pub.Cipher, cipherAES256CTR)
	}
	if prov.CheckpointID != id || prov.Container != container {
		return nil, fmt.Errorf("encrypted layer %s is container %s's of checkpoint %s, not %s's of %s: refused",
			desc.Digest, prov.Container, prov.CheckpointID, container, id)
	}
	key, err := layerKey(dek, id, container)
	if err != nil {
		return nil, err
	}
	if !hmac.Equal(keyCheck(key), prov.KeyCheck) {
		return nil, fmt.Errorf("%w: layer %s of container %s of checkpoint %s was encrypted with another key", ErrWrongKey, desc.Digest, container, id)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return &decrypter{r: r, stream: cipher.NewCTR(block, prov.Nonce), mac: hmac.New(sha256.New, key), want: pub.HMAC, digest: desc.Digest.String()}, nil
}

func decodeAnnotation(s string, v any) error {
	if s == "" {
		return errors.New("missing")
	}
	data, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}

type decrypter struct {
	r      io.Reader
	stream cipher.Stream
	mac    hash.Hash
	want   []byte
	digest string
}

// ErrWrongKey: a layer's HMAC does not match: another key, or altered.
var ErrWrongKey = errors.New("the checkpoint does not decrypt with its data key")

func (d *decrypter) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	d.mac.Write(p[:n])
	d.stream.XORKeyStream(p[:n], p[:n])
	if err == io.EOF && !hmac.Equal(d.mac.Sum(nil), d.want) {
		return n, fmt.Errorf("%w: layer %s fails its HMAC (another key, or the layer was altered)", ErrWrongKey, d.digest)
	}
	return n, err
}
