package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/couponpipeline/coupon-producer/pkg/ledger"
)

// The run ledger against the real broker: skip an unchanged file, resume
// after SIGKILL and SIGTERM, a deleted topic, a truncated file, and two runs
// at once. Each test has a ledger topic of its own.

// ledgerRun is the producer started in the background.
type ledgerRun struct {
	cmd    *exec.Cmd
	stderr *syncBuf
	done   chan struct{}
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startProducer runs the producer on file to topic with ledger topic runs
// and a short checkpoint interval.
func startProducer(t *testing.T, brokers, runs, topic, file string, extra ...string) *ledgerRun {
	t.Helper()
	args := append([]string{"--topic", topic, "--ledger-topic", runs, "--checkpoint-interval", "300ms", "--log-format", "json"}, extra...)
	cmd := exec.Command(binary, append(args, file)...)
	cmd.Env = []string{"KAFKA_BROKERS=" + brokers, "JOB_NAME=test-job", "POD_NAME=test-pod"}
	r := &ledgerRun{cmd: cmd, stderr: &syncBuf{}, done: make(chan struct{})}
	cmd.Stderr = r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(r.done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-r.done })
	return r
}

// wait returns the exit code.
func (r *ledgerRun) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(3 * time.Minute):
		t.Fatalf("producer still running after 3m:\n%s", r.stderr)
	}
	return r.cmd.ProcessState.ExitCode()
}

func runProducer(t *testing.T, brokers, runs, topic, file string, extra ...string) (int, string, time.Duration) {
	t.Helper()
	start := time.Now()
	r := startProducer(t, brokers, runs, topic, file, extra...)
	code := r.wait(t)
	return code, r.stderr.String(), time.Since(start)
}

func readLedger(t *testing.T, brokers, runs, topic string) []ledger.Entry {
	t.Helper()
	hist, err := tryReadLedger(brokers, runs, topic)
	if err != nil {
		t.Fatal(err)
	}
	return hist
}

func tryReadLedger(brokers, runs, topic string) ([]ledger.Entry, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...))
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return ledger.New(cl, runs, -1, nil).Read(ctx, topic)
}

