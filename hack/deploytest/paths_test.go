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
	configFile     = "../../hack/compose/coupon-producer.yaml" // the shared example config file
	configTarget   = "/etc/coupon-producer/config.yaml"        // where compose and the chart mount it
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
