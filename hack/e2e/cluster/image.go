package cluster

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"sort"
	"time"
)

// ImageSpec describes a one-layer OCI image of test programs: the files at
// their paths in the image (host path by image path), the entrypoint and
// the user. It is for the images the tests build themselves (the pause
// container, the harness probe); the producer's own image is built from the
// Dockerfile and given to the suite as a tarball.
type ImageSpec struct {
	// Ref is the full reference containerd stores it under, such as
	// localhost/e2e/pause:test.
	Ref        string
	Files      map[string]string
	Entrypoint []string
	User       string
	// Comment names the image in its history, for whoever inspects it.
	Comment string
}

// WriteImageTar writes spec as an OCI image layout in a tar file at dst, the
// form `ctr images import` reads: oci-layout, index.json (the reference in
// the io.containerd.image.name annotation) and the blobs. The layer is an
// uncompressed tar, so its digest is its diff ID.
func WriteImageTar(dst string, spec ImageSpec) error {
	layer, err := layerTar(spec.Files)
	if err != nil {
		return err
	}
	layerDigest := digest(layer)
	config, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"config":       map[string]any{"Entrypoint": spec.Entrypoint, "User": spec.User},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
		"history":      []map[string]any{{"created": time.Unix(0, 0).UTC().Format(time.RFC3339), "created_by": spec.Comment}},
	})
	if err != nil {
		return err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor("application/vnd.oci.image.config.v1+json", config, nil),
		"layers":        []any{descriptor("application/vnd.oci.image.layer.v1.tar", layer, nil)},
	})
	if err != nil {
		return err
	}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{descriptor("application/vnd.oci.image.manifest.v1+json", manifest, map[string]string{
			"io.containerd.image.name":          spec.Ref,
			"org.opencontainers.image.ref.name": spec.Ref,
		})},
	})
	if err != nil {
		return err
	}
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", index},
	}
	for _, b := range [][]byte{layer, config, manifest} {
		entries = append(entries, struct {
			name string
			data []byte
		}{"blobs/sha256/" + digest(b)[len("sha256:"):], b})
	}
	for _, e := range entries {
		if err := add(e.name, e.data); err != nil {
			return fmt.Errorf("image %s: %w", spec.Ref, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("image %s: %w", spec.Ref, err)
	}
	return os.WriteFile(dst, out.Bytes(), 0o644)
}

// layerTar is a tar of the files (mode 0755, root-owned) and their parent
// folders.
func layerTar(files map[string]string) ([]byte, error) {
	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	dirs := map[string]bool{}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		rel := path.Clean(name)[1:]
		var parents []string // outermost last
		for d := path.Dir(rel); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			parents = append(parents, d)
		}
		for i := len(parents) - 1; i >= 0; i-- {
			if err := tw.WriteHeader(&tar.Header{Name: parents[i] + "/", Mode: 0o755, Typeflag: tar.TypeDir}); err != nil {
				return nil, err
			}
		}
		data, err := os.ReadFile(files[name])
		if err != nil {
			return nil, fmt.Errorf("image file %s: %w", name, err)
		}
		if err := tw.WriteHeader(&tar.Header{Name: rel, Mode: 0o755, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

func descriptor(mediaType string, blob []byte, annotations map[string]string) map[string]any {
	d := map[string]any{"mediaType": mediaType, "digest": digest(blob), "size": len(blob)}
	if annotations != nil {
		d["annotations"] = annotations
	}
	return d
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
