package config

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.yaml.in/yaml/v3"

	"github.com/couponpipeline/coupon-producer/pkg/kafka"
)

// cleanEnv sets every variable the configuration reads to the empty string,
// which counts as unset, so that the test's own environment does not leak
// in; then sets kv.
func cleanEnv(t *testing.T, kv ...string) {
	t.Helper()
	for _, k := range keys {
		for _, e := range k.env {
			t.Setenv(e, "")
		}
	}
	for _, e := range []string{configEnv, filesEnv, passwordEnv} {
		t.Setenv(e, "")
	}
	for i := 0; i+1 < len(kv); i += 2 {
		t.Setenv(kv[i], kv[i+1])
	}
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func mustParse(t *testing.T, args ...string) *Config {
	t.Helper()
	c, err := Parse(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDefaults(t *testing.T) {
	cleanEnv(t)
	c := mustParse(t, "/data/couponbase1.gz")
	if strings.Join(c.Brokers, ",") != "localhost:9092" || c.Partitions != kafka.DefaultPartitions ||
		c.ReplicationFactor != -1 || c.Compression != "lz4" || c.ConnectTimeout != 30*time.Second ||
		c.DeliveryTimeout != 2*time.Minute || c.Linger != 10*time.Millisecond || c.BatchMaxBytes != 1<<20 ||
		c.MaxBufferedBytes != 16<<20 || c.ClientID != "coupon-producer" || c.LogLevel != zapcore.InfoLevel ||
		c.ShutdownTimeout != 10*time.Second || c.ProgressInterval != 10*time.Second || c.ScheduleTZ != "UTC" ||
		len(c.TopicConfigs) != 0 || c.TLS || c.DryRun {
		t.Fatalf("defaults %+v", c)
	}
	if got := c.TopicFor(c.Files[0]); got != "couponbase1.gz" {
		t.Fatalf("topic %q, want the base name", got)
	}
}

// TestPrecedence checks flag > env > file > default for keys of every kind.
func TestPrecedence(t *testing.T) {
	file := writeFile(t, `
brokers: [file1:9092, file2:9092]
partitions: 4
linger: 20ms
dry-run: true
topic-config:
  retention.ms: "100"
log-level: warn
client-id: from-file
`)
	type want struct {
		brokers   string
		parts     int
		linger    time.Duration
		dryRun    bool
		topicConf string
		level     zapcore.Level
		clientID  string
	}
	def := want{"localhost:9092", 6, 10 * time.Millisecond, false, "", zapcore.InfoLevel, "coupon-producer"}
	fromFile := want{"file1:9092,file2:9092", 4, 20 * time.Millisecond, true, "retention.ms=100", zapcore.WarnLevel, "from-file"}
	fromEnv := want{"env:9092", 5, 30 * time.Millisecond, false, "retention.ms=200", zapcore.ErrorLevel, "from-env"}
	fromFlag := want{"flag:9092", 7, 40 * time.Millisecond, true, "retention.ms=300", zapcore.DebugLevel, "from-flag"}
	env := []string{"KAFKA_BROKERS", "env:9092", "KAFKA_PARTITIONS", "5", "KAFKA_LINGER", "30ms", "DRY_RUN", "false",
		"KAFKA_TOPIC_CONFIG", "retention.ms=200", "LOG_LEVEL", "error", "KAFKA_CLIENT_ID", "from-env"}
	flags := []string{"--brokers", "flag:9092", "--partitions", "7", "--linger", "40ms", "--dry-run",
		"--topic-config", "retention.ms=300", "--log-level", "debug", "--client-id", "from-flag"}
	for _, tc := range []struct {
		name  string
		env   []string
		args  []string
		want  want
		where string // the source of every key checked
	}{
		{"default", nil, nil, def, "default"},
		{"file over default", []string{configEnv, file}, nil, fromFile, "file " + file},
		{"env over file", append([]string{configEnv, file}, env...), nil, fromEnv, "env "},
		{"flag over env and file", append([]string{configEnv, file}, env...), flags, fromFlag, "flag --"},
		{"flag over default", nil, flags, fromFlag, "flag --"},
		{"env over default", env, nil, fromEnv, "env "},
		{"--config flag", nil, []string{"--config", file}, fromFile, "file " + file},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cleanEnv(t, tc.env...)
			c := mustParse(t, append(tc.args, "/d/a.gz")...)
			tcs := ""
			for k, v := range c.TopicConfigs {
				tcs += k + "=" + v
			}
			got := want{strings.Join(c.Brokers, ","), c.Partitions, c.Linger, c.DryRun, tcs, c.LogLevel, c.ClientID}
			if got != tc.want {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
			for _, k := range []string{"brokers", "partitions", "linger", "dry-run", "topic-config", "log-level", "client-id"} {
				if !strings.HasPrefix(c.from(k), tc.where) {
					t.Errorf("%s from %q, want %q", k, c.from(k), tc.where)
				}
			}
		})
	}
}

// TestEveryKeyHasEnvAndDefault guards viper's trap spf13/viper#761: a key
// with neither a default nor a bound variable is invisible to viper's
// Unmarshal and AllKeys. Every key here is bound explicitly, and its
// variable names are upper snake case, so no key replacer is involved.
func TestEveryKeyHasEnvAndDefault(t *testing.T) {
	name := regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)
	seen := map[string]bool{}
	for _, k := range keys {
		if len(k.env) == 0 {
			t.Errorf("key %s has no environment variable", k.name)
		}
		for _, e := range k.env {
			if !name.MatchString(e) {
				t.Errorf("key %s: variable %q is not upper snake case", k.name, e)
			}
			if seen[e] {
				t.Errorf("variable %s is bound twice", e)
			}
			seen[e] = true
		}
		// The default decodes into the field, as a value from any source would.
		if err := decode(k.kind, k.def, k.field(&Config{})); err != nil {
			t.Errorf("key %s: default %q: %v", k.name, k.def, err)
		}
	}
}

// TestEnvOfKeysWithoutDefault sets, from the environment only, keys whose
// default is empty and keys whose names hold dashes.
func TestEnvOfKeysWithoutDefault(t *testing.T) {
	cleanEnv(t, "COUPON_FILE", "/d/one.gz", "KAFKA_TOPIC", "t1", "KAFKA_TLS_SERVER_NAME", "kafka.example",
		"KAFKA_REPLICATION_FACTOR", "3", "KAFKA_TLS_INSECURE_SKIP_VERIFY", "true", "METRICS_ADDR", ":9100",
		// As the chart sets them through the downward API.
		"JOB_NAME", "coupon-producer-couponbase1-29412345", "POD_NAME", "coupon-producer-couponbase1-29412345-x7k2p", "POD_NAMESPACE", "coupons")
	c := mustParse(t)
	if strings.Join(c.Files, ",") != "/d/one.gz" || c.Topic != "t1" || c.TLSServerName != "kafka.example" ||
		c.ReplicationFactor != 3 || !c.TLSInsecureSkipVerify || c.MetricsAddr != ":9100" ||
		c.JobName != "coupon-producer-couponbase1-29412345" || c.PodName != "coupon-producer-couponbase1-29412345-x7k2p" || c.PodNamespace != "coupons" {
		t.Fatalf("from env: %+v", c)
	}
}

// TestEmptyEnvIsUnset: an empty variable (as a template renders a value it
// does not have) leaves the config file's value or the default.
func TestEmptyEnvIsUnset(t *testing.T) {
	file := writeFile(t, "topic: from-file\n")
	cleanEnv(t, configEnv, file, "KAFKA_TOPIC", "", "LOG_LEVEL", "", "KAFKA_PARTITIONS", "")
	c := mustParse(t, "/d/a.gz")
	if c.Topic != "from-file" || c.LogLevel != zapcore.InfoLevel || c.Partitions != 6 {
		t.Fatalf("empty variables: topic %q, level %v, partitions %d", c.Topic, c.LogLevel, c.Partitions)
	}
}

// TestYAML11Booleans: words that YAML 1.1 reads as booleans stay strings
// in string keys, and are refused in boolean keys rather than guessed.
func TestYAML11Booleans(t *testing.T) {
	cleanEnv(t)
	c := mustParse(t, "--config", writeFile(t, "client-id: on\ntopic: y\nsasl-username: no\nfile: /d/a.gz\n"))
	if c.ClientID != "on" || c.Topic != "y" || c.SASLUsername != "no" {
		t.Fatalf("client-id %q, topic %q, sasl-username %q: want on, y, no", c.ClientID, c.Topic, c.SASLUsername)
	}
	c = mustParse(t, "--config", writeFile(t, "topic: 0x10\nclient-id: 1e3\nfile: /d/a.gz\n"))
	if c.Topic != "0x10" || c.ClientID != "1e3" {
		t.Fatalf("topic %q, client-id %q: numbers must stay as written", c.Topic, c.ClientID)
	}
	_, err := Parse([]string{"--config", writeFile(t, "dry-run: on\n"), "/d/a.gz"}, io.Discard)
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), `dry-run "on"`) {
		t.Fatalf("err = %v, want dry-run \"on\" refused", err)
	}
}

func TestConfigFileErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	for _, tc := range []struct {
		name    string
		file    string // content; "" uses the missing path
		want    []string
		notWant string
	}{
		{"missing file", "", []string{missing, "no such file"}, ""},
		{"unknown key", "brokers: k:9092\nbrokerz: k:9092\n", []string{`unknown key "brokerz"`, "line 2"}, ""},
		{"case matters", "Brokers: k:9092\n", []string{`unknown key "Brokers"`}, ""},
		{"wrong type", "partitions: many\n", []string{`partitions "many"`, "from file"}, ""},
		{"list for a scalar", "topic: [a, b]\n", []string{"topic", "want one value, got a list"}, ""},
		{"password refused", "sasl-password: hunter2-secret\n", []string{"sasl-password", passwordEnv, "sasl-password-file"}, "hunter2-secret"},
		{"duplicate key", "topic: a\ntopic: b\n", []string{"topic", "twice"}, ""},
		{"not a mapping", "- a\n- b\n", []string{"mapping"}, ""},
		{"bad yaml", "topic: [\n", []string{"config file"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cleanEnv(t)
			path := missing
			if tc.file != "" {
				path = writeFile(t, tc.file)
			}
			_, err := Parse([]string{"--config", path, "/d/a.gz"}, io.Discard)
			if !errors.Is(err, ErrUsage) {
				t.Fatalf("err = %v, want a usage error", err)
			}
			if tc.file != "" && !strings.Contains(err.Error(), path) {
				t.Errorf("err does not name the file %s: %v", path, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err does not say %q: %v", w, err)
				}
			}
			if tc.notWant != "" && strings.Contains(err.Error(), tc.notWant) {
				t.Errorf("err shows %q: %v", tc.notWant, err)
			}
		})
	}
}

