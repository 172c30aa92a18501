package deploytest

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/client/llb"
	"github.com/moby/buildkit/client/llb/sourceresolver"
	"github.com/moby/buildkit/frontend/dockerfile/dockerfile2llb"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	digest "github.com/opencontainers/go-digest"
)

const binaryPath = "/usr/local/bin/coupon-producer"

// dockerfile is the producer's Dockerfile as BuildKit reads it.
type dockerfile struct {
	raw      []byte
	stages   []instructions.Stage
	metaArgs []instructions.ArgCommand // ARGs before the first FROM
}

func loadDockerfile(t *testing.T) dockerfile {
	t.Helper()
	raw, err := os.ReadFile(dockerfilePath)
	if err != nil {
		t.Fatalf("read Dockerfile: %v", err)
	}
	res, err := parser.Parse(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parse Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile parser warning: %s", w.Short)
	}
	var lintWarnings []string
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		lintWarnings = append(lintWarnings, rule+": "+msg)
	}})
	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		t.Fatalf("Dockerfile instructions: %v", err)
	}
	for _, w := range lintWarnings {
		t.Errorf("Dockerfile lint: %s", w)
	}
	// RUN --mount flags are parsed on expansion; expand with the identity so
	// that GetMounts sees them.
	for _, st := range stages {
		for _, c := range st.Commands {
			if run, ok := c.(*instructions.RunCommand); ok {
				if err := run.Expand(func(w string) (string, error) { return w, nil }); err != nil {
					t.Fatalf("line %d: RUN flags: %v", run.Location()[0].Start.Line, err)
				}
			}
		}
	}
	return dockerfile{raw: raw, stages: stages, metaArgs: metaArgs}
}

func (d dockerfile) final() instructions.Stage { return d.stages[len(d.stages)-1] }

// stage returns the stage that an instruction's --from names.
func (d dockerfile) stage(name string) (instructions.Stage, bool) {
	for _, st := range d.stages {
		if strings.EqualFold(st.Name, name) {
			return st, true
		}
	}
	return instructions.Stage{}, false
}

func commands[T instructions.Command](st instructions.Stage) []T {
	var out []T
	for _, c := range st.Commands {
		if v, ok := c.(T); ok {
			out = append(out, v)
		}
	}
	return out
}

// binaryCopy is the final stage's COPY --from=<stage> that installs the binary.
func (d dockerfile) binaryCopy(t *testing.T) *instructions.CopyCommand {
	t.Helper()
	for _, c := range commands[*instructions.CopyCommand](d.final()) {
		if c.From != "" && strings.TrimSuffix(c.DestPath, "/") == binaryPath {
			return c
		}
	}
	t.Fatalf("final stage has no COPY --from=<build stage> ... %s", binaryPath)
	return nil
}

func TestDockerfileSyntaxDirective(t *testing.T) {
	d := loadDockerfile(t)
	if first, _, _ := bytes.Cut(d.raw, []byte("\n")); string(first) != "# syntax=docker/dockerfile:1" {
		t.Errorf("first line = %q, want # syntax=docker/dockerfile:1", first)
	}
	if syntax, _, _, ok := parser.DetectSyntax(d.raw); !ok || syntax != "docker/dockerfile:1" {
		t.Errorf("syntax directive = %q (found %v), want docker/dockerfile:1", syntax, ok)
	}
}

// fakeImages answers BuildKit's base image look-ups without a registry: a
// minimal linux/amd64 config with one layer, so that no stage counts as scratch.
type fakeImages struct{}

