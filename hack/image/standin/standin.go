// Package standin makes local stand-ins for the two base images the
// producer's Dockerfile names, golang:1.26-alpine and
// gcr.io/distroless/static-debian12:nonroot, for machines that reach no
// registry. Each stand-in holds what the Dockerfile's stage needs from its
// base and nothing else, says in its history that it is a stand-in, and is
// built with every timestamp fixed, so that the same inputs give the same
// digest and the image built on top of it can be reproduced bit for bit.
package standin

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"runtime"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// epoch is the time of every file and of every config, as in the distroless
// images, which are built by Bazel with the same fixed time.
var epoch = time.Unix(0, 0).UTC()

// Nonroot is the uid and gid of the distroless nonroot user.
const Nonroot = 65532

// Builder returns the stand-in for golang:1.26-alpine: a static busybox
// (the shell and tools a RUN line needs) with a link for each of its applets
// in /bin, the Go toolchain at goroot copied to /usr/local/go, the CA bundle
// for `go mod download`, and the golang image's environment (GOPATH=/go,
// PATH, GOTOOLCHAIN=local so that the toolchain never downloads another).
func Builder(goroot, busybox, caBundle string) (v1.Image, error) {
	t := tree{}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return nil, err
	}
	t.file("bin/busybox", 0o755, bb)
	applets, err := busyboxApplets(busybox)
	if err != nil {
		return nil, err
	}
	for _, a := range applets {
		if a != "busybox" {
			t.symlink("bin/"+a, "busybox")
		}
	}
	if err := t.copyHost(goroot, "usr/local/go"); err != nil {
		return nil, fmt.Errorf("copy the Go toolchain: %w", err)
	}
	if err := addCA(t, caBundle); err != nil {
		return nil, err
	}
	t.file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n"))
	t.file("etc/group", 0o644, []byte("root:x:0:root\nnobody:x:65534:\n"))
	t.dir("root", 0o700, 0, 0)
	t.dir("tmp", 0o1777, 0, 0)
	// As in the golang image: GOPATH and its bin and src, writable by all.
	for _, d := range []string{"go", "go/bin", "go/src"} {
		t.dir(d, 0o1777, 0, 0)
	}

	goVersion, err := os.ReadFile(path.Join(goroot, "VERSION"))
	if err != nil {
		return nil, fmt.Errorf("read the Go toolchain's version: %w", err)
	}
	version := strings.TrimPrefix(strings.SplitN(string(goVersion), "\n", 2)[0], "go")
	cfg := v1.Config{
		Env: []string{
			"PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"GOLANG_VERSION=" + version,
			"GOTOOLCHAIN=local",
			"GOPATH=/go",
		},
		WorkingDir: "/go",
		Cmd:        []string{"/bin/sh"},
	}
	// Uncompressed: the builder is only unpacked by BuildKit, never pushed,
	// and compressing the toolchain would cost more than it saves.
	return image(t, types.OCIUncompressedLayer, cfg, runtime.GOARCH,
		"stand-in for golang:1.26-alpine: static busybox from Debian's busybox-static and the host's Go "+version+" toolchain")
}

// Runtime returns the stand-in for gcr.io/distroless/static-debian12:nonroot
// for the given architecture: /etc/passwd and /etc/group with root, nobody
// and nonroot (65532), the CA bundle, /tmp and /home/nonroot owned by
// nonroot, and the distroless config (user 65532, workdir /home/nonroot).
// It holds no binary, so one layer serves every architecture.
func Runtime(caBundle, arch string) (v1.Image, error) {
	t := tree{}
	if err := addCA(t, caBundle); err != nil {
		return nil, err
	}
	t.file("etc/passwd", 0o644, []byte(
		"root:x:0:0:root:/root:/sbin/nologin\n"+
			"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"+
			"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"))
	t.file("etc/group", 0o644, []byte("root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n"))
	t.dir("home", 0o755, 0, 0)
	t.dir("home/nonroot", 0o700, Nonroot, Nonroot)
	t.dir("root", 0o700, 0, 0)
	t.dir("tmp", 0o1777, Nonroot, Nonroot)
	cfg := v1.Config{
		Env: []string{
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
		},
		User:       fmt.Sprint(Nonroot),
		WorkingDir: "/home/nonroot",
	}
	return image(t, types.OCILayer, cfg, arch,
		"stand-in for gcr.io/distroless/static-debian12:nonroot: passwd and group with nonroot 65532, the host's CA bundle, /tmp and /home/nonroot")
}

func addCA(t tree, caBundle string) error {
	ca, err := os.ReadFile(caBundle)
	if err != nil {
		return fmt.Errorf("read the CA bundle: %w", err)
	}
	t.file("etc/ssl/certs/ca-certificates.crt", 0o644, ca)
	return nil
}

// image packs t as the single layer of an OCI image with config cfg and a
// history entry that names the image for what it is.
func image(t tree, mt types.MediaType, cfg v1.Config, arch, history string) (v1.Image, error) {
	raw, err := t.bytes()
	if err != nil {
		return nil, err
	}
	var layer v1.Layer
	if mt == types.OCIUncompressedLayer {
		layer = static.NewLayer(raw, mt)
	} else {
		layer, err = tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(raw)), nil
		}, tarball.WithMediaType(mt), tarball.WithCompressedCaching)
		if err != nil {
			return nil, err
		}
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: epoch},
			CreatedBy: history,
			Comment:   "made by hack/image of github.com/couponpipeline/coupon-producer; not the upstream image",
		},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Config = cfg
	cf.Created = v1.Time{Time: epoch}
	cf.OS = "linux"
	cf.Architecture = arch
	return mutate.ConfigFile(img, cf)
}

// busyboxApplets lists the applets the busybox binary was built with.
func busyboxApplets(busybox string) ([]string, error) {
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", busybox, err)
	}
	return strings.Fields(string(out)), nil
}
