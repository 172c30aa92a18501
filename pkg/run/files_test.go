package run

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap"

	"github.com/couponpipeline/coupon-producer/pkg/kafka"
	"github.com/couponpipeline/coupon-producer/pkg/kafkatest"
	"github.com/couponpipeline/coupon-producer/pkg/ledger"
	"github.com/couponpipeline/coupon-producer/pkg/metrics"
	"github.com/couponpipeline/coupon-producer/pkg/producer"
)

// gateway is a Pushgateway that keeps the exit codes pushed, in order.
type gateway struct {
	mu    sync.Mutex
	codes []float64
}

func newGateway(t *testing.T) (*gateway, string) {
	t.Helper()
	g := &gateway{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dec := expfmt.NewDecoder(r.Body, expfmt.ResponseFormat(r.Header))
		for {
			var mf dto.MetricFamily
			if err := dec.Decode(&mf); err != nil {
				if !errors.Is(err, io.EOF) {
					t.Errorf("decode pushed metrics: %v", err)
				}
				break
			}
			if mf.GetName() == "coupon_producer_last_exit_code" {
				g.mu.Lock()
				g.codes = append(g.codes, mf.Metric[0].GetGauge().GetValue())
				g.mu.Unlock()
			}
		}
	}))
	t.Cleanup(srv.Close)
	return g, srv.URL
}

func (g *gateway) pushed() []float64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]float64(nil), g.codes...)
}

// kafkaJob is a Job publishing to a kfake cluster through the producer,
// with a ledger, metrics and a Pushgateway.
type kafkaJob struct {
	Job
	c       *kfake.Cluster
	conn    *kafka.Conn
	m       *metrics.Metrics
	gateway *gateway
}

