package ledger

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/couponpipeline/coupon-producer/pkg/kafka"
)

// ErrLive is returned by Begin when another run of the same topic is
// alive: it heartbeats within its lease.
var ErrLive = errors.New("another run of this file is live")

// DefaultTopic is the ledger topic's default name.
const DefaultTopic = "coupon-producer.runs"

// topicConfigs are the ledger topic's settings when the producer creates
// it: compacted, one record per key kept for good; every record kept for a
// day, which liveness and resume read; the broker's clock on every record,
// so that leases are judged on one clock whatever the pods' clocks say.
var topicConfigs = map[string]string{
	"cleanup.policy":         "compact",
	"min.compaction.lag.ms":  strconv.Itoa(24 * 3600 * 1000),
	"segment.ms":             strconv.Itoa(3600 * 1000),
	"message.timestamp.type": "LogAppendTime",
}

// Ledger reads and writes the ledger topic through a client shared with
// the producer.
type Ledger struct {
	cl          *kgo.Client
	adm         *kadm.Client
	topic       string
	replication int16
	log         *zap.Logger
}

// New returns the ledger on topic. A topic it creates has one partition
// and the replication factor given, the data topics' (-1: the broker's
// default).
func New(cl *kgo.Client, topic string, replicationFactor int16, log *zap.Logger) *Ledger {
	if log == nil {
		log = zap.NewNop()
	}
	return &Ledger{cl: cl, adm: kadm.NewClient(cl), topic: topic, replication: replicationFactor, log: log}
}

// Topic returns the ledger topic's name.
func (l *Ledger) Topic() string { return l.topic }

// Ensure creates the ledger topic if it does not exist and waits for its
// leader. One partition: every record of every key in one total order.
func (l *Ledger) Ensure(ctx context.Context) error {
	configs := map[string]*string{}
	for k, v := range topicConfigs {
		configs[k] = &v
	}
	resp, err := l.adm.CreateTopic(ctx, 1, l.replication, configs, l.topic)
	if err == nil {
		err = resp.Err
	}
	switch {
	case errors.Is(err, kerr.TopicAlreadyExists):
	case err != nil:
		return fmt.Errorf("create ledger topic %s: %w", l.topic, err)
	default:
		l.log.Info("created ledger topic", zap.String("ledger_topic", l.topic), zap.Int16("replication_factor", resp.ReplicationFactor))
	}
	for attempt := 1; ; attempt++ {
		t, err := kafka.TopicMetadata(ctx, l.cl, l.topic)
		if err == nil && t.Partitions[0].Leader >= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("ledger topic %s has no leader: %w", l.topic, context.Cause(ctx))
		case <-time.After(kafka.Backoff(attempt)):
		}
	}
}

// partition returns the ledger partition of key, as the producer's
// partitioner picks it.
func (l *Ledger) partition(ctx context.Context, key string) (int32, error) {
	t, err := kafka.TopicMetadata(ctx, l.cl, l.topic)
	if err != nil {
		return 0, err
	}
	p := kgo.StickyKeyPartitioner(nil).ForTopic(l.topic).Partition(&kgo.Record{Key: []byte(key)}, len(t.Partitions))
	return int32(p), nil
}

// Read returns every record of key in the ledger, oldest first, up to the
// end of the log when it is called.
func (l *Ledger) Read(ctx context.Context, key string) ([]Entry, error) {
	part, err := l.partition(ctx, key)
	if err != nil {
		return nil, err
	}
	starts, err := l.adm.ListStartOffsets(ctx, l.topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("ledger %s start offsets: %w", l.topic, err)
	}
	ends, err := l.adm.ListEndOffsets(ctx, l.topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return nil, fmt.Errorf("ledger %s end offsets: %w", l.topic, err)
	}
	start, _ := starts.Lookup(l.topic, part)
	end, _ := ends.Lookup(l.topic, part)
	if end.Offset <= start.Offset {
		return nil, nil
	}
	// A consumer of its own with the producer's connection settings: the
	// shared client produces only.
	cl, err := kgo.NewClient(append(l.cl.Opts(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{l.topic: {part: kgo.NewOffset().At(start.Offset)}}),
		kgo.FetchMaxWait(100*time.Millisecond))...)
	if err != nil {
		return nil, fmt.Errorf("ledger consumer: %w", err)
	}
	defer cl.Close()
	var out []Entry
	// A compacted log has gaps, but its last offset holds a record: the
	// latest of its key.
	for seen := start.Offset - 1; seen < end.Offset-1; {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("read ledger %s: %w", l.topic, context.Cause(ctx))
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil {
			return nil, fmt.Errorf("read ledger %s: %w", l.topic, ferr)
		}
		var derr error
		fs.EachRecord(func(r *kgo.Record) {
			seen = max(seen, r.Offset)
			if string(r.Key) != key || r.Offset >= end.Offset || derr != nil {
				return
			}
			rec, err := Decode(r.Value)
			if err != nil {
				derr = fmt.Errorf("ledger %s offset %d: %w", l.topic, r.Offset, err)
				return
			}
			out = append(out, Entry{Offset: r.Offset, Timestamp: r.Timestamp, Record: rec})
		})
		if derr != nil {
			return nil, derr
		}
	}
	return out, nil
}

