package config

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestDefaults(t *testing.T) {
	c, err := Parse([]string{"/data/couponbase1.gz"}, env(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Brokers, ",") != "localhost:9092" || c.Partitions != DefaultPartitions ||
		c.ReplicationFactor != -1 || c.Compression != "lz4" || c.ConnectTimeout != 30*time.Second ||
		c.ShutdownTimeout != 10*time.Second || c.ProgressInterval != 10*time.Second || c.ScheduleTZ != "UTC" {
		t.Fatalf("defaults %+v", c)
	}
	if got := c.TopicFor(c.Files[0]); got != "couponbase1.gz" {
		t.Fatalf("topic %q, want the base name", got)
	}
}

func TestEnvThenFlags(t *testing.T) {
	e := env("KAFKA_BROKERS", "k1:9092, k2:9092", "KAFKA_PARTITIONS", "12", "DRY_RUN", "true",
		"KAFKA_TOPIC_CONFIG", "retention.ms=1000,cleanup.policy=delete", "LOG_LEVEL", "debug",
		"COUPON_FILES", "/d/a.gz, /d/b.gz", "TZ", "Europe/Berlin")
	c, err := Parse(nil, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Brokers, ",") != "k1:9092,k2:9092" || c.Partitions != 12 || !c.DryRun ||
		c.TopicConfigs["retention.ms"] != "1000" || c.TopicConfigs["cleanup.policy"] != "delete" ||
		c.LogLevel != slog.LevelDebug || strings.Join(c.Files, ",") != "/d/a.gz,/d/b.gz" || c.ScheduleTZ != "Europe/Berlin" {
		t.Fatalf("from env: %+v", c)
	}
	// A flag wins over its variable; a repeatable flag replaces the env list;
	// FILE arguments replace COUPON_FILES.
	c, err = Parse([]string{"--brokers", "k3:9092", "--partitions=3", "--dry-run=false",
		"--topic-config", "retention.ms=5", "/d/c.gz"}, e, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Brokers, ",") != "k3:9092" || c.Partitions != 3 || c.DryRun ||
		len(c.TopicConfigs) != 1 || c.TopicConfigs["retention.ms"] != "5" || strings.Join(c.Files, ",") != "/d/c.gz" {
		t.Fatalf("flags over env: %+v", c)
	}
}

func TestInvalid(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  func(string) string
		want string
	}{
		{[]string{}, env(), "no FILE"},
		{[]string{"--partitions", "0", "f.gz"}, env(), "--partitions 0"},
		{[]string{"--replication-factor", "0", "f.gz"}, env(), "--replication-factor 0"},
		{[]string{"--compression", "lzma", "f.gz"}, env(), `"lzma"`},
		{[]string{"--linger", "2m", "f.gz"}, env(), "--linger 2m0s"},
		{[]string{"--connect-timeout", "0s", "f.gz"}, env(), "--connect-timeout"},
		{[]string{"--log-format", "xml", "f.gz"}, env(), `"xml"`},
		{[]string{"--sasl-mechanism", "PLAIN", "f.gz"}, env(), "--sasl-username"},
		{[]string{"--sasl-mechanism", "GSSAPI", "f.gz"}, env(), `"GSSAPI"`},
		{[]string{"--run-on-start", "f.gz"}, env(), "--schedule"},
		{[]string{"--schedule-tz", "Mars/Olympus", "f.gz"}, env(), "Mars/Olympus"},
		{[]string{"--topic-config", "novalue", "f.gz"}, env(), "key=value"},
		{[]string{"f.gz"}, env("KAFKA_CONNECT_TIMEOUT", "soon"), "KAFKA_CONNECT_TIMEOUT"},
		{[]string{"f.gz"}, env("DRY_RUN", "maybe"), "DRY_RUN"},
		{[]string{"f.gz"}, env("LOG_LEVEL", "loud"), "LOG_LEVEL"},
		{[]string{"f.gz"}, env("KAFKA_BROKERS", "http://k:9092/"), "not host:port"},
	} {
		_, err := Parse(tc.args, tc.env, io.Discard)
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want a usage error quoting %s", tc.args, err, tc.want)
		}
	}
}

func TestValidTopic(t *testing.T) {
	for name, ok := range map[string]bool{
		"couponbase1.gz": true, "a": true, "A-b_c.9": true, strings.Repeat("x", 249): true,
		"": false, ".": false, "..": false, strings.Repeat("x", 250): false,
		"a b": false, "a/b": false, "é": false, "a:b": false,
	} {
		if err := ValidTopic(name); (err == nil) != ok {
			t.Errorf("ValidTopic(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

func TestHelp(t *testing.T) {
	var out strings.Builder
	_, err := Parse([]string{"--help"}, env(), &out)
	if !errors.Is(err, ErrHelp) {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(out.String(), "--connect-timeout DURATION") || !strings.Contains(out.String(), "env KAFKA_CONNECT_TIMEOUT, default \"30s\"") {
		t.Fatalf("usage:\n%s", out.String())
	}
}
