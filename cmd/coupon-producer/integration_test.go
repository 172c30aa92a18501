package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/couponpipeline/coupon-producer/pkg/extract"
	"github.com/couponpipeline/coupon-producer/pkg/gen"
	"github.com/couponpipeline/coupon-producer/pkg/kafkatest"
	"github.com/couponpipeline/coupon-producer/pkg/source"
)

// The integration tests run against a real Apache Kafka broker named by
// COUPON_TEST_BROKERS; `make test` starts one (hack/kafkactl). In CI
// (CI=true) they must run: a missing broker fails them instead of skipping.
func testBrokers(t *testing.T) string {
	t.Helper()
	b := os.Getenv("COUPON_TEST_BROKERS")
	if b != "" {
		return b
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true but COUPON_TEST_BROKERS is not set: the real-broker tests must run in CI")
	}
	t.Skip("no real broker: run `make test` (starts one with hack/kafkactl), or set COUPON_TEST_BROKERS=host:port")
	return ""
}

func uniqueTopic(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, time.Now().UnixNano(), rand.IntN(1000))
}

func generate(t *testing.T, lines int64, seed uint64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "couponbase1.gz")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := gen.WriteGzip(f, gen.Options{Seed: seed, File: 1, Lines: lines, Shared: 100}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// fileCodes extracts the codes of a file with the project's own reader: the
// extraction rule itself is proven against a reference in pkg/extract.
func fileCodes(t *testing.T, path string) []string {
	t.Helper()
	src, err := source.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var codes []string
	ex := extract.New(func(c []byte) error { codes = append(codes, string(c)); return nil })
	if err := source.Pump(context.Background(), src, 1<<16, 2, func(p []byte) error { _, err := ex.Write(p); return err }); err != nil {
		t.Fatal(err)
	}
	if err := ex.Close(); err != nil {
		t.Fatal(err)
	}
	return codes
}

// readTopic consumes every record of topic, up to its end offsets.
func readTopic(t *testing.T, brokers, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	adm := newAdmin(t, brokers)
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	ends.Each(func(o kadm.ListedOffset) { total += o.Offset })
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(64<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	recs := make([]*kgo.Record, 0, total)
	for int64(len(recs)) < total {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d records of %s before the timeout", len(recs), total, topic)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch: %v", err) })
		fs.EachRecord(func(r *kgo.Record) { recs = append(recs, r) })
	}
	return recs
}

// topicCount is the number of records in topic: the sum over partitions of
// end minus start offsets (the idempotent producer writes no control
// records, so every offset is a record).
func topicCount(t *testing.T, brokers, topic string) int64 {
	t.Helper()
	n, err := kafkatest.RecordCount(context.Background(), newAdmin(t, brokers), topic)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func newAdmin(t *testing.T, brokers string) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// summary finds the JSON summary line of a file in the producer's stderr.
func summary(t *testing.T, stderr string) map[string]any {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(stderr))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && (m["msg"] == "file done" || m["msg"] == "file failed") {
			return m
		}
	}
	t.Fatalf("no summary line in:\n%s", stderr)
	return nil
}

