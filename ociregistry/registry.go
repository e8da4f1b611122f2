// Package ociregistry is the checkpoint registry: an OCI distribution
// registry (TLS verified, basic credentials) holding each checkpoint as an
// OCI index tagged with its ID, with one CRI checkpoint image per
// container, in the repository of its namespace (<registry>/<prefix>/<namespace>).
// Node agents push there and fetch from there by digest; the server reads
// an index to make a clone and deletes it with its Checkpoint.
package ociregistry

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	dockerconfig "github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	certutil "k8s.io/client-go/util/cert"

	"github.com/agents-kruise/checkpoint-apiserver/driver"
)

// Annotations of a checkpoint's index.
const (
	// AnnotationCheckpointID is the checkpoint's ID (also its tag).
	AnnotationCheckpointID = "agents.kruise.io/checkpoint-id"
	// AnnotationNamespace is the namespace of the captured sandbox (and of
	// its Checkpoint): only that namespace's Pods restore it.
	AnnotationNamespace = "agents.kruise.io/checkpoint-namespace"
	// AnnotationInstallation names the installation of this server that
	// pushed it: a sweep deletes its own installation's checkpoints only.
	AnnotationInstallation = "agents.kruise.io/installation"
	// AnnotationCreated is when it was pushed (RFC 3339): a sweep leaves
	// young ones alone.
	AnnotationCreated = "org.opencontainers.image.created"
	// AnnotationTemplate is the captured sandbox's template (for a Pod, its
	// spec as a restore remakes it), JSON.
	AnnotationTemplate = "agents.kruise.io/template"
	// AnnotationContainerName names a manifest's container (as the CRI
	// reads it from a checkpoint image).
	AnnotationContainerName = "org.criu.checkpoint.container.name"
	// AnnotationMAC authenticates an encrypted checkpoint's index: an HMAC,
	// under a key derived from the checkpoint's data key, of its ID,
	// namespace and manifests (encryption.IndexMAC). Only who holds that
	// key (the server, and the agents it gave it to) makes one.
	AnnotationMAC = "agents.kruise.io/index-mac"
)

// ErrNotFound: the registry has no such manifest.
var ErrNotFound = errors.New("not in the checkpoint registry")

// Config says where checkpoints go.
type Config struct {
	// Repository is host[:port]/prefix, for example registry.example:5443/checkpoints:
	// each namespace's checkpoints go to the repository prefix/<namespace>.
	Repository string
	// CAFile holds the CA certificates that sign the registry's serving
	// certificate (empty: the system's roots).
	CAFile string
	// AuthFile is a Docker config.json (what a kubernetes.io/dockerconfigjson
	// Secret holds) with the registry's credentials (empty: anonymous).
	AuthFile string
}

// Registry is a configured checkpoint registry: its prefix, or (In) one
// namespace's repository under it.
type Registry struct {
	host, path string
	// prefix is the configured path; path is prefix/<namespace> once In
	// chose a namespace.
	prefix     string
	tls        *tls.Config
	user, pass string
	client     *http.Client
	uploads    *http.Client
}

// New reads the configuration's CA and credentials.
func New(cfg Config) (*Registry, error) {
	host, path, ok := strings.Cut(cfg.Repository, "/")
	if !ok || host == "" || path == "" || strings.Contains(cfg.Repository, "://") {
		return nil, fmt.Errorf("checkpoint registry %q: want host[:port]/repository", cfg.Repository)
	}
	if path != strings.ToLower(path) || strings.ContainsAny(path, ":@") {
		return nil, fmt.Errorf("checkpoint registry %q: the repository must be lower case, without a tag or digest", cfg.Repository)
	}
	registerMetrics()
	r := &Registry{host: host, path: path, prefix: path, tls: &tls.Config{MinVersion: tls.VersionTLS12}}
	if cfg.CAFile != "" {
		pool, err := certutil.NewPool(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("checkpoint registry CA: %w", err)
		}
		r.tls.RootCAs = pool
	}
	if cfg.AuthFile != "" {
		user, pass, err := readAuth(cfg.AuthFile, host)
		if err != nil {
			return nil, err
		}
		r.user, r.pass = user, pass
	}
	r.client = &http.Client{
		Transport: &http.Transport{TLSClientConfig: r.tls, Proxy: nil, MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute},
		Timeout:   2 * time.Minute,
	}
	r.uploads = &http.Client{Transport: r.client.Transport}
	return r, nil
}

