// Package run runs the files of an invocation, one after the other (Files),
// and owns what a run is: for each file the ledger's claim (whether to
// publish it, all of it or the codes after a checkpoint), the pipeline
// source -> extract -> sink (File), its progress, its summary line and
// metrics, and its Outcome, which gives both the files_total label and the
// process's exit code. The sink is the producer (Kafka) or Stdout, for a
// dry run.
package run

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/couponpipeline/coupon-producer/pkg/extract"
	"github.com/couponpipeline/coupon-producer/pkg/kafka"
	"github.com/couponpipeline/coupon-producer/pkg/metrics"
	"github.com/couponpipeline/coupon-producer/pkg/source"
)

// Sink receives the codes of one file: the engine's stream (package
// producer), or Stdout for a dry run.
type Sink interface {
	// Write takes one code; it must copy code to keep it.
	Write(code []byte) error
	// Finish waits for the codes written to be delivered, or ctx to end.
	Finish(ctx context.Context) (kafka.Delivery, error)
}

// Target opens a Sink for a topic. The caller chooses it: run does not know
// how codes are produced.
type Target interface {
	Open(ctx context.Context, topic string) (Sink, error)
}

// Options tune a run.
type Options struct {
	ShutdownTimeout  time.Duration    // flush time left after ctx ends
	ProgressInterval time.Duration    // 0: no progress logs
	Logger           *zap.Logger      // nil: no logs
	Metrics          *metrics.Metrics // nil: none
	// Prepare, if set, is called with the opened file before anything is
	// published, e.g. to hash it and consult a ledger. It returns how many
	// of the file's first codes an earlier run already delivered: they are
	// read and counted, not published. An error stops the run and is
	// returned as it is; one wrapping ErrSkipped means the file must not
	// be published, and is not a failure of the file.
	Prepare func(ctx context.Context, src *source.File) (skip int64, err error)
	// Track, if set, is called once codes start to flow, with a function
	// that returns the acknowledged Position; that function may be called
	// from any goroutine, also after File returns. It is not called for a
	// Sink that cannot tell (see Acknowledger).
	Track func(position func() Position)
	// Checkpoint, if set, is called each time another CheckpointShare
	// (more than 0, at most 1) of the compressed file has been read, so
	// that the caller can record the acknowledged position by progress
	// as well as by time: what a killed run sends again is then bounded
	// by a share of the file, whatever its size or the machine's speed.
	// It is called from the reading goroutine, at most once per chunk,
	// and must not block.
	Checkpoint      func()
	CheckpointShare float64
	// ResumePartitions, if set, is called after Prepare. It returns, per
	// partition of the topic, how many of the file's first codes have
	// all their codes of that partition delivered by an earlier run (at
	// least Prepare's skip), or nil. A Resumer sink then leaves those out
	// too; another sink publishes every code after the skip.
	ResumePartitions func() []int64
}

// Resumer is a Sink that can leave out, partition by partition, the codes
// an earlier run delivered beyond its acknowledged prefix, as the engine's
// stream does (package producer).
type Resumer interface {
	// Resume, before the first Write, makes the sink drop the codes of
	// each partition p whose index among the codes written is below
	// bounds[p]; false if it cannot (another partition count).
	Resume(bounds []int64) bool
	// Skipped returns how many codes Resume dropped.
	Skipped() int64
	// PartitionPrefixes returns, per partition, how many of the first
	// codes written have all their codes of that partition acknowledged.
	PartitionPrefixes() []int64
}

// ErrSkipped is wrapped by the error of a Prepare that decided the file
// must not be published.
var ErrSkipped = errors.New("file not published")

// Acknowledger is a Sink that can tell how many of the first codes written
// are all acknowledged, and the offsets acknowledged per partition, as the
// engine's stream does.
type Acknowledger interface {
	Acknowledged() (prefix int64, ranges []kafka.Range)
}

// Position is how far a run got with every code acknowledged: the file's
// first Codes codes (those skipped included). Line and Offset are a point
// in the decompressed file at or before the end of those codes: every code
// that ends before byte Offset, in lines 1 to Line, is acknowledged.
// Ranges are the offsets this run's acknowledged records take.
type Position struct {
	Codes, Line, Offset int64
	Ranges              []kafka.Range
	// PartitionCodes, for a Resumer sink, gives per partition how many of
	// the file's first codes have all their codes of that partition
	// acknowledged; each is at least Codes.
	PartitionCodes []int64
}

