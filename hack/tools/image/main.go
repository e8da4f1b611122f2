// Command image builds the OCI images of checkpoint-apiserver and
// checkpoint-node-agent from their static binaries, with no base image
// (none can be pulled here): one layer holding the binary, the config
// naming its user, entrypoint, version and revision. It writes an OCI
// layout holding both images and, per image, a Docker archive that
// `ctr images import` (hack/local-up.sh load-image) and `skopeo copy
// docker-archive:` read. hack/image.sh drives it (make image).
//
//	image -out DIR -version V -revision R -created T NAME=BINARY:USER ...
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func main() {
	out := flag.String("out", "_output/images", "directory for the OCI layout (oci/) and the archives (<name>.tar)")
	version := flag.String("version", "", "version label and tag")
	revision := flag.String("revision", "", "git revision label")
	repo := flag.String("repository", "", "registry/path prefix of the image names (empty: none)")
	createdFlag := flag.String("created", "", "creation time, RFC 3339 (the commit's, so one commit makes one image; default now)")
	flag.Parse()
	if *version == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: image -out DIR -version V -revision R NAME=BINARY:USER ...")
		os.Exit(2)
	}
	created := time.Now().UTC()
	if *createdFlag != "" {
		t, err := time.Parse(time.RFC3339, *createdFlag)
		if err != nil {
			fmt.Fprintln(os.Stderr, "image: -created:", err)
			os.Exit(2)
		}
		created = t.UTC()
	}
	if err := run(*out, *version, *revision, *repo, created, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(out, version, revision, repo string, created time.Time, specs []string) error {
	dir := filepath.Join(out, "oci")
	_ = os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	for _, spec := range specs {
		imgName, rest, ok := strings.Cut(spec, "=")
		bin, user, ok2 := strings.Cut(rest, ":")
		if !ok || !ok2 {
			return fmt.Errorf("%q: want NAME=BINARY:USER", spec)
		}
		img, err := build(bin, user, version, revision, created)
		if err != nil {
			return fmt.Errorf("%s: %w", imgName, err)
		}
		full := imgName
		if repo != "" {
			full = strings.TrimSuffix(repo, "/") + "/" + imgName
		}
		ref, err := name.NewTag(full+":"+tagOf(version), name.WithDefaultRegistry(""))
		if err != nil {
			return err
		}
		if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
			"org.opencontainers.image.ref.name": ref.String(),
		})); err != nil {
			return err
		}
		archive := filepath.Join(out, imgName+".tar")
		if err := tarball.WriteToFile(archive, ref, img); err != nil {
			return err
		}
		d, _ := img.Digest()
		fmt.Printf("%s %s %s\n", ref.String(), d, archive)
	}
	return nil
}

// tagOf makes a version a valid tag (no "+").
func tagOf(v string) string { return strings.NewReplacer("+", "-").Replace(v) }

func build(bin, user, version, revision string, created time.Time) (v1.Image, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	base := filepath.Base(bin)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"tmp/", "usr/", "usr/local/", "usr/local/bin/"} {
		mode := int64(0o755)
		if d == "tmp/" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: mode, ModTime: created}); err != nil {
			return nil, err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Name: "usr/local/bin/" + base, Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data)), ModTime: created}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerBytes := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerBytes)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{Layer: layer, MediaType: types.OCILayer})
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Architecture, cfg.OS, cfg.Created = "amd64", "linux", v1.Time{Time: created}
	labels := map[string]string{
		"org.opencontainers.image.title":    base,
		"org.opencontainers.image.version":  version,
		"org.opencontainers.image.revision": revision,
		"org.opencontainers.image.source":   "https://github.com/agents-kruise/checkpoint-apiserver",
		"org.opencontainers.image.created":  created.Format(time.RFC3339),
	}
	cfg.Config = v1.Config{
		Entrypoint: []string{"/usr/local/bin/" + base},
		User:       user,
		WorkingDir: "/",
		Env:        []string{"PATH=/usr/local/bin"},
		Labels:     labels,
	}
	return mutate.ConfigFile(img, cfg)
}