func TestConfigFileKinds(t *testing.T) {
	cleanEnv(t)
	c := mustParse(t, "--config", writeFile(t, `
file: /data/couponbase2.gz
brokers: "a:9092, b:9092"
topic-config: ["retention.ms=5", "cleanup.policy=compact,delete"]
topic:
tls: true
shutdown-timeout: 25s
`))
	if strings.Join(c.Files, ",") != "/data/couponbase2.gz" || c.TopicFor(c.Files[0]) != "couponbase2.gz" ||
		strings.Join(c.Brokers, ",") != "a:9092,b:9092" || c.TopicConfigs["cleanup.policy"] != "compact,delete" ||
		c.TopicConfigs["retention.ms"] != "5" || !c.TLS || c.ShutdownTimeout != 25*time.Second {
		t.Fatalf("from file: %+v", c)
	}
}

func TestFiles(t *testing.T) {
	file := writeFile(t, "file: /d/from-file.gz\n")
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string // files, or the error's text
		err  bool
	}{
		{"argument", nil, []string{"/d/a.gz"}, "/d/a.gz", false},
		{"several arguments", nil, []string{"/d/a.gz", "/d/b.gz"}, "/d/a.gz,/d/b.gz", false},
		{"flag", nil, []string{"--file", "/d/f.gz"}, "/d/f.gz", false},
		{"flag and argument", nil, []string{"--file", "/d/f.gz", "/d/a.gz"}, "give the file once", true},
		{"env", []string{"COUPON_FILE", "/d/e.gz"}, nil, "/d/e.gz", false},
		{"legacy list", []string{filesEnv, "/d/a.gz, /d/b.gz"}, nil, "/d/a.gz,/d/b.gz", false},
		{"both variables", []string{"COUPON_FILE", "/d/e.gz", filesEnv, "/d/a.gz"}, nil, "both set", true},
		{"config file", []string{configEnv, file}, nil, "/d/from-file.gz", false},
		{"env list over config file", []string{configEnv, file, filesEnv, "/d/a.gz"}, nil, "/d/a.gz", false},
		{"argument over all", []string{configEnv, file, "COUPON_FILE", "/d/e.gz"}, []string{"/d/a.gz"}, "/d/a.gz", false},
		{"none", nil, nil, "no file given", true},
		{"topic with two files", nil, []string{"--topic", "t", "/d/a.gz", "/d/b.gz"}, "exactly one file", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cleanEnv(t, tc.env...)
			c, err := Parse(tc.args, io.Discard)
			if tc.err {
				if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want a usage error saying %q", err, tc.want)
				}
				return
			}
			if err != nil || strings.Join(c.Files, ",") != tc.want {
				t.Fatalf("files %v, err %v; want %s", c, err, tc.want)
			}
		})
	}
}