// readAuth finds host's credentials in a Docker config.json.
func readAuth(file, host string) (string, string, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return "", "", fmt.Errorf("checkpoint registry credentials: %w", err)
	}
	var cfg struct {
		Auths map[string]struct {
			Auth     string `json:"auth"`
			Username string `json:"username"`
			Password string `json:"password"`
		} `json:"auths"`
	}
	if err := json.Unmarshal(data, &cfg); err != nil {
		return "", "", fmt.Errorf("checkpoint registry credentials %s: %w", file, err)
	}
	for key, a := range cfg.Auths {
		k := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://"), "/")
		if k != host {
			continue
		}
		if a.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(a.Auth)
			if err != nil {
				return "", "", fmt.Errorf("checkpoint registry credentials %s: auth of %s: %w", file, key, err)
			}
			user, pass, ok := strings.Cut(string(raw), ":")
			if !ok {
				return "", "", fmt.Errorf("checkpoint registry credentials %s: auth of %s is not user:password", file, key)
			}
			return user, pass, nil
		}
		return a.Username, a.Password, nil
	}
	return "", "", fmt.Errorf("checkpoint registry credentials %s: nothing for %s", file, host)
}

// Repository is host/path.
func (r *Registry) Repository() string { return r.host + "/" + r.path }

// In is namespace's repository, prefix/<namespace>. A namespace is a DNS
// label; anything else (a path, a glob) is refused.
func (r *Registry) In(namespace string) (*Registry, error) {
	if !namespacePattern.MatchString(namespace) {
		return nil, fmt.Errorf("checkpoint registry: namespace %q is not a DNS label", namespace)
	}
	in := *r
	in.path = r.prefix + "/" + namespace
	return &in, nil
}

var namespacePattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// OwnsImage says whether ref is a manifest of this registry's by digest,
// in one namespace's repository: host/prefix/<namespace>@<digest>.
func (r *Registry) OwnsImage(ref string) bool {
	rest, ok := strings.CutPrefix(ref, r.host+"/"+r.prefix+"/")
	if !ok {
		return false
	}
	ns, d, ok := strings.Cut(rest, "@")
	if !ok || !namespacePattern.MatchString(ns) {
		return false
	}
	_, err := digest.Parse(d)
	return err == nil
}

// Namespaces lists the namespaces that have a repository under the prefix,
// from the registry's catalog.
func (r *Registry) Namespaces(ctx context.Context) ([]string, error) {
	var out []string
	next := "https://" + r.host + "/v2/_catalog?n=1000"
	for next != "" {
		resp, err := r.send(ctx, http.MethodGet, next, nil, "", "application/json")
		if err != nil {
			return out, err
		}
		var page struct {
			Repositories []string `json:"repositories"`
		}
		err = json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&page)
		resp.Body.Close()
		if err != nil {
			return out, fmt.Errorf("%w: catalog of %s: %v", ErrUnavailable, r.host, err)
		}
		for _, repo := range page.Repositories {
			if ns, ok := strings.CutPrefix(repo, r.prefix+"/"); ok && namespacePattern.MatchString(ns) {
				out = append(out, ns)
			}
		}
		next = nextPage(resp, r.host)
	}
	return out, nil
}

// nextPage is the catalog's next page (its Link header), on the same host only.
func nextPage(resp *http.Response, host string) string {
	link := resp.Header.Get("Link")
	start, end := strings.Index(link, "<"), strings.Index(link, ">")
	if start < 0 || end <= start || !strings.Contains(link[end:], `rel="next"`) {
		return ""
	}
	u, err := url.Parse(link[start+1 : end])
	if err != nil || (u.Host != "" && u.Host != host) || !strings.HasPrefix(u.Path, "/v2/_catalog") {
		return ""
	}
	return "https://" + host + u.RequestURI()
}

// Host is the registry's host[:port].
func (r *Registry) Host() string { return r.host }

