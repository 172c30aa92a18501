// Package config reads the producer's configuration from flags, the
// environment and a YAML config file, with one precedence for every key:
// flag > environment > config file > default.
//
// pflag parses the command line and viper layers the four sources; each
// key is bound explicitly (SetDefault, BindEnv with its documented
// variable names, BindPFlag), never through AutomaticEnv. The config file
// is read here, strictly, rather than by viper, and every value is typed
// here, rather than by viper's Unmarshal: see read.go for why.
package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.uber.org/zap/zapcore"
)

// Config is the whole configuration of one invocation.
type Config struct {
	File  string   // the file key
	Files []string // the files to publish: the file key, FILE arguments or COUPON_FILES
	Topic string   // overrides the topic of the single file

	Brokers           []string
	ClientID          string
	Partitions        int
	ReplicationFactor int
	TopicConfigs      map[string]string
	Compression       string
	Linger            time.Duration
	BatchMaxBytes     int
	MaxBufferedBytes  int
	ConnectTimeout    time.Duration
	DeliveryTimeout   time.Duration

	TLS                   bool
	TLSCAFile             string
	TLSCertFile           string
	TLSKeyFile            string
	TLSServerName         string
	TLSInsecureSkipVerify bool
	SASLMechanism         string
	SASLUsername          string
	SASLPasswordFile      string
	// SASLPassword comes from env KAFKA_SASL_PASSWORD or SASLPasswordFile.
	// It is never printed: --print-config shows it as Redacted.
	SASLPassword string

	LedgerTopic        string // empty: no ledger
	CheckpointInterval time.Duration
	CheckpointPercent  int // 0: checkpoints by time only
	Force              bool
	NoResume           bool
	// Who runs, recorded in the ledger; the chart sets them through the
	// downward API.
	JobName, PodName, PodNamespace string

	DryRun           bool
	ShutdownTimeout  time.Duration
	ProgressInterval time.Duration
	LogFormat        string // json or console; empty: console on a terminal
	LogLevel         zapcore.Level
	MetricsAddr      string
	PushgatewayURL   string

	Schedule   string
	ScheduleTZ string
	RunOnStart bool

	ConfigFile  string // the config file read; empty: none
	PrintConfig bool   // --print-config: print the configuration and exit
	Preflight   bool   // --preflight: check the brokers, topics and files, publish nothing
	ShowVersion bool   // --version: print the version and exit

	// sources says where each key's value came from: "flag --x", "env X",
	// "file PATH", "argument" or "default".
	sources map[string]string
}

// ErrUsage is wrapped by every error about the command line, the
// environment or the config file.
var ErrUsage = errors.New("usage")

// ErrHelp is returned when --help was asked for; usage has been printed.
var ErrHelp = pflag.ErrHelp

