package ociregistry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Manifest reads the image manifest with digest d, verified against it.
func (r *Registry) Manifest(ctx context.Context, d digest.Digest) (ocispec.Manifest, error) {
	resp, err := r.do(ctx, http.MethodGet, "/manifests/"+d.String(), ocispec.MediaTypeImageManifest)
	if err != nil {
		return ocispec.Manifest{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return ocispec.Manifest{}, fmt.Errorf("%w: read manifest %s: %v", ErrUnavailable, d, err)
	}
	if got := digest.FromBytes(data); got != d {
		return ocispec.Manifest{}, fmt.Errorf("manifest %s: content has digest %s", d, got)
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return ocispec.Manifest{}, fmt.Errorf("manifest %s: %w", d, err)
	}
	return m, nil
}

// Blob streams blob desc. The reader fails at its end unless what it read
// has desc's size and digest: a caller uses nothing it read before then.
func (r *Registry) Blob(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if err := desc.Digest.Validate(); err != nil {
		return nil, fmt.Errorf("blob digest %q: %w", desc.Digest, err)
	}
	resp, err := r.do(ctx, http.MethodGet, "/blobs/"+desc.Digest.String(), "")
	if err != nil {
		return nil, err
	}
	return &verifiedBlob{body: resp.Body, want: desc, verifier: desc.Digest.Verifier()}, nil
}

type verifiedBlob struct {
	body     io.ReadCloser
	want     ocispec.Descriptor
	verifier digest.Verifier
	n        int64
}

func (b *verifiedBlob) Read(p []byte) (int, error) {
	n, err := b.body.Read(p)
	b.n += int64(n)
	_, _ = b.verifier.Write(p[:n])
	if b.n > b.want.Size {
		return n, fmt.Errorf("blob %s: more than its %d bytes", b.want.Digest, b.want.Size)
	}
	if err == io.EOF {
		if b.n != b.want.Size || !b.verifier.Verified() {
			return n, fmt.Errorf("blob %s: got %d bytes that do not match its digest and size %d", b.want.Digest, b.n, b.want.Size)
		}
	} else if err != nil {
		err = fmt.Errorf("%w: read blob %s: %v", ErrUnavailable, b.want.Digest, err)
	}
	return n, err
}

func (b *verifiedBlob) Close() error { return b.body.Close() }
