// Package producer is the engine: it publishes the codes of one file to one
// topic by encoding the Kafka record batches itself, while a franz-go
// client (package kafka's Conn) still handles the connections, metadata,
// TLS and SASL.
//
// franz-go's per-record path (a Produce call, a promise, size accounting and
// encoding for every record) costs about half the CPU of a run. Here a code
// is appended straight into its partition's RecordBatch buffer, with no
// allocation, and a single sender goroutine compresses, seals and sends whole
// batches as an idempotent producer with acks=all:
//
//   - Each code goes to the partition the Java client would choose for its
//     key (murmur2), as the kgo path does.
//   - lz4 batches are encoded by appendLZ4, which knows that a record's
//     value is its key; gzip, snappy and zstd go through franz-go's
//     compressor.
//   - At most one batch per partition is in flight; the next one waits for
//     its answer. Batches of several partitions share a request, and the
//     requests to a broker are pipelined.
//   - A retryable failure resends the same bytes with the same producer ID
//     and sequence, so the broker keeps exactly one copy.
//   - When the broker has lost track of the producer (OUT_OF_ORDER_SEQUENCE,
//     UNKNOWN_PRODUCER_ID, INVALID_PRODUCER_EPOCH), or a batch fails after
//     an attempt whose outcome is unknown (a lost connection, a timeout),
//     that batch counts as failed and the stream takes a new producer ID
//     for the batches that follow: reusing the old sequence could make the
//     broker take a new batch for a duplicate of the unknown one. Batches
//     of the partition not sent yet are not failed: they were never stamped
//     with the old producer ID. A batch refused for good at its first
//     attempt (say TOPIC_AUTHORIZATION_FAILED) was not written, and the
//     next batch takes its sequence, as the Java client does.
//
// Every code is counted: Finish reports how many were acknowledged, and the
// others as failed.
package producer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/couponpipeline/coupon-producer/pkg/kafka"
)

// Defaults for the zero values of Options.
const (
	DefaultCompression      = "lz4"
	DefaultBatchMaxBytes    = 1 << 20
	DefaultMaxBufferedBytes = 16 << 20
)

// Limits of Options.BatchMaxBytes, checked by Options.validate.
const (
	MinBatchMaxBytes = 1 << 10
	MaxBatchMaxBytes = 64 << 20
)

// produceTimeout is how long the broker may wait for the in-sync replicas
// before it answers REQUEST_TIMED_OUT; it is franz-go's default. The client
// waits that long plus its own request overhead for an answer.
const produceTimeout = 10 * time.Second

// ErrBatchTooLarge is returned by New when BatchMaxBytes is more than the
// topic's max.message.bytes: the broker would refuse every full batch.
var ErrBatchTooLarge = errors.New("batch max bytes more than the topic accepts")

// ErrAcks is returned by New for a client not configured with acks=all:
// the idempotent producer needs every in-sync replica's acknowledgement.
var ErrAcks = errors.New("kafka client must be configured with acks=all")

// Options tune a Stream. A zero Compression, BatchMaxBytes or
// MaxBufferedBytes takes its default.
type Options struct {
	// Compression is none, gzip, snappy, lz4 or zstd (the keys of
	// kafka.Codecs); empty: lz4.
	Compression string
	// Linger is how long a partition's batch waits for more codes before it
	// is sent; 0 sends at once. A partition's batch keeps filling while the
	// one before it is in flight.
	Linger time.Duration
	// BatchMaxBytes bounds a batch before compression (and so after). It
	// must not exceed the topic's max.message.bytes.
	BatchMaxBytes int32
	// MaxBufferedBytes bounds the batch buffers held across partitions,
	// filling, waiting or in flight; Write waits for space beyond it. One
	// buffer is BatchMaxBytes, so it should be at least two per partition
	// for full speed.
	MaxBufferedBytes int
	// DeliveryTimeout is how long after its first code a batch may be
	// retried before its codes count as failed; it must be positive. A
	// batch in flight fails only once its request ends.
	DeliveryTimeout time.Duration
	Logger          *zap.Logger
}

