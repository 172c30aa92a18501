package config

import (
	"fmt"
	"os"

	"go.yaml.in/yaml/v3"
)

// readFile reads the YAML config file at path: a mapping whose keys are the
// long flag names. Each value is kept as written (a string, or a list of
// strings for a sequence or a mapping) and typed later by decode, like a
// flag or an environment variable.
//
// The file is read here rather than by viper's ReadInConfig and
// UnmarshalExact because:
//   - an unknown key must fail naming the key, the file and its line;
//     UnmarshalExact names neither the file nor the line, and viper's keys
//     are case-insensitive, so "Brokers" would pass for "brokers";
//   - a value is kept as its literal text: `client-id: on`, `topic: 0x10`
//     or `topic: 1e3` stay those strings, where a YAML decoder into `any`
//     might make them a boolean or a number;
//   - `sasl-password` is refused with a message saying where to put it,
//     without ever echoing the value.
//
// The result is handed to viper (MergeConfigMap) to take its place in the
// precedence.
func readFile(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	out := map[string]any{}
	if len(doc.Content) == 0 { // an empty file: no keys
		return out, nil
	}
	root := deref(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config file %s line %d: want a mapping of keys to values", path, root.Line)
	}
	byName := map[string]key{}
	for _, k := range keys {
		byName[k.name] = k
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		kn, vn := deref(root.Content[i]), deref(root.Content[i+1])
		at := fmt.Sprintf("config file %s line %d", path, kn.Line)
		if kn.Kind != yaml.ScalarNode {
			return nil, fmt.Errorf("%s: a key must be a name", at)
		}
		name := kn.Value
		if name == passwordKey {
			return nil, fmt.Errorf("%s: key %s is refused: a config file is no place for a secret; "+
				"give the password in env %s or in a file named by sasl-password-file (a mounted Secret)", at, passwordKey, passwordEnv)
		}
		k, ok := byName[name]
		if !ok {
			return nil, fmt.Errorf("%s: unknown key %q (coupon-producer --help lists the keys)", at, name)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%s: key %s is given twice", at, name)
		}
		v, err := fileValue(k.kind, vn)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %v", at, name, err)
		}
		if v != nil {
			out[name] = v
		}
	}
	return out, nil
}

func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// fileValue returns a value node as a string, or as a list of strings for
// a sequence (lists and key=value pairs) or a mapping (key=value pairs).
// A null value (`topic:` or `topic: ~`) is nil: the key is not set.
func fileValue(kd kind, n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return nil, nil
		}
		return n.Value, nil
	case yaml.SequenceNode:
		if kd != kList && kd != kMap {
			return nil, fmt.Errorf("want one value, got a list")
		}
		out := []string{}
		for _, e := range n.Content {
			e = deref(e)
			if e.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: want a list of values", e.Line)
			}
			out = append(out, e.Value)
		}
		return out, nil
	case yaml.MappingNode:
		if kd != kMap {
			return nil, fmt.Errorf("want one value, got a mapping")
		}
		out := []string{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := deref(n.Content[i]), deref(n.Content[i+1])
			if k.Kind != yaml.ScalarNode || v.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: want key: value pairs", k.Line)
			}
			out = append(out, k.Value+"="+v.Value)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unexpected YAML node")
}
