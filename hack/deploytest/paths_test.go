package deploytest

import (
	"path/filepath"
	"testing"
)

// Paths are relative to this package's directory, where go test runs.
const (
	repoRoot       = "../.."
	composeFile    = "../../docker-compose.pipeline.yaml"
	producerDir    = "../.."
	dockerfilePath = "../../Dockerfile"
	dockerignore   = "../../.dockerignore"
)

// abs resolves a path relative to this package and fails the test if it cannot.
func abs(t *testing.T, path string) string {
	t.Helper()
	p, err := filepath.Abs(path)
	if err != nil {
		t.Fatalf("abs %s: %v", path, err)
	}
	return p
}
