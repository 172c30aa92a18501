package producer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/couponpipeline/coupon-producer/pkg/kafka"
	"github.com/couponpipeline/coupon-producer/pkg/kafkatest"
)

var quiet = zap.NewNop()

func testOptions() Options {
	return Options{
		Linger:          5 * time.Millisecond,
		BatchMaxBytes:   4 << 10, // many batches
		DeliveryTimeout: 10 * time.Second,
		Logger:          quiet,
	}
}

// newCluster starts a kfake cluster with topic "t" of 3 partitions.
func newCluster(t *testing.T, brokers int) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(brokers), kfake.SeedTopics(3, "t"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// newClient returns a client configured as kafka.New configures its own.
func newClient(t *testing.T, c *kfake.Cluster) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// write writes every code through one reused buffer, as the extractor does.
func write(t *testing.T, s *Stream, cs [][]byte) {
	t.Helper()
	buf := make([]byte, 0, 16)
	for _, c := range cs {
		buf = append(buf[:0], c...)
		if err := s.Write(buf); err != nil {
			t.Fatal(err)
		}
		clear(buf[:cap(buf)]) // the stream must have copied the code
	}
}

func publishAll(t *testing.T, cl *kgo.Client, o Options, cs [][]byte, finishCtx context.Context) (kafka.Delivery, error) {
	t.Helper()
	s, err := New(context.Background(), cl, "t", o)
	if err != nil {
		t.Fatal(err)
	}
	write(t, s, cs)
	return s.Finish(finishCtx)
}

// checkExactly checks that recs hold each code of cs once, with key ==
// value, in the partition the Java client would choose.
func checkExactly(t *testing.T, recs []*kgo.Record, cs [][]byte) {
	t.Helper()
	part := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	var got, want []string
	for _, r := range recs {
		if string(r.Key) != string(r.Value) {
			t.Fatalf("key %q != value %q", r.Key, r.Value)
		}
		if p := part.Partition(r, 3); r.Partition != int32(p) {
			t.Fatalf("code %s in partition %d, murmur2 says %d", r.Key, r.Partition, p)
		}
		got = append(got, string(r.Value))
	}
	for _, c := range cs {
		want = append(want, string(c))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("consumed codes differ from the codes published (%d vs %d)", len(got), len(want))
	}
}

func TestEveryCodeDelivered(t *testing.T) {
	for _, brokers := range []int{1, 3} {
		for _, codec := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
			t.Run(fmt.Sprintf("%d brokers %s", brokers, codec), func(t *testing.T) {
				c := newCluster(t, brokers)
				o := testOptions()
				o.Compression = codec
				cs := kafkatest.Codes(20000)
				d, err := publishAll(t, newClient(t, c), o, cs, context.Background())
				if err != nil || d != (kafka.Delivery{Sent: 20000, Delivered: 20000}) {
					t.Fatalf("delivery %+v, err %v", d, err)
				}
				checkExactly(t, kafkatest.ConsumeExactly(t, c.ListenAddrs(), "t", len(cs)), cs)
			})
		}
	}
}

func TestBoundedBuffers(t *testing.T) {
	c := newCluster(t, 1)
	o := testOptions()
	o.MaxBufferedBytes = 2 * int(o.BatchMaxBytes) // less than a batch per partition
	o.Linger = time.Hour                          // only the lack of space sends batches
	cs := kafkatest.Codes(5000)
	s, err := New(context.Background(), newClient(t, c), "t", o)
	if err != nil {
		t.Fatal(err)
	}
	write(t, s, cs)
	s.mu.Lock()
	allocated := s.allocated
	s.mu.Unlock()
	d, err := s.Finish(context.Background())
	if err != nil || d.Delivered != 5000 {
		t.Fatalf("delivery %+v, err %v", d, err)
	}
	if allocated > o.MaxBufferedBytes {
		t.Fatalf("%d bytes of buffers, limit %d", allocated, o.MaxBufferedBytes)
	}
	checkExactly(t, kafkatest.ConsumeExactly(t, c.ListenAddrs(), "t", len(cs)), cs)
}