func (fakeImages) ResolveImageConfig(_ context.Context, ref string, _ sourceresolver.Opt) (string, digest.Digest, []byte, error) {
	cfg, err := json.Marshal(map[string]any{
		"os":           "linux",
		"architecture": "amd64",
		"config":       map[string]any{"Env": []string{"PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{string(digest.FromString(ref))}},
	})
	return ref, "", cfg, err
}

// TestDockerfileBuildCheck runs the checks of `docker build --check`: every
// stage is converted to LLB and every lint rule runs, base images included.
func TestDockerfileBuildCheck(t *testing.T) {
	d := loadDockerfile(t)
	sm := llb.NewSourceMap(nil, "Dockerfile", "Dockerfile", d.raw)
	sm.Definition = &llb.Definition{} // the lint report's source entry wants one
	res, err := dockerfile2llb.DockerfileLint(context.Background(), d.raw, dockerfile2llb.ConvertOpt{
		MetaResolver: fakeImages{},
		SourceMap:    sm,
	})
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	if res.Error != nil {
		t.Errorf("build check error: %s", res.Error.Message)
	}
	for _, w := range res.Warnings {
		line := 0
		if w.Location != nil && len(w.Location.Ranges) > 0 {
			line = int(w.Location.Ranges[0].Start.Line)
		}
		t.Errorf("build check, line %d: %s: %s", line, w.RuleName, w.Detail)
	}
}

func TestDockerfileStages(t *testing.T) {
	d := loadDockerfile(t)
	if len(d.stages) < 2 {
		t.Fatalf("%d stage(s), want a build stage and a runtime stage", len(d.stages))
	}

	build, ok := d.stage(d.binaryCopy(t).From)
	if !ok {
		t.Fatalf("COPY --from=%s names no stage", d.binaryCopy(t).From)
	}
	if !regexp.MustCompile(`^golang:1\.26([.-]|$)`).MatchString(build.BaseName) {
		t.Errorf("build stage FROM %s, want the official golang:1.26 image", build.BaseName)
	}

	final := d.final()
	distroless := regexp.MustCompile(`^gcr\.io/distroless/static(-debian\d+)?:(.+-)?nonroot(@sha256:[0-9a-f]{64})?$`)
	if final.BaseName != "scratch" && !distroless.MatchString(final.BaseName) {
		t.Errorf("final stage FROM %s, want gcr.io/distroless/static*:nonroot or scratch", final.BaseName)
	}

	// A base image without a tag or digest is whatever :latest is that day.
	for _, st := range d.stages {
		if st.BaseName == "scratch" {
			continue
		}
		if _, isStage := d.stage(st.BaseName); isStage {
			continue
		}
		name := st.BaseName[strings.LastIndex(st.BaseName, "/")+1:]
		if !strings.ContainsAny(name, ":@") || strings.HasSuffix(name, ":latest") {
			t.Errorf("FROM %s has no version tag or digest", st.BaseName)
		}
	}
}

func TestDockerfileBuildStage(t *testing.T) {
	d := loadDockerfile(t)
	build, ok := d.stage(d.binaryCopy(t).From)
	if !ok {
		t.Fatalf("no build stage")
	}

	var goBuild, modDownload *instructions.RunCommand
	copiedAll := -1 // index of the COPY of the whole context
	versionArg := -1
	for i, c := range build.Commands {
		switch c := c.(type) {
		case *instructions.RunCommand:
			line := strings.Join(c.CmdLine, " ")
			if strings.Contains(line, "go build") {
				goBuild = c
				if versionArg < 0 || versionArg > i {
					t.Errorf("go build runs before ARG VERSION is declared in its stage; -X main.version would be empty")
				}
			}
			if strings.Contains(line, "go mod download") {
				modDownload = c
				if copiedAll >= 0 {
					t.Errorf("go mod download runs after COPY of the whole context; every source change re-downloads modules")
				}
			}
		case *instructions.CopyCommand:
			if slices.Contains(c.SourcePaths, ".") && copiedAll < 0 {
				copiedAll = i
			}
		case *instructions.ArgCommand:
			for _, a := range c.Args {
				if a.Key == "VERSION" {
					versionArg = i
				}
			}
		}
	}
	if modDownload == nil {
		t.Errorf("build stage has no RUN go mod download layer")
	}
	if goBuild == nil {
		t.Fatalf("build stage has no RUN go build")
	}

	line := strings.Join(goBuild.CmdLine, " ")
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-o /out/coupon-producer", "-X main.version=${VERSION}"} {
		if !strings.Contains(line, want) {
			t.Errorf("go build %q lacks %q", line, want)
		}
	}
	if strings.Contains(line, "CGO_ENABLED=1") {
		t.Errorf("go build %q enables cgo; the distroless/static image has no libc", line)
	}

	// Cross-compiling: the compiler runs on the build machine's platform and
	// targets TARGETOS/TARGETARCH; without both halves a multi-platform
	// build either emulates the compiler or builds every platform's binary
	// for the build machine.
	if build.Platform != "$BUILDPLATFORM" {
		t.Errorf("build stage FROM --platform=%q, want $BUILDPLATFORM so that the compiler is never emulated", build.Platform)
	}
	targetArgs := map[string]bool{}
	for _, a := range commands[*instructions.ArgCommand](build) {
		for _, kv := range a.Args {
			targetArgs[kv.Key] = true
		}
	}
	for _, want := range []string{"GOOS=$TARGETOS", "GOARCH=$TARGETARCH"} {
		if !strings.Contains(line, want) {
			t.Errorf("go build %q lacks %s; the binary would be built for the build machine", line, want)
		}
		if arg := strings.TrimPrefix(want[strings.Index(want, "=")+1:], "$"); !targetArgs[arg] {
			t.Errorf("build stage does not declare ARG %s; it would expand to empty", arg)
		}
	}

	for _, run := range []*instructions.RunCommand{modDownload, goBuild} {
		if run == nil {
			continue
		}
		var caches []string
		for _, m := range instructions.GetMounts(run) {
			if m.Type == instructions.MountTypeCache {
				caches = append(caches, m.Target)
			}
		}
		for _, want := range []string{"/go/pkg/mod", "/root/.cache/go-build"} {
			if !slices.Contains(caches, want) {
				t.Errorf("RUN %q has cache mounts %v, want %s", strings.Join(run.CmdLine, " "), caches, want)
			}
		}
	}
}

func TestDockerfileFinalStage(t *testing.T) {
	d := loadDockerfile(t)
	final := d.final()

	// distroless/static and scratch have no shell.
	for _, run := range commands[*instructions.RunCommand](final) {
		t.Errorf("final stage has RUN %q; its base image has no shell", strings.Join(run.CmdLine, " "))
	}

	if c := d.binaryCopy(t); !slices.Equal(c.SourcePaths, []string{"/out/coupon-producer"}) {
		t.Errorf("final stage copies %v to %s, want /out/coupon-producer", c.SourcePaths, binaryPath)
	}

	users := commands[*instructions.UserCommand](final)
	if len(users) == 0 {
		t.Errorf("final stage sets no USER; the image must name its non-root user explicitly")
	} else if u := users[len(users)-1].User; !nonRootUser(u) {
		t.Errorf("final stage USER %q, want a numeric non-root uid[:gid] such as 65532:65532", u)
	}

	entrypoints := commands[*instructions.EntrypointCommand](final)
	if len(entrypoints) == 0 {
		t.Fatalf("final stage has no ENTRYPOINT")
	}
	ep := entrypoints[len(entrypoints)-1]
	if ep.PrependShell {
		t.Errorf("ENTRYPOINT %q is shell form; it needs /bin/sh and hides SIGTERM from the producer", ep.CmdLine)
	}
	if len(ep.CmdLine) == 0 || ep.CmdLine[0] != binaryPath {
		t.Errorf("ENTRYPOINT %q, want [%q]", ep.CmdLine, binaryPath)
	}
	for _, cmd := range commands[*instructions.CmdCommand](final) {
		if cmd.PrependShell {
			t.Errorf("CMD %q is shell form; the final image has no shell", cmd.CmdLine)
		}
	}

	envs := map[string]string{}
	for _, e := range commands[*instructions.EnvCommand](final) {
		for _, kv := range e.Env {
			envs[kv.Key] = kv.Value
		}
	}
	// The environment outranks the config file: an ENV default baked into
	// the image (KAFKA_BROKERS, LOG_FORMAT, ...) would silently override the
	// config file that the chart and compose mount.
	for k, v := range envs {
		t.Errorf("final stage ENV %s=%q: an image default in the environment would override the mounted config file", k, v)
	}

	labels := map[string]string{}
	for _, l := range commands[*instructions.LabelCommand](final) {
		for _, kv := range l.Labels {
			labels[kv.Key] = kv.Value
		}
	}
	for _, k := range []string{"source", "version", "title", "description"} {
		if labels["org.opencontainers.image."+k] == "" {
			t.Errorf("final stage has no LABEL org.opencontainers.image.%s", k)
		}
	}
}

var secretName = regexp.MustCompile(`(?i)(PASSWORD|PASSWD|SECRET|TOKEN|KEY|CREDENTIAL)`)

// TestDockerfileNoSecrets: a value in ENV or ARG is stored in the image
// config or its history, readable by anyone who pulls it.
func TestDockerfileNoSecrets(t *testing.T) {
	d := loadDockerfile(t)
	args := slices.Clone(d.metaArgs)
	for _, st := range d.stages {
		for _, a := range commands[*instructions.ArgCommand](st) {
			args = append(args, *a)
		}
		for _, e := range commands[*instructions.EnvCommand](st) {
			for _, kv := range e.Env {
				if secretName.MatchString(kv.Key) && kv.Value != "" {
					t.Errorf("stage %q: ENV %s has a value; pass secrets at run time or with RUN --mount=type=secret", st.Name, kv.Key)
				}
			}
		}
		for _, a := range commands[*instructions.AddCommand](st) {
			for _, src := range a.SourcePaths {
				if strings.Contains(src, "://") || strings.HasPrefix(src, "git@") {
					t.Errorf("stage %q: ADD %s fetches from the network at build time; vendor it or use a pinned base image", st.Name, src)
				}
			}
		}
	}
	for _, a := range args {
		for _, kv := range a.Args {
			if secretName.MatchString(kv.Key) && kv.Value != nil && *kv.Value != "" {
				t.Errorf("ARG %s has a default value; build arguments end up in the image history", kv.Key)
			}
		}
	}
}