// write appends r under its topic's key and returns its offset.
func (l *Ledger) write(ctx context.Context, r Record) (int64, error) {
	r.V = Version
	r.Heartbeat = time.Now().UTC()
	v, err := json.Marshal(r)
	if err != nil {
		return 0, fmt.Errorf("encode ledger record: %w", err)
	}
	res := l.cl.ProduceSync(ctx, &kgo.Record{Topic: l.topic, Key: []byte(r.Topic), Value: v})
	rec, err := res.First()
	if err != nil {
		return 0, fmt.Errorf("write %s record to ledger %s: %w", r.Status, l.topic, err)
	}
	return rec.Offset, nil
}

// Options tune a run's use of the ledger.
type Options struct {
	// Interval is how often a run checkpoints; its lease is three of them.
	Interval time.Duration
	// Force publishes a file the ledger says is already published.
	Force bool
	// NoResume publishes every code, even after an unfinished run.
	NoResume bool
}

// Lease is how long a run may go without a record before others take it
// for gone.
func (o Options) Lease() time.Duration { return 3 * o.Interval }

// Plan is what Begin decided.
type Plan struct {
	// Unchanged: the last completed run published this very file and the
	// topic still holds its records. A skipped record is written; nothing
	// is to be published.
	Unchanged bool
	// Resume is the checkpoint of the unfinished run to resume, whose ID
	// is ResumedFrom: its first Resume.Codes codes are in the topic.
	Resume      *Position
	ResumedFrom string
	// Reason says why the file is published or skipped, for the log.
	Reason string
}

// Claim is one run's presence in the ledger: its identity, its heartbeat
// and its final record.
type Claim struct {
	l        *Ledger
	o        Options
	rec      Record // identity fields, repeated in every record
	self     int64  // offset of the started record
	snapshot *Snapshot
	resume   *Position

	mu       sync.Mutex
	position func() Position // this run's progress; nil before publishing
	stop     chan struct{}
	done     chan struct{}
	nudge    chan struct{} // see Nudge
}

// Begin enters a run of rec.File into the ledger: it writes the started
// record, waits until the runs that started before it are known to be gone
// or alive, and decides. rec holds the file's identity (topic, file, size,
// mtime, sha256) and the producer's and pod's names. It returns ErrLive,
// after writing a skipped record, when another run is alive, and a nil Claim
// with plan.Unchanged, after writing a skipped record, when the file is
// already published. Otherwise the run heartbeats until Finish.
func (l *Ledger) Begin(ctx context.Context, rec Record, o Options) (*Claim, Plan, error) {
	r, err := l.start(ctx, rec, o)
	if err != nil {
		return nil, Plan{}, err
	}
	hist, err := r.wait(ctx)
	if err != nil {
		return nil, Plan{}, err
	}
	// Runs that ended while this one waited may have completed the file.
	if s := lastCompleted(hist); s != nil {
		r.snapshot = s
	}
	plan, err := r.unchanged(ctx)
	if err != nil {
		return nil, Plan{}, err
	}
	if plan.Unchanged {
		return nil, plan, nil
	}
	if e := resumable(hist, r.self, rec.Size, rec.SHA256); e != nil && !o.NoResume {
		plan.Resume, plan.ResumedFrom = e.Checkpoint, e.RunID
		r.resume = e.Checkpoint
		r.rec.ResumedFrom = e.RunID
	}
	go r.heartbeat()
	return r, plan, nil
}

// start writes the started record of a run, with the last completed
// snapshot the key's history knows.
func (l *Ledger) start(ctx context.Context, rec Record, o Options) (*Claim, error) {
	hist, err := l.Read(ctx, rec.Topic)
	if err != nil {
		return nil, err
	}
	rec.RunID = newRunID()
	rec.StartedAt = time.Now().UTC()
	rec.LeaseMillis = o.Lease().Milliseconds()
	rec.LastCompleted = lastCompleted(hist)
	r := &Claim{l: l, o: o, rec: rec, snapshot: rec.LastCompleted, stop: make(chan struct{}), done: make(chan struct{}), nudge: make(chan struct{}, 1)}
	rec.Status = Started
	if r.self, err = l.write(ctx, rec); err != nil {
		return nil, err
	}
	return r, nil
}

