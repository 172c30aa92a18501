// Tests of the image that build.sh builds from the root Dockerfile: the
// tarball names the image as the chart and the node import expect, its
// config is what the Dockerfile says, it runs under runc as the chart runs
// it (uid 65532, read-only root), and a second build from nothing gives the
// same digest. The tarball comes from COUPON_IMAGE_TAR, which hack/test.sh
// sets from build.sh.
package image_test

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

const (
	imageName  = "ghcr.io/couponpipeline/coupon-producer:e2e"
	entrypoint = "/usr/local/bin/coupon-producer"
)

// unavailable skips the test, or fails it with CI=true, where .ci/run
// provides everything these tests need.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// loadImage unpacks the OCI tarball of COUPON_IMAGE_TAR and returns the
// descriptor index.json names it by and the image.
func loadImage(t *testing.T) (v1.Descriptor, v1.Image) {
	t.Helper()
	path := os.Getenv("COUPON_IMAGE_TAR")
	if path == "" {
		unavailable(t, "COUPON_IMAGE_TAR is not set: run hack/image/build.sh (root, busybox-static, runc) and set it to the path it prints last; make test does")
	}
	return loadTar(t, path)
}

// loadTar reads the OCI image tarball at path, which must hold one image.
func loadTar(t *testing.T, path string) (v1.Descriptor, v1.Image) {
	t.Helper()
	dir := t.TempDir()
	if err := untar(path, dir); err != nil {
		t.Fatalf("unpack %s: %v", path, err)
	}
	ii, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := ii.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index.json names %d manifests, want the one image", len(im.Manifests))
	}
	desc := im.Manifests[0]
	img, err := ii.Image(desc.Digest)
	if err != nil {
		t.Fatal(err)
	}
	return desc, img
}

func TestImageName(t *testing.T) {
	desc, _ := loadImage(t)
	// containerd's import names the image by the first annotation; other
	// tools use the OCI one, which holds only the tag.
	if got := desc.Annotations["io.containerd.image.name"]; got != imageName {
		t.Errorf("io.containerd.image.name %q, want %q", got, imageName)
	}
	if got := desc.Annotations["org.opencontainers.image.ref.name"]; got != "e2e" {
		t.Errorf("org.opencontainers.image.ref.name %q, want e2e", got)
	}
	if desc.Platform == nil || desc.Platform.OS != "linux" || desc.Platform.Architecture != runtime.GOARCH {
		t.Errorf("platform %+v, want linux/%s", desc.Platform, runtime.GOARCH)
	}
}

func TestImageConfig(t *testing.T) {
	_, img := loadImage(t)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" {
		t.Errorf("user %q, want 65532:65532 as the Dockerfile's USER says", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{entrypoint}) || len(c.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q, want [%s] and no cmd", c.Entrypoint, c.Cmd, entrypoint)
	}
	for _, e := range c.Env {
		// An image default in the environment would outrank the config file
		// that the chart mounts.
		if strings.HasPrefix(e, "COUPON_") {
			t.Errorf("env %s: the image must set no COUPON_ variable", e)
		}
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.title":  "coupon-producer",
		"org.opencontainers.image.source": "https://github.com/couponpipeline/coupon-producer",
	} {
		if got := c.Labels[k]; got != want {
			t.Errorf("label %s %q, want %q", k, got, want)
		}
	}
	for _, k := range []string{"org.opencontainers.image.version", "org.opencontainers.image.description"} {
		if c.Labels[k] == "" {
			t.Errorf("label %s is empty", k)
		}
	}
	if v := c.Labels["org.opencontainers.image.version"]; v == "dev" {
		t.Errorf("label org.opencontainers.image.version is the Dockerfile's default %q; build.sh passes VERSION", v)
	}
	// The base layers are the stand-ins, and the history says so.
	var standin bool
	for _, h := range cf.History {
		standin = standin || strings.Contains(h.CreatedBy, "stand-in for gcr.io/distroless/static-debian12:nonroot")
	}
	if !standin {
		t.Errorf("history names no stand-in base image: %+v", cf.History)
	}
}