// awaitCheckpoint polls the ledger until a checkpoint of topic says at
// least n codes are acknowledged, and fails t if the run ends first.
func awaitCheckpoint(t *testing.T, brokers, runs, topic string, r *ledgerRun, n int64) ledger.Entry {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case <-r.done:
			t.Fatalf("the run ended before a checkpoint was seen (make the file larger):\n%s", r.stderr)
		default:
		}
		hist, _ := tryReadLedger(brokers, runs, topic) // the ledger may not exist yet
		for i := len(hist) - 1; i >= 0; i-- {
			if e := hist[i]; e.Status == ledger.Checkpoint && e.Checkpoint != nil && e.Checkpoint.Codes >= n {
				return e
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no checkpoint within 2m")
	return ledger.Entry{}
}

func lastRecord(t *testing.T, hist []ledger.Entry) ledger.Record {
	t.Helper()
	if len(hist) == 0 {
		t.Fatal("the ledger holds no record of the topic")
	}
	return hist[len(hist)-1].Record
}

func summaryInt(t *testing.T, stderr, field string) int64 {
	t.Helper()
	v, ok := summary(t, stderr)[field].(float64)
	if !ok {
		t.Fatalf("summary has no %s:\n%s", field, stderr)
	}
	return int64(v)
}

// checkResumed checks what a run resumed after a checkpoint of ckpt codes
// left in the topic: every code of the file at least once, each extra copy
// a code that comes after the checkpoint, and every code within the
// offsets of the ledger's snapshot snap.
func checkResumed(t *testing.T, brokers, topic, file string, ckpt int64, snap *ledger.Snapshot) (extra int) {
	t.Helper()
	codes := fileCodes(t, file)
	recs := readTopic(t, brokers, topic)
	all, inSnap := map[string]int{}, map[string]int{}
	for _, r := range recs {
		if !bytes.Equal(r.Key, r.Value) {
			t.Fatalf("record key %q != value %q", r.Key, r.Value)
		}
		all[string(r.Key)]++
		for _, rg := range snap.Partitions {
			if rg.Partition == r.Partition && rg.First <= r.Offset && r.Offset <= rg.Last {
				inSnap[string(r.Key)]++
			}
		}
	}
	for i, c := range codes {
		if all[c] == 0 {
			t.Fatalf("code %d (%s) of the file is not in the topic", i, c)
		}
		if inSnap[c] == 0 {
			t.Fatalf("code %d (%s) of the file is not within the snapshot's offsets %+v", i, c, snap.Partitions)
		}
		all[c]--
		inSnap[c]--
	}
	after := map[string]bool{}
	for _, c := range codes[ckpt:] {
		after[c] = true
	}
	for c, n := range all {
		if n > 0 && !after[c] {
			t.Fatalf("code %s is in the topic %d extra times but is not after the checkpoint (%d codes)", c, n, ckpt)
		}
		extra += n
	}
	return extra
}

func snapshotCount(s *ledger.Snapshot) int64 {
	var n int64
	for _, r := range s.Partitions {
		n += r.Last - r.First + 1
	}
	return n
}

func TestLedgerSkipsUnchanged(t *testing.T) {
	brokers := testBrokers(t)
	runs, topic := uniqueTopic("runs"), uniqueTopic("couponbase1")
	file := generate(t, 3_000_000, 11)
	codes := int64(len(fileCodes(t, file)))

	code, stderr, first := runProducer(t, brokers, runs, topic, file)
	if code != 0 {
		t.Fatalf("first run: exit %d:\n%s", code, stderr)
	}
	if n := topicCount(t, brokers, topic); n != codes {
		t.Fatalf("first run: topic holds %d records, want %d", n, codes)
	}
	last := lastRecord(t, readLedger(t, brokers, runs, topic))
	if last.Status != ledger.Completed || last.LastCompleted == nil || snapshotCount(last.LastCompleted) != codes ||
		last.Codes != codes || last.Delivered != codes || last.Job != "test-job" || last.Pod != "test-pod" {
		t.Fatalf("first run's final record %+v, snapshot %+v", last, last.LastCompleted)
	}

	code, stderr, second := runProducer(t, brokers, runs, topic, file)
	if code != 0 || !strings.Contains(stderr, `"msg":"unchanged"`) {
		t.Fatalf("second run: exit %d, want 0 and an unchanged line:\n%s", code, stderr)
	}
	if n := topicCount(t, brokers, topic); n != codes {
		t.Fatalf("second run published: topic holds %d records, want %d", n, codes)
	}
	if st := lastRecord(t, readLedger(t, brokers, runs, topic)).Status; st != ledger.Skipped {
		t.Fatalf("second run's final record is %s, want skipped", st)
	}
	t.Logf("first run %s, unchanged run %s (%.1f%% of the first)", first.Round(time.Millisecond), second.Round(time.Millisecond),
		100*second.Seconds()/first.Seconds())

	code, stderr, _ = runProducer(t, brokers, runs, topic, file, "--force")
	if code != 0 {
		t.Fatalf("forced run: exit %d:\n%s", code, stderr)
	}
	if n := topicCount(t, brokers, topic); n != 2*codes {
		t.Fatalf("forced run: topic holds %d records, want %d", n, 2*codes)
	}
	if st := lastRecord(t, readLedger(t, brokers, runs, topic)).Status; st != ledger.Completed {
		t.Fatalf("forced run's final record is %s, want completed", st)
	}
}

// killedMidFile runs the producer until the ledger shows a checkpoint of
// at least 500000 codes (of 3 million), then stops it with sig. Gzip batches slow it down enough to be caught mid-file.
func killedMidFile(t *testing.T, brokers, runs, topic, file string, sig syscall.Signal) (ledger.Entry, string, int) {
	t.Helper()
	r := startProducer(t, brokers, runs, topic, file, "--compression", "gzip")
	ck := awaitCheckpoint(t, brokers, runs, topic, r, 500_000)
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	code := r.wait(t)
	return ck, r.stderr.String(), code
}

func TestLedgerResumesAfterSIGKILL(t *testing.T) {
	brokers := testBrokers(t)
	runs, topic := uniqueTopic("runs"), uniqueTopic("couponbase1")
	file := generate(t, 3_000_000, 12)
	_, _, code := killedMidFile(t, brokers, runs, topic, file, syscall.SIGKILL)
	if code != -1 {
		t.Fatalf("killed run exited %d", code)
	}
	// The last checkpoint the killed run wrote: duplicates may only come
	// after it.
	hist := readLedger(t, brokers, runs, topic)
	killed := lastRecord(t, hist)
	if killed.Status.Final() || killed.Checkpoint == nil || killed.Checkpoint.Codes == 0 {
		t.Fatalf("killed run's last record %+v", killed)
	}
	before := topicCount(t, brokers, topic)

	code, stderr, _ := runProducer(t, brokers, runs, topic, file)
	if code != 0 || !strings.Contains(stderr, `"msg":"resuming an unfinished run"`) {
		t.Fatalf("resumed run: exit %d:\n%s", code, stderr)
	}
	ckpt := killed.Checkpoint.Codes
	codes := int64(len(fileCodes(t, file)))
	// The checkpoint's prefix, and beyond it what each partition had
	// acknowledged, are left out.
	already := summaryInt(t, stderr, "already_delivered")
	if already < ckpt || already > slices.Max(append(killed.Checkpoint.PartitionCodes, ckpt)) {
		t.Fatalf("summary: already_delivered %d, want the checkpoint's %d and the codes its partitions acknowledged beyond it", already, ckpt)
	}
	delivered := summaryInt(t, stderr, "delivered")
	if delivered != codes-already || summaryInt(t, stderr, "codes") != codes {
		t.Fatalf("summary: delivered %d of %d codes, want %d", delivered, codes, codes-already)
	}
	total := topicCount(t, brokers, topic)
	if total != before+delivered {
		t.Fatalf("topic holds %d records: %d before the resumed run plus its %d delivered make %d", total, before, delivered, before+delivered)
	}
	last := lastRecord(t, readLedger(t, brokers, runs, topic))
	// The snapshot spans the killed run's acknowledged offsets and the
	// resumed run's: it may leave out some of the killed run's records
	// after its checkpoint, which the resumed run sent again.
	if last.Status != ledger.Completed || last.ResumedFrom != killed.RunID || last.AlreadyDelivered != already ||
		last.LastCompleted == nil || snapshotCount(last.LastCompleted) > total || snapshotCount(last.LastCompleted) < codes {
		t.Fatalf("final record %+v\nsnapshot %+v (topic holds %d)\nkilled run's checkpoint %+v\nresumed run's partitions %+v",
			last, last.LastCompleted, total, killed.Checkpoint, last.Partitions)
	}
	extra := checkResumed(t, brokers, topic, file, ckpt, last.LastCompleted)
	t.Logf("killed after a checkpoint of %d of %d codes; %d records in the topic before the resumed run, %d duplicates, all after the checkpoint",
		ckpt, codes, before, extra)
}

func TestLedgerResumesAfterSIGTERM(t *testing.T) {
	brokers := testBrokers(t)
	runs, topic := uniqueTopic("runs"), uniqueTopic("couponbase1")
	file := generate(t, 3_000_000, 13)
	_, stderr, code := killedMidFile(t, brokers, runs, topic, file, syscall.SIGTERM)
	if code != 143 {
		t.Fatalf("SIGTERM: exit %d, want 143:\n%s", code, stderr)
	}
	term := lastRecord(t, readLedger(t, brokers, runs, topic))
	if term.Status != ledger.Interrupted || term.Checkpoint == nil || term.Checkpoint.Codes == 0 || term.EndedAt == nil {
		t.Fatalf("interrupted run's final record %+v", term)
	}
	// After the flush, the final checkpoint is every code delivered.
	if d := summaryInt(t, stderr, "delivered"); term.Checkpoint.Codes != d {
		t.Fatalf("interrupted checkpoint %d codes, summary delivered %d", term.Checkpoint.Codes, d)
	}
	code, stderr, _ = runProducer(t, brokers, runs, topic, file)
	if code != 0 || summaryInt(t, stderr, "already_delivered") != term.Checkpoint.Codes {
		t.Fatalf("resumed run: exit %d, want 0 and %d already delivered:\n%s", code, term.Checkpoint.Codes, stderr)
	}
	last := lastRecord(t, readLedger(t, brokers, runs, topic))
	if last.Status != ledger.Completed || last.LastCompleted == nil {
		t.Fatalf("resumed run's final record %+v", last)
	}
	if extra := checkResumed(t, brokers, topic, file, term.Checkpoint.Codes, last.LastCompleted); extra != 0 {
		t.Fatalf("%d duplicates after a SIGTERM whose flush delivered every code", extra)
	}
}

func TestLedgerTopicDeletedIsPublishedAgain(t *testing.T) {
	brokers := testBrokers(t)
	runs, topic := uniqueTopic("runs"), uniqueTopic("couponbase1")
	file := generate(t, 200_000, 14)
	codes := int64(len(fileCodes(t, file)))
	if code, stderr, _ := runProducer(t, brokers, runs, topic, file); code != 0 {
		t.Fatalf("first run: exit %d:\n%s", code, stderr)
	}
	adm := newAdmin(t, brokers)
	if _, err := adm.DeleteTopic(context.Background(), topic); err != nil {
		t.Fatal(err)
	}
	// The deletion takes a moment; the producer creates the topic again.
	var code int
	var stderr string
	for range 20 {
		code, stderr, _ = runProducer(t, brokers, runs, topic, file)
		if !strings.Contains(stderr, "TOPIC_ALREADY_EXISTS") && !strings.Contains(stderr, "UNKNOWN_TOPIC") {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if code != 0 || strings.Contains(stderr, `"msg":"unchanged"`) {
		t.Fatalf("run after the topic was deleted: exit %d:\n%s", code, stderr)
	}
	if n := topicCount(t, brokers, topic); n != codes {
		t.Fatalf("topic holds %d records, want %d", n, codes)
	}
}

func TestLedgerTruncatedFileFails(t *testing.T) {
	brokers := testBrokers(t)
	runs, topic := uniqueTopic("runs"), uniqueTopic("couponbase1")
	full := generate(t, 200_000, 15)
	data, err := os.ReadFile(full)
	if err != nil {
		t.Fatal(err)
	}
	file := full + ".truncated.gz"
	if err := os.WriteFile(file, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	code, stderr, _ := runProducer(t, brokers, runs, topic, file)
	if code != 3 {
		t.Fatalf("truncated file: exit %d, want 3:\n%s", code, stderr)
	}
	hist := readLedger(t, brokers, runs, topic)
	last := lastRecord(t, hist)
	if last.Status != ledger.Failed || !strings.Contains(last.Reason, "truncated") || last.LastCompleted != nil {
		t.Fatalf("final record %+v", last)
	}
	for _, e := range hist {
		if e.Status == ledger.Completed {
			t.Fatalf("a completed record for a truncated file: %+v", e.Record)
		}
	}
}

func TestLedgerConcurrentRuns(t *testing.T) {
	brokers := testBrokers(t)
	runs, topic := uniqueTopic("runs"), uniqueTopic("couponbase1")
	file := generate(t, 3_000_000, 16) // long enough to heartbeat while the other looks
	codes := int64(len(fileCodes(t, file)))
	a := startProducer(t, brokers, runs, topic, file, "--compression", "gzip")
	b := startProducer(t, brokers, runs, topic, file, "--compression", "gzip")
	ca, cb := a.wait(t), b.wait(t)
	if !(ca == 0 && cb == 4) && !(ca == 4 && cb == 0) {
		t.Fatalf("exit codes %d and %d, want 0 and 4:\n%s\n---\n%s", ca, cb, a.stderr, b.stderr)
	}
	loser := a
	if cb == 4 {
		loser = b
	}
	if !strings.Contains(loser.stderr.String(), "another run of this file is live") {
		t.Fatalf("the run that exited 4 does not say why:\n%s", loser.stderr)
	}
	if n := topicCount(t, brokers, topic); n != codes {
		t.Fatalf("topic holds %d records, want %d: both runs published", n, codes)
	}
	var completed, skipped int
	for _, e := range readLedger(t, brokers, runs, topic) {
		switch e.Status {
		case ledger.Completed:
			completed++
		case ledger.Skipped:
			skipped++
		}
	}
	if completed != 1 || skipped != 1 {
		t.Fatalf("%d completed and %d skipped records, want one each", completed, skipped)
	}
}
