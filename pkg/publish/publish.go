// Package publish sends codes to Kafka and accounts for every one of them.
//
// Each code becomes one record whose key and value are both the code, so the
// default partitioner (murmur2 of the key, as in the Java client) places equal
// codes in the same partition. Records are produced asynchronously by an
// idempotent franz-go client with acks=all; every acknowledgement and every
// failure is counted, and Stream.Finish reports whether all were delivered.
package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/plugin/kslog"
)

// Config is how to reach Kafka and how to produce.
type Config struct {
	Brokers           []string
	ClientID          string
	Partitions        int32             // for topics this client creates
	ReplicationFactor int16             // -1: the broker's default.replication.factor
	TopicConfigs      map[string]string // for topics this client creates
	Compression       string            // none, gzip, snappy, lz4 or zstd
	Linger            time.Duration
	BatchMaxBytes     int32
	MaxBuffered       int // records in flight or waiting, across partitions
	ConnectTimeout    time.Duration
	DeliveryTimeout   time.Duration // 0: retry until Finish's context ends
	Extra             []kgo.Opt     // security options (TLS, SASL)
	Logger            *slog.Logger
}

// clientLogger is the logger franz-go logs through: its informational lines
// (metadata updates, flushing) are noise next to the producer's own, so they
// show only when the producer's logger is at debug level.
func clientLogger(l *slog.Logger) *slog.Logger {
	if l.Enabled(context.Background(), slog.LevelDebug) {
		return l
	}
	return slog.New(minLevel{l.Handler(), slog.LevelWarn})
}

type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}

// Codecs maps the --compression names to franz-go codecs.
var Codecs = map[string]kgo.CompressionCodec{
	"none":   kgo.NoCompression(),
	"gzip":   kgo.GzipCompression(),
	"snappy": kgo.SnappyCompression(),
	"lz4":    kgo.Lz4Compression(),
	"zstd":   kgo.ZstdCompression(),
}

// ErrUndelivered is returned by Finish when some codes were not acknowledged.
var ErrUndelivered = errors.New("codes not delivered")

// Publisher is a connection to a Kafka cluster shared by the files of a run.
type Publisher struct {
	cfg    Config
	client *kgo.Client
	adm    *kadm.Client

	connectOnce sync.Once
	connectErr  error
}

// New builds a publisher. It does not touch the network: Connect does.
func New(cfg Config) (*Publisher, error) {
	codec, ok := Codecs[cfg.Compression]
	if !ok {
		return nil, fmt.Errorf("unknown compression %q", cfg.Compression)
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(codec),
		kgo.ProducerLinger(cfg.Linger),
		kgo.ProducerBatchMaxBytes(cfg.BatchMaxBytes),
		kgo.MaxBufferedRecords(cfg.MaxBuffered),
		// murmur2 of the key: the Java client's default partitioner.
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.WithLogger(kslog.New(clientLogger(cfg.Logger))),
	}
	if cfg.DeliveryTimeout > 0 {
		opts = append(opts, kgo.RecordDeliveryTimeout(cfg.DeliveryTimeout))
	}
	opts = append(opts, cfg.Extra...)
	client, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, err
	}
	return &Publisher{cfg: cfg, client: client, adm: kadm.NewClient(client)}, nil
}

// Connect checks that a broker answers within ConnectTimeout. It dials only
// once: later calls return the first call's result.
func (p *Publisher) Connect(ctx context.Context) error {
	p.connectOnce.Do(func() {
		ctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
		defer cancel()
		// A broker that is still starting refuses connections: keep trying
		// until the timeout, as a container started next to Kafka needs.
		for backoff := 100 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
			err := p.client.Ping(ctx)
			if err == nil {
				return
			}
			if Permanent(err) {
				p.connectErr = fmt.Errorf("kafka at %s refuses the connection: %w", strings.Join(p.cfg.Brokers, ","), err)
				return
			}
			p.cfg.Logger.Debug("brokers not reachable yet", "brokers", p.cfg.Brokers, "err", err)
			select {
			case <-ctx.Done():
				p.connectErr = fmt.Errorf("cannot reach Kafka at %s within %s: %w",
					strings.Join(p.cfg.Brokers, ","), p.cfg.ConnectTimeout, err)
				return
			case <-time.After(backoff):
			}
		}
	})
	return p.connectErr
}

// EnsureTopic creates topic with the configured partitions, replication
// factor and configs if it does not exist, and waits until every partition
// has a leader. An existing topic is used as it is.
func (p *Publisher) EnsureTopic(ctx context.Context, topic string) error {
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
		p.cfg.Logger.Info("created topic", "topic", topic, "partitions", resp.NumPartitions,
			"replication_factor", resp.ReplicationFactor)
	}
	return p.waitLeaders(ctx, topic)
}

