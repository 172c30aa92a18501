package deploytest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"testing"

	"sigs.k8s.io/yaml"
)

// opaqueValues are values that are Kubernetes objects or free-form maps:
// documented as a whole, not key by key.
var opaqueValues = map[string]bool{
	"jobs": true, "pod.resources": true, "pod.securityContext": true,
	"pod.containerSecurityContext": true, "test.resources": true,
}

// valuePaths lists the documented keys of values.yaml: every leaf, with
// opaque values and empty maps as leaves.
func valuePaths(prefix string, v any, out *[]string) {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 || opaqueValues[prefix] {
		*out = append(*out, prefix)
		return
	}
	for k, sub := range m {
		p := k
		if prefix != "" {
			p = prefix + "." + k
		}
		valuePaths(p, sub, out)
	}
}

// TestChartReadmeDocumentsEveryValue: the chart README's tables have a row
// for every key of values.yaml and of a jobs entry, and no row for a key
// that does not exist.
func TestChartReadmeDocumentsEveryValue(t *testing.T) {
	vals := chartValues(t)
	var paths []string
	valuePaths("", vals, &paths)
	sort.Strings(paths)

	readme, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([^`]+)` \\|").FindAllStringSubmatch(string(readme), -1) {
		rows[m[1]] = true
	}
	want := map[string]bool{}
	for _, p := range paths {
		want[p] = true
	}

	// The keys of a jobs entry and the refused-but-named concurrencyPolicy
	// come from the schema.
	schemaRaw, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties map[string]struct {
			Properties           map[string]json.RawMessage `json:"properties"`
			AdditionalProperties json.RawMessage            `json:"additionalProperties"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(schemaRaw, &schema); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	var entry struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	if err := json.Unmarshal(schema.Properties["jobs"].AdditionalProperties, &entry); err != nil {
		t.Fatalf("values.schema.json: jobs entry: %v", err)
	}
	jobKeys := entry.Properties
	if len(jobKeys) == 0 {
		t.Fatal("values.schema.json: no properties for a jobs entry")
	}
	for k := range jobKeys {
		want["jobs.<name>."+k] = true
	}
	for k := range schema.Properties["cronJob"].Properties {
		want["cronJob."+k] = true
	}
	for k := range want {
		if !rows[k] {
			t.Errorf("README.md has no row for `%s`", k)
		}
	}
	for k := range rows {
		if !want[k] {
			t.Errorf("README.md documents `%s`, which is not a value", k)
		}
	}
	if len(paths) < 50 {
		t.Errorf("only %d value paths found: the walk of values.yaml is broken", len(paths))
	}
}

// chartValues reads the chart's values.yaml.
func chartValues(t *testing.T) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var vals map[string]any
	if err := yaml.Unmarshal(raw, &vals); err != nil {
		t.Fatalf("values.yaml: %v", err)
	}
	return vals
}
