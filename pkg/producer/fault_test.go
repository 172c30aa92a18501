package producer

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/couponpipeline/coupon-producer/pkg/kafka"
	"github.com/couponpipeline/coupon-producer/pkg/kafkatest"
)

// codesFor returns the codes of kafkatest.Codes that go to partition part
// of 3, in order.
func codesFor(part int) [][]byte {
	var out [][]byte
	for _, c := range kafkatest.Codes(20000) {
		if partitionFor(c, 3) == part {
			out = append(out, c)
		}
	}
	return out
}

// recordAcks makes s report the codes of every batch it counts as
// delivered.
func recordAcks(t *testing.T, s *Stream) func() []string {
	var acked []string
	s.mu.Lock()
	s.acked = func(b *batch) {
		_, recs := decode(t, b.buf)
		for _, r := range recs {
			acked = append(acked, string(r.Value))
		}
	}
	s.mu.Unlock()
	return func() []string {
		s.mu.Lock()
		defer s.mu.Unlock()
		return slices.Clone(acked)
	}
}

// TestWrittenThenFailedTakesNewProducerID is the case of a batch that the
// broker appends and then answers REQUEST_TIMED_OUT after the batch's own
// delivery deadline, in a request whose deadline is later (another
// partition's batch in it is younger). The batch fails; the next batch of
// its partition has the same record count, and under the same producer ID
// and sequence the broker would take it for a duplicate of the failed one
// and acknowledge it without writing it. Every code counted delivered must
// be in the topic.
func TestWrittenThenFailedTakesNewProducerID(t *testing.T) {
	c := newCluster(t, 1)
	o := testOptions()
	o.Compression = "none" // the acknowledged batches are decoded as sent
	o.BatchMaxBytes = MinBatchMaxBytes
	o.Linger = 300 * time.Millisecond
	o.DeliveryTimeout = 2 * time.Second
	s, err := New(context.Background(), newClient(t, c), "t", o)
	if err != nil {
		t.Fatal(err)
	}
	acked := recordAcks(t, s)

	p0, p1 := codesFor(0), codesFor(1)
	next0, next1 := 0, 0
	write0 := func() { t.Helper(); write(t, s, p0[next0:next0+1]); next0++ }
	write1 := func() { t.Helper(); write(t, s, p1[next1:next1+1]); next1++ }
	// fill0 writes to partition 0 until its open batch is full.
	fill0 := func() {
		t.Helper()
		for {
			s.mu.Lock()
			full := s.parts[0].open != nil && !s.parts[0].open.fits(len(p0[next0]))
			s.mu.Unlock()
			if full {
				return
			}
			write0()
		}
	}

	release := make(chan struct{})
	var aDeadline atomic.Int64 // unix nanos
	var produces atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		switch produces.Add(1) {
		case 1: // the first batches of partitions 0 and 1: held
			c.SleepControl(func() { <-release })
		case 2: // batch A of partition 0 and B of partition 1
			c.SleepControl(func() {
				time.Sleep(time.Until(time.Unix(0, aDeadline.Load()).Add(250 * time.Millisecond)))
			})
			// Appended, then answered REQUEST_TIMED_OUT: after A's
			// deadline, before B's.
			c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Err: kerr.RequestTimedOut})
		}
		return nil, nil, false
	})

	write0()
	write1()
	// Both first batches linger, then go in one request, which is held.
	for produces.Load() < 1 {
		time.Sleep(10 * time.Millisecond)
	}
	fill0() // batch A, behind the held one
	s.mu.Lock()
	aDeadline.Store(s.parts[0].open.deadline.UnixNano())
	s.mu.Unlock()
	time.Sleep(time.Second)
	write1() // batch B, a second younger than A
	write0() // closes A and opens A2
	fill0()  // as full as A
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		s.Finish(context.Background())
	}()
	time.Sleep(50 * time.Millisecond) // Finish closes B: A and B go together
	close(release)
	<-finished

	s.mu.Lock()
	d := struct{ sent, delivered int64 }{s.sent, s.delivered}
	s.mu.Unlock()
	claimed := acked()
	if int64(len(claimed)) != d.delivered {
		t.Fatalf("%d codes acknowledged, %d counted delivered", len(claimed), d.delivered)
	}
	if produces.Load() < 3 {
		t.Fatalf("%d produce requests: the scenario did not happen", produces.Load())
	}
	// The topic holds at most every code written, each once; what it
	// holds beyond the codes counted delivered is the failed batch A.
	recs := kafkatest.ConsumeAtLeast(t, c.ListenAddrs(), "t", int(d.delivered))
	inTopic := map[string]int{}
	for _, r := range recs {
		inTopic[string(r.Value)]++
		if inTopic[string(r.Value)] > 1 {
			t.Fatalf("code %s is in the topic twice", r.Value)
		}
	}
	for _, code := range claimed {
		if inTopic[code] != 1 {
			t.Fatalf("code %s counted delivered but not in the topic (%d delivered of %d, %d records)",
				code, d.delivered, d.sent, len(recs))
		}
	}
	if extra := int64(len(recs)) - d.delivered; extra > d.sent-d.delivered {
		t.Fatalf("%d records beyond the %d delivered, only %d failed", extra, d.delivered, d.sent-d.delivered)
	}
	if d.delivered == d.sent {
		t.Fatalf("no batch failed: the scenario did not happen")
	}
}

