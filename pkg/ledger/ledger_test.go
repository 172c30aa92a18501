package ledger

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/couponpipeline/coupon-producer/pkg/kafka"
)

// fixture is a kfake cluster with data topic "data" of 3 partitions and a
// ledger on it.
type fixture struct {
	c  *kfake.Cluster
	cl *kgo.Client
	l  *Ledger
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "data"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	l := New(cl, DefaultTopic, -1, nil)
	if err := l.Ensure(context.Background()); err != nil {
		t.Fatal(err)
	}
	return &fixture{c: c, cl: cl, l: l}
}

// publish writes n records to every partition of "data" and returns their
// ranges.
func (f *fixture) publish(t *testing.T, n int) []kafka.Range {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(f.c.ListenAddrs()...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	out := map[int32]kafka.Range{}
	for p := int32(0); p < 3; p++ {
		for i := range n {
			r, err := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "data", Partition: p, Value: fmt.Appendf(nil, "%d", i)}).First()
			if err != nil {
				t.Fatal(err)
			}
			g, ok := out[p]
			if !ok {
				g = kafka.Range{Partition: p, First: r.Offset}
			}
			g.Last = r.Offset
			out[p] = g
		}
	}
	return []kafka.Range{out[0], out[1], out[2]}
}

var file = Record{Topic: "data", File: "/data/couponbase1.gz", Size: 100, SHA256: "abc", ProducerVersion: "test"}

func opts() Options { return Options{Interval: 100 * time.Millisecond} }

func (f *fixture) complete(t *testing.T, rec Record, ranges []kafka.Range, o Options) {
	t.Helper()
	r, plan, err := f.l.Begin(context.Background(), rec, o)
	if err != nil || plan.Unchanged {
		t.Fatalf("Begin: plan %+v, err %v", plan, err)
	}
	if err := r.Finish(context.Background(), Outcome{Status: Completed, Codes: 9, Delivered: 9, Position: Position{Codes: 9, Partitions: ranges}}); err != nil {
		t.Fatal(err)
	}
}

func statuses(t *testing.T, l *Ledger) []Status {
	t.Helper()
	hist, err := l.Read(context.Background(), "data")
	if err != nil {
		t.Fatal(err)
	}
	var out []Status
	for _, e := range hist {
		out = append(out, e.Status)
	}
	return out
}

// waitCheckpoint waits until the ledger holds a checkpoint of r at codes.
func (f *fixture) waitCheckpoint(t *testing.T, r *Claim, codes int64) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		hist, err := f.l.Read(context.Background(), r.rec.Topic)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range hist {
			if e.RunID == r.ID() && e.Status == Checkpoint && e.Checkpoint != nil && e.Checkpoint.Codes == codes {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint of run %s at %d codes within 10s", r.ID(), codes)
		}
		time.Sleep(opts().Interval / 4)
	}
}

func TestCompletedThenUnchangedThenForced(t *testing.T) {
	f := newFixture(t)
	f.complete(t, file, f.publish(t, 3), opts())

	hist, err := f.l.Read(context.Background(), "data")
	if err != nil {
		t.Fatal(err)
	}
	last := hist[len(hist)-1]
	if last.Status != Completed || last.LastCompleted == nil || last.LastCompleted.RunID != last.RunID || len(last.LastCompleted.TopicID) != 32 {
		t.Fatalf("last record %+v, snapshot %+v", last.Record, last.LastCompleted)
	}

	r, plan, err := f.l.Begin(context.Background(), file, opts())
	if err != nil || !plan.Unchanged || r != nil {
		t.Fatalf("second Begin: run %v, plan %+v, err %v", r, plan, err)
	}
	got := statuses(t, f.l)
	if got[len(got)-1] != Skipped {
		t.Fatalf("statuses %v, want a final skipped", got)
	}
	// Every record carries the snapshot, a skipped one too.
	hist, _ = f.l.Read(context.Background(), "data")
	if s := hist[len(hist)-1].LastCompleted; s == nil || s.RunID != last.RunID {
		t.Fatalf("skipped record's snapshot %+v, want run %s", s, last.RunID)
	}

	o := opts()
	o.Force = true
	r, plan, err = f.l.Begin(context.Background(), file, o)
	if err != nil || plan.Unchanged {
		t.Fatalf("forced Begin: plan %+v, err %v", plan, err)
	}
	r.Finish(context.Background(), Outcome{Status: Failed, Reason: "test"})

	changed := file
	changed.SHA256 = "def"
	r, plan, err = f.l.Begin(context.Background(), changed, opts())
	if err != nil || plan.Unchanged {
		t.Fatalf("Begin of a changed file: plan %+v, err %v", plan, err)
	}
	r.Finish(context.Background(), Outcome{Status: Failed, Reason: "test"})
}