// Parse reads args (without the program name), the environment and the
// config file named by --config or COUPON_PRODUCER_CONFIG. Usage goes to out
// on --help. With --print-config or --version the configuration is returned
// without Validate.
func Parse(args []string, out io.Writer) (*Config, error) {
	c, err := parse(args, out)
	if err != nil || c.PrintConfig || c.ShowVersion {
		return c, err
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	return c, nil
}

func parse(args []string, out io.Writer) (*Config, error) {
	fs := pflag.NewFlagSet("coupon-producer", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	for _, k := range keys {
		switch k.kind {
		case kBool:
			fs.Bool(k.name, k.def == "true", k.usage)
		case kMap:
			fs.StringArray(k.name, nil, k.usage)
		default:
			// Typed below, with one message for every source.
			fs.String(k.name, k.def, k.usage)
		}
	}
	configFlag := fs.String("config", "", "YAML config file")
	printConfig := fs.Bool("print-config", false, "print the configuration and exit")
	preflight := fs.Bool("preflight", false, "check brokers, topics and files without publishing, and exit")
	version := fs.Bool("version", false, "print the version and exit")
	help := fs.BoolP("help", "h", false, "print this help and exit")
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if *help {
		Usage(out)
		return nil, ErrHelp
	}
	c := &Config{ShowVersion: *version, PrintConfig: *printConfig, Preflight: *preflight, sources: map[string]string{}}
	if c.ShowVersion {
		return c, nil
	}

	l := loader{fs: fs, file: map[string]any{}}
	switch {
	case fs.Changed("config"):
		l.path, l.pathFrom = *configFlag, "flag --config"
	case os.Getenv(configEnv) != "":
		l.path, l.pathFrom = os.Getenv(configEnv), "env "+configEnv
	}
	if l.path != "" {
		m, err := readFile(l.path)
		if err != nil {
			return nil, fmt.Errorf("%w: %v (from %s)", ErrUsage, err, l.pathFrom)
		}
		l.file, c.ConfigFile = m, l.path
	}

	v := viper.NewWithOptions(viper.KeyDelimiter("::")) // "." appears in topic-config keys
	for _, k := range keys {
		v.SetDefault(k.name, k.def)
		if err := v.BindEnv(append([]string{k.name}, k.env...)...); err != nil {
			return nil, err
		}
		if err := v.BindPFlag(k.name, fs.Lookup(k.name)); err != nil {
			return nil, err
		}
	}
	if err := v.MergeConfigMap(l.file); err != nil {
		return nil, fmt.Errorf("%w: config file %s: %v", ErrUsage, l.path, err)
	}
	for _, k := range keys {
		raw, src := v.Get(k.name), l.source(k)
		c.sources[k.name] = src
		if err := decode(k.kind, raw, k.field(c)); err != nil {
			return nil, fmt.Errorf("%w: %s %s from %s: %v", ErrUsage, k.name, show(raw), src, err)
		}
	}
	if c.LogFormat == "text" { // the name of the console format before zap
		c.LogFormat = "console"
	}
	if err := c.files(fs.Args(), fs.Changed("file")); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if err := c.password(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	return c, nil
}

// loader knows where a key's value comes from, as viper chose it.
type loader struct {
	fs             *pflag.FlagSet
	path, pathFrom string         // the config file and what named it
	file           map[string]any // its keys
}

// source names the source viper takes k's value from: the same order as
// viper's, with an empty environment variable counted as unset (viper's
// default, AllowEmptyEnv false).
func (l loader) source(k key) string {
	if l.fs.Changed(k.name) {
		return "flag --" + k.name
	}
	for _, e := range k.env {
		if os.Getenv(e) != "" {
			return "env " + e
		}
	}
	if _, ok := l.file[k.name]; ok {
		return "file " + l.path
	}
	return "default"
}

// files sets Files: FILE arguments, else the file key from a flag or the
// environment, else COUPON_FILES, else the file key from the config file.
func (c *Config) files(args []string, fileFlag bool) error {
	src := c.sources["file"]
	switch list := os.Getenv(filesEnv); {
	case len(args) > 0:
		if fileFlag {
			return fmt.Errorf("--file %q and FILE arguments %q: give the file once", c.File, args)
		}
		c.Files = args
		c.sources["file"] = "argument"
	case strings.HasPrefix(src, "flag "):
		c.Files = []string{c.File}
	case list != "":
		if strings.HasPrefix(src, "env ") {
			return fmt.Errorf("%s and %s are both set: set one", "COUPON_FILE", filesEnv)
		}
		c.Files = splitList(list)
		c.sources["file"] = "env " + filesEnv
	case c.File != "":
		c.Files = []string{c.File}
	}
	return nil
}

// password reads the SASL password from its variable or its file. Errors
// name where the password was looked for, never the password.
func (c *Config) password() error {
	env := os.Getenv(passwordEnv)
	switch {
	case env != "" && c.SASLPasswordFile != "":
		return fmt.Errorf("the SASL password is given twice, in env %s and in sasl-password-file %q (from %s): set one",
			passwordEnv, c.SASLPasswordFile, c.sources["sasl-password-file"])
	case env != "":
		c.SASLPassword = env
		c.sources[passwordKey] = "env " + passwordEnv
	case c.SASLPasswordFile != "":
		b, err := os.ReadFile(c.SASLPasswordFile)
		if err != nil {
			return fmt.Errorf("sasl-password-file (from %s): %w", c.sources["sasl-password-file"], err)
		}
		// A Secret written with a trailing newline (echo, an editor) means
		// the same password without it.
		c.SASLPassword = strings.TrimRight(string(b), "\r\n")
		c.sources[passwordKey] = "file " + c.SASLPasswordFile
	}
	return nil
}

// from returns where key's value came from, for messages.
func (c *Config) from(key string) string {
	if s := c.sources[key]; s != "" {
		return s
	}
	return "default"
}

// bad formats a Validate error: the key, its value quoted, and its source.
func (c *Config) bad(key string, value any, problem string, args ...any) error {
	return fmt.Errorf("%s %s (from %s) %s", key, show(value), c.from(key), fmt.Sprintf(problem, args...))
}

// TopicFor returns the topic a file is published to.
func (c *Config) TopicFor(file string) string {
	if c.Topic != "" {
		return c.Topic
	}
	return filepath.Base(file)
}

// ValidTopic checks a name against Kafka's rules for topic names.
func ValidTopic(t string) error {
	if t == "" || len(t) > 249 {
		return fmt.Errorf("topic %q must be 1 to 249 characters long", t)
	}
	if t == "." || t == ".." {
		return fmt.Errorf("topic %q is not allowed", t)
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c == '.' || c == '_' || c == '-' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return fmt.Errorf("topic %q has %q: only letters, digits, '.', '_' and '-' are allowed", t, c)
		}
	}
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