// TestImageTimestamps: with SOURCE_DATE_EPOCH and rewrite-timestamp=true no
// file in the image and no config time is later than the commit time; a
// build time leaking in would make every build a different image.
func TestImageTimestamps(t *testing.T) {
	_, img := loadImage(t)
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	created := cf.Created.Time
	if created.IsZero() || created.After(time.Now()) {
		t.Fatalf("created %s: want the commit time", created)
	}
	for _, h := range cf.History {
		if h.Created.Time.After(created) {
			t.Errorf("history entry %q created %s, after the image's %s", h.CreatedBy, h.Created.Time, created)
		}
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("layer %d: %v", i, err)
			}
			if h.ModTime.After(created) {
				t.Errorf("layer %d: %s has time %s, after the commit time %s", i, h.Name, h.ModTime, created)
			}
		}
		rc.Close()
	}
}

// TestImageRunsUnderRunc runs the image's entrypoint with --version under
// runc as a pod of the chart runs it: the image's user, a read-only root
// file system, no capabilities, no new privileges.
func TestImageRunsUnderRunc(t *testing.T) {
	_, img := loadImage(t)
	if os.Geteuid() != 0 {
		unavailable(t, "runc needs root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		unavailable(t, "runc is not installed (Debian package runc)")
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	uid, gid, err := numericUser(cf.Config.User)
	if err != nil {
		t.Fatal(err)
	}

	bundle := t.TempDir()
	rootfs := filepath.Join(bundle, "rootfs")
	rc := mutate.Extract(img)
	err = unpack(tar.NewReader(rc), rootfs)
	rc.Close()
	if err != nil {
		t.Fatalf("unpack the image: %v", err)
	}

	if out, err := exec.Command("runc", "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v\n%s", err, out)
	}
	id := fmt.Sprintf("cpimg-test-%d", os.Getpid())
	specPath := filepath.Join(bundle, "config.json")
	editJSON(t, specPath, func(spec map[string]any) {
		process := spec["process"].(map[string]any)
		process["terminal"] = false
		process["args"] = append(slices.Clone(cf.Config.Entrypoint), "--version")
		process["env"] = cf.Config.Env
		process["cwd"] = "/"
		process["user"] = map[string]any{"uid": uid, "gid": gid}
		process["noNewPrivileges"] = true
		process["capabilities"] = map[string]any{}
		spec["root"] = map[string]any{"path": "rootfs", "readonly": true}
		spec["hostname"] = id
		spec["linux"].(map[string]any)["cgroupsPath"] = "/" + id
	})

	state := t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("runc", "--root", state, "run", "--bundle", bundle, id)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	// A run that failed half way leaves the container behind.
	exec.Command("runc", "--root", state, "delete", "--force", id).Run()
	if err != nil {
		t.Fatalf("runc run: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	want := "coupon-producer " + cf.Config.Labels["org.opencontainers.image.version"] + "\n"
	t.Logf("runc run %s --version: %q", entrypoint, stdout.String())
	if stdout.String() != want {
		t.Errorf("--version printed %q, want %q (the image's version label)", stdout.String(), want)
	}
}

// TestImageImportsIntoContainerd imports the tarball into a containerd of
// its own (the node's containerd does the same) and requires the image name
// the chart's pods use.
func TestImageImportsIntoContainerd(t *testing.T) {
	loadImage(t)
	if os.Geteuid() != 0 {
		unavailable(t, "containerd needs root")
	}
	for _, tool := range []string{"containerd", "ctr"} {
		if _, err := exec.LookPath(tool); err != nil {
			unavailable(t, "%s is not installed (Debian package containerd)", tool)
		}
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "containerd.sock")
	config := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc")
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	daemon := exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	daemon.Stdout, daemon.Stderr = &logs, &logs
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		daemon.Process.Signal(os.Interrupt)
		daemon.Wait()
	})
	ctr := func(args ...string) (string, error) {
		out, err := exec.Command("ctr", append([]string{"--address", sock, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
		return string(out), err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := ctr("version"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer in 30s:\n%s", logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, err := ctr("images", "import", os.Getenv("COUPON_IMAGE_TAR")); err != nil {
		t.Fatalf("ctr images import: %v\n%s", err, out)
	}
	out, err := ctr("images", "ls", "--quiet")
	if err != nil {
		t.Fatalf("ctr images ls: %v\n%s", err, out)
	}
	if names := strings.Fields(out); !slices.Equal(names, []string{imageName}) {
		t.Errorf("containerd holds %q after the import, want [%s]", names, imageName)
	}
}

// TestImageReproducible builds the image a second time, with a fresh
// BuildKit state and no cache, and requires the same manifest digest.
func TestImageReproducible(t *testing.T) {
	loadImage(t)
	if testing.Short() {
		t.Skip("-short: the second build takes minutes")
	}
	if os.Geteuid() != 0 {
		unavailable(t, "build.sh runs buildkitd, which needs root")
	}
	cmd := exec.Command("./build.sh", "--check-reproducible")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("build.sh --check-reproducible: %v\n%s", err, tail(out.String(), 40))
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, "image: manifest ") {
			t.Log(line)
		}
	}
}

// TestImageCrossBuild builds the image for linux/arm64 on this machine: the
// Dockerfile cross-compiles, so no emulator is needed, and the binary in
// the image is a static aarch64 executable.
func TestImageCrossBuild(t *testing.T) {
	loadImage(t)
	if testing.Short() {
		t.Skip("-short: the build takes minutes")
	}
	if os.Geteuid() != 0 {
		unavailable(t, "build.sh runs buildkitd, which needs root")
	}
	tarball := filepath.Join(t.TempDir(), "arm64.tar")
	cmd := exec.Command("./build.sh", "--platform", "linux/arm64", "--out", tarball)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("build.sh --platform linux/arm64: %v\n%s", err, tail(out.String(), 40))
	}
	desc, img := loadTar(t, tarball)
	if desc.Platform == nil || desc.Platform.Architecture != "arm64" {
		t.Errorf("index.json platform %+v, want linux/arm64", desc.Platform)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Architecture != "arm64" || cf.OS != "linux" {
		t.Errorf("config platform %s/%s, want linux/arm64", cf.OS, cf.Architecture)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no %s in the image: %v", entrypoint, err)
		}
		if "/"+strings.TrimPrefix(h.Name, "/") != entrypoint {
			continue
		}
		bin, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		f, err := elf.NewFile(bytes.NewReader(bin))
		if err != nil {
			t.Fatalf("%s is not an ELF file: %v", entrypoint, err)
		}
		if f.Machine != elf.EM_AARCH64 {
			t.Errorf("%s is built for %s, want %s", entrypoint, f.Machine, elf.EM_AARCH64)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("%s names a program interpreter; distroless/static has no libc", entrypoint)
			}
		}
		return
	}
}

func numericUser(user string) (int, int, error) {
	u, g, ok := strings.Cut(user, ":")
	uid, err1 := strconv.Atoi(u)
	gid, err2 := strconv.Atoi(g)
	if !ok || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("image user %q is not numeric uid:gid", user)
	}
	return uid, gid, nil
}

