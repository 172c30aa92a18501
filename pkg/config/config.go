// Package config reads the producer's settings from flags and environment
// variables. Every flag has an environment variable; a flag given on the
// command line wins over its variable, and the variable over the default.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/couponpipeline/coupon-producer/pkg/publish"
)

// Config is the whole configuration of one invocation.
type Config struct {
	Files []string
	Topic string // overrides the topic of the single FILE

	Brokers           []string
	ClientID          string
	Partitions        int
	ReplicationFactor int
	TopicConfigs      map[string]string
	Compression       string
	Linger            time.Duration
	BatchMaxBytes     int
	MaxBuffered       int
	MaxBufferedBytes  int
	Engine            string // batch or kgo
	ConnectTimeout    time.Duration
	DeliveryTimeout   time.Duration

	TLS           bool
	TLSCAFile     string
	TLSInsecure   bool
	SASLMechanism string
	SASLUsername  string
	SASLPassword  string

	DryRun           bool
	ShutdownTimeout  time.Duration
	ProgressInterval time.Duration
	LogFormat        string // text or json; empty: text on a terminal
	LogLevel         slog.Level
	MetricsAddr      string

	Schedule   string
	ScheduleTZ string
	RunOnStart bool

	ShowVersion bool
}

// ErrUsage is wrapped by every error about the command line or environment.
var ErrUsage = errors.New("usage")

// ErrHelp is returned when --help was asked for; usage has been printed.
var ErrHelp = flag.ErrHelp

// Default partitions for topics the producer creates: several, so that the
// topic spreads over brokers and consumers, and a multiple of 1, 2 and 3.
const DefaultPartitions = 6

type spec struct {
	name, env, usage string
	value            flag.Value
	boolFlag         bool
}

