// Package kafkatest holds what tests, the demo and the benchmark need of
// Kafka: the helpers of the engine's kfake tests (test codes, broker errors
// injected into a kfake cluster, reading a topic back exactly), the one
// launcher of real Apache Kafka brokers (Dist fetches the jars of the
// pom's version, Start runs one node or a KRaft cluster, with Kill, Stop
// and Restart for fault tests), and RecordCount, the one way records are
// counted.
package kafkatest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Codes returns n distinct 10-character codes.
func Codes(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = fmt.Appendf(nil, "CODE%06d", i)
	}
	return out
}

// FailProduce answers the produce requests chosen by fail (numbered from 1)
// with code for every partition, without writing anything, and lets the
// others through. It returns the count of produce requests seen.
func FailProduce(c *kfake.Cluster, code int16, fail func(n int64) bool) *atomic.Int64 {
	var n atomic.Int64
	c.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl() // keep this control function for the next requests
		if !fail(n.Add(1)) {
			return nil, nil, false
		}
		preq := req.(*kmsg.ProduceRequest)
		resp := preq.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range preq.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			st.TopicID = rt.TopicID
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	return &n
}

// ConsumeExactly reads topic from the start and fails t unless it holds
// exactly want records: fewer before a timeout, or more (a duplicate would
// show as one more).
func ConsumeExactly(t testing.TB, brokers []string, topic string, want int) []*kgo.Record {
	t.Helper()
	recs := ConsumeAtLeast(t, brokers, topic, want)
	if len(recs) != want {
		t.Fatalf("topic %s holds %d records, want %d", topic, len(recs), want)
	}
	return recs
}

// ConsumeAtLeast reads topic from the start until it has read want records,
// failing t if that takes too long, then returns them with any record that
// follows within a short wait.
func ConsumeAtLeast(t testing.TB, brokers []string, topic string, want int) []*kgo.Record {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for len(recs) < want {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records before the timeout", len(recs), want)
		}
		fs.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	}
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	return recs
}