func TestRetryableErrorsAreRetried(t *testing.T) {
	c := newCluster(t, 1)
	calls := kafkatest.FailProduce(c, kerr.NotLeaderForPartition.Code, func(n int64) bool { return n <= 3 })
	cs := kafkatest.Codes(2000)
	d, err := publishAll(t, newClient(t, c), testOptions(), cs, context.Background())
	if err != nil || d.Delivered != 2000 || d.Failed != 0 {
		t.Fatalf("retryable errors must not lose codes: delivery %+v, err %v", d, err)
	}
	if calls.Load() <= 3 {
		t.Fatalf("only %d produce requests: the injected errors were not hit", calls.Load())
	}
	checkExactly(t, kafkatest.ConsumeExactly(t, c.ListenAddrs(), "t", len(cs)), cs)
}

func TestTimedOutAppendsAreNotDuplicated(t *testing.T) {
	c := newCluster(t, 1)
	// The broker writes the batches, then answers REQUEST_TIMED_OUT: the
	// resent batches carry the same sequences, and the broker keeps one
	// copy of each.
	h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.RequestTimedOut, Count: 5})
	cs := kafkatest.Codes(3000)
	d, err := publishAll(t, newClient(t, c), testOptions(), cs, context.Background())
	if err != nil || d.Delivered != 3000 {
		t.Fatalf("delivery %+v, err %v", d, err)
	}
	if h.Hits() < 5 {
		t.Fatalf("%d faults hit, want 5", h.Hits())
	}
	checkExactly(t, kafkatest.ConsumeExactly(t, c.ListenAddrs(), "t", len(cs)), cs)
}

func TestConnectionDropsAreRetried(t *testing.T) {
	c := newCluster(t, 1)
	var n atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if n.Add(1)%4 == 2 {
			return nil, errors.New("connection dropped"), true // closes the connection
		}
		return nil, nil, false
	})
	cs := kafkatest.Codes(5000)
	d, err := publishAll(t, newClient(t, c), testOptions(), cs, context.Background())
	if err != nil || d.Delivered != 5000 {
		t.Fatalf("delivery %+v, err %v; want all 5000 delivered", d, err)
	}
	checkExactly(t, kafkatest.ConsumeExactly(t, c.ListenAddrs(), "t", len(cs)), cs)
}

func TestLeaderMoves(t *testing.T) {
	c := newCluster(t, 3)
	cs := kafkatest.Codes(6000)
	var logs syncBuffer
	o := testOptions()
	o.Logger = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&logs), zapcore.DebugLevel))
	s, err := New(context.Background(), newClient(t, c), "t", o)
	if err != nil {
		t.Fatal(err)
	}
	write(t, s, cs[:3000])
	for p := range int32(3) {
		if err := c.MoveTopicPartition("t", p, (c.LeaderFor("t", p)+1)%3); err != nil {
			t.Fatal(err)
		}
	}
	write(t, s, cs[3000:])
	d, err := s.Finish(context.Background())
	if err != nil || d.Delivered != 6000 {
		t.Fatalf("delivery %+v, err %v", d, err)
	}
	if !strings.Contains(logs.String(), "NOT_LEADER") {
		t.Fatalf("no batch was refused by a former leader; logs:\n%s", logs.String())
	}
	checkExactly(t, kafkatest.ConsumeExactly(t, c.ListenAddrs(), "t", len(cs)), cs)
}

// syncBuffer is a bytes.Buffer for a logger shared by goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestFatalErrorsAreCounted(t *testing.T) {
	c := newCluster(t, 1)
	kafkatest.FailProduce(c, kerr.TopicAuthorizationFailed.Code, func(int64) bool { return true })
	d, err := publishAll(t, newClient(t, c), testOptions(), kafkatest.Codes(500), context.Background())
	if !errors.Is(err, kafka.ErrUndelivered) || !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("err = %v, want ErrUndelivered wrapping TOPIC_AUTHORIZATION_FAILED", err)
	}
	if d != (kafka.Delivery{Sent: 500, Failed: 500}) {
		t.Fatalf("delivery %+v, want all 500 failed", d)
	}
}

