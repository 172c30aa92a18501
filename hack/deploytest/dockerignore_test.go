package deploytest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// loadDockerignore returns the producer's .dockerignore as the docker CLI
// applies it to the build context.
func loadDockerignore(t *testing.T) *patternmatcher.PatternMatcher {
	t.Helper()
	f, err := os.Open(dockerignore)
	if err != nil {
		t.Fatalf("open .dockerignore: %v", err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatalf("read .dockerignore: %v", err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatalf("compile .dockerignore: %v", err)
	}
	return pm
}

func ignored(t *testing.T, pm *patternmatcher.PatternMatcher, path string) bool {
	t.Helper()
	skip, err := pm.MatchesOrParentMatches(path)
	if err != nil {
		t.Fatalf("match %s: %v", path, err)
	}
	return skip
}

func TestDockerignorePaths(t *testing.T) {
	pm := loadDockerignore(t)
	tests := []struct {
		path   string
		ignore bool
	}{
		// What go build needs.
		{"go.mod", false},
		{"go.sum", false},
		{"cmd/coupon-producer/main.go", false},
		{"pkg/source/source.go", false},
		{"pkg/extract/extract.go", false},
		{"cmd/coupongen/main.go", false},
		// What it does not.
		{".git/HEAD", true},
		{"couponbase1.gz", true},
		{"data/couponbase2.gz", true},
		{"pkg/extract/testdata/tricky.txt", true},
		{"pkg/extract/testdata/fuzz/FuzzExtract/seed", true},
		{"pkg/extract/extract_test.go", true},
		{"coupon-producer", true},
		{"coupongen", true},
		{"coverage.out", true},
		{"cpu.prof", true},
		{"pkg/extract/extract.test", true},
		{"bench-before.txt", true},
		// Other modules and files about the repository, not the binary.
		{"hack/deploytest/go.mod", true},
		{"charts/coupon-producer/Chart.yaml", true},
		{"k8s/kind-cluster.yaml", true},
		{"docs/performance.md", true},
		{".ci/run", true},
		{"docker-compose.pipeline.yaml", true},
		{"Makefile", true},
		// State of the test broker, written while a build reads the context.
		{".kafka-test/data/couponbase1.gz-0/00000000000000000000.log", true},
		{".kafka-local/meta.properties", true},
		{".bench/results.txt", true},
	}
	for _, tt := range tests {
		if got := ignored(t, pm, tt.path); got != tt.ignore {
			t.Errorf("%s: ignored = %v, want %v", tt.path, got, tt.ignore)
		}
	}
}

// TestDockerignoreKeepsSources walks the root module as it is now: every
// file that go build reads must reach the build context. .git is never
// read; hack/ holds modules of their own and the root module's developer
// commands (kafkactl, bench), which the image does not build: dropping it
// is safe as long as no package outside it imports one of its packages,
// which is checked here too.
func TestDockerignoreKeepsSources(t *testing.T) {
	const hackImport = "github.com/couponpipeline/coupon-producer/hack/"
	pm := loadDockerignore(t)
	sent := 0
	err := filepath.WalkDir(producerDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(producerDir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if rel == ".git" || rel == "hack" || rel == "data" || strings.HasPrefix(rel, ".") && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		needed := rel == "go.mod" || rel == "go.sum" ||
			(strings.HasSuffix(rel, ".go") && !strings.HasSuffix(rel, "_test.go") && !strings.Contains(rel, "testdata/"))
		if needed && strings.HasSuffix(rel, ".go") {
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
			if err != nil {
				return err
			}
			for _, imp := range f.Imports {
				if p, _ := strconv.Unquote(imp.Path.Value); strings.HasPrefix(p, hackImport) {
					t.Errorf("%s imports %s, which .dockerignore drops with hack/", rel, p)
				}
			}
		}
		skip := ignored(t, pm, rel)
		if needed && skip {
			t.Errorf("%s is needed by go build but .dockerignore drops it", rel)
		}
		if !skip {
			sent++
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", producerDir, err)
	}
	if sent == 0 {
		t.Errorf("the build context would be empty")
	}
}