// wait reads the key's history until judge finds no earlier run alive or
// unsure, and returns that history. While one is unsure it writes a
// checkpoint every interval, so that the others see it. It returns
// ErrLive, after writing a skipped record, when one is alive, and the
// context's cause, after writing an interrupted record, when ctx ends.
func (r *Claim) wait(ctx context.Context) ([]Entry, error) {
	l, rec, o := r.l, r.rec, r.o
	log := l.log.With(zap.String("topic", rec.Topic), zap.String("run_id", rec.RunID))
	for {
		hist, err := l.Read(ctx, rec.Topic)
		if err != nil {
			return nil, err
		}
		now := r.latest(hist)
		v, by := judge(hist, r.self, now)
		if v == goOn {
			return hist, nil
		}
		if v == alive {
			err := fmt.Errorf("%w: run %s (job %q, pod %q) started at %s, last record at %s",
				ErrLive, by.RunID, by.Job, by.Pod, by.StartedAt.Format(time.RFC3339), by.Timestamp.Format(time.RFC3339))
			r.final(ctx, Record{Status: Skipped, Reason: err.Error()})
			return nil, err
		}
		log.Info("waiting: an earlier run may still be alive", zap.String("other_run_id", by.RunID),
			zap.Time("other_last_record", by.Timestamp), zap.Duration("lease", time.Duration(by.LeaseMillis)*time.Millisecond))
		select {
		case <-ctx.Done():
			r.final(context.WithoutCancel(ctx), Record{Status: Interrupted, Reason: "interrupted while waiting for an earlier run"})
			return nil, context.Cause(ctx)
		case <-time.After(o.Interval):
		}
		if _, err := l.write(ctx, r.checkpoint(Position{})); err != nil {
			return nil, err
		}
	}
}

// unchanged returns a Plan with Unchanged, after writing a skipped record,
// when the last completed run published this very file (see sameFile) and
// the topic still holds its records. Otherwise the plan's Reason says why
// the same file is published again, if it is the same.
func (r *Claim) unchanged(ctx context.Context) (Plan, error) {
	s := r.snapshot
	if !sameFile(s, r.rec, r.o.Force) {
		return Plan{}, nil
	}
	held, why, err := r.l.Holds(ctx, r.rec.Topic, s)
	if err != nil {
		return Plan{}, err
	}
	if !held {
		return Plan{Reason: "same file as the last completed run, but " + why}, nil
	}
	plan := Plan{Unchanged: true, Reason: fmt.Sprintf("unchanged: run %s completed this file at %s", s.RunID, s.EndedAt.Format(time.RFC3339))}
	if err := r.final(ctx, Record{Status: Skipped, Reason: plan.Reason}); err != nil {
		return Plan{}, err
	}
	return plan, nil
}

// latest returns the broker's timestamp of r's latest record in hist.
func (r *Claim) latest(hist []Entry) time.Time {
	var t time.Time
	for _, e := range hist {
		if e.RunID == r.rec.RunID {
			t = e.Timestamp
		}
	}
	return t
}

func newRunID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Holds reports whether topic still holds the records of snapshot s: the
// same topic (not deleted and created again) whose log start offsets are
// not past the first offsets of s, and whose end offsets are past its last
// ones. When not, it says why.
func (l *Ledger) Holds(ctx context.Context, topic string, s *Snapshot) (bool, string, error) {
	t, err := kafka.TopicMetadata(ctx, l.cl, topic)
	if errors.Is(err, kerr.UnknownTopicOrPartition) {
		return false, "the topic does not exist", nil
	}
	if err != nil {
		return false, "", err
	}
	if hex.EncodeToString(t.TopicID[:]) != s.TopicID {
		return false, "the topic was deleted and created again", nil
	}
	starts, err := l.adm.ListStartOffsets(ctx, topic)
	if err == nil {
		err = starts.Error()
	}
	if err != nil {
		return false, "", fmt.Errorf("start offsets of %s: %w", topic, err)
	}
	ends, err := l.adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return false, "", fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	for _, rg := range s.Partitions {
		st, ok1 := starts.Lookup(topic, rg.Partition)
		en, ok2 := ends.Lookup(topic, rg.Partition)
		switch {
		case !ok1 || !ok2:
			return false, fmt.Sprintf("partition %d is gone", rg.Partition), nil
		case st.Offset > rg.First:
			return false, fmt.Sprintf("partition %d starts at offset %d, after the run's first record at %d (retention or deletion removed records)", rg.Partition, st.Offset, rg.First), nil
		case en.Offset <= rg.Last:
			return false, fmt.Sprintf("partition %d ends at offset %d, before the run's last record at %d", rg.Partition, en.Offset, rg.Last), nil
		}
	}
	return true, "", nil
}

// Track gives the run the source of its progress, called at each
// checkpoint from the heartbeat's goroutine: the position in the file's
// codes (resumed codes included) and this run's acknowledged offsets.
func (r *Claim) Track(position func() Position) {
	r.mu.Lock()
	r.position = position
	r.mu.Unlock()
}

