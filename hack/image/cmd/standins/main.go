// Command standins writes the stand-in base images of package standin as OCI
// image layouts, one folder each, for BuildKit's --oci-layout named
// contexts: DIR/golang and DIR/distroless. Each layout's index.json names a
// single image index; its digest, which a named context must carry, is
// printed as "golang sha256:..." and "distroless sha256:...".
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/couponpipeline/coupon-producer/hack/image/standin"
)

func main() {
	out := flag.String("out", "", "folder to write the layouts golang/ and distroless/ into (required)")
	goroot := flag.String("goroot", "", "Go toolchain to copy into the builder (required; `go env GOROOT`)")
	busybox := flag.String("busybox", "/bin/busybox", "static busybox binary for the builder")
	ca := flag.String("ca", "/etc/ssl/certs/ca-certificates.crt", "CA bundle for both images")
	flag.Parse()
	if err := run(*out, *goroot, *busybox, *ca); err != nil {
		fmt.Fprintln(os.Stderr, "standins:", err)
		os.Exit(1)
	}
}

// platforms the runtime stand-in serves: the release's two.
var platforms = []string{"amd64", "arm64"}

func run(out, goroot, busybox, ca string) error {
	if out == "" || goroot == "" {
		return fmt.Errorf("-out and -goroot are required")
	}
	builder, err := standin.Builder(goroot, busybox, ca)
	if err != nil {
		return fmt.Errorf("builder: %w", err)
	}
	bcf, err := builder.ConfigFile()
	if err != nil {
		return err
	}
	golang := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: builder, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "linux", Architecture: bcf.Architecture},
		}})

	distroless := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range platforms {
		img, err := standin.Runtime(ca, arch)
		if err != nil {
			return fmt.Errorf("runtime %s: %w", arch, err)
		}
		distroless = mutate.AppendManifests(distroless, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: "linux", Architecture: arch},
		}})
	}

	for _, l := range []struct {
		name string
		ii   v1.ImageIndex
	}{{"golang", golang}, {"distroless", distroless}} {
		dir := filepath.Join(out, l.name)
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
		p, err := layout.Write(dir, empty.Index)
		if err != nil {
			return fmt.Errorf("layout %s: %w", dir, err)
		}
		if err := p.AppendIndex(l.ii); err != nil {
			return fmt.Errorf("layout %s: %w", dir, err)
		}
		d, err := l.ii.Digest()
		if err != nil {
			return err
		}
		fmt.Println(l.name, d)
	}
	return nil
}