func TestTopicEmptiedIsNotUnchanged(t *testing.T) {
	f := newFixture(t)
	ranges := f.publish(t, 3)
	f.complete(t, file, ranges, opts())
	// Retention (here DeleteRecords) removes the first records.
	adm := kadm.NewClient(f.cl)
	var os kadm.Offsets
	os.Add(kadm.Offset{Topic: "data", Partition: 1, At: ranges[1].First + 1})
	if _, err := adm.DeleteRecords(context.Background(), os); err != nil {
		t.Fatal(err)
	}
	r, plan, err := f.l.Begin(context.Background(), file, opts())
	if err != nil || plan.Unchanged {
		t.Fatalf("Begin: plan %+v, err %v", plan, err)
	}
	t.Logf("reason: %s", plan.Reason)
	r.Finish(context.Background(), Outcome{Status: Failed, Reason: "test"})
}

func TestResumeAfterInterrupted(t *testing.T) {
	f := newFixture(t)
	ranges := f.publish(t, 2)
	r, _, err := f.l.Begin(context.Background(), file, opts())
	if err != nil {
		t.Fatal(err)
	}
	pos := Position{Codes: 5, Line: 5, Offset: 50, Partitions: ranges}
	r.Track(func() Position { return pos })
	f.waitCheckpoint(t, r, pos.Codes)
	if err := r.Finish(context.Background(), Outcome{Status: Interrupted, Codes: 6, Delivered: 5, Position: pos}); err != nil {
		t.Fatal(err)
	}
	got := statuses(t, f.l)
	if len(got) < 3 || got[1] != Checkpoint {
		t.Fatalf("statuses %v, want started, checkpoints, interrupted", got)
	}

	r2, plan, err := f.l.Begin(context.Background(), file, opts())
	if err != nil {
		t.Fatal(err)
	}
	if plan.Resume == nil || plan.Resume.Codes != 5 || plan.ResumedFrom != r.ID() {
		t.Fatalf("plan %+v, want a resume after 5 codes of run %s", plan, r.ID())
	}
	more := f.publish(t, 1)
	if err := r2.Finish(context.Background(), Outcome{Status: Completed, Codes: 9, AlreadyDelivered: 5, Delivered: 4, Position: Position{Codes: 9, Partitions: more}}); err != nil {
		t.Fatal(err)
	}
	hist, _ := f.l.Read(context.Background(), "data")
	last := hist[len(hist)-1]
	s := last.LastCompleted
	if s == nil || len(s.Partitions) != 3 {
		t.Fatalf("snapshot %+v", s)
	}
	for i, rg := range s.Partitions {
		if rg.First != ranges[i].First || rg.Last != more[i].Last {
			t.Fatalf("snapshot partition %d: %+v, want from %d (resumed run) to %d", i, rg, ranges[i].First, more[i].Last)
		}
	}
	if last.ResumedFrom != r.ID() || last.AlreadyDelivered != 5 {
		t.Fatalf("final record %+v", last.Record)
	}
	// NoResume starts over.
	r3, plan, err := f.l.Begin(context.Background(), file, Options{Interval: 100 * time.Millisecond, Force: true, NoResume: true})
	if err != nil || plan.Resume != nil {
		t.Fatalf("plan %+v, err %v", plan, err)
	}
	r3.Finish(context.Background(), Outcome{Status: Failed})
}

func TestGoneRunIsResumedAfterItsLease(t *testing.T) {
	f := newFixture(t)
	r, _, err := f.l.Begin(context.Background(), file, opts())
	if err != nil {
		t.Fatal(err)
	}
	r.Track(func() Position { return Position{Codes: 3} })
	f.waitCheckpoint(t, r, 3)
	// The pod dies: no final record, no more heartbeats.
	close(r.stop)
	<-r.done

	start := time.Now()
	r2, plan, err := f.l.Begin(context.Background(), file, opts())
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Finish(context.Background(), Outcome{Status: Failed})
	if plan.Resume == nil || plan.Resume.Codes != 3 || plan.ResumedFrom != r.ID() {
		t.Fatalf("plan %+v, want a resume after 3 codes", plan)
	}
	t.Logf("waited %s for a lease of %s", time.Since(start), opts().Lease())
}

