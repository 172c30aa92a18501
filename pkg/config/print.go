package config

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"
	"go.yaml.in/yaml/v3"
)

// Usage writes --help: every key with its flag, environment variable,
// config file key and default, then the command's own flags.
func Usage(w io.Writer) {
	fmt.Fprintf(w, `Usage: coupon-producer [flags] [FILE...]

Publishes every coupon code of a gzip file to the Kafka topic named after
the file's base name. The file is the key file (or a FILE argument); several
FILE arguments, or env %s (comma-separated), are for use by hand.

Each key is read from, highest first: its flag, its environment variable,
the YAML config file (--config FILE or env %s; its keys are
the key names below), its default.

Keys:
`, filesEnv, configEnv)
	for _, k := range keys {
		flag := "--" + k.name
		if p := k.kind.placeholder(); p != "" {
			flag += " " + p
		}
		notes := []string{"env " + strings.Join(k.env, ", then env "), "file key " + k.name}
		if k.def != "" {
			notes = append(notes, "default "+strconv.Quote(k.def))
		}
		fmt.Fprintf(w, "  %s\n      %s\n      (%s)\n", flag, k.usage, strings.Join(notes, ", "))
	}
	fmt.Fprintf(w, `
The SASL password is read only from env %s or from the file named by
sasl-password-file: never from a flag or the config file.

Command flags:
  --config FILE    YAML config file (env %s); a missing file is an error
  --print-config   print the effective configuration as YAML, secrets %s, and exit
  --preflight      check, publishing nothing, that the brokers answer, that each
                   topic can be written or created and that each file is a
                   readable gzip file; exit 0 or with the code of the failure
  --version        print the version and exit
  -h, --help       print this help and exit

Exit codes: 0 every code delivered, 1 Kafka or delivery failure, 2 usage or
configuration error, 3 bad input (missing or corrupt gzip), 128+n stopped by
signal n (130 SIGINT, 143 SIGTERM, after flushing within shutdown-timeout).
`, passwordEnv, configEnv, Redacted)
}

// WriteYAML writes the configuration as a YAML config file, each key with
// a comment saying where its value came from. The SASL password, when set,
// is written as Redacted.
func (c *Config) WriteYAML(w io.Writer) error {
	root := &yaml.Node{Kind: yaml.MappingNode}
	add := func(name string, v *yaml.Node) {
		k := str(name, 0)
		// yaml.v3 writes a line comment after a block mapping's key only,
		// and after a flow sequence's value only.
		if v.Kind == yaml.MappingNode && v.Style != yaml.FlowStyle {
			k.LineComment = "from " + c.from(name)
		} else {
			v.LineComment = "from " + c.from(name)
		}
		root.Content = append(root.Content, k, v)
	}
	for _, k := range keys {
		if k.name == "file" && len(c.Files) > 0 {
			if len(c.Files) == 1 {
				add(k.name, str(c.Files[0], yaml.DoubleQuotedStyle))
			} else {
				add(k.name, strList(c.Files))
			}
			continue
		}
		add(k.name, node(k.field(c)))
	}
	if c.SASLPassword != "" {
		add(passwordKey, str(Redacted, yaml.DoubleQuotedStyle))
	}
	if c.ConfigFile != "" {
		root.HeadComment = "config file: " + c.ConfigFile
	}
	enc := yaml.NewEncoder(w)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return err
	}
	return enc.Close()
}

func str(s string, style yaml.Style) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Style: style}
}

func strList(l []string) *yaml.Node {
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, s := range l {
		n.Content = append(n.Content, str(s, yaml.DoubleQuotedStyle))
	}
	return n
}

// node returns a field's value as YAML. Strings are double-quoted, so that a
// reader that follows YAML 1.1 does not take "on" or "no" for booleans.
func node(field any) *yaml.Node {
	switch v := field.(type) {
	case *string:
		return str(*v, yaml.DoubleQuotedStyle)
	case *int:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(*v)}
	case *bool:
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(*v)}
	case *time.Duration:
		return str(v.String(), yaml.DoubleQuotedStyle)
	case *zapcore.Level:
		return str(v.String(), yaml.DoubleQuotedStyle)
	case *[]string:
		return strList(*v)
	case *map[string]string:
		n := &yaml.Node{Kind: yaml.MappingNode}
		if len(*v) == 0 {
			n.Style = yaml.FlowStyle
		}
		for _, k := range slices.Sorted(maps.Keys(*v)) {
			n.Content = append(n.Content, str(k, 0), str((*v)[k], yaml.DoubleQuotedStyle))
		}
		return n
	}
	panic(fmt.Sprintf("config: no YAML for %T", field)) // a key table mistake, caught by the tests
}