// TagRef is the reference of checkpoint id's index.
func (r *Registry) TagRef(id string) string { return r.Repository() + ":" + id }

// DigestRef is the reference of a manifest or index by digest.
func (r *Registry) DigestRef(d digest.Digest) string { return r.Repository() + "@" + d.String() }

// Resolver is a containerd resolver for the registry, for pushes and pulls.
func (r *Registry) Resolver() remotes.Resolver {
	return docker.NewResolver(docker.ResolverOptions{
		Hosts: dockerconfig.ConfigureHosts(context.Background(), dockerconfig.HostOptions{
			// HTTPS only, even for a loopback host (containerd would fall back to HTTP).
			DefaultScheme: "https",
			DefaultTLS:    r.tls,
			Credentials: func(host string) (string, string, error) {
				if host == r.host {
					return r.user, r.pass, nil
				}
				return "", "", nil
			},
		}),
	})
}

// Index is a checkpoint's index as the registry holds it.
type Index struct {
	Digest digest.Digest
	ocispec.Index
}

// Template is the index's sandbox template.
func (i *Index) Template() []byte {
	if t := i.Annotations[AnnotationTemplate]; t != "" {
		return []byte(t)
	}
	return nil
}

// Images are the checkpoint's per-container images, by digest: container name to reference.
func (r *Registry) Images(i *Index) map[string]string {
	out := map[string]string{}
	for _, m := range i.Manifests {
		if name := m.Annotations[AnnotationContainerName]; name != "" {
			out[name] = r.DigestRef(m.Digest)
		}
	}
	return out
}

// Index reads checkpoint id's index (by tag), or the index with digest
// ref when ref is a digest.
func (r *Registry) Index(ctx context.Context, ref string) (*Index, error) {
	if err := validRef(ref); err != nil {
		return nil, err
	}
	resp, err := r.do(ctx, http.MethodGet, "/manifests/"+ref, ocispec.MediaTypeImageIndex)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("%w: read index %s: %v", ErrUnavailable, ref, err)
	}
	d := digest.FromBytes(data)
	if dg := resp.Header.Get("Docker-Content-Digest"); dg != "" && dg != d.String() {
		return nil, fmt.Errorf("index %s: the registry says digest %s, its content is %s", ref, dg, d)
	}
	if dg, err := digest.Parse(ref); err == nil && dg != d {
		return nil, fmt.Errorf("index %s: content has digest %s", ref, d)
	}
	out := &Index{Digest: d}
	if err := json.Unmarshal(data, &out.Index); err != nil {
		return nil, fmt.Errorf("index %s: %w", ref, err)
	}
	if out.MediaType != ocispec.MediaTypeImageIndex {
		return nil, fmt.Errorf("%s in the checkpoint registry is a %q, not a checkpoint index", ref, out.MediaType)
	}
	return out, nil
}

// ErrUnavailable: the registry cannot be reached or fails.
var ErrUnavailable = errors.New("checkpoint registry unavailable")

// Delete removes a checkpoint's index and its manifests, as Index read
// them (their blobs go at the registry's next garbage collection). What is
// not there is gone.
func (r *Registry) Delete(ctx context.Context, idx *Index) error {
	// The index first: once it is gone, nothing names the checkpoint.
	for _, d := range append([]digest.Digest{idx.Digest}, manifestDigests(idx)...) {
		resp, err := r.do(ctx, http.MethodDelete, "/manifests/"+d.String(), "")
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		resp.Body.Close()
	}
	return nil
}

func manifestDigests(idx *Index) []digest.Digest {
	var out []digest.Digest
	for _, m := range idx.Manifests {
		out = append(out, m.Digest)
	}
	return out
}