// TestCanceledWriteHasACause cancels Write while it waits for buffer space
// and then lets every buffered batch through: the one code Write gave up
// on is the only failure, and Finish names its cause.
func TestCanceledWriteHasACause(t *testing.T) {
	c := newCluster(t, 1)
	release := make(chan struct{})
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		c.SleepControl(func() { <-release })
		return nil, nil, false
	})
	o := testOptions()
	o.MaxBufferedBytes = 2 * int(o.BatchMaxBytes)
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, newClient(t, c), "t", o)
	if err != nil {
		t.Fatal(err)
	}
	sent := writeUntilCanceled(t, s, 300*time.Millisecond, cancel)
	close(release)
	d, err := s.Finish(context.Background())
	if d != (kafka.Delivery{Sent: sent, Delivered: sent - 1, Failed: 1}) {
		t.Fatalf("delivery %+v, want %d sent and only the canceled code failed", d, sent)
	}
	if !errors.Is(err, kafka.ErrUndelivered) || !errors.Is(err, context.Canceled) || strings.Contains(err.Error(), "unknown") {
		t.Fatalf("err = %v, want ErrUndelivered naming the canceled write", err)
	}
	kafkatest.ConsumeExactly(t, c.ListenAddrs(), "t", int(sent-1))
}

// TestPermanentErrorStopsTheStream: a broker that refuses the topic for
// good fails every code at once, and Write says so, instead of each batch
// failing on its own while the file is read to its end.
func TestPermanentErrorStopsTheStream(t *testing.T) {
	for _, code := range []*kerr.Error{kerr.TopicAuthorizationFailed, kerr.CorruptMessage, kerr.ClusterAuthorizationFailed} {
		t.Run(code.Message, func(t *testing.T) {
			c := newCluster(t, 1)
			kafkatest.FailProduce(c, code.Code, func(int64) bool { return true })
			s, sent, err := writeUntilStopped(t, c)
			if !errors.Is(err, code) {
				t.Fatalf("Write after %d codes: %v, want %s", sent, err, code.Message)
			}
			d, err := s.Finish(context.Background())
			if !errors.Is(err, code) || d != (kafka.Delivery{Sent: sent, Failed: sent}) {
				t.Fatalf("delivery %+v, err %v; want all %d failed with %s", d, err, sent, code.Message)
			}
		})
	}
}

// writeUntilStopped starts a stream on c that only a refusal can end (an
// hour's delivery timeout, buffers for two batches) and writes codes
// until Write fails. It returns the stream, the codes written and Write's
// error.
func writeUntilStopped(t *testing.T, c *kfake.Cluster) (*Stream, int64, error) {
	t.Helper()
	o := testOptions()
	o.MaxBufferedBytes = 2 * int(o.BatchMaxBytes)
	o.DeliveryTimeout = time.Hour
	// Bounds a regression: Write would wait for space forever.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	s, err := New(ctx, newClient(t, c), "t", o)
	if err != nil {
		t.Fatal(err)
	}
	var sent int64
	for _, c := range kafkatest.Codes(1_000_000) {
		sent++
		if err = s.Write(c); err != nil {
			break
		}
	}
	return s, sent, err
}