// Summary is the accounting of one file.
type Summary struct {
	File            string
	Topic           string
	CompressedBytes int64
	Bytes           int64 // decompressed
	Lines           int64
	Codes           int64
	Delivered       int64
	Failed          int64
	// AlreadyDelivered counts the codes of Codes that an earlier run
	// delivered (see Options.Prepare).
	AlreadyDelivered int64
	// Acked is where every code is acknowledged at the end; zero for a
	// Sink that is not an Acknowledger.
	Acked    Position
	Duration time.Duration
}

// CodesPerSecond is the rate of codes extracted over the whole run.
func (s Summary) CodesPerSecond() float64 {
	if s.Duration <= 0 {
		return 0
	}
	return float64(s.Codes) / s.Duration.Seconds()
}

// Chunk sizes for decompressed reads: large enough to amortise the hand-off
// between the decompressing goroutine and the extracting one, small enough
// to keep memory flat.
const (
	chunkSize  = 256 << 10
	chunkDepth = 4
)

// File publishes every code of the gzip file at path to topic. When ctx ends
// (SIGINT/SIGTERM) it stops reading, gives the codes in flight
// opts.ShutdownTimeout to be delivered, and returns context.Cause(ctx). The
// error joins the read error (an *source.InputError for bad input) and the
// delivery error (wrapping kafka.ErrUndelivered); when ctx ended, it holds
// context.Cause(ctx) too, so that OutcomeOf says interrupted.
func File(ctx context.Context, path, topic string, target Target, opts Options) (Summary, error) {
	var read chunkCounter
	if m := opts.Metrics; m != nil {
		read.codes, read.bytes = m.CodesRead.WithLabelValues(topic), m.CompressedBytes.WithLabelValues(topic)
	}
	sum, err := file(ctx, path, topic, target, opts, &read)
	if cause := context.Cause(ctx); err != nil && cause != nil && !errors.Is(err, cause) {
		// Stopped after reading, while the codes in flight were flushed.
		err = errors.Join(cause, err)
	}
	if m := opts.Metrics; m != nil {
		m.CodesDelivered.WithLabelValues(topic).Add(float64(sum.Delivered))
		m.CodesFailed.WithLabelValues(topic).Add(float64(sum.Failed))
		m.FileDuration.WithLabelValues(topic).Observe(sum.Duration.Seconds())
		m.Files.WithLabelValues(topic, OutcomeOf(err).Result).Inc()
		if err == nil {
			m.LastSuccess.WithLabelValues(topic).SetToCurrentTime()
		}
	}
	return sum, err
}

// chunkCounter feeds the read counters once per chunk, not once per code.
type chunkCounter struct {
	codes, bytes     prometheus.Counter
	lastCodes, lastB int64
}

func (c *chunkCounter) update(codes, compressed int64) {
	if c.codes == nil {
		return
	}
	c.codes.Add(float64(codes - c.lastCodes))
	c.bytes.Add(float64(compressed - c.lastB))
	c.lastCodes, c.lastB = codes, compressed
}

