package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/couponpipeline/coupon-producer/pkg/kafkatest"
)

// Refusals no retry can fix, on the real broker: each ends the run at once
// with a message that says what to change.

// TestKafkaBatchTooLargeIsAConfigurationError: a batch-max-bytes above the
// topic's max.message.bytes exits 2 (the chart does not retry it), and a
// topic-config that would create such a topic is refused before the topic
// is created.
func TestKafkaBatchTooLargeIsAConfigurationError(t *testing.T) {
	brokers := testBrokers(t)
	file := writeGzip(t, "f.gz", "TOOLARGE1\nTOOLARGE2\n")
	env := []string{"KAFKA_BROKERS=" + brokers, "LEDGER_TOPIC=" + uniqueTopic("runs")}

	created := uniqueTopic("too-large-new")
	r := runBinary(t, env, "--topic", created, "--topic-config", "max.message.bytes=100000", "--batch-max-bytes", "200000", file)
	if r.code != 2 || !strings.Contains(r.stderr, "batch-max-bytes 200000 (from flag --batch-max-bytes) is more than max.message.bytes 100000 in topic-config") {
		t.Fatalf("exit %d, want 2 naming both values:\n%s", r.code, r.stderr)
	}
	td, err := newAdmin(t, brokers).ListTopics(context.Background(), created)
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := td[created]; ok && d.Err == nil {
		t.Fatalf("topic %s was created although the run was refused", created)
	}

	existing := uniqueTopic("too-large-existing")
	limit := "100000"
	createTopic(t, brokers, existing, 1, 1, map[string]*string{"max.message.bytes": &limit})
	r = runBinary(t, env, "--topic", existing, file) // the default batch-max-bytes, 1 MiB
	if r.code != 2 || !strings.Contains(r.stderr, "batch max bytes 1048576 is more than max.message.bytes 100000 of topic "+existing) {
		t.Fatalf("existing topic: exit %d, want 2 naming both values:\n%s", r.code, r.stderr)
	}
	if n := topicCount(t, brokers, existing); n != 0 {
		t.Fatalf("existing topic holds %d records after the refusal", n)
	}
}

// TestKafkaInvalidTimestampStopsAtOnce publishes to a topic whose
// message.timestamp.before.max.ms is 1: a batch that lingered is older
// than that by the broker's clock, as every batch of a pod whose clock is
// more than an hour fast is under Kafka 4's default
// message.timestamp.after.max.ms. The run stops at the first refusal,
// long before the end of the file, taking no new producer ID, with
// exit 1 and a message naming the clock and the topic's settings.
func TestKafkaInvalidTimestampStopsAtOnce(t *testing.T) {
	brokers := testBrokers(t)
	topic := uniqueTopic("invalid-timestamp")
	bound := "1"
	createTopic(t, brokers, topic, 3, 1, map[string]*string{"message.timestamp.before.max.ms": &bound})
	file := generate(t, 3_000_000, 17)
	r := runBinary(t, []string{"KAFKA_BROKERS=" + brokers, "LEDGER_TOPIC=" + uniqueTopic("runs"), "LOG_FORMAT=json"},
		"--topic", topic, "--linger", "20ms", file)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", r.code, tail(r.stderr))
	}
	s := summary(t, r.stderr)
	err, _ := s["err"].(string)
	for _, w := range []string{"INVALID_TIMESTAMP", "this machine's clock", "NTP", "topic " + topic + " ",
		"message.timestamp.after.max.ms=3600000", "message.timestamp.before.max.ms=1"} {
		if !strings.Contains(err, w) {
			t.Errorf("the summary's error does not say %q: %s", w, err)
		}
	}
	if codes := s["codes"].(float64); codes >= 3_000_000 {
		t.Errorf("the run read all %v codes of the file: it did not stop at the refusal", codes)
	}
	if n := strings.Count(r.stderr, `"msg":"new producer id"`); n != 0 {
		t.Errorf("%d new producer IDs taken after the refusal, want none:\n%s", n, tail(r.stderr))
	}
	if n := topicCount(t, brokers, topic); n != 0 {
		t.Errorf("the topic holds %d records", n)
	}
	t.Logf("stopped after %v of 3000000 codes: %s", s["codes"], err)
}

// TestKafkaLedgerTopicIDAsKafkaTopicsPrintsIt: the snapshot's
// topic_id_base64 is what Kafka's own kafka-topics --describe prints as
// the topic's TopicId, and topic_id the same bytes in hex.
func TestKafkaLedgerTopicIDAsKafkaTopicsPrintsIt(t *testing.T) {
	brokers := testBrokers(t)
	dist := kafkatest.NeedDist(t)
	runs, topic := uniqueTopic("runs"), uniqueTopic("topic-id")
	file := writeGzip(t, "f.gz", "TOPICID01\nTOPICID02\n")
	if code, stderr, _ := runProducer(t, brokers, runs, topic, file); code != 0 {
		t.Fatalf("exit %d:\n%s", code, stderr)
	}
	snap := lastRecord(t, readLedger(t, brokers, runs, topic)).LastCompleted
	if snap == nil {
		t.Fatal("no snapshot in the ledger")
	}
	cmd, err := dist.Tool(context.Background(), "org.apache.kafka.tools.TopicCommand",
		"--bootstrap-server", strings.Split(brokers, ",")[0], "--describe", "--topic", topic)
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kafka-topics --describe: %v\n%s", err, out)
	}
	want := "TopicId: " + snap.TopicIDBase64 + "\t"
	if snap.TopicIDBase64 == "" || !strings.Contains(string(out), want) {
		t.Fatalf("kafka-topics prints\n%s\nwithout %q", out, want)
	}
	raw, err := base64.RawURLEncoding.DecodeString(snap.TopicIDBase64)
	if err != nil || hex.EncodeToString(raw) != snap.TopicID {
		t.Fatalf("topic_id %q and topic_id_base64 %q are not the same bytes (%v)", snap.TopicID, snap.TopicIDBase64, err)
	}
}
