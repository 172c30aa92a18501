package producer

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/couponpipeline/coupon-producer/pkg/kafkatest"
)

// inTopic returns the codes of topic, consumed from c.
func inTopic(t *testing.T, addrs []string, topic string, n int) map[string]bool {
	t.Helper()
	in := map[string]bool{}
	for _, r := range kafkatest.ConsumeExactly(t, addrs, topic, n) {
		in[string(r.Key)] = true
	}
	return in
}

// TestPartitionPrefixesWhileAPartitionWaits holds every produce request to
// partition 0's leader: the other partitions' prefixes run ahead of the
// stream's prefix, and every code of a partition before its prefix is in
// the topic.
func TestPartitionPrefixesWhileAPartitionWaits(t *testing.T) {
	c := newCluster(t, 3)
	if err := c.MoveTopicPartition("t", 0, 0); err != nil {
		t.Fatal(err)
	}
	for p := int32(1); p < 3; p++ {
		if err := c.MoveTopicPartition("t", p, 1); err != nil {
			t.Fatal(err)
		}
	}
	release := make(chan struct{})
	c.ControlKey(int16(kmsg.Produce), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		for _, rt := range kr.(*kmsg.ProduceRequest).Topics {
			for _, rp := range rt.Partitions {
				if rp.Partition == 0 {
					c.SleepControl(func() { <-release })
				}
			}
		}
		return nil, nil, false
	})
	s, err := New(context.Background(), newClient(t, c), "t", testOptions())
	if err != nil {
		t.Fatal(err)
	}
	cs := kafkatest.Codes(10000)
	write(t, s, cs)
	var pp []int64
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if pp = s.PartitionPrefixes(); pp[1] == 10000 && pp[2] == 10000 {
			break
		}
	}
	prefix, _ := s.Acknowledged()
	if pp[1] != 10000 || pp[2] != 10000 || pp[0] != prefix || prefix >= 1000 {
		t.Fatalf("partition prefixes %v, prefix %d: partitions 1 and 2 delivered, partition 0 held", pp, prefix)
	}
	n := 0
	for _, code := range cs {
		if partitionFor(code, 3) != 0 {
			n++
		}
	}
	in := inTopic(t, c.ListenAddrs(), "t", n)
	for i, code := range cs {
		if p := partitionFor(code, 3); int64(i) < pp[p] && !in[string(code)] {
			t.Fatalf("code %d (%s) of partition %d is before its prefix %d but not in the topic", i, code, p, pp[p])
		}
	}
	close(release)
	if _, err := s.Finish(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := s.PartitionPrefixes(); !slices.Equal(got, []int64{10000, 10000, 10000}) {
		t.Fatalf("partition prefixes %v after every code was delivered", got)
	}
}

// TestResumeDropsWhatEachPartitionDelivered: after Resume, the codes of
// each partition before its bound are dropped and counted as skipped, not
// sent; the others are delivered.
func TestResumeDropsWhatEachPartitionDelivered(t *testing.T) {
	c := newCluster(t, 1)
	s, err := New(context.Background(), newClient(t, c), "t", testOptions())
	if err != nil {
		t.Fatal(err)
	}
	if s.Resume([]int64{1, 2}) {
		t.Fatal("Resume took bounds for 2 partitions of 3")
	}
	bounds := []int64{5000, 0, 20000}
	if !s.Resume(bounds) {
		t.Fatal("Resume refused bounds for the topic's 3 partitions")
	}
	cs := kafkatest.Codes(20000)
	var want []string
	for i, code := range cs {
		if int64(i) >= bounds[partitionFor(code, 3)] {
			want = append(want, string(code))
		}
	}
	write(t, s, cs)
	d, err := s.Finish(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	skipped := int64(len(cs) - len(want))
	if s.Skipped() != skipped || d.Sent != int64(len(want)) || d.Delivered != d.Sent || d.Failed != 0 {
		t.Fatalf("delivery %+v, %d skipped; want %d sent and delivered, %d skipped", d, s.Skipped(), len(want), skipped)
	}
	var got []string
	for _, r := range kafkatest.ConsumeExactly(t, c.ListenAddrs(), "t", len(want)) {
		got = append(got, string(r.Key))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("the topic holds %d codes, not the %d after each partition's bound", len(got), len(want))
	}
	if prefix, _ := s.Acknowledged(); prefix != int64(len(cs)) {
		t.Fatalf("prefix %d at the end, want %d: skipped codes count as written", prefix, len(cs))
	}
	if s.Resume(bounds) {
		t.Fatal("Resume took bounds after codes were written")
	}
}