// TestValidateQuotesValueAndSource: each message quotes the bad value and
// says where it came from.
func TestValidateQuotesValueAndSource(t *testing.T) {
	for _, tc := range []struct {
		env  []string
		args []string
		want []string
	}{
		{nil, []string{"--partitions", "0"}, []string{"partitions 0", "flag --partitions"}},
		{[]string{"KAFKA_COMPRESSION", "brotli"}, nil, []string{`"brotli"`, "env KAFKA_COMPRESSION"}},
		{[]string{"KAFKA_BROKERS", "kafka"}, nil, []string{`brokers "kafka"`, "env KAFKA_BROKERS", "host:port"}},
		{nil, []string{"--delivery-timeout", "0s"}, []string{"delivery-timeout 0s", "must be positive"}},
		{nil, []string{"--delivery-timeout", "-1s"}, []string{"delivery-timeout -1s"}},
		{nil, []string{"--log-format", "xml"}, []string{`log-format "xml"`}},
		{nil, []string{"--log-level", "loud"}, []string{`log-level "loud"`, "debug, info, warn or error"}},
		{nil, []string{"--max-buffered-bytes", "1024"}, []string{"max-buffered-bytes 1024", "batch-max-bytes 1048576"}},
		{nil, []string{"--tls-cert-file", "/c.pem"}, []string{"tls-key-file", `"/c.pem"`}},
		{nil, []string{"--sasl-mechanism", "GSSAPI", "--sasl-username", "u"}, []string{`"GSSAPI"`}},
		{nil, []string{"--sasl-mechanism", "PLAIN", "--sasl-username", "u"}, []string{"needs a password", passwordEnv}},
		{nil, []string{"--topic", "a/b"}, []string{`"a/b"`}},
		{nil, []string{"--schedule-tz", "Mars/Base"}, []string{`"Mars/Base"`}},
		{nil, []string{"--run-on-start"}, []string{"run-on-start needs schedule"}},
		{[]string{"PUSHGATEWAY_URL", "pushgateway:9091"}, nil, []string{`pushgateway-url "pushgateway:9091"`, "env PUSHGATEWAY_URL", "http://"}},
		{nil, []string{"--checkpoint-percent", "101"}, []string{"checkpoint-percent 101", "flag --checkpoint-percent", "between 0 and 100"}},
		{[]string{"KAFKA_TOPIC_CONFIG", "max.message.bytes=100000,retention.ms=1"}, []string{"--batch-max-bytes", "200000"},
			[]string{"batch-max-bytes 200000 (from flag --batch-max-bytes)", "max.message.bytes 100000 in topic-config (from env KAFKA_TOPIC_CONFIG)"}},
		{nil, []string{"--topic-config", "max.message.bytes=1000"}, []string{"batch-max-bytes 1048576 (from default)", "max.message.bytes 1000"}},
	} {
		t.Run(strings.Join(append(tc.env, tc.args...), " "), func(t *testing.T) {
			cleanEnv(t, tc.env...)
			_, err := Parse(append(tc.args, "/d/a.gz"), io.Discard)
			if !errors.Is(err, ErrUsage) {
				t.Fatalf("err = %v, want a usage error", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err does not say %q: %v", w, err)
				}
			}
		})
	}
}

func TestLogFormatTextIsConsole(t *testing.T) {
	cleanEnv(t, "LOG_FORMAT", "text")
	if c := mustParse(t, "/d/a.gz"); c.LogFormat != "console" {
		t.Fatalf("log-format text became %q, want console", c.LogFormat)
	}
}

func TestTZFallback(t *testing.T) {
	cleanEnv(t, "TZ", "Europe/Berlin")
	if c := mustParse(t, "/d/a.gz"); c.ScheduleTZ != "Europe/Berlin" {
		t.Fatalf("schedule-tz %q, want TZ's Europe/Berlin", c.ScheduleTZ)
	}
	cleanEnv(t, "TZ", "Europe/Berlin", "SCHEDULE_TZ", "Asia/Tokyo")
	if c := mustParse(t, "/d/a.gz"); c.ScheduleTZ != "Asia/Tokyo" {
		t.Fatalf("schedule-tz %q, want SCHEDULE_TZ's Asia/Tokyo", c.ScheduleTZ)
	}
}

const secret = "pa55-W0rd-do-not-print"