func (o *Options) defaults() {
	if o.Compression == "" {
		o.Compression = DefaultCompression
	}
	if o.BatchMaxBytes == 0 {
		o.BatchMaxBytes = DefaultBatchMaxBytes
	}
	if o.MaxBufferedBytes == 0 {
		o.MaxBufferedBytes = DefaultMaxBufferedBytes
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
}

func (o *Options) validate() error {
	switch {
	case o.BatchMaxBytes < MinBatchMaxBytes:
		return fmt.Errorf("batch max bytes %d is less than min acceptable %d", o.BatchMaxBytes, MinBatchMaxBytes)
	case o.BatchMaxBytes > MaxBatchMaxBytes:
		return fmt.Errorf("batch max bytes %d is more than max acceptable %d", o.BatchMaxBytes, MaxBatchMaxBytes)
	case o.MaxBufferedBytes < int(o.BatchMaxBytes):
		return fmt.Errorf("max buffered bytes %d is less than one batch of %d bytes", o.MaxBufferedBytes, o.BatchMaxBytes)
	case o.Linger < 0:
		return fmt.Errorf("linger %s is negative", o.Linger)
	case o.DeliveryTimeout <= 0:
		return fmt.Errorf("delivery timeout %s is not positive: a batch could be retried forever", o.DeliveryTimeout)
	}
	return kafka.CheckCompression(o.Compression)
}

// Stream produces the codes of one file to one topic. Write is called from
// one goroutine; Finish must be called once, after the last Write, to stop
// the stream's goroutine.
type Stream struct {
	cl      *kgo.Client
	topic   string
	topicID [16]byte
	o       Options
	codec   kgo.Compressor // nil: no compression
	// batchSize is the size of a batch buffer: BatchMaxBytes, or less
	// for many partitions.
	batchSize int
	log       *zap.Logger
	// timestampBounds are the topic's, for the message of a refusal.
	timestampBounds string

	writeCtx context.Context    // Write stops waiting for space when it ends
	stopWait func() bool        // unregisters the wake-up of Write on writeCtx
	ctx      context.Context    // requests; canceled when Finish gives up
	cancel   context.CancelFunc //
	wake     chan struct{}      // something changed for the sender
	results  chan result        // answers to produce requests
	done     chan struct{}      // closed when the sender has stopped

	// Owned by the sender goroutine.
	scratch     bytes.Buffer // compression output
	outstanding int          // requests in flight
	pid         int64        // current producer ID and epoch
	pidEpoch    int16
	needPID     bool // a new producer ID is needed before stamping batches
	needMeta    bool // leaders must be looked up again
	retryPID    time.Time
	retryMeta   time.Time

	mu        sync.Mutex
	space     sync.Cond // signaled when a buffer is freed or writeCtx ends
	parts     []partition
	free      [][]byte // batch buffers to reuse
	allocated int      // bytes of batch buffers, in use or free
	starved   bool     // Write waits for a buffer: send batches without lingering
	flushing  bool     // Finish was called: send every batch without lingering
	sent      int64    // codes written
	delivered int64    // codes acknowledged
	failedAt  int64    // index of the first code that failed; math.MaxInt64: none
	firstErr  error    // the cause of the first failed code
	stopped   error    // a failure retrying cannot fix: every code fails

	acked func(*batch) // tests: called with s.mu held for each acknowledged batch

	// See Resume: per partition, the codes written before this index are
	// dropped; nil: none. skipped counts them (they are in sent).
	resume  []int64
	skipped int64
}

// partition is the state of one partition. open and queue are guarded by
// Stream.mu; the rest is the sender's.
type partition struct {
	id     int32
	leader int32    // -1: unknown
	open   *batch   // the batch codes are appended to
	queue  []*batch // closed batches, oldest first; queue[0] may be in flight
	busy   bool     // queue[0] is in flight

	// Offsets of the first and last acknowledged records; -1: none yet.
	firstOffset, lastOffset int64

	// The sequence of the next batch for the producer ID it was counted
	// under. A new producer ID starts again at 0.
	pid      int64
	pidEpoch int16
	seq      int32
}

// New starts a stream to topic, which must exist. It looks up the topic's
// partitions and leaders and gets a producer ID through cl, which must use
// acks=all (franz-go's default, and kafka.New's setting). Write gives up
// waiting for buffer space when ctx ends; sending goes on until Finish
// returns.
func New(ctx context.Context, cl *kgo.Client, topic string, o Options) (*Stream, error) {
	o.defaults()
	if err := o.validate(); err != nil {
		return nil, err
	}
	// franz-go rewrites the acks of a raw produce request to the client's.
	if acks, _ := cl.OptValue(kgo.RequiredAcks).(kgo.Acks); acks != kgo.AllISRAcks() {
		return nil, ErrAcks
	}
	codec, err := compressor(o.Compression)
	if err != nil {
		return nil, err
	}
	s := &Stream{
		cl:       cl,
		topic:    topic,
		o:        o,
		codec:    codec,
		log:      o.Logger.With(zap.String("topic", topic)),
		writeCtx: ctx,
		wake:     make(chan struct{}, 1),
		done:     make(chan struct{}),
		failedAt: math.MaxInt64,
	}
	s.space.L = &s.mu
	meta, err := s.metadata(ctx)
	if err != nil {
		return nil, err
	}
	s.topicID = meta.TopicID
	s.parts = make([]partition, len(meta.Partitions))
	for i := range s.parts {
		s.parts[i] = partition{id: int32(i), leader: -1, pid: -1, firstOffset: -1, lastOffset: -1}
	}
	s.setLeaders(meta)
	// Each partition holds a batch filling and one in flight. When that
	// many full-size buffers do not fit in MaxBufferedBytes (a topic of
	// many partitions), Write would wait for space all the time and the
	// sender would send near-empty batches to make room: smaller batches
	// keep them full.
	s.batchSize = min(int(o.BatchMaxBytes), max(MinBatchMaxBytes, o.MaxBufferedBytes/(2*len(s.parts))))
	if err := s.checkMaxMessageBytes(ctx); err != nil {
		return nil, err
	}
	s.timestampBounds = s.describeTimestampBounds(ctx)
	if s.pid, s.pidEpoch, err = s.initProducerID(ctx); err != nil {
		return nil, err
	}
	// At most one request per partition is in flight, so answers never wait.
	s.results = make(chan result, len(s.parts))
	s.ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.stopWait = context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.space.Broadcast()
		s.mu.Unlock()
	})
	go s.run()
	return s, nil
}

