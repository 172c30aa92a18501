package kafka

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/plugin/kzap"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// DefaultPartitions is the partitions of a topic the producer creates,
// unless configured: several, so that a topic spreads over brokers and
// consumers, and a multiple of 1, 2 and 3.
const DefaultPartitions = 6

// Config is how to reach Kafka and how to create topics.
type Config struct {
	Brokers           []string
	ClientID          string
	Partitions        int32             // for topics this client creates
	ReplicationFactor int16             // -1: the broker's default.replication.factor
	TopicConfigs      map[string]string // for topics this client creates
	ConnectTimeout    time.Duration
	// RecordTimeout bounds each record written through franz-go's own
	// producer (the run ledger's); 0: the delivery timeout's default.
	RecordTimeout time.Duration
	Security      Security
	Logger        *zap.Logger // nil: no logs
}

// clientLogger is the logger franz-go logs through: its informational lines
// (metadata updates, connections) are noise next to the producer's own, so
// they show only when the producer logs at debug level; its warnings and
// errors always show.
func clientLogger(l *zap.Logger) kgo.Logger {
	level := kgo.LogLevelWarn
	if l.Core().Enabled(zapcore.DebugLevel) {
		level = kgo.LogLevelDebug
	}
	return kzap.New(l.Named("kgo"), kzap.Level(level))
}

// Conn is a connection to a Kafka cluster shared by the files of a run.
type Conn struct {
	cfg    Config
	log    *zap.Logger
	client *kgo.Client
	adm    *kadm.Client

	connectOnce sync.Once
	connectErr  error
}

// New builds a publisher. It reads the TLS files but does not touch the
// network: Connect does.
func New(cfg Config) (*Conn, error) {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	sec, err := cfg.Security.opts(log)
	if err != nil {
		return nil, err
	}
	recordTimeout := cfg.RecordTimeout
	if recordTimeout <= 0 {
		recordTimeout = 2 * time.Minute
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		// The engine's idempotent producer needs every in-sync replica's
		// acknowledgement, and franz-go rewrites the acks of a raw produce
		// request to the client's.
		kgo.RequiredAcks(kgo.AllISRAcks()),
		// franz-go's own producer writes only the run ledger's records,
		// one at a time (the engine builds its own idempotent requests).
		// Not idempotent, a record can always be failed when its context
		// or RecordTimeout ends; an idempotent batch whose fate is unknown
		// may not be, and would wait for a leader that may never come back.
		// A ledger record written twice is harmless.
		kgo.DisableIdempotentWrite(),
		kgo.RecordDeliveryTimeout(recordTimeout),
		kgo.WithLogger(clientLogger(log)),
	}
	client, err := kgo.NewClient(append(opts, sec...)...)
	if err != nil {
		return nil, err
	}
	return &Conn{cfg: cfg, log: log, client: client, adm: kadm.NewClient(client)}, nil
}

// Connect checks that a broker answers within ConnectTimeout. It dials only
// once: later calls return the first call's result.
func (p *Conn) Connect(ctx context.Context) error {
	p.connectOnce.Do(func() {
		ctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
		defer cancel()
		// A broker that is still starting refuses connections: keep trying
		// until the timeout, as a container started next to Kafka needs.
		for attempt := 1; ; attempt++ {
			err := p.client.Ping(ctx)
			if err == nil {
				return
			}
			if Permanent(err) {
				p.connectErr = p.cfg.Security.refusal(strings.Join(p.cfg.Brokers, ","), err)
				return
			}
			p.log.Debug("brokers not reachable yet", zap.Strings("brokers", p.cfg.Brokers), zap.NamedError("err", err))
			select {
			case <-ctx.Done():
				p.connectErr = fmt.Errorf("cannot reach Kafka at %s within %s: %w",
					strings.Join(p.cfg.Brokers, ","), p.cfg.ConnectTimeout, err)
				return
			case <-time.After(Backoff(attempt)):
			}
		}
	})
	return p.connectErr
}

// EnsureTopic creates topic with the configured partitions, replication
// factor and configs if it does not exist, and waits until every partition
// has a leader. An existing topic is used as it is.
func (p *Conn) EnsureTopic(ctx context.Context, topic string) error {
	if err := p.Connect(ctx); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	defer cancel()
	details, err := p.adm.ListTopics(ctx, topic)
	if err != nil {
		return fmt.Errorf("describe topic %s: %w", topic, err)
	}
	if d, ok := details[topic]; ok && d.Err == nil {
		return nil
	} else if ok && !errors.Is(d.Err, kerr.UnknownTopicOrPartition) {
		return fmt.Errorf("describe topic %s: %w", topic, d.Err)
	}
	configs := make(map[string]*string, len(p.cfg.TopicConfigs))
	for k, v := range p.cfg.TopicConfigs {
		configs[k] = &v
	}
	resp, err := p.adm.CreateTopic(ctx, p.cfg.Partitions, p.cfg.ReplicationFactor, configs, topic)
	if err == nil {
		err = resp.Err
	}
	switch {
	case errors.Is(err, kerr.TopicAlreadyExists):
		// Created by someone else meanwhile: use it as it is.
	case err != nil:
		return fmt.Errorf("create topic %s: %w", topic, err)
	default:
		p.log.Info("created topic", zap.String("topic", topic), zap.Int32("partitions", resp.NumPartitions),
			zap.Int16("replication_factor", resp.ReplicationFactor))
	}
	return p.waitLeaders(ctx, topic)
}

// waitLeaders polls metadata until every partition of topic has a leader, so
// that the first batches are not refused for an unknown topic.
func (p *Conn) waitLeaders(ctx context.Context, topic string) error {
	for attempt := 1; ; attempt++ {
		t, err := TopicMetadata(ctx, p.client, topic)
		if err == nil && allLed(t) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s has no leader for every partition: %w", topic, ctx.Err())
		case <-time.After(Backoff(attempt)):
		}
	}
}

func allLed(t *kmsg.MetadataResponseTopic) bool {
	for _, pd := range t.Partitions {
		if pd.ErrorCode != 0 || pd.Leader < 0 {
			return false
		}
	}
	return true
}

// Client returns the publisher's franz-go client, for the engine, which
// builds its own produce requests. It is configured with acks=all.
func (p *Conn) Client() *kgo.Client { return p.client }

// Close closes the connections. Finish the engine's streams first.
func (p *Conn) Close() { p.client.Close() }
