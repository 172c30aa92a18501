package publish

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/couponpipeline/coupon-producer/pkg/kafkatest"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func testConfig(brokers []string) Config {
	return Config{
		Brokers:           brokers,
		ClientID:          "test",
		Partitions:        3,
		ReplicationFactor: -1,
		TopicConfigs:      map[string]string{"retention.ms": "3600000"},
		Compression:       "lz4",
		Linger:            5 * time.Millisecond,
		BatchMaxBytes:     1 << 20,
		MaxBuffered:       1000,
		ConnectTimeout:    5 * time.Second,
		DeliveryTimeout:   10 * time.Second,
		Logger:            quiet,
	}
}

func newCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newPublisher(t *testing.T, cfg Config) *Publisher {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// publishAll writes every code through one reused buffer, as the extractor
// does, and finishes the stream.
func publishAll(t *testing.T, p *Publisher, topic string, cs [][]byte, finishCtx context.Context) (Delivery, error) {
	t.Helper()
	ctx := context.Background()
	if err := p.EnsureTopic(ctx, topic); err != nil {
		t.Fatal(err)
	}
	s := p.Stream(ctx, topic)
	buf := make([]byte, 0, 16)
	for _, c := range cs {
		buf = append(buf[:0], c...)
		if err := s.Write(buf); err != nil {
			t.Fatal(err)
		}
		clear(buf[:cap(buf)]) // the stream must have copied the code
	}
	return s.Finish(finishCtx)
}

func TestPublishEveryCode(t *testing.T) {
	c := newCluster(t)
	brokers := c.ListenAddrs()
	p := newPublisher(t, testConfig(brokers))
	cs := kafkatest.Codes(5000)
	d, err := publishAll(t, p, "couponbase1.gz", cs, context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d != (Delivery{Sent: 5000, Delivered: 5000}) {
		t.Fatalf("delivery %+v", d)
	}
	n, err := p.PartitionCount(context.Background(), "couponbase1.gz")
	if err != nil || n != 3 {
		t.Fatalf("partitions = %d, %v; want 3", n, err)
	}

	recs := kafkatest.ConsumeExactly(t, brokers, "couponbase1.gz", len(cs))
	var got []string
	for _, r := range recs {
		if string(r.Key) != string(r.Value) {
			t.Fatalf("key %q != value %q", r.Key, r.Value)
		}
		got = append(got, string(r.Value))
	}
	var want []string
	for _, c := range cs {
		want = append(want, string(c))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("consumed codes differ from the codes published (%d vs %d)", len(got), len(want))
	}
	// Equal codes must land in the partition the Java client would pick.
	part := kgo.StickyKeyPartitioner(nil).ForTopic("couponbase1.gz")
	for _, r := range recs[:100] {
		if want := part.Partition(r, 3); r.Partition != int32(want) {
			t.Fatalf("code %s in partition %d, murmur2 says %d", r.Key, r.Partition, want)
		}
	}
}

func TestExistingTopicUsedAsIs(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(5, "existing"))
	p := newPublisher(t, testConfig(c.ListenAddrs()))
	if _, err := publishAll(t, p, "existing", kafkatest.Codes(10), context.Background()); err != nil {
		t.Fatal(err)
	}
	if n, _ := p.PartitionCount(context.Background(), "existing"); n != 5 {
		t.Fatalf("existing topic has %d partitions now, want its own 5", n)
	}
}

func TestRetryableErrorsAreRetried(t *testing.T) {
	c := newCluster(t)
	// A timed-out append may or may not have been written: the idempotent
	// producer resends it with the same sequence numbers and the broker
	// keeps exactly one copy.
	calls := kafkatest.FailProduce(c, kerr.RequestTimedOut.Code, func(n int64) bool { return n <= 3 })
	p := newPublisher(t, testConfig(c.ListenAddrs()))
	d, err := publishAll(t, p, "t", kafkatest.Codes(2000), context.Background())
	if err != nil {
		t.Fatalf("retryable errors must not lose codes: %v", err)
	}
	if d.Delivered != 2000 || d.Failed != 0 {
		t.Fatalf("delivery %+v", d)
	}
	if calls.Load() <= 3 {
		t.Fatalf("only %d produce requests: the injected errors were not hit", calls.Load())
	}
	if n := len(kafkatest.ConsumeExactly(t, c.ListenAddrs(), "t", 2000)); n != 2000 {
		t.Fatalf("topic holds %d records, want 2000", n)
	}
}

func TestConnectionDropsAreRetried(t *testing.T) {
	c := newCluster(t)
	var n atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		if n.Add(1) <= 2 {
			return nil, errors.New("connection dropped"), true // closes the connection
		}
		return nil, nil, false
	})
	p := newPublisher(t, testConfig(c.ListenAddrs()))
	d, err := publishAll(t, p, "t", kafkatest.Codes(1000), context.Background())
	if err != nil || d.Delivered != 1000 {
		t.Fatalf("delivery %+v, err %v; want all 1000 delivered", d, err)
	}
}

