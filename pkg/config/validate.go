package config

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/couponpipeline/coupon-producer/pkg/kafka"
	"github.com/couponpipeline/coupon-producer/pkg/producer"
)

// Validate checks the configuration; its messages quote the bad value and
// say where it came from. Each check covers a key or keys that go
// together; the first that fails is returned.
func (c *Config) Validate() error {
	for _, check := range []func() error{
		c.checkFiles, c.checkBrokers, c.checkTopicCreation, c.checkProducer, c.checkMaxMessageBytes, c.checkTimeouts,
		c.checkLedger, c.checkLogFormat, c.checkTLS, c.checkSASL, c.checkPushgateway, c.checkSchedule,
	} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// checkFiles: at least one file, and a valid topic for each.
func (c *Config) checkFiles() error {
	if len(c.Files) == 0 {
		return errors.New("no file given: set file (flag --file, env COUPON_FILE, config file key file) or pass FILE arguments")
	}
	if c.Topic != "" && len(c.Files) != 1 {
		return c.bad("topic", c.Topic, "needs exactly one file, got %d", len(c.Files))
	}
	for _, f := range c.Files {
		if err := ValidTopic(c.TopicFor(f)); err != nil {
			src := "topic"
			if c.Topic == "" {
				src = "the base name of file " + f
			}
			return fmt.Errorf("%w (%s)", err, src)
		}
	}
	return nil
}

func (c *Config) checkBrokers() error {
	if len(c.Brokers) == 0 {
		return c.bad("brokers", "", "is empty")
	}
	for _, b := range c.Brokers {
		if _, port, ok := strings.Cut(b, ":"); !ok || port == "" || strings.Contains(b, "/") {
			return c.bad("brokers", b, "is not host:port")
		}
	}
	return nil
}

// checkTopicCreation: partitions and replication-factor, within what a
// CreateTopics request can carry.
func (c *Config) checkTopicCreation() error {
	if c.Partitions < 1 || c.Partitions > 1<<20 {
		return c.bad("partitions", c.Partitions, "is not between 1 and %d", 1<<20)
	}
	if c.ReplicationFactor == 0 || c.ReplicationFactor < -1 || c.ReplicationFactor > 32767 {
		return c.bad("replication-factor", c.ReplicationFactor, "is neither -1 nor between 1 and 32767")
	}
	return nil
}

// checkProducer: the engine's options, with the engine's limits.
func (c *Config) checkProducer() error {
	if err := kafka.CheckCompression(c.Compression); err != nil {
		return fmt.Errorf("%w (from %s)", err, c.from("compression"))
	}
	if c.Linger < 0 || c.Linger > time.Minute {
		return c.bad("linger", c.Linger, "is not between 0 and 1m")
	}
	if c.BatchMaxBytes < producer.MinBatchMaxBytes || c.BatchMaxBytes > producer.MaxBatchMaxBytes {
		return c.bad("batch-max-bytes", c.BatchMaxBytes, "is not between %d and %d", producer.MinBatchMaxBytes, producer.MaxBatchMaxBytes)
	}
	if c.MaxBufferedBytes < c.BatchMaxBytes {
		return c.bad("max-buffered-bytes", c.MaxBufferedBytes, "is less than one batch of batch-max-bytes %d", c.BatchMaxBytes)
	}
	return nil
}

func (c *Config) checkTimeouts() error {
	for _, k := range []struct {
		name string
		d    time.Duration
	}{{"connect-timeout", c.ConnectTimeout}, {"delivery-timeout", c.DeliveryTimeout}, {"shutdown-timeout", c.ShutdownTimeout}} {
		if k.d <= 0 {
			return c.bad(k.name, k.d, "must be positive: nothing may wait forever")
		}
	}
	if c.ProgressInterval < 0 {
		return c.bad("progress-interval", c.ProgressInterval, "is negative")
	}
	return nil
}

func (c *Config) checkLedger() error {
	if c.LedgerTopic != "" {
		if err := ValidTopic(c.LedgerTopic); err != nil {
			return fmt.Errorf("%w (from %s)", err, c.from("ledger-topic"))
		}
	}
	if c.CheckpointInterval < 100*time.Millisecond || c.CheckpointInterval > 10*time.Minute {
		return c.bad("checkpoint-interval", c.CheckpointInterval, "is not between 100ms and 10m")
	}
	if c.CheckpointPercent < 0 || c.CheckpointPercent > 100 {
		return c.bad("checkpoint-percent", c.CheckpointPercent, "is not between 0 and 100")
	}
	return nil
}

func (c *Config) checkLogFormat() error {
	switch c.LogFormat {
	case "", "json", "console":
		return nil
	default:
		return c.bad("log-format", c.LogFormat, "is neither json nor console")
	}
}

func (c *Config) checkTLS() error {
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return fmt.Errorf("mutual TLS needs both tls-cert-file %q (from %s) and tls-key-file %q (from %s)",
			c.TLSCertFile, c.from("tls-cert-file"), c.TLSKeyFile, c.from("tls-key-file"))
	}
	return nil
}

func (c *Config) checkSASL() error {
	switch strings.ToUpper(c.SASLMechanism) {
	case "":
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if c.SASLUsername == "" {
			return c.bad("sasl-mechanism", c.SASLMechanism, "needs sasl-username")
		}
		if c.SASLPassword == "" {
			return c.bad("sasl-mechanism", c.SASLMechanism, "needs a password: env %s or sasl-password-file", passwordEnv)
		}
	default:
		return c.bad("sasl-mechanism", c.SASLMechanism, "is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
	}
	return nil
}

func (c *Config) checkPushgateway() error {
	if c.PushgatewayURL != "" {
		if u, err := url.Parse(c.PushgatewayURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return c.bad("pushgateway-url", c.PushgatewayURL, "is not an http:// or https:// URL")
		}
	}
	return nil
}

func (c *Config) checkSchedule() error {
	if c.RunOnStart && c.Schedule == "" {
		return errors.New("run-on-start needs schedule")
	}
	if _, err := time.LoadLocation(c.ScheduleTZ); err != nil {
		return c.bad("schedule-tz", c.ScheduleTZ, "is not a time zone: %v", err)
	}
	return nil
}