// TestKafkaPublishesEveryCode publishes a generated file, configured as the
// chart does (a config file, the file and brokers from the environment), and
// reads the topic back: exactly the file's codes, key = value.
func TestKafkaPublishesEveryCode(t *testing.T) {
	brokers := testBrokers(t)
	const lines = 2_000_000
	file := generate(t, lines, 42)
	topic := uniqueTopic("it-every-code")
	cfgFile := writeConfig(t, "topic: "+topic+"\npartitions: 4\ntopic-config:\n  retention.ms: 86400000\nlog-format: json\n")
	r := runBinary(t, []string{"KAFKA_BROKERS=" + brokers, "COUPON_PRODUCER_CONFIG=" + cfgFile, "COUPON_FILE=" + file})
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
	}
	s := summary(t, r.stderr)
	if s["codes"] != float64(lines) || s["delivered"] != float64(lines) || s["failed"] != float64(0) {
		t.Fatalf("summary %v", s)
	}

	want := fileCodes(t, file)
	recs := readTopic(t, brokers, topic)
	got := make([]string, 0, len(recs))
	partitions := map[int32]bool{}
	for _, rec := range recs {
		if !bytes.Equal(rec.Key, rec.Value) {
			t.Fatalf("record key %q != value %q", rec.Key, rec.Value)
		}
		got = append(got, string(rec.Value))
		partitions[rec.Partition] = true
	}
	slices.Sort(got)
	slices.Sort(want)
	if len(got) != len(want) || !slices.Equal(got, want) {
		t.Fatalf("topic holds %d records, the file %d codes: the multisets differ", len(got), len(want))
	}

	adm := newAdmin(t, brokers)
	td, err := adm.ListTopics(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(td[topic].Partitions); n != 4 || len(partitions) != 4 {
		t.Fatalf("topic has %d partitions (%d used), want 4", n, len(partitions))
	}
	rc, err := adm.DescribeTopicConfigs(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := rc.On(topic, nil)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range cfg.Configs {
		if c.Key == "retention.ms" && c.MaybeValue() == "86400000" {
			found = true
		}
	}
	if !found {
		t.Fatalf("retention.ms=86400000 not set on the created topic")
	}
}

func TestKafkaExistingTopicUsedAsIs(t *testing.T) {
	brokers := testBrokers(t)
	topic := uniqueTopic("it-existing")
	adm := newAdmin(t, brokers)
	if _, err := adm.CreateTopic(context.Background(), 2, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	file := writeGzip(t, "f.gz", "EXISTING1\nEXISTING2\n")
	r := runBinary(t, []string{"KAFKA_BROKERS=" + brokers}, "--topic", topic, "--partitions", "8", file)
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
	}
	td, err := adm.ListTopics(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(td[topic].Partitions); n != 2 {
		t.Fatalf("existing topic now has %d partitions, want its own 2", n)
	}
	if n := len(readTopic(t, brokers, topic)); n != 2 {
		t.Fatalf("topic holds %d records, want 2", n)
	}
}

func TestKafkaUnreachableBroker(t *testing.T) {
	testBrokers(t) // only with the integration tests: it needs no broker, but dials
	file := writeGzip(t, "f.gz", "AAAAAAAA\n")
	start := time.Now()
	r := runBinary(t, []string{"KAFKA_BROKERS=127.0.0.1:1"}, "--connect-timeout", "3s", file)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", r.code, r.stderr)
	}
	if el := time.Since(start); el > 60*time.Second {
		t.Fatalf("took %s to give up", el)
	}
	if !strings.Contains(r.stderr, "127.0.0.1:1") {
		t.Fatalf("stderr does not name the broker:\n%s", r.stderr)
	}
}

// TestKafkaSIGTERM stops a run midway: the producer flushes what is in
// flight, logs the summary and exits 143, and every code it reports as
// delivered is in the topic.
func TestKafkaSIGTERM(t *testing.T) {
	brokers := testBrokers(t)
	file := generate(t, 8_000_000, 7)
	topic := uniqueTopic("it-sigterm")
	log, code := produceFor(t, 2*time.Minute, brokers, topic, file, func(cmd *exec.Cmd) {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Error(err)
		}
	})
	if code != 143 {
		t.Fatalf("exit %d, want 143; stderr:\n%s", code, log)
	}
	s := summary(t, log)
	delivered, failed, codes := int64(s["delivered"].(float64)), int64(s["failed"].(float64)), int64(s["codes"].(float64))
	if codes >= 8_000_000 || codes == 0 {
		t.Fatalf("codes %d: the run was not stopped midway", codes)
	}
	n := topicCount(t, brokers, topic)
	// Acknowledged codes are in the topic; a code not acknowledged in time
	// may or may not have been written, and is reported as failed.
	if n < delivered || n > delivered+failed {
		t.Fatalf("topic holds %d records; the summary says %d delivered, %d failed", n, delivered, failed)
	}
}

// TestKafkaSchedulerSIGTERMMidRun stops the scheduler during a run: that
// run stops gracefully with its summary, and the scheduler exits 143.
func TestKafkaSchedulerSIGTERMMidRun(t *testing.T) {
	brokers := testBrokers(t)
	file := generate(t, 8_000_000, 5)
	log, code := produceFor(t, 2*time.Minute, brokers, uniqueTopic("it-sched-sigterm"), file, func(cmd *exec.Cmd) {
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Error(err)
		}
	}, "--schedule", "@every 1h", "--run-on-start")
	if code != 143 {
		t.Fatalf("exit %d, want 143; stderr:\n%s", code, log)
	}
	s := summary(t, log)
	if s["codes"].(float64) >= 8_000_000 {
		t.Fatalf("summary %v: the run was not stopped midway", s)
	}
	if strings.Contains(log, `"msg":"next run"`) {
		t.Fatalf("the scheduler went on after SIGTERM:\n%s", log)
	}
}