func TestSomeBatchesFail(t *testing.T) {
	c := newCluster(t, 1)
	// Every third produce request is refused for good: the codes in it
	// fail, the others are delivered, once, and the two add up.
	kafkatest.FailProduce(c, kerr.InvalidRecord.Code, func(n int64) bool { return n%3 == 0 })
	cs := kafkatest.Codes(3000)
	d, err := publishAll(t, newClient(t, c), testOptions(), cs, context.Background())
	if !errors.Is(err, kafka.ErrUndelivered) || !errors.Is(err, kerr.InvalidRecord) {
		t.Fatalf("err = %v, want ErrUndelivered wrapping INVALID_RECORD", err)
	}
	if d.Failed == 0 || d.Delivered == 0 || d.Delivered+d.Failed != 3000 {
		t.Fatalf("delivery %+v: want some delivered and some failed, adding up to 3000", d)
	}
	recs := kafkatest.ConsumeExactly(t, c.ListenAddrs(), "t", int(d.Delivered))
	seen := map[string]bool{}
	for _, r := range recs {
		if seen[string(r.Value)] {
			t.Fatalf("code %s consumed twice", r.Value)
		}
		seen[string(r.Value)] = true
	}
}

func TestLostProducerStateTakesNewProducerID(t *testing.T) {
	c := newCluster(t, 1)
	// The second request is answered OUT_OF_ORDER_SEQUENCE_NUMBER: its
	// batches fail, and what follows goes under a new producer ID.
	kafkatest.FailProduce(c, kerr.OutOfOrderSequenceNumber.Code, func(n int64) bool { return n == 2 })
	cs := kafkatest.Codes(5000)
	d, err := publishAll(t, newClient(t, c), testOptions(), cs, context.Background())
	if !errors.Is(err, kerr.OutOfOrderSequenceNumber) || d.Failed == 0 || d.Delivered+d.Failed != 5000 {
		t.Fatalf("delivery %+v, err %v", d, err)
	}
	recs := kafkatest.ConsumeExactly(t, c.ListenAddrs(), "t", int(d.Delivered))
	pids := map[int64]bool{}
	for _, r := range recs {
		pids[r.ProducerID] = true
	}
	if len(pids) != 2 {
		t.Fatalf("producer ids %v, want the first and a new one", slices.Collect(maps.Keys(pids)))
	}
}

func TestDeliveryTimeout(t *testing.T) {
	c := newCluster(t, 1)
	// The broker refuses every produce with a retryable error: the codes
	// are retried until their delivery timeout, then count as failed.
	kafkatest.FailProduce(c, kerr.NotLeaderForPartition.Code, func(int64) bool { return true })
	o := testOptions()
	o.DeliveryTimeout = 500 * time.Millisecond
	start := time.Now()
	d, err := publishAll(t, newClient(t, c), o, kafkatest.Codes(100), context.Background())
	if !errors.Is(err, kafka.ErrUndelivered) || d.Failed != 100 {
		t.Fatalf("delivery %+v, err %v; want 100 failed", d, err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("failing took %s with a delivery timeout of %s", el, o.DeliveryTimeout)
	}
}

func TestFinishContextEndsFlush(t *testing.T) {
	c := newCluster(t, 1)
	kafkatest.FailProduce(c, kerr.RequestTimedOut.Code, func(int64) bool { return true })
	o := testOptions()
	o.DeliveryTimeout = time.Hour // retry until Finish's context ends
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	d, err := publishAll(t, newClient(t, c), o, kafkatest.Codes(100), ctx)
	if !errors.Is(err, kafka.ErrUndelivered) || !errors.Is(err, context.DeadlineExceeded) ||
		d != (kafka.Delivery{Sent: 100, Failed: 100}) {
		t.Fatalf("delivery %+v, err %v; want the 100 unacknowledged codes failed", d, err)
	}
}

func TestWriteGivesUpWhenContextEnds(t *testing.T) {
	c := newCluster(t, 1)
	kafkatest.FailProduce(c, kerr.RequestTimedOut.Code, func(int64) bool { return true })
	o := testOptions()
	o.DeliveryTimeout = time.Hour
	o.MaxBufferedBytes = 2 * int(o.BatchMaxBytes)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, newClient(t, c), "t", o)
	if err != nil {
		t.Fatal(err)
	}
	sent := writeUntilCanceled(t, s, 200*time.Millisecond, cancel)
	fctx, fcancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer fcancel()
	d, err := s.Finish(fctx)
	if !errors.Is(err, kafka.ErrUndelivered) || d != (kafka.Delivery{Sent: sent, Failed: sent}) {
		t.Fatalf("delivery %+v, err %v; want all %d failed", d, err, sent)
	}
}