// Parse reads args (without the program name) and the environment through
// getenv. Usage goes to out on --help or a usage error.
func Parse(args []string, getenv func(string) string, out io.Writer) (*Config, error) {
	c := &Config{
		Brokers:           []string{"localhost:9092"},
		ClientID:          "coupon-producer",
		Partitions:        DefaultPartitions,
		ReplicationFactor: -1,
		TopicConfigs:      map[string]string{},
		Compression:       "lz4",
		Linger:            10 * time.Millisecond,
		BatchMaxBytes:     1 << 20,
		MaxBuffered:       100_000,
		MaxBufferedBytes:  16 << 20,
		Engine:            "batch",
		ConnectTimeout:    30 * time.Second,
		DeliveryTimeout:   2 * time.Minute,
		ShutdownTimeout:   10 * time.Second,
		ProgressInterval:  10 * time.Second,
		LogLevel:          slog.LevelInfo,
		ScheduleTZ:        "UTC",
	}
	fs := flag.NewFlagSet("coupon-producer", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var specs []spec
	add := func(name, env, usage string, v flag.Value) {
		_, isBool := v.(interface{ IsBoolFlag() bool })
		specs = append(specs, spec{name, env, usage, v, isBool})
		fs.Var(v, name, usage)
	}
	add("brokers", "KAFKA_BROKERS", "comma-separated Kafka seed brokers, host:port", (*listValue)(&c.Brokers))
	add("topic", "KAFKA_TOPIC", "topic to publish to (one FILE only); default: the FILE's base name", (*stringValue)(&c.Topic))
	add("partitions", "KAFKA_PARTITIONS", "partitions of a topic the producer creates", (*intValue)(&c.Partitions))
	add("replication-factor", "KAFKA_REPLICATION_FACTOR", "replication factor of a topic the producer creates; -1: the broker's default", (*intValue)(&c.ReplicationFactor))
	add("topic-config", "KAFKA_TOPIC_CONFIG", "key=value config of a topic the producer creates, e.g. retention.ms=604800000; repeatable (env: comma-separated)", (*mapValue)(&c.TopicConfigs))
	add("compression", "KAFKA_COMPRESSION", "batch compression: none, gzip, snappy, lz4 or zstd", (*stringValue)(&c.Compression))
	add("linger", "KAFKA_LINGER", "how long a partition's batch waits for more records", (*durationValue)(&c.Linger))
	add("batch-max-bytes", "KAFKA_BATCH_MAX_BYTES", "largest record batch, in bytes (at most the topic's max.message.bytes)", (*intValue)(&c.BatchMaxBytes))
	add("engine", "PRODUCER_ENGINE", "how records are produced: batch (record batches encoded by the producer) or kgo (franz-go's record-at-a-time producer)", (*stringValue)(&c.Engine))
	add("max-buffered-bytes", "KAFKA_MAX_BUFFERED_BYTES", "engine batch: bytes of record batches buffered or in flight before reading waits", (*intValue)(&c.MaxBufferedBytes))
	add("max-buffered-records", "KAFKA_MAX_BUFFERED_RECORDS", "engine kgo: records buffered or in flight before reading waits", (*intValue)(&c.MaxBuffered))
	add("client-id", "KAFKA_CLIENT_ID", "Kafka client.id", (*stringValue)(&c.ClientID))
	add("connect-timeout", "KAFKA_CONNECT_TIMEOUT", "how long to wait for the brokers to answer before giving up", (*durationValue)(&c.ConnectTimeout))
	add("delivery-timeout", "KAFKA_DELIVERY_TIMEOUT", "how long a record may be retried before it counts as failed (like delivery.timeout.ms)", (*durationValue)(&c.DeliveryTimeout))
	add("tls", "KAFKA_TLS", "connect to the brokers with TLS", (*boolValue)(&c.TLS))
	add("tls-ca-file", "KAFKA_TLS_CA_FILE", "PEM file of CAs to trust instead of the system's (implies --tls)", (*stringValue)(&c.TLSCAFile))
	add("tls-insecure-skip-verify", "KAFKA_TLS_INSECURE_SKIP_VERIFY", "do not verify the brokers' certificates (testing only)", (*boolValue)(&c.TLSInsecure))
	add("sasl-mechanism", "KAFKA_SASL_MECHANISM", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty: no SASL", (*stringValue)(&c.SASLMechanism))
	add("sasl-username", "KAFKA_SASL_USERNAME", "SASL user name", (*stringValue)(&c.SASLUsername))
	add("sasl-password", "KAFKA_SASL_PASSWORD", "SASL password (prefer the environment variable to the flag)", (*stringValue)(&c.SASLPassword))
	add("dry-run", "DRY_RUN", "no Kafka: write every code to stdout, one per line", (*boolValue)(&c.DryRun))
	add("shutdown-timeout", "SHUTDOWN_TIMEOUT", "on SIGINT/SIGTERM, how long to wait for records in flight", (*durationValue)(&c.ShutdownTimeout))
	add("progress-interval", "PROGRESS_INTERVAL", "how often to log progress; 0: never", (*durationValue)(&c.ProgressInterval))
	add("log-format", "LOG_FORMAT", "log format: text or json (default: text on a terminal, json otherwise)", (*stringValue)(&c.LogFormat))
	add("log-level", "LOG_LEVEL", "log level: debug, info, warn or error", (*levelValue)(&c.LogLevel))
	add("metrics-addr", "METRICS_ADDR", "address to serve Prometheus /metrics and /healthz on, e.g. :9100; empty: none", (*stringValue)(&c.MetricsAddr))
	add("schedule", "SCHEDULE", "run on this schedule instead of once: 5-field cron, @daily, @hourly or @every DURATION", (*stringValue)(&c.Schedule))
	add("schedule-tz", "SCHEDULE_TZ", "time zone of the schedule (falls back to TZ)", (*stringValue)(&c.ScheduleTZ))
	add("run-on-start", "RUN_ON_START", "with --schedule, also run at once", (*boolValue)(&c.RunOnStart))
	add("version", "", "print the version and exit", (*boolValue)(&c.ShowVersion))

	usage := func() { printUsage(out, specs) }

	if tz := getenv("TZ"); tz != "" && getenv("SCHEDULE_TZ") == "" {
		c.ScheduleTZ = tz
	}
	for _, s := range specs {
		if s.env == "" {
			continue
		}
		v, ok := lookup(getenv, s.env)
		if !ok {
			continue
		}
		if s.name == "topic-config" {
			for _, kv := range splitList(v) {
				if err := s.value.Set(kv); err != nil {
					return nil, fmt.Errorf("%w: env %s=%q: %v", ErrUsage, s.env, v, err)
				}
			}
			continue
		}
		if err := s.value.Set(v); err != nil {
			return nil, fmt.Errorf("%w: env %s=%q: %v", ErrUsage, s.env, v, err)
		}
	}
	// Flags given on the command line replace, rather than add to, what the
	// environment set for a repeatable flag.
	envConfigs := c.TopicConfigs
	c.TopicConfigs = map[string]string{}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage()
			return nil, ErrHelp
		}
		return nil, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if len(c.TopicConfigs) == 0 {
		c.TopicConfigs = envConfigs
	}
	c.Files = fs.Args()
	if len(c.Files) == 0 {
		c.Files = splitList(getenv("COUPON_FILES"))
	}
	if c.ShowVersion {
		return c, nil
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	return c, nil
}

func lookup(getenv func(string) string, key string) (string, bool) {
	v := getenv(key)
	return v, v != ""
}

// Validate checks the configuration; its messages quote the bad value.
func (c *Config) Validate() error {
	if len(c.Files) == 0 {
		return errors.New("no FILE given (as arguments or in COUPON_FILES)")
	}
	if c.Topic != "" && len(c.Files) != 1 {
		return fmt.Errorf("--topic %q needs exactly one FILE, got %d", c.Topic, len(c.Files))
	}
	for _, f := range c.Files {
		if err := ValidTopic(c.TopicFor(f)); err != nil {
			return err
		}
	}
	if len(c.Brokers) == 0 {
		return errors.New("--brokers is empty")
	}
	for _, b := range c.Brokers {
		if _, port, ok := strings.Cut(b, ":"); !ok || port == "" || strings.Contains(b, "/") {
			return fmt.Errorf("broker %q is not host:port", b)
		}
	}
	if c.Partitions < 1 || c.Partitions > 1<<20 {
		return fmt.Errorf("--partitions %d is not between 1 and %d", c.Partitions, 1<<20)
	}
	if c.ReplicationFactor == 0 || c.ReplicationFactor < -1 || c.ReplicationFactor > 32767 {
		return fmt.Errorf("--replication-factor %d is neither -1 nor between 1 and 32767", c.ReplicationFactor)
	}
	if _, ok := publish.Codecs[c.Compression]; !ok {
		return fmt.Errorf("--compression %q is not one of %s", c.Compression, strings.Join(codecNames(), ", "))
	}
	if c.Linger < 0 || c.Linger > time.Minute {
		return fmt.Errorf("--linger %s is not between 0 and 1m", c.Linger)
	}
	if c.BatchMaxBytes < 1<<10 || c.BatchMaxBytes > 64<<20 {
		return fmt.Errorf("--batch-max-bytes %d is not between %d and %d", c.BatchMaxBytes, 1<<10, 64<<20)
	}
	switch c.Engine {
	case "batch", "kgo":
	default:
		return fmt.Errorf("--engine %q is neither batch nor kgo", c.Engine)
	}
	if c.MaxBufferedBytes < c.BatchMaxBytes {
		return fmt.Errorf("--max-buffered-bytes %d is less than one batch of --batch-max-bytes %d", c.MaxBufferedBytes, c.BatchMaxBytes)
	}
	if c.MaxBuffered < 1 {
		return fmt.Errorf("--max-buffered-records %d is less than 1", c.MaxBuffered)
	}
	for name, d := range map[string]time.Duration{
		"--connect-timeout": c.ConnectTimeout, "--shutdown-timeout": c.ShutdownTimeout,
	} {
		if d <= 0 {
			return fmt.Errorf("%s %s must be positive", name, d)
		}
	}
	if c.DeliveryTimeout < 0 {
		return fmt.Errorf("--delivery-timeout %s is negative", c.DeliveryTimeout)
	}
	if c.ProgressInterval < 0 {
		return fmt.Errorf("--progress-interval %s is negative", c.ProgressInterval)
	}
	switch c.LogFormat {
	case "", "text", "json":
	default:
		return fmt.Errorf("--log-format %q is neither text nor json", c.LogFormat)
	}
	switch strings.ToUpper(c.SASLMechanism) {
	case "":
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if c.SASLUsername == "" {
			return fmt.Errorf("--sasl-mechanism %s needs --sasl-username", c.SASLMechanism)
		}
	default:
		return fmt.Errorf("--sasl-mechanism %q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", c.SASLMechanism)
	}
	if c.RunOnStart && c.Schedule == "" {
		return errors.New("--run-on-start needs --schedule")
	}
	if _, err := time.LoadLocation(c.ScheduleTZ); err != nil {
		return fmt.Errorf("--schedule-tz %q: %v", c.ScheduleTZ, err)
	}
	return nil
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

func codecNames() []string {
	names := make([]string, 0, len(publish.Codecs))
	for n := range publish.Codecs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
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

func printUsage(w io.Writer, specs []spec) {
	fmt.Fprint(w, `Usage: coupon-producer [flags] FILE...

Publishes every coupon code of each gzip FILE to the Kafka topic named after
the FILE's base name. FILEs may also be given in COUPON_FILES (comma-separated).

Exit codes: 0 all delivered, 1 Kafka failure, 2 usage error, 3 input error,
130/143 interrupted by SIGINT/SIGTERM.

Flags (each also read from the environment variable named):
`)
	for _, s := range specs {
		name := "--" + s.name
		if !s.boolFlag {
			name += " " + placeholder(s.value)
		}
		fmt.Fprintf(w, "  %s\n    \t%s", name, s.usage)
		var notes []string
		if s.env != "" {
			notes = append(notes, "env "+s.env)
		}
		if def := s.value.String(); def != "" && def != "false" && s.name != "sasl-password" {
			notes = append(notes, "default "+strconv.Quote(def))
		}
		if len(notes) > 0 {
			fmt.Fprintf(w, " (%s)", strings.Join(notes, ", "))
		}
		fmt.Fprintln(w)
	}
}

func placeholder(v flag.Value) string {
	switch v.(type) {
	case *durationValue:
		return "DURATION"
	case *intValue:
		return "N"
	case *listValue:
		return "LIST"
	case *mapValue:
		return "KEY=VALUE"
	case *levelValue:
		return "LEVEL"
	}
	return "STRING"
}
