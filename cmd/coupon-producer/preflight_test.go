package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// TestPreflightFiles: --preflight checks the files and publishes nothing;
// a bad file gives the exit code a run would give (3) and is named.
func TestPreflightFiles(t *testing.T) {
	good := writeGzip(t, "couponbase1.gz", strings.Repeat("AAAAAAAA\n", 1000))
	r := runBinary(t, nil, "--preflight", "--dry-run", good)
	if r.code != 0 {
		t.Fatalf("good file: exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	if r.stdout != "" {
		t.Errorf("preflight wrote codes to stdout: %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "preflight: file is readable gzip") {
		t.Errorf("stderr does not report the file check:\n%s", r.stderr)
	}

	bad := writeRaw(t, "couponbase2.gz", []byte(strings.Repeat("AAAAAAAA\n", 10)))
	missing := filepath.Join(t.TempDir(), "couponbase3.gz")
	r = runBinary(t, nil, "--preflight", "--dry-run", good, bad, missing)
	if r.code != 3 {
		t.Fatalf("bad files: exit %d, want 3; stderr:\n%s", r.code, r.stderr)
	}
	for _, p := range []string{bad, missing} {
		if !strings.Contains(r.stderr, p) {
			t.Errorf("stderr does not name %s:\n%s", p, r.stderr)
		}
	}
}

// TestPreflightUnreachable: brokers that do not answer give exit 1 within
// the connect timeout, naming them.
func TestPreflightUnreachable(t *testing.T) {
	good := writeGzip(t, "couponbase1.gz", "AAAAAAAA\n")
	r := runBinary(t, nil, "--preflight", "--brokers", "127.0.0.1:1", "--connect-timeout", "1s", good)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "127.0.0.1:1") {
		t.Errorf("stderr does not name the broker:\n%s", r.stderr)
	}
}

// TestKafkaPreflight: against the real broker, a missing topic that could
// be created passes and is not created; a creation the broker would refuse
// (three replicas on a one-broker cluster) fails with exit 1 and the reason.
func TestKafkaPreflight(t *testing.T) {
	brokers := testBrokers(t)
	good := writeGzip(t, "couponbase1.gz", "AAAAAAAA\n")
	topic := uniqueTopic("preflight")
	r := runBinary(t, nil, "--preflight", "--brokers", brokers, "--topic", topic, good)
	if r.code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
	topics, err := newAdmin(t, brokers).ListTopics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if topics.Has(topic) {
		t.Errorf("preflight created topic %s; it must only validate the creation", topic)
	}

	r = runBinary(t, nil, "--preflight", "--brokers", brokers, "--topic", topic, "--replication-factor", "3", good)
	if r.code != 1 {
		t.Fatalf("replication factor 3 on one broker: exit %d, want 1; stderr:\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "INVALID_REPLICATION_FACTOR") || !strings.Contains(r.stderr, topic) {
		t.Errorf("stderr does not give the topic and the broker's reason:\n%s", r.stderr)
	}
}

// TestPushgateway: each run pushes its outcome; a failed run pushes its exit
// code but no success time, so the last success stays in the gateway.
func TestPushgateway(t *testing.T) {
	var mu sync.Mutex
	pushes := map[string]string{} // path -> body
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			t.Errorf("push method %s, want POST", r.Method)
		}
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		pushes[r.URL.Path] = string(b)
		mu.Unlock()
	}))
	defer srv.Close()

	good := writeGzip(t, "couponbase1.gz", "AAAAAAAA\nBBBBBBBB\nCCCCCCCC\n")
	bad := writeRaw(t, "couponbase2.gz", []byte("not gzip at all, not at all"))
	r := runBinary(t, []string{"PUSHGATEWAY_URL=" + srv.URL}, "--dry-run", good, bad)
	if r.code != 3 {
		t.Fatalf("exit %d, want 3; stderr:\n%s", r.code, r.stderr)
	}
	mu.Lock()
	defer mu.Unlock()
	ok := pushes["/metrics/job/coupon_producer/file/couponbase1.gz"]
	failed := pushes["/metrics/job/coupon_producer/file/couponbase2.gz"]
	if ok == "" || failed == "" {
		t.Fatalf("pushed to %v, want both files' groups", keys(pushes))
	}
	// The body is protobuf-delimited; metric names appear as plain bytes.
	if !strings.Contains(ok, "coupon_producer_last_success_timestamp_seconds") {
		t.Errorf("the successful run did not push its success time")
	}
	if strings.Contains(failed, "coupon_producer_last_success_timestamp_seconds") {
		t.Errorf("the failed run pushed a success time")
	}
	if !strings.Contains(failed, "coupon_producer_last_exit_code") {
		t.Errorf("the failed run did not push its exit code")
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestKafkaPreflightLedgerTopic: --preflight checks the run ledger's topic
// too: a missing one that could be created passes and is not created, one
// that could not (three replicas on one broker, the data topic existing)
// fails with exit 1 naming it, and an existing one passes.
func TestKafkaPreflightLedgerTopic(t *testing.T) {
	brokers := testBrokers(t)
	good := writeGzip(t, "couponbase1.gz", "AAAAAAAA\n")
	topic, runs := uniqueTopic("preflight"), uniqueTopic("runs")
	createTopic(t, brokers, topic, 1, 1, nil)
	args := []string{"--preflight", "--brokers", brokers, "--topic", topic, "--ledger-topic", runs, good}
	r := runBinary(t, nil, args...)
	if r.code != 0 || !strings.Contains(r.stderr, "preflight: ledger topic can be read and written, or created") {
		t.Fatalf("exit %d, want 0 and the ledger topic checked; stderr:\n%s", r.code, r.stderr)
	}
	topics, err := newAdmin(t, brokers).ListTopics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if topics.Has(runs) {
		t.Errorf("preflight created ledger topic %s; it must only validate the creation", runs)
	}

	r = runBinary(t, nil, append([]string{"--replication-factor", "3"}, args...)...)
	if r.code != 1 || !strings.Contains(r.stderr, "preflight: ledger topic") || !strings.Contains(r.stderr, runs+" does not exist and cannot be created") ||
		!strings.Contains(r.stderr, "INVALID_REPLICATION_FACTOR") {
		t.Fatalf("a ledger topic that cannot be created: exit %d, want 1 naming it and the broker's reason; stderr:\n%s", r.code, r.stderr)
	}

	if r := runBinary(t, []string{"KAFKA_BROKERS=" + brokers}, "--topic", topic, "--ledger-topic", runs, good); r.code != 0 {
		t.Fatalf("run: exit %d:\n%s", r.code, r.stderr)
	}
	if r := runBinary(t, nil, args...); r.code != 0 || !strings.Contains(r.stderr, "preflight: ledger topic can be read and written") {
		t.Fatalf("an existing ledger topic: exit %d, want 0; stderr:\n%s", r.code, r.stderr)
	}
}