// waitLeaders polls metadata until every partition of topic has a leader, so
// that the first records are not failed as produced to an unknown topic. It
// asks the brokers directly: kadm answers from a cache that still holds the
// topic as unknown for a few seconds.
func (p *Publisher) waitLeaders(ctx context.Context, topic string) error {
	req := kmsg.NewPtrMetadataRequest()
	rt := kmsg.NewMetadataRequestTopic()
	rt.Topic = kmsg.StringPtr(topic)
	req.Topics = append(req.Topics, rt)
	for backoff := 20 * time.Millisecond; ; backoff = min(2*backoff, time.Second) {
		if resp, err := req.RequestWith(ctx, p.client); err == nil && allLed(resp) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s has no leader for every partition: %w", topic, ctx.Err())
		case <-time.After(backoff):
		}
	}
}

func allLed(resp *kmsg.MetadataResponse) bool {
	if len(resp.Topics) != 1 || resp.Topics[0].ErrorCode != 0 || len(resp.Topics[0].Partitions) == 0 {
		return false
	}
	for _, pd := range resp.Topics[0].Partitions {
		if pd.ErrorCode != 0 || pd.Leader < 0 {
			return false
		}
	}
	return true
}

// PartitionCount returns the number of partitions of topic.
func (p *Publisher) PartitionCount(ctx context.Context, topic string) (int, error) {
	details, err := p.adm.ListTopics(ctx, topic)
	if err != nil {
		return 0, err
	}
	d, ok := details[topic]
	if !ok {
		return 0, kerr.UnknownTopicOrPartition
	}
	return len(d.Partitions), d.Err
}

// Client returns the publisher's franz-go client, for producers that build
// their own requests (package batch). It is configured with acks=all.
func (p *Publisher) Client() *kgo.Client { return p.client }

// Close flushes nothing: call Stream.Finish first. Records still buffered
// are failed, and their promises run before Close returns.
func (p *Publisher) Close() { p.client.Close() }

// Stream produces the codes of one file to one topic.
type Stream struct {
	p      *Publisher
	topic  string
	ctx    context.Context
	arena  []byte
	sent   atomic.Int64
	acked  atomic.Int64
	failed atomic.Int64

	errMu    sync.Mutex
	firstErr error

	promise func(*kgo.Record, error)
}

// arenaSize is the size of each block the codes are copied into. A block is
// freed once no buffered record points into it.
const arenaSize = 64 << 10

var recordPool = sync.Pool{New: func() any { return new(kgo.Record) }}

// Stream starts producing to topic. Produce calls that wait for buffer space
// give up when ctx ends, and the codes they carry count as failed.
func (p *Publisher) Stream(ctx context.Context, topic string) *Stream {
	s := &Stream{p: p, topic: topic, ctx: ctx}
	s.promise = s.done
	return s
}

// Write produces one code. It copies code, so the caller may reuse its
// buffer at once. It blocks while the client buffers MaxBuffered records.
func (s *Stream) Write(code []byte) error {
	if len(s.arena) < len(code) {
		s.arena = make([]byte, arenaSize)
	}
	n := copy(s.arena, code)
	owned := s.arena[:n:n]
	s.arena = s.arena[n:]

	r := recordPool.Get().(*kgo.Record)
	r.Topic = s.topic
	r.Key = owned
	r.Value = owned
	s.sent.Add(1)
	s.p.client.Produce(s.ctx, r, s.promise)
	return nil
}

func (s *Stream) done(r *kgo.Record, err error) {
	if err != nil {
		if s.failed.Add(1) == 1 {
			s.errMu.Lock()
			s.firstErr = err
			s.errMu.Unlock()
		}
	} else {
		s.acked.Add(1)
	}
	*r = kgo.Record{}
	recordPool.Put(r)
}

// Delivery counts the fate of a stream's codes.
type Delivery struct {
	Sent      int64 // handed to the client
	Delivered int64 // acknowledged by the broker
	Failed    int64 // failed, or not acknowledged when Finish returned
}

// Finish waits until every code written is acknowledged or failed, or ctx
// ends. A code not acknowledged by then counts as failed. The error wraps
// ErrUndelivered and the first delivery error when any code failed.
func (s *Stream) Finish(ctx context.Context) (Delivery, error) {
	flushErr := s.p.client.Flush(ctx)
	d := Delivery{Sent: s.sent.Load(), Delivered: s.acked.Load()}
	d.Failed = d.Sent - d.Delivered
	if d.Failed == 0 {
		return d, nil
	}
	s.errMu.Lock()
	cause := s.firstErr
	s.errMu.Unlock()
	if cause == nil {
		cause = flushErr
	}
	return d, fmt.Errorf("%d of %d %w to topic %s: %w", d.Failed, d.Sent, ErrUndelivered, s.topic, cause)
}