func TestFatalErrorsAreCounted(t *testing.T) {
	c := newCluster(t)
	kafkatest.FailProduce(c, kerr.TopicAuthorizationFailed.Code, func(int64) bool { return true })
	p := newPublisher(t, testConfig(c.ListenAddrs()))
	d, err := publishAll(t, p, "t", kafkatest.Codes(500), context.Background())
	if !errors.Is(err, ErrUndelivered) || !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("err = %v, want ErrUndelivered wrapping TOPIC_AUTHORIZATION_FAILED", err)
	}
	if d.Sent != 500 || d.Delivered != 0 || d.Failed != 500 {
		t.Fatalf("delivery %+v, want all 500 failed", d)
	}
}

func TestSomeBatchesFail(t *testing.T) {
	c := newCluster(t)
	// Every third produce request is refused for good: the codes in it fail,
	// the others are delivered, and the two add up.
	kafkatest.FailProduce(c, kerr.InvalidRecord.Code, func(n int64) bool { return n%3 == 0 })
	cfg := testConfig(c.ListenAddrs())
	cfg.BatchMaxBytes = 4 << 10 // many small batches
	p := newPublisher(t, cfg)
	d, err := publishAll(t, p, "t", kafkatest.Codes(3000), context.Background())
	if !errors.Is(err, ErrUndelivered) {
		t.Fatalf("err = %v, want ErrUndelivered", err)
	}
	if d.Failed == 0 || d.Delivered == 0 || d.Delivered+d.Failed != 3000 {
		t.Fatalf("delivery %+v: want some delivered and some failed, adding up to 3000", d)
	}
}

func TestDeliveryTimeout(t *testing.T) {
	c := newCluster(t)
	// The broker refuses every produce with a retryable error: the records
	// are retried until their delivery timeout, then count as failed
	// instead of hanging.
	kafkatest.FailProduce(c, kerr.NotLeaderForPartition.Code, func(int64) bool { return true })
	cfg := testConfig(c.ListenAddrs())
	cfg.DeliveryTimeout = time.Second // the least franz-go allows
	p := newPublisher(t, cfg)
	d, err := publishAll(t, p, "t", kafkatest.Codes(100), context.Background())
	if !errors.Is(err, ErrUndelivered) || d.Failed != 100 {
		t.Fatalf("delivery %+v, err %v; want 100 failed", d, err)
	}
}

func TestFinishContextEndsFlush(t *testing.T) {
	c := newCluster(t)
	kafkatest.FailProduce(c, kerr.RequestTimedOut.Code, func(int64) bool { return true })
	cfg := testConfig(c.ListenAddrs())
	cfg.DeliveryTimeout = 0 // retry until Finish's context ends
	p := newPublisher(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	d, err := publishAll(t, p, "t", kafkatest.Codes(100), ctx)
	if !errors.Is(err, ErrUndelivered) || d.Sent != 100 || d.Failed != 100 {
		t.Fatalf("delivery %+v, err %v; want the 100 unacknowledged codes failed", d, err)
	}
}

func TestUnreachableBrokers(t *testing.T) {
	cfg := testConfig([]string{"127.0.0.1:1"})
	cfg.ConnectTimeout = 300 * time.Millisecond
	p := newPublisher(t, cfg)
	err := p.EnsureTopic(context.Background(), "t")
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("err = %v, want one naming the broker address", err)
	}
	// Connect is tried once per publisher: the next file fails at once.
	start := time.Now()
	if err2 := p.EnsureTopic(context.Background(), "u"); err2 == nil || time.Since(start) > time.Second {
		t.Fatalf("second EnsureTopic: %v after %s", err2, time.Since(start))
	}
}
