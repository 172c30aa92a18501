package run

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/couponpipeline/coupon-producer/pkg/kafka"
	"github.com/couponpipeline/coupon-producer/pkg/source"
)

// ackSink is a fakeSink that acknowledges the first acked codes written.
type ackSink struct {
	fakeSink
	acked int64
}

func (s *ackSink) Acknowledged() (int64, []kafka.Range) {
	return min(s.acked, int64(len(s.codes))), []kafka.Range{{Partition: 0, First: 0, Last: s.acked - 1}}
}

type ackTarget struct{ sink *ackSink }

func (a ackTarget) Open(context.Context, string) (Sink, error) { return a.sink, nil }

func TestSkipPublishesOnlyTheRest(t *testing.T) {
	p := genFile(t, 100_000)
	all := &fakeSink{}
	if _, err := File(context.Background(), p, "t", fakeTarget{sink: all}, Options{}); err != nil {
		t.Fatal(err)
	}
	rest := &ackSink{acked: 1000}
	var log bytes.Buffer
	o := opts(&log)
	o.Prepare = func(context.Context, *source.File) (int64, error) { return 60_000, nil }
	var position func() Position
	o.Track = func(f func() Position) { position = f }
	sum, err := File(context.Background(), p, "t", ackTarget{sink: rest}, o)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rest.codes, all.codes[60_000:]) {
		t.Fatalf("published %d codes, want the %d after the first 60000", len(rest.codes), len(all.codes)-60_000)
	}
	if sum.Codes != int64(len(all.codes)) || sum.AlreadyDelivered != 60_000 || sum.Delivered != int64(len(rest.codes)) {
		t.Fatalf("summary %+v", sum)
	}
	if position == nil {
		t.Fatal("Track was not called")
	}
	// 1000 of the codes written are acknowledged: the position is 61000
	// codes into the file, and its offset at or before where code 61000
	// ends.
	pos := position()
	if pos.Codes != 61_000 || sum.Acked.Codes != 61_000 || len(pos.Ranges) != 1 {
		t.Fatalf("position %+v, summary's %+v", pos, sum.Acked)
	}
	var end int64
	for _, c := range all.codes[:61_000] {
		end += int64(len(c)) + 1 // one code per line
	}
	if pos.Offset <= 0 || pos.Offset > end || pos.Line > 61_000 || pos.Line <= 0 {
		t.Fatalf("position %+v: offset must be in (0, %d], line in (0, 61000]", pos, end)
	}
	if !bytes.Contains(log.Bytes(), []byte(`"already_delivered":60000`)) {
		t.Fatalf("summary log without already_delivered:\n%s", log.String())
	}
}

func TestPrepareSkipsTheFile(t *testing.T) {
	p := genFile(t, 1000)
	sink := &fakeSink{}
	o := Options{Prepare: func(context.Context, *source.File) (int64, error) { return 0, fmt.Errorf("%w: unchanged", ErrSkipped) }}
	_, err := File(context.Background(), p, "t", fakeTarget{sink: sink}, o)
	if !errors.Is(err, ErrSkipped) || len(sink.codes) != 0 {
		t.Fatalf("err %v, %d codes published", err, len(sink.codes))
	}
}

// TestCheckpointByProgress: Checkpoint is called each time another
// CheckpointShare of the compressed file is read, evenly through the file,
// and never without a share.
func TestCheckpointByProgress(t *testing.T) {
	p := genFile(t, 3_000_000)
	// The compressed bytes read run ahead of the codes written by what
	// the decompressing goroutine holds: up to chunkDepth chunks and the
	// one being read, about 26,000 codes each.
	const ahead = (chunkDepth + 1) * chunkSize / 10
	for _, share := range []float64{0.1, 0.2} {
		sink := &fakeSink{}
		var at []int // codes written at each call
		o := Options{CheckpointShare: share, Checkpoint: func() { at = append(at, len(sink.codes)) }}
		if _, err := File(context.Background(), p, "t", fakeTarget{sink: sink}, o); err != nil {
			t.Fatal(err)
		}
		want := int(1/share + 0.5)
		if len(at) < want-1 || len(at) > want {
			t.Fatalf("share %g: %d calls, want %d or %d", share, len(at), want-1, want)
		}
		total, prev := len(sink.codes), 0
		step := int(share * float64(total))
		for i, n := range at {
			if gap := n - prev; gap < step-ahead || gap > step+ahead {
				t.Fatalf("share %g: call %d after %d codes, %d after the last; want %d ± %d (%d codes in all)", share, i+1, n, gap, step, ahead, total)
			}
			prev = n
		}
	}
	for _, o := range []Options{{Checkpoint: func() { t.Fatal("called with no share") }}, {CheckpointShare: 0.5}} {
		if _, err := File(context.Background(), p, "t", fakeTarget{sink: &fakeSink{}}, o); err != nil {
			t.Fatal(err)
		}
	}
}

// resumerSink is an ackSink that is a Resumer: it records the bounds it
// is given, drops nothing itself (the count it reports is set by the
// test) and reports fixed partition prefixes.
type resumerSink struct {
	ackSink
	bounds  []int64
	refuse  bool
	skipped int64
	pp      []int64
}

func (s *resumerSink) Resume(b []int64) bool { s.bounds = b; return !s.refuse }
func (s *resumerSink) Skipped() int64        { return s.skipped }
func (s *resumerSink) PartitionPrefixes() []int64 {
	return slices.Clone(s.pp)
}

type resumerTarget struct{ sink *resumerSink }

func (r resumerTarget) Open(context.Context, string) (Sink, error) { return r.sink, nil }

// TestResumePartitions: the resumed run's per-partition bounds reach a
// Resumer sink relative to the codes it is written, its skipped codes
// count as already delivered, and its positions never fall below the
// resumed bounds; a refused Resume leaves them out.
func TestResumePartitions(t *testing.T) {
	p := genFile(t, 100_000)
	for _, refuse := range []bool{false, true} {
		sink := &resumerSink{ackSink: ackSink{acked: 1000}, refuse: refuse, skipped: 7, pp: []int64{500, 5000, 50}}
		o := Options{
			Prepare:          func(context.Context, *source.File) (int64, error) { return 60_000, nil },
			ResumePartitions: func() []int64 { return []int64{70_000, 60_000, 80_000} },
		}
		var position func() Position
		o.Track = func(f func() Position) { position = f }
		sum, err := File(context.Background(), p, "t", resumerTarget{sink: sink}, o)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(sink.bounds, []int64{10_000, 0, 20_000}) {
			t.Fatalf("refuse %v: Resume got %v, want the bounds less the 60000 skipped", refuse, sink.bounds)
		}
		want := []int64{70_000, 65_000, 80_000}
		if refuse {
			want = []int64{60_500, 65_000, 60_050}
		}
		if got := position().PartitionCodes; !slices.Equal(got, want) {
			t.Fatalf("refuse %v: partition codes %v, want %v", refuse, got, want)
		}
		if sum.AlreadyDelivered != 60_007 {
			t.Fatalf("refuse %v: already delivered %d, want the 60000 skipped and the sink's 7", refuse, sum.AlreadyDelivered)
		}
	}
}