func file(ctx context.Context, path, topic string, target Target, opts Options, read *chunkCounter) (Summary, error) {
	start := time.Now()
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.With(zap.String("file", path), zap.String("topic", topic))
	sum := Summary{File: path, Topic: topic}

	src, err := source.Open(path)
	if err != nil {
		log.Error("cannot read file", zap.NamedError("err", err))
		return sum, err
	}
	defer src.Close()
	sum.CompressedBytes = src.Size()
	var skip int64
	if opts.Prepare != nil {
		if skip, err = opts.Prepare(ctx, src); err != nil {
			sum.Duration = time.Since(start)
			return sum, err
		}
	}

	sink, err := target.Open(ctx, topic)
	if err != nil {
		log.Error("cannot publish", zap.NamedError("err", err))
		return sum, err
	}

	emit := sink.Write
	if left := skip; left > 0 {
		log.Info("resuming: skipping codes already delivered", zap.Int64("already_delivered", left))
		emit = func(code []byte) error {
			if left > 0 {
				left--
				return nil
			}
			return sink.Write(code)
		}
	}
	resumer, resumed := resume(log, sink, opts, skip)
	ex := extract.New(emit)
	var marks *positions
	if ack, ok := sink.(Acknowledger); ok {
		marks = &positions{ack: ack, skip: skip, marks: []mark{{}}, resumer: resumer, resumed: resumed}
		if opts.Track != nil {
			opts.Track(marks.position)
		}
	}
	var codes atomic.Int64
	stopProgress := startProgress(log, opts.ProgressInterval, src, &codes, start)
	due := checkpointsBy(opts, src.Size())
	readErr := source.Pump(ctx, src, chunkSize, chunkDepth, func(p []byte) error {
		_, err := ex.Write(p)
		st := ex.Stats()
		codes.Store(st.Codes)
		read.update(st.Codes, src.CompressedRead())
		marks.add(st)
		due(src.CompressedRead())
		return err
	})
	if readErr == nil {
		readErr = ex.Close()
	}
	read.update(ex.Stats().Codes, src.CompressedRead())
	stopProgress()
	if ctx.Err() != nil && errors.Is(readErr, ctx.Err()) {
		readErr = context.Cause(ctx)
		log.Warn("interrupted: flushing codes in flight", zap.Duration("timeout", opts.ShutdownTimeout), zap.NamedError("cause", readErr))
	}

	flushCtx, cancel := shutdownContext(ctx, opts.ShutdownTimeout)
	d, sinkErr := sink.Finish(flushCtx)
	cancel()

	st := ex.Stats()
	sum.Bytes, sum.Lines, sum.Codes = st.Bytes, st.Lines, st.Codes
	sum.Delivered, sum.Failed = d.Delivered, d.Failed
	sum.AlreadyDelivered = min(skip, sum.Codes)
	if resumer != nil {
		sum.AlreadyDelivered += resumer.Skipped()
	}
	if marks != nil {
		sum.Acked = marks.position()
	}
	sum.Duration = time.Since(start)
	err = errors.Join(readErr, sinkErr)
	logSummary(log, sum, err)
	if err == nil && sum.Codes == 0 {
		// Not an error (a day may have no coupons), but a wrong or
		// emptied file should be noticed.
		log.Warn("file holds no codes", zap.Int64("lines", sum.Lines), zap.Int64("bytes", sum.Bytes))
	}
	return sum, err
}

// checkpointsBy returns the function the reading loop calls with the
// compressed bytes read so far: it calls opts.Checkpoint each time they
// pass another opts.CheckpointShare of size.
func checkpointsBy(opts Options, size int64) func(read int64) {
	if opts.Checkpoint == nil || opts.CheckpointShare <= 0 || size <= 0 {
		return func(int64) {}
	}
	step := max(int64(math.Ceil(opts.CheckpointShare*float64(size))), 1)
	next := step
	return func(read int64) {
		if read < next {
			return
		}
		next = (read/step + 1) * step
		opts.Checkpoint()
	}
}

// mark is where a chunk of the decompressed file ends: the codes extracted
// up to it, and the line and byte it ends at.
type mark struct{ codes, line, offset int64 }

// positions turns the stream's acknowledged prefix, counted in codes
// written, into a Position in the file, through a mark per chunk read
// (one per 256 KiB: a few thousand for the largest file).
type positions struct {
	ack     Acknowledger
	skip    int64
	resumer Resumer // nil: no partition prefixes
	resumed []int64 // the bounds of the resumed run, in the file's codes

	mu    sync.Mutex
	marks []mark
}

// add records the end of a chunk. A nil p records nothing.
func (p *positions) add(st extract.Stats) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.marks = append(p.marks, mark{st.Codes, st.Lines, st.Bytes})
	p.mu.Unlock()
}

func (p *positions) position() Position {
	prefix, ranges := p.ack.Acknowledged()
	codes := p.skip + prefix
	p.mu.Lock()
	defer p.mu.Unlock()
	// The last mark whose codes are all acknowledged.
	i := sort.Search(len(p.marks), func(i int) bool { return p.marks[i].codes > codes }) - 1
	m := p.marks[max(i, 0)]
	pos := Position{Codes: codes, Line: m.line, Offset: m.offset, Ranges: ranges}
	if p.resumer != nil {
		pos.PartitionCodes = p.resumer.PartitionPrefixes()
		for i := range pos.PartitionCodes {
			pos.PartitionCodes[i] += p.skip
			if i < len(p.resumed) {
				pos.PartitionCodes[i] = max(pos.PartitionCodes[i], p.resumed[i])
			}
		}
	}
	return pos
}