func TestBatchLargerThanTopicAllows(t *testing.T) {
	c := newCluster(t, 1)
	if err := c.CreateTopic("small", 1, map[string]string{"max.message.bytes": "2000"}); err != nil {
		t.Fatal(err)
	}
	o := testOptions() // batches of 4 KiB
	_, err := New(context.Background(), newClient(t, c), "small", o)
	if !errors.Is(err, ErrBatchTooLarge) || !strings.Contains(err.Error(), "4096") || !strings.Contains(err.Error(), "max.message.bytes 2000") {
		t.Fatalf("err = %v, want ErrBatchTooLarge naming 4096 and 2000", err)
	}
	o.BatchMaxBytes = 2000
	s, err := New(context.Background(), newClient(t, c), "small", o)
	if err != nil {
		t.Fatalf("a batch size the topic allows: %v", err)
	}
	if _, err := s.Finish(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestManyPartitionsFillTheirBatches: with more partitions than full-size
// buffers fit in MaxBufferedBytes, batches are smaller, not near-empty.
func TestManyPartitionsFillTheirBatches(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(64, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	o := testOptions()
	o.BatchMaxBytes = 64 << 10
	o.MaxBufferedBytes = 1 << 20 // 16 full-size buffers for 64 partitions
	o.Linger = time.Hour         // only full batches, lack of space or Finish send
	var requests, batches atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		requests.Add(1)
		for _, t := range req.(*kmsg.ProduceRequest).Topics {
			batches.Add(int64(len(t.Partitions)))
		}
		return nil, nil, false
	})
	s, err := New(context.Background(), newClient(t, c), "t", o)
	if err != nil {
		t.Fatal(err)
	}
	cs := kafkatest.Codes(300_000)
	write(t, s, cs)
	d, err := s.Finish(context.Background())
	if err != nil || d.Delivered != int64(len(cs)) {
		t.Fatalf("delivery %+v, err %v", d, err)
	}
	// 300,000 records of about 27 bytes in 8 KiB buffers are about 1,000
	// batches; starved, each would carry a handful of records.
	perBatch := float64(len(cs)) / float64(batches.Load())
	if perBatch < 150 {
		t.Fatalf("%d batches in %d requests, %.0f records per batch: batches are sent nearly empty",
			batches.Load(), requests.Load(), perBatch)
	}
	if s.allocated > o.MaxBufferedBytes {
		t.Fatalf("%d bytes of buffers, limit %d", s.allocated, o.MaxBufferedBytes)
	}
}

// TestInvalidTimestampStopsAtOnce: a broker that refuses the batches'
// timestamps (a clock more than message.timestamp.after.max.ms ahead of
// the broker's) stops the stream at the first refusal, with a message
// that names the clock and the topic settings, instead of failing batch
// after batch while the file is read, each under a new producer ID.
func TestInvalidTimestampStopsAtOnce(t *testing.T) {
	c := newCluster(t, 1)
	refused := kafkatest.FailProduce(c, kerr.InvalidTimestamp.Code, func(int64) bool { return true })
	var pids atomic.Int64
	c.ControlKey(int16(kmsg.InitProducerID), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		pids.Add(1)
		return nil, nil, false
	})
	s, sent, err := writeUntilStopped(t, c)
	if !errors.Is(err, kerr.InvalidTimestamp) {
		t.Fatalf("Write after %d codes: %v, want INVALID_TIMESTAMP", sent, err)
	}
	for _, w := range []string{"this machine's clock", "message.timestamp.after.max.ms", "message.timestamp.before.max.ms", "NTP", "topic t "} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the error does not say %q: %v", w, err)
		}
	}
	d, ferr := s.Finish(context.Background())
	if !errors.Is(ferr, kerr.InvalidTimestamp) || d != (kafka.Delivery{Sent: sent, Failed: sent}) {
		t.Fatalf("delivery %+v, err %v; want all %d failed", d, ferr, sent)
	}
	// One producer ID, at the start: a stopped stream takes no other;
	// only the batches in flight at the first refusal were sent.
	if n := pids.Load(); n != 1 {
		t.Fatalf("%d producer IDs taken, want 1", n)
	}
	if n := refused.Load(); n > 3 {
		t.Fatalf("%d produce requests refused, want the first few only", n)
	}
	t.Logf("%d codes written, %d produce requests, %d producer IDs: %v", sent, refused.Load(), pids.Load(), err)
}