func TestPasswordSources(t *testing.T) {
	pwFile := filepath.Join(t.TempDir(), "password")
	os.WriteFile(pwFile, []byte(secret+"\n"), 0o600)
	sasl := []string{"--sasl-mechanism", "SCRAM-SHA-512", "--sasl-username", "u", "/d/a.gz"}

	cleanEnv(t, passwordEnv, secret)
	if c := mustParse(t, sasl...); c.SASLPassword != secret {
		t.Fatalf("password from env not read")
	}
	cleanEnv(t)
	if c := mustParse(t, append([]string{"--sasl-password-file", pwFile}, sasl...)...); c.SASLPassword != secret {
		t.Fatalf("password from file = %q, want it without the trailing newline", c.SASLPassword)
	}
	cleanEnv(t, passwordEnv, secret)
	_, err := Parse(append([]string{"--sasl-password-file", pwFile}, sasl...), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "twice") || strings.Contains(err.Error(), secret) {
		t.Fatalf("password from both: err = %v, want 'twice' without the password", err)
	}
	cleanEnv(t)
	if _, err := Parse([]string{"--sasl-password", secret, "/d/a.gz"}, io.Discard); err == nil || strings.Contains(err.Error(), secret) {
		t.Fatalf("--sasl-password flag: err = %v, want unknown flag without the password", err)
	}
}

// TestPrintConfig: the output is the effective configuration as a YAML
// config file, with the password redacted, and it reads back the same.
func TestPrintConfig(t *testing.T) {
	file := writeFile(t, "brokers: [f:9092]\nclient-id: on\ntopic-config: {retention.ms: 9}\n")
	cleanEnv(t, configEnv, file, passwordEnv, secret, "KAFKA_SASL_MECHANISM", "PLAIN", "KAFKA_SASL_USERNAME", "u")
	c, err := Parse([]string{"--print-config", "--partitions", "3", "/d/couponbase1.gz"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := c.WriteYAML(&out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if strings.Contains(s, secret) {
		t.Fatalf("--print-config shows the password:\n%s", s)
	}
	for _, want := range []string{`sasl-password: "<redacted>" # from env ` + passwordEnv, `partitions: 3 # from flag --partitions`,
		`brokers: ["f:9092"] # from file ` + file, `client-id: "on"`, `file: "/d/couponbase1.gz" # from argument`,
		`compression: "lz4" # from default`} {
		if !strings.Contains(s, want) {
			t.Errorf("--print-config lacks %q:\n%s", want, s)
		}
	}
	// Every key is printed, and the output (without the redacted password)
	// is a config file that gives the same configuration.
	var m map[string]any
	if err := yaml.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if _, ok := m[k.name]; !ok {
			t.Errorf("--print-config lacks key %s", k.name)
		}
	}
	back := writeFile(t, strings.ReplaceAll(s, `sasl-password: "<redacted>"`, ""))
	cleanEnv(t, passwordEnv, secret)
	c2 := mustParse(t, "--config", back)
	if c2.Partitions != 3 || c2.ClientID != "on" || c2.TopicConfigs["retention.ms"] != "9" || c2.SASLMechanism != "PLAIN" ||
		strings.Join(c2.Files, ",") != "/d/couponbase1.gz" || c2.Linger != c.Linger || c2.LogLevel != c.LogLevel {
		t.Fatalf("read back %+v", c2)
	}
}

func TestHelp(t *testing.T) {
	cleanEnv(t)
	var out bytes.Buffer
	if _, err := Parse([]string{"--help"}, &out); !errors.Is(err, ErrHelp) {
		t.Fatalf("err = %v, want ErrHelp", err)
	}
	for _, k := range keys {
		line := "--" + k.name
		if !strings.Contains(out.String(), line) || !strings.Contains(out.String(), "env "+k.env[0]) ||
			!strings.Contains(out.String(), "file key "+k.name) {
			t.Errorf("--help lacks the flag, variable or file key of %s", k.name)
		}
		if k.def != "" && !strings.Contains(out.String(), `default "`+k.def+`"`) {
			t.Errorf("--help lacks the default of %s", k.name)
		}
	}
	for _, w := range []string{configEnv, filesEnv, passwordEnv, "--print-config", "Exit codes"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("--help lacks %s", w)
		}
	}
}

// TestREADMEDocumentsEveryKey keeps the README's table in step with the keys.
func TestREADMEDocumentsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		def := "empty"
		if k.def != "" {
			def = "`" + k.def + "`"
		}
		row := "| `" + k.name + "` | `--" + k.name + "` | `" + strings.Join(k.env, "`, `") + "` | " + def + " |"
		if !strings.Contains(string(b), row) {
			t.Errorf("README has no row starting %q", row)
		}
	}
}
