package preflight

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/couponpipeline/coupon-producer/pkg/ledger"
	"github.com/couponpipeline/coupon-producer/pkg/source"
)

func gz(t *testing.T, content string) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestFile(t *testing.T) {
	dir := t.TempDir()
	good := gz(t, strings.Repeat("ABCDEFGH\n", 300_000))
	corrupt := append([]byte(nil), good...)
	for i := 20; i < 200; i++ { // deflate data just after the 10-byte header
		corrupt[i] ^= 0xff
	}
	files := map[string][]byte{
		"good.gz":    good,
		"plain.gz":   []byte(strings.Repeat("ABCDEFGH\n", 10)),
		"empty.gz":   nil,
		"corrupt.gz": corrupt,
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		want error  // nil: the file passes
		msg  string // in the message
	}{
		{"good.gz", nil, ""},
		{"plain.gz", source.ErrNotGzip, ""},
		{"empty.gz", source.ErrEmpty, ""},
		{"corrupt.gz", source.ErrCorrupt, ""},
		{"missing.gz", nil, "no such file"},
		{".", source.ErrDirectory, ""},
	}
	for _, tt := range tests {
		err := File(filepath.Join(dir, tt.name))
		if tt.want == nil && tt.msg == "" {
			if err != nil {
				t.Errorf("%s: %v, want nil", tt.name, err)
			}
			continue
		}
		var ie *source.InputError
		if !errors.As(err, &ie) {
			t.Errorf("%s: err = %v (%T), want a *source.InputError (exit code 3)", tt.name, err, err)
		}
		if tt.want != nil && !errors.Is(err, tt.want) || err != nil && !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: err = %v, want %v", tt.name, err, tt.want)
		}
	}
}

func newCluster(t *testing.T, opts ...kfake.Opt) (*kfake.Cluster, *kgo.Client) {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return c, cl
}

func TestTopicExists(t *testing.T) {
	_, cl := newCluster(t, kfake.SeedTopics(3, "couponbase1.gz"))
	if err := Topic(context.Background(), cl, "couponbase1.gz", 6, -1, nil); err != nil {
		t.Fatal(err)
	}
}

func TestTopicCreatableIsNotCreated(t *testing.T) {
	_, cl := newCluster(t)
	ctx := context.Background()
	if err := Topic(ctx, cl, "couponbase2.gz", 6, 1, map[string]string{"retention.ms": "86400000"}); err != nil {
		t.Fatal(err)
	}
	topics, err := kadm.NewClient(cl).ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if topics.Has("couponbase2.gz") {
		t.Errorf("preflight created the topic; it must only validate its creation")
	}
}

func TestTopicNotCreatable(t *testing.T) {
	_, cl := newCluster(t)
	// One broker cannot hold three replicas: the broker refuses the creation.
	err := Topic(context.Background(), cl, "couponbase3.gz", 6, 3, nil)
	if err == nil || !strings.Contains(err.Error(), "couponbase3.gz does not exist and cannot be created") ||
		!strings.Contains(err.Error(), "INVALID_REPLICATION_FACTOR") {
		t.Fatalf("err = %v, want a refusal naming the topic and INVALID_REPLICATION_FACTOR", err)
	}
}

// authorize makes c report ops as the client's rights on topic when asked
// for authorized operations.
func authorize(c *kfake.Cluster, topic string, ops int32) {
	c.ControlKey(int16(kmsg.Metadata), func(kr kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kr.(*kmsg.MetadataRequest)
		if !req.IncludeTopicAuthorizedOperations {
			return nil, nil, false
		}
		resp := req.ResponseKind().(*kmsg.MetadataResponse)
		st := kmsg.NewMetadataResponseTopic()
		st.Topic = kmsg.StringPtr(topic)
		st.AuthorizedOperations = ops
		st.Partitions = append(st.Partitions, kmsg.NewMetadataResponseTopicPartition())
		resp.Topics = append(resp.Topics, st)
		return resp, nil, true
	})
}

func TestTopicNotWritable(t *testing.T) {
	c, cl := newCluster(t, kfake.SeedTopics(3, "couponbase1.gz"))
	// The broker reports the client's rights on the topic: DESCRIBE and READ
	// (bits 8 and 3), not WRITE.
	authorize(c, "couponbase1.gz", 1<<8|1<<3)
	err := Topic(context.Background(), cl, "couponbase1.gz", 6, -1, nil)
	if err == nil || !strings.Contains(err.Error(), "not authorized to write") {
		t.Fatalf("err = %v, want a refusal to write", err)
	}
}

// TestLedgerTopic: the ledger topic must be readable as well as writable,
// or creatable with the ledger's settings and one partition; a creatable
// one is not created.
func TestLedgerTopic(t *testing.T) {
	const runs = "coupon-producer.runs"
	ctx := context.Background()
	_, cl := newCluster(t)
	if err := LedgerTopic(ctx, cl, runs, 1, ledger.TopicConfigs()); err != nil {
		t.Fatalf("a creatable ledger topic: %v", err)
	}
	if topics, err := kadm.NewClient(cl).ListTopics(ctx); err != nil || topics.Has(runs) {
		t.Fatalf("preflight created the ledger topic (err %v); it must only validate its creation", err)
	}
	err := LedgerTopic(ctx, cl, runs, 3, ledger.TopicConfigs())
	if err == nil || !strings.Contains(err.Error(), runs+" does not exist and cannot be created") || !strings.Contains(err.Error(), "INVALID_REPLICATION_FACTOR") {
		t.Fatalf("three replicas on one broker: err = %v, want a refusal naming the ledger topic", err)
	}
	for _, tc := range []struct {
		ops  int32
		want string // "": allowed
	}{
		{1<<8 | 1<<3 | 1<<4, ""},
		{1<<8 | 1<<4, "not authorized to read it"},
		{1<<8 | 1<<3, "not authorized to write to it"},
		{1 << 8, "not authorized to read or write to it"},
	} {
		c, cl := newCluster(t, kfake.SeedTopics(1, runs))
		authorize(c, runs, tc.ops)
		err := LedgerTopic(ctx, cl, runs, -1, ledger.TopicConfigs())
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("rights %b: err = %v, want %q", tc.ops, err, tc.want)
		}
	}
}
