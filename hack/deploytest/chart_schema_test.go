package deploytest

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// schemaNode is the part of a JSON schema these tests read.
type schemaNode struct {
	Type                 any                    `json:"type"`
	Enum                 []any                  `json:"enum"`
	Description          *string                `json:"description"`
	Default              json.RawMessage        `json:"default"`
	Properties           map[string]*schemaNode `json:"properties"`
	AdditionalProperties json.RawMessage        `json:"additionalProperties"`
	Items                *schemaNode            `json:"items"`
	Required             []string               `json:"required"`
}

func loadSchema(t *testing.T) *schemaNode {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s schemaNode
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	return &s
}

// typeName is the README's spelling of a schema node's type.
func (n *schemaNode) typeName() string {
	switch t := n.Type.(type) {
	case string:
		return t
	case []any:
		var parts []string
		for _, p := range t {
			parts = append(parts, p.(string))
		}
		return strings.Join(parts, " or ")
	}
	if len(n.Enum) > 0 {
		if _, ok := n.Enum[0].(string); ok {
			return "string"
		}
	}
	return ""
}

// TestChartSchemaDescribesEveryValue: every property of values.schema.json,
// down to the keys of a jobs entry and of resources and extraEnv items, has
// a description and a default (a required key has no default), and the
// default of a key of values.yaml is its value there, so that tools which
// read the schema (editors, Artifact Hub) show what the chart does.
func TestChartSchemaDescribesEveryValue(t *testing.T) {
	vals := chartValues(t)
	var walk func(path string, n *schemaNode, value any, inValues bool)
	count := 0
	walk = func(path string, n *schemaNode, value any, inValues bool) {
		for _, sub := range [](*schemaNode){n.Items, additional(t, path, n)} {
			if sub != nil {
				walk(path+"[]", sub, nil, false)
			}
		}
		m, _ := value.(map[string]any)
		for key, p := range n.Properties {
			count++
			kp := strings.TrimPrefix(path+"."+key, ".")
			if p.Description == nil || strings.TrimSpace(*p.Description) == "" {
				t.Errorf("values.schema.json: %s has no description", kp)
			}
			v, has := m[key]
			switch {
			case slices.Contains(n.Required, key) && !inValues:
			case len(p.Default) == 0:
				t.Errorf("values.schema.json: %s has no default", kp)
			case inValues && has:
				var d any
				if err := json.Unmarshal(p.Default, &d); err != nil {
					t.Fatalf("%s: default: %v", kp, err)
				}
				if !reflect.DeepEqual(d, v) {
					t.Errorf("values.schema.json: %s default %s, values.yaml has %v", kp, p.Default, v)
				}
			}
			walk(kp, p, v, inValues && has)
		}
	}
	walk("", loadSchema(t), vals, true)
	if count < 100 {
		t.Errorf("only %d schema properties walked: the walk is broken", count)
	}
}

// additional is a node's additionalProperties when it is a schema (the
// entries of jobs), nil when it is a boolean.
func additional(t *testing.T, path string, n *schemaNode) *schemaNode {
	t.Helper()
	if len(n.AdditionalProperties) == 0 || n.AdditionalProperties[0] != '{' {
		return nil
	}
	var s schemaNode
	if err := json.Unmarshal(n.AdditionalProperties, &s); err != nil {
		t.Fatalf("%s: additionalProperties: %v", path, err)
	}
	if len(s.Properties) == 0 {
		return nil
	}
	return &s
}

// TestChartReadmeTypes: the Type column of the README's tables is the
// schema's type of the key.
func TestChartReadmeTypes(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(chartDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	schema := loadSchema(t)
	rows := regexp.MustCompile("(?m)^\\| `([^`]+)` \\| ([^|]+) \\|").FindAllStringSubmatch(string(readme), -1)
	if len(rows) < 80 {
		t.Fatalf("only %d README rows with a type", len(rows))
	}
	for _, row := range rows {
		key, typ := row[1], strings.TrimSpace(row[2])
		n := schema
		for _, part := range strings.Split(key, ".") {
			if part == "<name>" {
				n = additional(t, key, n)
				continue
			}
			if n == nil || n.Properties[part] == nil {
				n = nil
				break
			}
			n = n.Properties[part]
		}
		if n == nil {
			t.Errorf("README row `%s`: no such key in values.schema.json", key)
			continue
		}
		if got := n.typeName(); got != typ {
			t.Errorf("README row `%s`: type %q, the schema says %q", key, typ, got)
		}
	}
}