// resume hands a Resumer sink the bounds of opts.ResumePartitions, as
// indices among the codes it is written (after skip). It returns the
// Resumer, nil if the sink is none, and the bounds it took, in the file's
// codes; nil if there were none or it refused them (the codes after skip
// are then all published).
func resume(log *zap.Logger, sink Sink, opts Options, skip int64) (Resumer, []int64) {
	r, ok := sink.(Resumer)
	if !ok {
		return nil, nil
	}
	var bounds []int64
	if opts.ResumePartitions != nil {
		bounds = opts.ResumePartitions()
	}
	if bounds == nil {
		return r, nil
	}
	rel := make([]int64, len(bounds))
	for i, b := range bounds {
		rel[i] = max(b-skip, 0)
	}
	if !r.Resume(rel) {
		log.Warn("resuming: the topic's partitions changed; publishing every code after the checkpoint",
			zap.Int("checkpoint_partitions", len(bounds)))
		return r, nil
	}
	return r, bounds
}

// shutdownContext returns a context for the final flush: it is not canceled
// with ctx, but ends timeout after ctx does.
func shutdownContext(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	flushCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(timeout, cancel)
		context.AfterFunc(flushCtx, func() { t.Stop() })
	})
	return flushCtx, func() { stop(); cancel() }
}

func logSummary(log *zap.Logger, s Summary, err error) {
	fields := []zap.Field{
		zap.Int64("compressed_bytes", s.CompressedBytes), zap.Int64("bytes", s.Bytes), zap.Int64("lines", s.Lines),
		zap.Int64("codes", s.Codes), zap.Int64("delivered", s.Delivered), zap.Int64("failed", s.Failed),
		zap.Int64("already_delivered", s.AlreadyDelivered),
		zap.Duration("duration", s.Duration), zap.Int64("codes_per_sec", int64(s.CodesPerSecond())),
	}
	if err != nil {
		log.Error("file failed", append(fields, zap.NamedError("err", err))...)
		return
	}
	log.Info("file done", fields...)
}

func startProgress(log *zap.Logger, every time.Duration, src *source.File, codes *atomic.Int64, start time.Time) (stop func()) {
	if every <= 0 {
		return func() {}
	}
	t := time.NewTicker(every)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-t.C:
				read, size := src.CompressedRead(), src.Size()
				elapsed := time.Since(start)
				n := codes.Load()
				fields := []zap.Field{zap.Int64("codes", n), zap.Int64("codes_per_sec", int64(float64(n)/elapsed.Seconds()))}
				if size > 0 && read > 0 {
					eta := time.Duration(float64(elapsed) * float64(size-read) / float64(read))
					fields = append(fields, zap.Float64("percent", math.Round(1000*float64(read)/float64(size))/10),
						zap.Duration("eta", eta.Round(time.Second)))
				}
				log.Info("progress", fields...)
			}
		}
	}()
	return func() {
		t.Stop()
		close(done)
		<-finished
	}
}

// Stdout is the dry-run Target: it writes each code and a newline to W.
type Stdout struct{ W io.Writer }

// Open returns a Sink that writes to l.W whatever the topic.
func (l Stdout) Open(context.Context, string) (Sink, error) {
	return &lineSink{w: bufio.NewWriterSize(l.W, 64<<10)}, nil
}

type lineSink struct {
	w *bufio.Writer
	n int64
}

func (s *lineSink) Write(code []byte) error {
	s.w.Write(code)
	s.n++
	return s.w.WriteByte('\n')
}

func (s *lineSink) Finish(context.Context) (kafka.Delivery, error) {
	d := kafka.Delivery{Sent: s.n, Delivered: s.n}
	if err := s.w.Flush(); err != nil {
		// What the buffer held is lost; it is not known how much of it.
		return kafka.Delivery{Sent: s.n, Failed: s.n}, fmt.Errorf("write codes: %w", err)
	}
	return d, nil
}