// Tags lists the repository's tags (checkpoint IDs).
func (r *Registry) Tags(ctx context.Context) ([]string, error) {
	resp, err := r.do(ctx, http.MethodGet, "/tags/list", "application/json")
	if errors.Is(err, ErrNotFound) {
		return nil, nil // no repository until the first push
	}
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		Tags []string `json:"tags"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&out); err != nil {
		return nil, fmt.Errorf("%w: tags of %s: %v", ErrUnavailable, r.Repository(), err)
	}
	return out.Tags, nil
}

// do sends one request to /v2/<path><suffix>; a non-2xx answer is an error.
func (r *Registry) do(ctx context.Context, method, suffix, accept string) (*http.Response, error) {
	return r.send(ctx, method, r.url(suffix), nil, "", accept)
}

// url is the address of /v2/<path><suffix>.
func (r *Registry) url(suffix string) string { return "https://" + r.host + "/v2/" + r.path + suffix }

// send sends one request with body (nil: none) of contentType to u; a
// non-2xx answer is an error.
func (r *Registry) send(ctx context.Context, method, u string, body io.Reader, contentType, accept string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	if r.user != "" || r.pass != "" {
		req.SetBasicAuth(r.user, r.pass)
	}
	client := r.client
	if body != nil {
		client = r.uploads // bounded by ctx alone: a blob takes as long as its size
	}
	resp, err := client.Do(req)
	if err != nil {
		requestErrors.WithLabelValues(method, errorKind(0)).Inc()
		where, _, _ := strings.Cut(u, "?")
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the address again, query and all
		}
		return nil, fmt.Errorf("%w: %s %s: %v", ErrUnavailable, method, where, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	requestErrors.WithLabelValues(method, errorKind(resp.StatusCode)).Inc()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	// Without the query: an upload's carries the registry's session state.
	where, _, _ := strings.Cut(u, "?")
	msg := fmt.Sprintf("%s %s: %s: %s", method, where, resp.Status, strings.TrimSpace(string(answer)))
	switch resp.StatusCode {
	case http.StatusNotFound:
		return nil, fmt.Errorf("%w: %s", ErrNotFound, msg)
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, fmt.Errorf("checkpoint registry refused the server's credentials: %s", msg)
	default:
		return nil, fmt.Errorf("%w: %s", ErrUnavailable, msg)
	}
}

// Preparer makes restores from the registry: whichever node a clone lands
// on, its agent fetches the checkpoint by digest.
type Preparer struct {
	Registry *Registry
}

// PrepareRestore reads checkpoint id's index by its digest (never by its
// tag, which anyone who may push can move) from namespace's repository, and
// checks it names id and namespace. (Its MAC is checked where its data key
// is used, by the node that restores it.)
func (p *Preparer) PrepareRestore(ctx context.Context, namespace, id, imageDigest string) (driver.PreparedRestore, error) {
	d, err := digest.Parse(imageDigest)
	if err != nil {
		return driver.PreparedRestore{}, fmt.Errorf("%w: checkpoint %s names no index in the checkpoint registry (status.imageDigest %q)",
			driver.ErrCheckpointNotFound, id, imageDigest)
	}
	reg, err := p.Registry.In(namespace)
	if err != nil {
		return driver.PreparedRestore{}, err
	}
	idx, err := reg.Index(ctx, d.String())
	if errors.Is(err, ErrNotFound) {
		return driver.PreparedRestore{}, fmt.Errorf("%w: %s (index %s) is not in the checkpoint registry %s", driver.ErrCheckpointNotFound, id, d, reg.Repository())
	}
	if err != nil {
		return driver.PreparedRestore{}, fmt.Errorf("%w: %v", driver.ErrUnavailable, err)
	}
	if got := idx.Annotations[AnnotationCheckpointID]; got != id {
		return driver.PreparedRestore{}, fmt.Errorf("the index %s is of checkpoint %q, not %s: refused", d, got, id)
	}
	if got := idx.Annotations[AnnotationNamespace]; got != namespace {
		return driver.PreparedRestore{}, fmt.Errorf("the index %s is of namespace %q, not %s: refused", d, got, namespace)
	}
	return driver.PreparedRestore{Template: idx.Template(), Anywhere: true}, nil
}

var tagPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)

// validRef refuses a manifest reference that is neither a tag nor a
// digest: it becomes part of a registry URL.
func validRef(ref string) error {
	if tagPattern.MatchString(ref) {
		return nil
	}
	if _, err := digest.Parse(ref); err == nil {
		return nil
	}
	return fmt.Errorf("manifest reference %q is neither a tag nor a digest", ref)
}