func TestClientWithoutAcksAll(t *testing.T) {
	c := newCluster(t, 1)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...),
		kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if _, err := New(context.Background(), cl, "t", testOptions()); !errors.Is(err, ErrAcks) {
		t.Fatalf("err = %v, want ErrAcks", err)
	}
}

func TestUnknownTopic(t *testing.T) {
	c := newCluster(t, 1)
	_, err := New(context.Background(), newClient(t, c), "missing", testOptions())
	if !errors.Is(err, kerr.UnknownTopicOrPartition) {
		t.Fatalf("err = %v, want UNKNOWN_TOPIC_OR_PARTITION", err)
	}
}

func TestManyFailuresAtOnce(t *testing.T) {
	c := newCluster(t, 3)
	// Appends that time out after being written, lost connections, leaders
	// that move and refusals, mixed: every code must still be written once.
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.RequestTimedOut, Count: 6})
	var n atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		switch n.Add(1) % 17 {
		case 3:
			return nil, errors.New("connection dropped"), true
		case 11:
			c.ShufflePartitionLeaders()
		}
		return nil, nil, false
	})
	cs := kafkatest.Codes(30000)
	o := testOptions()
	o.DeliveryTimeout = 30 * time.Second
	d, err := publishAll(t, newClient(t, c), o, cs, context.Background())
	if err != nil || d.Delivered != int64(len(cs)) {
		t.Fatalf("delivery %+v, err %v", d, err)
	}
	if n.Load() < 17 {
		t.Fatalf("only %d produce requests: the failures were not hit", n.Load())
	}
	checkExactly(t, kafkatest.ConsumeExactly(t, c.ListenAddrs(), "t", len(cs)), cs)
}

func TestLingerSendsWithoutFinish(t *testing.T) {
	c := newCluster(t, 1)
	o := testOptions()
	o.Linger = 50 * time.Millisecond
	s, err := New(context.Background(), newClient(t, c), "t", o)
	if err != nil {
		t.Fatal(err)
	}
	cs := kafkatest.Codes(10)
	write(t, s, cs)
	// Far fewer codes than a batch holds: only the linger sends them.
	checkExactly(t, kafkatest.ConsumeExactly(t, c.ListenAddrs(), "t", len(cs)), cs)
	if d, err := s.Finish(context.Background()); err != nil || d.Delivered != 10 {
		t.Fatalf("delivery %+v, err %v", d, err)
	}
}

func TestAddToRequest(t *testing.T) {
	b := func(size int) *batch { return &batch{buf: make([]byte, size)} }
	var reqs []request
	for _, x := range []struct {
		leader int32
		size   int
	}{{1, 600 << 10}, {2, 600 << 10}, {1, 300 << 10}, {1, 300 << 10}, {1, 2 << 20}, {2, 100}} {
		reqs = addToRequest(reqs, x.leader, b(x.size))
	}
	var got []string
	for _, r := range reqs {
		got = append(got, fmt.Sprintf("%d:%d:%d", r.leader, len(r.batches), r.size))
	}
	// Up to 1 MiB per request and broker; a larger batch goes alone.
	want := []string{"1:2:921600", "2:2:614500", "1:1:307200", "1:1:2097152"}
	if !slices.Equal(got, want) {
		t.Fatalf("requests %v, want %v", got, want)
	}
}

// writeUntilCanceled writes codes to s until Write fails, cancelling the
// stream's context after d: the buffers fill (nothing is acknowledged) and
// Write must then give up with context.Canceled. It returns the number of
// codes handed to Write, the failed one included.
func writeUntilCanceled(t *testing.T, s *Stream, d time.Duration, cancel context.CancelFunc) int64 {
	t.Helper()
	time.AfterFunc(d, cancel)
	var sent int64
	var err error
	for _, code := range kafkatest.Codes(100000) {
		sent++
		if err = s.Write(code); err != nil {
			break
		}
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Write: %v, want context.Canceled once the buffers are full and ctx ends", err)
	}
	return sent
}