// ID returns the run's ID.
func (r *Claim) ID() string { return r.rec.RunID }

// current returns the position to checkpoint: this run's, with the
// partitions of the run it resumed. Before publishing, that run's
// checkpoint.
func (r *Claim) current() Position {
	r.mu.Lock()
	f := r.position
	r.mu.Unlock()
	var p Position
	if r.resume != nil {
		p = *r.resume
	}
	if f == nil {
		return p
	}
	cur := f()
	var prev []kafka.Range
	if r.resume != nil {
		prev = r.resume.Partitions
	}
	cur.Partitions = Merge(prev, cur.Partitions)
	return cur
}

func (r *Claim) checkpoint(p Position) Record {
	c := r.rec
	c.Status = Checkpoint
	c.Checkpoint = &p
	return c
}

// heartbeat writes a checkpoint when Nudge asks for one and the
// acknowledged position has moved since the last, and at least every
// interval, which keeps the lease, until Finish. A failed write is logged
// and the run goes on: the data is still being delivered, and the next
// checkpoint may get through before the lease ends.
func (r *Claim) heartbeat() {
	defer close(r.done)
	t := time.NewTimer(r.o.Interval)
	defer t.Stop()
	last := int64(-1) // codes of the last checkpoint written
	for {
		nudged := false
		select {
		case <-r.stop:
			return
		case <-t.C:
		case <-r.nudge:
			nudged = true
		}
		p := r.current()
		if nudged && p.Codes == last {
			continue // nothing new acknowledged; the timer keeps the lease
		}
		ctx, cancel := context.WithTimeout(context.Background(), r.o.Interval)
		_, err := r.l.write(ctx, r.checkpoint(p))
		cancel()
		if err != nil {
			r.l.log.Warn("cannot checkpoint", zap.String("topic", r.rec.Topic), zap.String("run_id", r.rec.RunID), zap.NamedError("err", err))
		} else {
			last = p.Codes
		}
		t.Reset(r.o.Interval)
	}
}

// Nudge asks for a checkpoint now, by progress rather than by time: the
// heartbeat writes one unless nothing was acknowledged since the last.
// It never blocks; nudges that come while a checkpoint is being written
// make one more.
func (r *Claim) Nudge() {
	select {
	case r.nudge <- struct{}{}:
	default:
	}
}

// Outcome is the end of a run, for its final record.
type Outcome struct {
	Status           Status // Completed, Failed or Interrupted
	Reason           string
	Lines            int64
	Codes            int64 // every code of the file
	AlreadyDelivered int64 // codes skipped as delivered by the run resumed
	Delivered        int64
	Failed           int64
	// Position is where every code is acknowledged, with this run's
	// partitions only.
	Position Position
}

// Finish stops the heartbeat and writes the run's final record. A
// completed run becomes the topic's last completed snapshot, with the
// offsets of the runs it resumed.
func (r *Claim) Finish(ctx context.Context, o Outcome) error {
	close(r.stop)
	<-r.done
	rec := Record{
		Status: o.Status, Reason: o.Reason, Lines: o.Lines, Codes: o.Codes, AlreadyDelivered: o.AlreadyDelivered,
		Delivered: o.Delivered, Failed: o.Failed, Partitions: o.Position.Partitions,
	}
	pos := o.Position
	if r.resume != nil {
		pos.Partitions = Merge(r.resume.Partitions, pos.Partitions)
	}
	rec.Checkpoint = &pos
	if o.Status == Completed {
		t, err := kafka.TopicMetadata(ctx, r.l.cl, r.rec.Topic)
		if err != nil {
			return fmt.Errorf("ledger: topic ID of %s: %w", r.rec.Topic, err)
		}
		r.snapshot = &Snapshot{
			RunID: r.rec.RunID, File: r.rec.File, Size: r.rec.Size, SHA256: r.rec.SHA256, Codes: o.Codes,
			TopicID: hex.EncodeToString(t.TopicID[:]), EndedAt: time.Now().UTC(), Partitions: pos.Partitions,
			TopicIDBase64: TopicIDBase64(t.TopicID),
		}
	}
	return r.final(ctx, rec)
}

// final writes a final record with the run's identity.
func (r *Claim) final(ctx context.Context, f Record) error {
	rec := r.rec
	rec.Status, rec.Reason = f.Status, f.Reason
	rec.Lines, rec.Codes, rec.AlreadyDelivered, rec.Delivered, rec.Failed = f.Lines, f.Codes, f.AlreadyDelivered, f.Delivered, f.Failed
	rec.Partitions, rec.Checkpoint = f.Partitions, f.Checkpoint
	rec.LastCompleted = r.snapshot
	end := time.Now().UTC()
	rec.EndedAt = &end
	_, err := r.l.write(ctx, rec)
	return err
}