func editJSON(t *testing.T, path string, edit func(map[string]any)) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	edit(v)
	raw, err = json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
}

func untar(path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return unpack(tar.NewReader(f), dir)
}

// unpack writes a tar stream under dir with the owners and modes it names
// (the tests run as root). Names that leave dir are refused.
func unpack(tr *tar.Reader, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		name := filepath.Clean(h.Name)
		if !filepath.IsLocal(name) {
			if name == "." {
				continue
			}
			return fmt.Errorf("tar entry %q leaves the folder", h.Name)
		}
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		mode := os.FileMode(h.Mode & 0o777)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, mode); err != nil {
				return err
			}
		case tar.TypeReg:
			f, err := os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, mode)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			if err := os.Symlink(h.Linkname, p); err != nil {
				return err
			}
		case tar.TypeLink:
			target := filepath.Clean(h.Linkname)
			if !filepath.IsLocal(target) {
				return fmt.Errorf("hard link %q to %q leaves the folder", h.Name, h.Linkname)
			}
			if err := os.Link(filepath.Join(dir, target), p); err != nil {
				return err
			}
		default:
			return fmt.Errorf("tar entry %q: unsupported type %c", h.Name, h.Typeflag)
		}
		if h.Typeflag == tar.TypeSymlink {
			if err := os.Lchown(p, h.Uid, h.Gid); err != nil && os.Geteuid() == 0 {
				return err
			}
			continue
		}
		if os.Geteuid() == 0 {
			if err := os.Lchown(p, h.Uid, h.Gid); err != nil {
				return err
			}
		}
		// After chown, which clears the setuid, setgid and sticky bits.
		if err := os.Chmod(p, fileMode(h.Mode)); err != nil {
			return err
		}
	}
}

func fileMode(m int64) os.FileMode {
	mode := os.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	return mode
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