func newKafkaJob(t *testing.T, files ...string) *kafkaJob {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	conn, err := kafka.New(kafka.Config{Brokers: c.ListenAddrs(), ClientID: "test", Partitions: 3, ReplicationFactor: -1,
		ConnectTimeout: 10 * time.Second, RecordTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	ctx := context.Background()
	if err := conn.Connect(ctx); err != nil {
		t.Fatal(err)
	}
	led := ledger.New(conn.Client(), ledger.DefaultTopic, -1, nil)
	if err := led.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	g, url := newGateway(t)
	m := metrics.New()
	return &kafkaJob{c: c, conn: conn, m: m, gateway: g, Job: Job{
		Files: files, TopicFor: filepath.Base,
		Target:         Kafka{Conn: conn, Options: producer.Options{Compression: "lz4", Linger: 5 * time.Millisecond, DeliveryTimeout: 10 * time.Second}},
		Options:        Options{ShutdownTimeout: time.Second, Metrics: m, Logger: zap.NewNop()},
		Ledger:         led,
		LedgerOptions:  ledger.Options{Interval: 100 * time.Millisecond},
		Origin:         Origin{Version: "test", Job: "coupon-producer-couponbase2", Pod: "coupon-producer-couponbase2-x", Namespace: "coupons"},
		PushgatewayURL: url,
	}}
}

func (k *kafkaJob) files(topic, result string) float64 { return files(k.m, topic, result) }

// files returns the files_total counter of topic and result.
func files(m *metrics.Metrics, topic, result string) float64 {
	var c prometheus.Counter = m.Files.WithLabelValues(topic, result)
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		panic(err)
	}
	return d.GetCounter().GetValue()
}

// TestFilesPublishesOnceThenSkips runs a file twice through the ledger:
// the first run publishes every code, the second finds the file unchanged,
// publishes nothing and is no failure.
func TestFilesPublishesOnceThenSkips(t *testing.T) {
	p := genFile(t, 20_000)
	k := newKafkaJob(t, p)
	ctx := context.Background()
	if err := Files(ctx, k.Job); err != nil {
		t.Fatal(err)
	}
	kafkatest.ConsumeExactly(t, k.c.ListenAddrs(), "couponbase2.gz", 20_000)
	if err := Files(ctx, k.Job); err != nil {
		t.Fatalf("second run: %v, want nil: the file is unchanged", err)
	}
	kafkatest.ConsumeExactly(t, k.c.ListenAddrs(), "couponbase2.gz", 20_000)
	if ok, skipped := k.files("couponbase2.gz", "ok"), k.files("couponbase2.gz", "skipped"); ok != 1 || skipped != 1 {
		t.Fatalf("files_total ok %v, skipped %v, want 1 and 1", ok, skipped)
	}
	if got := k.gateway.pushed(); len(got) != 2 || got[0] != 0 || got[1] != 0 {
		t.Fatalf("pushed exit codes %v, want [0 0]", got)
	}
	hist, err := k.Ledger.Read(ctx, "couponbase2.gz")
	if err != nil {
		t.Fatal(err)
	}
	last := hist[len(hist)-1]
	if last.Status != ledger.Skipped || last.Job != k.Origin.Job || last.Pod != k.Origin.Pod || last.Namespace != k.Origin.Namespace || last.ProducerVersion != "test" {
		t.Fatalf("last ledger record %+v, want skipped with the origin %+v", last.Record, k.Origin)
	}
}

// TestFilesLiveRunRefused starts a run of the file that heartbeats: the
// job publishes nothing, exits 4, and says so in files_total and the push
// (not "skipped", which is a success).
func TestFilesLiveRunRefused(t *testing.T) {
	p := genFile(t, 1000)
	k := newKafkaJob(t, p)
	ctx := context.Background()
	other, _, err := k.Ledger.Begin(ctx, ledger.Record{Topic: "couponbase2.gz", File: p, SHA256: "other", Size: 1}, k.LedgerOptions)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Finish(ctx, ledger.Outcome{Status: ledger.Failed, Reason: "test"})
	err = Files(ctx, k.Job)
	if !errors.Is(err, ledger.ErrLive) || OutcomeOf(err) != Live || OutcomeOf(err).Code != 4 {
		t.Fatalf("err %v (outcome %+v), want ErrLive and exit 4", err, OutcomeOf(err))
	}
	if live, skipped := k.files("couponbase2.gz", "live"), k.files("couponbase2.gz", "skipped"); live != 1 || skipped != 0 {
		t.Fatalf("files_total live %v, skipped %v, want 1 and 0", live, skipped)
	}
	if got := k.gateway.pushed(); len(got) != 1 || got[0] != 4 {
		t.Fatalf("pushed exit codes %v, want [4]", got)
	}
	if n := len(kafkatest.ConsumeAtLeast(t, k.c.ListenAddrs(), "couponbase2.gz", 0)); n != 0 {
		t.Fatalf("%d records published despite the live run", n)
	}
}

// TestFilesFailureDoesNotStopTheOthers: a missing file fails with exit 3,
// and the next file is still published.
func TestFilesFailureDoesNotStopTheOthers(t *testing.T) {
	good := genFile(t, 500)
	var out bytes.Buffer
	m := metrics.New()
	err := Files(context.Background(), Job{
		Files: []string{filepath.Join(t.TempDir(), "missing.gz"), good}, TopicFor: filepath.Base,
		Target: Stdout{W: &out}, Options: Options{Metrics: m},
	})
	if o := OutcomeOf(err); o != InputError {
		t.Fatalf("err %v: outcome %+v, want %+v", err, o, InputError)
	}
	if n := bytes.Count(out.Bytes(), []byte("\n")); n != 500 {
		t.Fatalf("%d codes written, want the second file's 500", n)
	}
	if a, b := files(m, "missing.gz", "input_error"), files(m, "couponbase2.gz", "ok"); a != 1 || b != 1 {
		t.Fatalf("files_total input_error %v, ok %v, want 1 and 1", a, b)
	}
}

// TestFilesStopsOnSignal: once the context ends by a signal no further
// file is started, and the error exits 128+n.
func TestFilesStopsOnSignal(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(SignalError{Signal: syscall.SIGTERM})
	var out bytes.Buffer
	err := Files(ctx, Job{Files: []string{genFile(t, 10)}, TopicFor: filepath.Base, Target: Stdout{W: &out}})
	if o := OutcomeOf(err); o.Code != 143 || o.Result != "interrupted" || out.Len() != 0 {
		t.Fatalf("err %v: outcome %+v and %d bytes written, want exit 143 and nothing", err, o, out.Len())
	}
}