// compressor returns the compressor of a codec name; nil for none.
func compressor(name string) (kgo.Compressor, error) {
	if name == "lz4" {
		return lz4Records{}, nil
	}
	return kgo.DefaultCompressor(kafka.Codecs[name])
}

// Write appends one code to its partition's batch. It copies code, so the
// caller may reuse its buffer at once. It blocks while MaxBufferedBytes are
// held, and returns the context's error if the context passed to New ends
// meanwhile; that code then counts as failed.
func (s *Stream) Write(code []byte) error {
	p := &s.parts[partitionFor(code, len(s.parts))]
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent++
	if s.stopped != nil {
		s.failedAt = min(s.failedAt, s.sent-1) // the code is in no batch
		return s.stopped
	}
	if s.resume != nil && s.sent <= s.resume[p.id] {
		s.skipped++ // delivered by an earlier run
		return nil
	}
	b := p.open
	if b == nil || !b.fits(len(code)) {
		var err error
		if b, err = s.rotate(p, len(code)); err != nil {
			// The code counts as sent and failed, with its cause, and
			// is in no batch.
			s.failedAt = min(s.failedAt, s.sent-1)
			err = fmt.Errorf("partition %d: code not buffered: %w", p.id, err)
			s.setErr(err)
			return err
		}
	}
	b.add(code)
	return nil
}

// rotate queues p's full batch, if any, and opens a new one. It is Write's
// slow path, once per batch.
func (s *Stream) rotate(p *partition, n int) (*batch, error) {
	if headerSize+recordSize(n, 0) > s.batchSize {
		return nil, fmt.Errorf("code of %d bytes does not fit in a batch of %d bytes", n, s.batchSize)
	}
	if p.open != nil {
		p.queue = append(p.queue, p.open)
		p.open = nil
	}
	size := s.batchSize
	for len(s.free) == 0 && s.allocated+size > s.o.MaxBufferedBytes {
		if err := s.writeCtx.Err(); err != nil {
			return nil, err
		}
		if s.stopped != nil {
			return nil, s.stopped
		}
		s.starved = true
		s.kick()
		s.space.Wait()
	}
	s.starved = false
	var buf []byte
	if k := len(s.free); k > 0 {
		buf, s.free = s.free[k-1], s.free[:k-1]
	} else {
		buf = make([]byte, 0, size)
		s.allocated += size
	}
	now := time.Now()
	p.open = &batch{part: p.id, buf: buf[:headerSize], first: s.sent - 1, created: now, deadline: now.Add(s.o.DeliveryTimeout)}
	// The sender sends the closed batch or starts the new one's linger.
	s.kick()
	return p.open, nil
}

