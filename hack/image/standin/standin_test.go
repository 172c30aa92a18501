package standin

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

const caBundle = "/etc/ssl/certs/ca-certificates.crt"

// need skips the test when a host file is missing, or fails it under CI,
// where .ci/run installs it.
func need(t *testing.T, path, pkg string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing (Debian package %s, which .ci/run installs)", path, pkg)
		}
		t.Skipf("%s is missing: install the Debian package %s", path, pkg)
	}
}

// files lists the flattened file system of img by path.
func files(t *testing.T, img v1.Image) map[string]*tar.Header {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	out := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		out[strings.TrimSuffix(h.Name, "/")] = h
	}
}

func digest(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestRuntime(t *testing.T) {
	need(t, caBundle, "ca-certificates")
	img, err := Runtime(caBundle, "arm64")
	if err != nil {
		t.Fatal(err)
	}
	again, err := Runtime(caBundle, "arm64")
	if err != nil {
		t.Fatal(err)
	}
	if a, b := digest(t, img), digest(t, again); a != b {
		t.Errorf("two builds from the same inputs differ: %s and %s", a, b)
	}
	if a, b := digest(t, img), digest(t, must(Runtime(caBundle, "amd64"))); a == b {
		t.Errorf("the arm64 and amd64 images have one digest %s; their configs must name their architecture", a)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.User != "65532" || cf.Architecture != "arm64" || cf.OS != "linux" {
		t.Errorf("config user %q, platform %s/%s; want 65532, linux/arm64", cf.Config.User, cf.OS, cf.Architecture)
	}
	if !cf.Created.Time.Equal(epoch) {
		t.Errorf("created %s, want the fixed %s", cf.Created.Time, epoch)
	}
	if len(cf.History) != 1 || !strings.Contains(cf.History[0].CreatedBy, "stand-in for gcr.io/distroless/static-debian12:nonroot") {
		t.Errorf("history %+v does not name the image a stand-in", cf.History)
	}

	fs := files(t, img)
	for name, want := range map[string]struct {
		uid  int
		mode int64
	}{
		"tmp":                               {Nonroot, 0o1777},
		"home/nonroot":                      {Nonroot, 0o700},
		"etc/passwd":                        {0, 0o644},
		"etc/ssl/certs/ca-certificates.crt": {0, 0o644},
	} {
		h, ok := fs[name]
		if !ok {
			t.Errorf("%s is missing", name)
			continue
		}
		if h.Uid != want.uid || h.Mode&0o7777 != want.mode {
			t.Errorf("%s: uid %d mode %o, want uid %d mode %o", name, h.Uid, h.Mode&0o7777, want.uid, want.mode)
		}
		if !h.ModTime.Equal(epoch) {
			t.Errorf("%s: time %s, want %s", name, h.ModTime, epoch)
		}
	}
	passwd := content(t, img, "etc/passwd")
	if !strings.Contains(passwd, "nonroot:x:65532:65532:nonroot:/home/nonroot:") {
		t.Errorf("/etc/passwd has no nonroot 65532:\n%s", passwd)
	}
}

func TestBuilder(t *testing.T) {
	need(t, "/bin/busybox", "busybox-static")
	need(t, caBundle, "ca-certificates")
	// A toolchain folder of two files: what matters is that it is copied
	// whole, with its modes, and that its VERSION names the image's Go.
	goroot := t.TempDir()
	if err := os.WriteFile(filepath.Join(goroot, "VERSION"), []byte("go1.26.8\ntime 2026-01-01\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(goroot, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(goroot, "bin", "go"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	img, err := Builder(goroot, "/bin/busybox", caBundle)
	if err != nil {
		t.Fatal(err)
	}
	// Host times change when the folder is written again; the image must not.
	now := epoch.AddDate(30, 0, 0)
	if err := os.Chtimes(filepath.Join(goroot, "bin", "go"), now, now); err != nil {
		t.Fatal(err)
	}
	again, err := Builder(goroot, "/bin/busybox", caBundle)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := digest(t, img), digest(t, again); a != b {
		t.Errorf("two builds from the same inputs differ: %s and %s", a, b)
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Join(cf.Config.Env, " ")
	for _, want := range []string{"GOPATH=/go", "GOTOOLCHAIN=local", "GOLANG_VERSION=1.26.8", "PATH=/go/bin:/usr/local/go/bin:"} {
		if !strings.Contains(env, want) {
			t.Errorf("env %q lacks %s", cf.Config.Env, want)
		}
	}
	if len(cf.History) != 1 || !strings.Contains(cf.History[0].CreatedBy, "stand-in for golang:1.26-alpine") {
		t.Errorf("history %+v does not name the image a stand-in", cf.History)
	}

	fs := files(t, img)
	if h := fs["usr/local/go/bin/go"]; h == nil || h.Mode&0o111 == 0 {
		t.Errorf("usr/local/go/bin/go missing or not executable: %+v", h)
	}
	for _, applet := range []string{"sh", "ls", "mkdir"} {
		if h := fs["bin/"+applet]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
			t.Errorf("/bin/%s is not a link to busybox: %+v", applet, h)
		}
	}
	if h := fs["tmp"]; h == nil || h.Mode&0o7777 != 0o1777 {
		t.Errorf("/tmp is not 1777: %+v", h)
	}
}

func content(t *testing.T, img v1.Image, name string) string {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if h.Name == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
	}
}

func must(img v1.Image, err error) v1.Image {
	if err != nil {
		panic(err)
	}
	return img
}