func TestLiveRunRefusesAnother(t *testing.T) {
	f := newFixture(t)
	r, _, err := f.l.Begin(context.Background(), file, opts())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Finish(context.Background(), Outcome{Status: Failed})
	r2, _, err := f.l.Begin(context.Background(), file, opts())
	if !errors.Is(err, ErrLive) || r2 != nil {
		t.Fatalf("second Begin: run %v, err %v, want ErrLive", r2, err)
	}
	got := statuses(t, f.l)
	if got[len(got)-1] != Skipped && got[len(got)-1] != Checkpoint {
		t.Fatalf("statuses %v", got)
	}
}

// TestTogetherOneWins starts runs at once: exactly one goes on.
func TestTogetherOneWins(t *testing.T) {
	f := newFixture(t)
	const n = 4
	type res struct {
		r   *Claim
		err error
	}
	out := make(chan res, n)
	for range n {
		go func() {
			r, _, err := f.l.Begin(context.Background(), file, opts())
			out <- res{r, err}
		}()
	}
	var winners []*Claim
	for range n {
		x := <-out
		switch {
		case x.err == nil:
			winners = append(winners, x.r)
		case !errors.Is(x.err, ErrLive):
			t.Fatalf("Begin: %v", x.err)
		}
	}
	for _, w := range winners {
		w.Finish(context.Background(), Outcome{Status: Failed})
	}
	if len(winners) != 1 {
		t.Fatalf("%d runs went on, want 1", len(winners))
	}
}

// TestNudgeCheckpointsByProgress: with an interval far longer than the
// test, a checkpoint is written only when Nudge asks and the acknowledged
// position has moved since the last one.
func TestNudgeCheckpointsByProgress(t *testing.T) {
	f := newFixture(t)
	r, _, err := f.l.Begin(context.Background(), file, Options{Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	var codes atomic.Int64
	r.Track(func() Position { return Position{Codes: codes.Load()} })
	checkpoints := func() []int64 {
		t.Helper()
		hist, err := f.l.Read(context.Background(), "data")
		if err != nil {
			t.Fatal(err)
		}
		var out []int64
		for _, e := range hist {
			if e.Status == Checkpoint {
				out = append(out, e.Checkpoint.Codes)
			}
		}
		return out
	}
	await := func(want []int64) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if slices.Equal(checkpoints(), want) {
				return
			}
		}
		t.Fatalf("checkpoints %v, want %v", checkpoints(), want)
	}
	codes.Store(50)
	r.Nudge()
	await([]int64{50})
	r.Nudge() // nothing new acknowledged
	time.Sleep(300 * time.Millisecond)
	codes.Store(100)
	r.Nudge()
	await([]int64{50, 100})
	if err := r.Finish(context.Background(), Outcome{Status: Interrupted, Position: Position{Codes: 100}}); err != nil {
		t.Fatal(err)
	}
	if got, want := statuses(t, f.l), []Status{Started, Checkpoint, Checkpoint, Interrupted}; !slices.Equal(got, want) {
		t.Fatalf("records %v, want %v", got, want)
	}
}

// TestSnapshotTopicIDInBothForms: the snapshot gives the data topic's ID
// in hex and in the base64 form Kafka's tools print, the same 16 bytes.
func TestSnapshotTopicIDInBothForms(t *testing.T) {
	f := newFixture(t)
	f.complete(t, file, f.publish(t, 1), opts())
	hist, err := f.l.Read(context.Background(), "data")
	if err != nil {
		t.Fatal(err)
	}
	s := hist[len(hist)-1].LastCompleted
	meta, err := kafka.TopicMetadata(context.Background(), f.cl, "data")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(s.TopicIDBase64)
	if err != nil || len(s.TopicIDBase64) != 22 || !bytes.Equal(raw, meta.TopicID[:]) || s.TopicID != hex.EncodeToString(raw) {
		t.Fatalf("snapshot topic_id %q, topic_id_base64 %q (%v); the topic's ID is %x", s.TopicID, s.TopicIDBase64, err, meta.TopicID)
	}
}