// release returns b's buffer for reuse. s.mu is held.
func (s *Stream) release(b *batch) {
	s.free = append(s.free, b.buf[:0])
	b.buf = nil
	s.space.Signal()
}

// kick wakes the sender without waiting.
func (s *Stream) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Finish sends the codes still buffered and waits until every code is
// acknowledged or failed, or ctx ends. A code not acknowledged by then
// counts as failed. The error wraps kafka.ErrUndelivered and the first
// delivery error when any code failed. The stream cannot be used after.
func (s *Stream) Finish(ctx context.Context) (kafka.Delivery, error) {
	s.mu.Lock()
	s.flushing = true
	s.mu.Unlock()
	s.kick()
	select {
	case <-s.done:
	case <-ctx.Done():
		s.mu.Lock()
		s.setErr(fmt.Errorf("flush ended: %w", context.Cause(ctx)))
		s.mu.Unlock()
		s.cancel()
		<-s.done
	}
	s.cancel()
	s.stopWait()
	s.mu.Lock()
	defer s.mu.Unlock()
	d := kafka.Delivery{Sent: s.sent - s.skipped, Delivered: s.delivered}
	d.Failed = d.Sent - d.Delivered
	if d.Failed == 0 {
		return d, nil
	}
	// Every path that fails a code records a cause first (setErr).
	return d, fmt.Errorf("%d of %d %w to topic %s: %w", d.Failed, d.Sent, kafka.ErrUndelivered, s.topic, s.firstErr)
}

// setErr records err as the cause of the failed codes unless one is
// recorded. s.mu is held.
func (s *Stream) setErr(err error) {
	if s.firstErr == nil {
		s.firstErr = err
	}
}

// stop records a failure that retrying cannot fix (see
// kafka.Permanent): Write refuses codes from now on, and the sender fails
// every batch not in flight. s.mu is held.
func (s *Stream) stop(err error) {
	if s.stopped != nil {
		return
	}
	s.stopped = fmt.Errorf("kafka refuses the codes, retrying cannot help: %w", err)
	s.log.Error("stopping", zap.NamedError("err", err))
	s.space.Broadcast()
	s.kick()
}

// Acknowledged returns how many of the first codes written are all
// acknowledged, and per partition written, in partition order, the offsets
// of the first and last acknowledged records. It may be called from any
// goroutine, while codes are written (a run checkpoints it) or after
// Finish (the run's final account).
func (s *Stream) Acknowledged() (prefix int64, ranges []kafka.Range) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acknowledged()
}

// acknowledged computes Acknowledged. A partition's batches are
// acknowledged in order, so every code of a partition before its oldest
// batch still held is acknowledged, unless it failed; the prefix ends at
// the first code of the earliest such batch over all partitions, or at the
// first failed code. s.mu is held.
func (s *Stream) acknowledged() (prefix int64, ranges []kafka.Range) {
	prefix = min(s.sent, s.failedAt)
	for i := range s.parts {
		p := &s.parts[i]
		switch {
		case len(p.queue) > 0:
			prefix = min(prefix, p.queue[0].first)
		case p.open != nil:
			prefix = min(prefix, p.open.first)
		}
		if p.firstOffset >= 0 {
			ranges = append(ranges, kafka.Range{Partition: p.id, First: p.firstOffset, Last: p.lastOffset})
		}
	}
	return prefix, ranges
}

// fail counts b's codes as failed and frees its buffer. s.mu is held.
func (s *Stream) fail(b *batch, err error) {
	s.failedAt = min(s.failedAt, b.first)
	level := zapcore.DebugLevel
	if s.firstErr == nil {
		level = zapcore.WarnLevel // once: a broker that refuses everything fails every batch
	}
	s.setErr(fmt.Errorf("partition %d: %w", b.part, err))
	s.log.Log(level, "batch failed", zap.Int32("partition", b.part), zap.Int32("codes", b.n), zap.NamedError("err", err))
	s.release(b)
}
