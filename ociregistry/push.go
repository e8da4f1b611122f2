package ociregistry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// PushBlob streams body into the repository as one blob and returns its
// descriptor. The digest is computed on the way, so the content is read
// once and never stored on this side: an upload session, one PATCH with
// the whole body, and a PUT that names the digest the registry checks.
func (r *Registry) PushBlob(ctx context.Context, mediaType string, body io.Reader) (ocispec.Descriptor, error) {
	loc, err := r.startUpload(ctx)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	h := sha256.New()
	n := &counter{}
	resp, err := r.send(ctx, http.MethodPatch, loc, io.TeeReader(body, io.MultiWriter(h, n)), "application/octet-stream", "")
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("upload blob: %w", err)
	}
	resp.Body.Close()
	if loc, err = r.location(resp, loc); err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.NewDigest(digest.SHA256, h), Size: n.n}
	return desc, r.finishUpload(ctx, loc, desc.Digest, nil)
}

// PushBytes stores data as one blob (a monolithic upload).
func (r *Registry) PushBytes(ctx context.Context, mediaType string, data []byte) (ocispec.Descriptor, error) {
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	loc, err := r.startUpload(ctx)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return desc, r.finishUpload(ctx, loc, desc.Digest, data)
}

// PushManifest stores a manifest or index under ref (a tag; "": its digest).
func (r *Registry) PushManifest(ctx context.Context, ref, mediaType string, data []byte) (ocispec.Descriptor, error) {
	desc := ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
	if ref == "" {
		ref = desc.Digest.String()
	}
	if err := validRef(ref); err != nil {
		return ocispec.Descriptor{}, err
	}
	resp, err := r.send(ctx, http.MethodPut, r.url("/manifests/"+ref), bytes.NewReader(data), mediaType, "")
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("push manifest %s: %w", ref, err)
	}
	resp.Body.Close()
	if dg := resp.Header.Get("Docker-Content-Digest"); dg != "" && dg != desc.Digest.String() {
		return ocispec.Descriptor{}, fmt.Errorf("%w: manifest %s stored as %s, not %s", ErrUnavailable, ref, dg, desc.Digest)
	}
	return desc, nil
}

func (r *Registry) startUpload(ctx context.Context) (string, error) {
	resp, err := r.send(ctx, http.MethodPost, r.url("/blobs/uploads/"), http.NoBody, "", "")
	if err != nil {
		return "", fmt.Errorf("start a blob upload: %w", err)
	}
	resp.Body.Close()
	return r.location(resp, r.url("/blobs/uploads/"))
}

// finishUpload closes upload loc with its digest (and the last data, if any).
func (r *Registry) finishUpload(ctx context.Context, loc string, d digest.Digest, data []byte) error {
	u, err := url.Parse(loc)
	if err != nil {
		return fmt.Errorf("%w: upload location %q: %v", ErrUnavailable, loc, err)
	}
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()
	resp, err := r.send(ctx, http.MethodPut, u.String(), bytes.NewReader(data), "application/octet-stream", "")
	if err != nil {
		return fmt.Errorf("finish the upload of %s: %w", d, err)
	}
	resp.Body.Close()
	return nil
}

// location is the upload's next address, as the answer's Location says
// (relative to the request's).
func (r *Registry) location(resp *http.Response, from string) (string, error) {
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", fmt.Errorf("%w: %s answered without a Location", ErrUnavailable, from)
	}
	base, err := url.Parse(from)
	if err != nil {
		return "", err
	}
	next, err := base.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("%w: upload location %q: %v", ErrUnavailable, loc, err)
	}
	if next.Host != base.Host || next.Scheme != "https" {
		// The credentials go to the configured registry only.
		return "", fmt.Errorf("%w: the registry sent the upload to %s, not %s", ErrUnavailable, next.Redacted(), base.Host)
	}
	return next.String(), nil
}

type counter struct{ n int64 }

func (c *counter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return len(p), nil
}
