package config

import (
	"strconv"

	"github.com/couponpipeline/coupon-producer/pkg/kafka"
	"github.com/couponpipeline/coupon-producer/pkg/ledger"
	"github.com/couponpipeline/coupon-producer/pkg/producer"
)

// kind is how a key's value is written and read.
type kind int

const (
	kString kind = iota
	kInt
	kBool
	kDuration
	kList  // comma-separated, or a YAML sequence
	kMap   // key=value pairs: comma-separated, a repeated flag, or a YAML mapping
	kLevel // debug, info, warn or error
)

// placeholder is the word --help shows after a flag of the kind.
func (k kind) placeholder() string {
	return [...]string{"STRING", "N", "", "DURATION", "LIST", "KEY=VALUE", "LEVEL"}[k]
}

// key is one configuration key: its file key and long flag name, its
// environment variables (the first is documented; the others are read
// after it), its default as written on a command line, and the field of
// Config it fills.
type key struct {
	name  string
	env   []string
	kind  kind
	def   string
	usage string
	field func(*Config) any // pointer to the field
}

// keys is the table of every configuration key, in the order of --help,
// --print-config and the README. A default that a package owns is taken
// from it.
var keys = []key{
	{"file", []string{"COUPON_FILE"}, kString, "",
		"gzip file of coupon codes to publish (or a FILE argument)", func(c *Config) any { return &c.File }},
	{"topic", []string{"KAFKA_TOPIC"}, kString, "",
		"topic to publish to; empty: the file's base name", func(c *Config) any { return &c.Topic }},
	{"brokers", []string{"KAFKA_BROKERS"}, kList, "localhost:9092",
		"Kafka seed brokers, host:port, comma-separated", func(c *Config) any { return &c.Brokers }},
	{"partitions", []string{"KAFKA_PARTITIONS"}, kInt, strconv.Itoa(kafka.DefaultPartitions),
		"partitions of a topic the producer creates", func(c *Config) any { return &c.Partitions }},
	{"replication-factor", []string{"KAFKA_REPLICATION_FACTOR"}, kInt, "-1",
		"replication factor of a topic the producer creates; -1: the broker's default", func(c *Config) any { return &c.ReplicationFactor }},
	{"topic-config", []string{"KAFKA_TOPIC_CONFIG"}, kMap, "",
		"key=value config of a topic the producer creates, e.g. retention.ms=604800000; flag repeatable, env comma-separated, file a mapping", func(c *Config) any { return &c.TopicConfigs }},
	{"compression", []string{"KAFKA_COMPRESSION"}, kString, producer.DefaultCompression,
		"batch compression: none, gzip, snappy, lz4 or zstd", func(c *Config) any { return &c.Compression }},
	{"linger", []string{"KAFKA_LINGER"}, kDuration, "10ms",
		"how long a partition's batch waits for more codes", func(c *Config) any { return &c.Linger }},
	{"batch-max-bytes", []string{"KAFKA_BATCH_MAX_BYTES"}, kInt, strconv.Itoa(producer.DefaultBatchMaxBytes),
		"largest record batch, in bytes (at most the topic's max.message.bytes)", func(c *Config) any { return &c.BatchMaxBytes }},
	{"max-buffered-bytes", []string{"KAFKA_MAX_BUFFERED_BYTES"}, kInt, strconv.Itoa(producer.DefaultMaxBufferedBytes),
		"bytes of record batches buffered or in flight before reading waits (bounds memory)", func(c *Config) any { return &c.MaxBufferedBytes }},
	{"client-id", []string{"KAFKA_CLIENT_ID"}, kString, "coupon-producer",
		"Kafka client.id", func(c *Config) any { return &c.ClientID }},
	{"connect-timeout", []string{"KAFKA_CONNECT_TIMEOUT"}, kDuration, "30s",
		"how long to wait for the brokers to answer before giving up", func(c *Config) any { return &c.ConnectTimeout }},
	{"delivery-timeout", []string{"KAFKA_DELIVERY_TIMEOUT"}, kDuration, "2m0s",
		"how long a batch may be retried before its codes count as failed (like delivery.timeout.ms); must be positive", func(c *Config) any { return &c.DeliveryTimeout }},
	{"tls", []string{"KAFKA_TLS"}, kBool, "false",
		"connect to the brokers with TLS (implied by the other tls keys)", func(c *Config) any { return &c.TLS }},
	{"tls-ca-file", []string{"KAFKA_TLS_CA_FILE"}, kString, "",
		"PEM file of the CAs to trust instead of the system's", func(c *Config) any { return &c.TLSCAFile }},
	{"tls-cert-file", []string{"KAFKA_TLS_CERT_FILE"}, kString, "",
		"PEM client certificate for mutual TLS (with tls-key-file)", func(c *Config) any { return &c.TLSCertFile }},
	{"tls-key-file", []string{"KAFKA_TLS_KEY_FILE"}, kString, "",
		"PEM private key of tls-cert-file", func(c *Config) any { return &c.TLSKeyFile }},
	{"tls-server-name", []string{"KAFKA_TLS_SERVER_NAME"}, kString, "",
		"name expected in the brokers' certificates; empty: the host dialed", func(c *Config) any { return &c.TLSServerName }},
	{"tls-insecure-skip-verify", []string{"KAFKA_TLS_INSECURE_SKIP_VERIFY"}, kBool, "false",
		"do not verify the brokers' certificates (testing only; logs a warning)", func(c *Config) any { return &c.TLSInsecureSkipVerify }},
	{"sasl-mechanism", []string{"KAFKA_SASL_MECHANISM"}, kString, "",
		"SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty: no SASL", func(c *Config) any { return &c.SASLMechanism }},
	{"sasl-username", []string{"KAFKA_SASL_USERNAME"}, kString, "",
		"SASL user name", func(c *Config) any { return &c.SASLUsername }},
	{"sasl-password-file", []string{"KAFKA_SASL_PASSWORD_FILE"}, kString, "",
		"file holding the SASL password, e.g. a mounted Secret (or env " + passwordEnv + ")", func(c *Config) any { return &c.SASLPasswordFile }},
	{"shutdown-timeout", []string{"SHUTDOWN_TIMEOUT"}, kDuration, "10s",
		"on SIGINT/SIGTERM, how long codes in flight may still be delivered", func(c *Config) any { return &c.ShutdownTimeout }},
	{"progress-interval", []string{"PROGRESS_INTERVAL"}, kDuration, "10s",
		"how often to log progress; 0: never", func(c *Config) any { return &c.ProgressInterval }},
	{"log-format", []string{"LOG_FORMAT"}, kString, "",
		"log format: json, or console (alias text); empty: console on a terminal, json otherwise", func(c *Config) any { return &c.LogFormat }},
	{"log-level", []string{"LOG_LEVEL"}, kLevel, "info",
		"log level: debug, info, warn or error (debug adds the Kafka client's logs)", func(c *Config) any { return &c.LogLevel }},
	{"metrics-addr", []string{"METRICS_ADDR"}, kString, "",
		"address to serve Prometheus /metrics and /healthz on, e.g. :9100; empty: none", func(c *Config) any { return &c.MetricsAddr }},
	{"pushgateway-url", []string{"PUSHGATEWAY_URL"}, kString, "",
		"Prometheus Pushgateway to push each run's outcome to at its end, e.g. http://pushgateway:9091; empty: none", func(c *Config) any { return &c.PushgatewayURL }},
	{"ledger-topic", []string{"LEDGER_TOPIC"}, kString, ledger.DefaultTopic,
		"compacted topic of the run ledger (skip unchanged files, resume, one run at a time), created like data topics; empty: no ledger", func(c *Config) any { return &c.LedgerTopic }},
	{"checkpoint-interval", []string{"CHECKPOINT_INTERVAL"}, kDuration, "5s",
		"how often a run records its acknowledged position in the ledger; a run silent for three of them is taken for gone", func(c *Config) any { return &c.CheckpointInterval }},
	{"checkpoint-percent", []string{"CHECKPOINT_PERCENT"}, kInt, "1",
		"also record the acknowledged position each time another this many percent of the compressed file is read, so that a killed run re-sends at most about that share; 0: by time only", func(c *Config) any { return &c.CheckpointPercent }},
	{"force", []string{"FORCE"}, kBool, "false",
		"publish a file even if the ledger says this very file is already in the topic", func(c *Config) any { return &c.Force }},
	{"no-resume", []string{"NO_RESUME"}, kBool, "false",
		"publish every code even after an unfinished run of the same file, instead of the codes after its checkpoint", func(c *Config) any { return &c.NoResume }},
	{"job-name", []string{"JOB_NAME"}, kString, "",
		"Kubernetes Job of this run, recorded in the ledger (the chart sets it from the downward API)", func(c *Config) any { return &c.JobName }},
	{"pod-name", []string{"POD_NAME"}, kString, "",
		"pod of this run, recorded in the ledger (the chart sets it from the downward API)", func(c *Config) any { return &c.PodName }},
	{"pod-namespace", []string{"POD_NAMESPACE"}, kString, "",
		"namespace of this run's pod, recorded in the ledger (the chart sets it from the downward API)", func(c *Config) any { return &c.PodNamespace }},
	{"dry-run", []string{"DRY_RUN"}, kBool, "false",
		"no Kafka: write every code to stdout, one per line", func(c *Config) any { return &c.DryRun }},
	{"schedule", []string{"SCHEDULE"}, kString, "",
		"docker compose only: run on this schedule instead of once (5-field cron, @daily, @every DURATION)", func(c *Config) any { return &c.Schedule }},
	{"schedule-tz", []string{"SCHEDULE_TZ", "TZ"}, kString, "UTC",
		"time zone of the schedule", func(c *Config) any { return &c.ScheduleTZ }},
	{"run-on-start", []string{"RUN_ON_START"}, kBool, "false",
		"with schedule, also run at once", func(c *Config) any { return &c.RunOnStart }},
}

// The names read outside the key table.
const (
	configEnv   = "COUPON_PRODUCER_CONFIG" // the config file, like --config
	filesEnv    = "COUPON_FILES"           // several files, comma-separated (command-line use)
	passwordEnv = "KAFKA_SASL_PASSWORD"    // the SASL password; never a flag or a file key
	passwordKey = "sasl-password"          // refused in the config file, shown redacted
)

// Redacted replaces secrets in --print-config.
const Redacted = "<redacted>"
