package producer

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/couponpipeline/coupon-producer/pkg/kafka"
	"github.com/couponpipeline/coupon-producer/pkg/kafkatest"
)

// offsetsOf returns, per partition, the lowest and highest offset of recs.
func offsetsOf(recs []*kgo.Record) map[int32]kafka.Range {
	out := map[int32]kafka.Range{}
	for _, r := range recs {
		g, ok := out[r.Partition]
		if !ok {
			g = kafka.Range{Partition: r.Partition, First: r.Offset, Last: r.Offset}
		}
		g.First, g.Last = min(g.First, r.Offset), max(g.Last, r.Offset)
		out[r.Partition] = g
	}
	return out
}

func TestAcknowledgedEverything(t *testing.T) {
	c := newCluster(t, 1)
	cs := kafkatest.Codes(20000)
	s, err := New(context.Background(), newClient(t, c), "t", testOptions())
	if err != nil {
		t.Fatal(err)
	}
	write(t, s, cs)
	if _, err := s.Finish(context.Background()); err != nil {
		t.Fatal(err)
	}
	prefix, ranges := s.Acknowledged()
	if prefix != int64(len(cs)) {
		t.Fatalf("prefix %d after every code was delivered, want %d", prefix, len(cs))
	}
	want := offsetsOf(kafkatest.ConsumeExactly(t, c.ListenAddrs(), "t", len(cs)))
	if len(ranges) != len(want) {
		t.Fatalf("ranges %+v, topic holds %+v", ranges, want)
	}
	for i, r := range ranges {
		if i > 0 && ranges[i-1].Partition >= r.Partition {
			t.Fatalf("ranges not in partition order: %+v", ranges)
		}
		if r != want[r.Partition] {
			t.Fatalf("partition %d: range %+v, topic holds %+v", r.Partition, r, want[r.Partition])
		}
	}
}

// TestAcknowledgedStopsAtAFailedBatch refuses one produce request for good:
// the prefix must end at or before the first code that failed, and every
// code before it must be in the topic.
func TestAcknowledgedStopsAtAFailedBatch(t *testing.T) {
	c := newCluster(t, 1)
	kafkatest.FailProduce(c, kerr.InvalidRecord.Code, func(n int64) bool { return n == 5 })
	cs := kafkatest.Codes(20000)
	s, err := New(context.Background(), newClient(t, c), "t", testOptions())
	if err != nil {
		t.Fatal(err)
	}
	write(t, s, cs)
	d, err := s.Finish(context.Background())
	if err == nil || d.Failed == 0 {
		t.Fatalf("delivery %+v, err %v: the fifth request should have failed", d, err)
	}
	prefix, _ := s.Acknowledged()
	if prefix <= 0 || prefix >= int64(len(cs)) {
		t.Fatalf("prefix %d of %d codes with %d failed", prefix, len(cs), d.Failed)
	}
	in := map[string]bool{}
	for _, r := range kafkatest.ConsumeExactly(t, c.ListenAddrs(), "t", int(d.Delivered)) {
		in[string(r.Key)] = true
	}
	for i, code := range cs[:prefix] {
		if !in[string(code)] {
			t.Fatalf("code %d (%s) is before the prefix %d but not in the topic", i, code, prefix)
		}
	}
	// The prefix is the longest: the code at it is missing from the topic.
	if in[string(cs[prefix])] {
		t.Fatalf("code %d (%s), at the prefix, is in the topic: the prefix could be longer", prefix, cs[prefix])
	}
}

// TestAcknowledgedWhileWriting checks the prefix mid-stream, as a
// checkpoint takes it: with the first requests refused and retried, once
// it moves, every code before it must already be in the topic.
func TestAcknowledgedWhileWriting(t *testing.T) {
	c := newCluster(t, 1)
	kafkatest.FailProduce(c, kerr.NotEnoughReplicas.Code, func(n int64) bool { return n <= 3 })
	cs := kafkatest.Codes(20000)
	s, err := New(context.Background(), newClient(t, c), "t", testOptions())
	if err != nil {
		t.Fatal(err)
	}
	write(t, s, cs[:10000])
	var mid int64
	for deadline := time.Now().Add(10 * time.Second); mid == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		mid, _ = s.Acknowledged()
	}
	if mid == 0 || mid > 10000 {
		t.Fatalf("prefix %d after 10000 codes written", mid)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics("t"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	missing := map[string]bool{}
	for _, code := range cs[:mid] {
		missing[string(code)] = true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for len(missing) > 0 && ctx.Err() == nil {
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { delete(missing, string(r.Key)) })
	}
	if len(missing) > 0 {
		t.Fatalf("%d codes before the prefix %d are not in the topic", len(missing), mid)
	}
	write(t, s, cs[10000:])
	if _, err := s.Finish(context.Background()); err != nil {
		t.Fatal(err)
	}
	if end, _ := s.Acknowledged(); end != int64(len(cs)) {
		t.Fatalf("prefix %d at the end, want %d", end, len(cs))
	}
}
