package main

import (
	"context"
	"strings"
	"testing"
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
