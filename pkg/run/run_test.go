package run

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/couponpipeline/coupon-producer/pkg/gen"
	"github.com/couponpipeline/coupon-producer/pkg/kafka"
	"github.com/couponpipeline/coupon-producer/pkg/source"
)

// fakeSink records codes; it can fail writes after a count and block Finish
// until its context ends.
type fakeSink struct {
	codes      []string
	onWrite    func(n int)
	finishWait bool
	finishCtx  context.Context
}

func (s *fakeSink) Write(code []byte) error {
	s.codes = append(s.codes, string(code))
	if s.onWrite != nil {
		s.onWrite(len(s.codes))
	}
	return nil
}

func (s *fakeSink) Finish(ctx context.Context) (kafka.Delivery, error) {
	s.finishCtx = ctx
	n := int64(len(s.codes))
	if s.finishWait {
		<-ctx.Done()
		return kafka.Delivery{Sent: n, Failed: n}, errors.New("flush: " + ctx.Err().Error())
	}
	return kafka.Delivery{Sent: n, Delivered: n}, nil
}

type fakeTarget struct {
	sink *fakeSink
	err  error
}

func (f fakeTarget) Open(context.Context, string) (Sink, error) { return f.sink, f.err }

func genFile(t *testing.T, lines int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "couponbase2.gz")
	var b bytes.Buffer
	if err := gen.WriteGzip(&b, gen.Options{Seed: 1, File: 2, Lines: lines}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func opts(log *bytes.Buffer) Options {
	return Options{ShutdownTimeout: 200 * time.Millisecond,
		Logger: zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(log), zapcore.InfoLevel))}
}

func TestFileSummary(t *testing.T) {
	p := genFile(t, 100_000)
	sink := &fakeSink{}
	var log bytes.Buffer
	sum, err := File(context.Background(), p, "couponbase2.gz", fakeTarget{sink: sink}, opts(&log))
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	if sum.Codes != 100_000 || sum.Lines != 100_000 || sum.Delivered != 100_000 || sum.Failed != 0 ||
		sum.CompressedBytes != st.Size() || sum.Bytes < 900_000 || len(sink.codes) != 100_000 {
		t.Fatalf("summary %+v", sum)
	}
	for _, key := range []string{`"msg":"file done"`, `"file":"` + p, `"topic":"couponbase2.gz"`, `"codes":100000`, `"delivered":100000`, `"failed":0`, `"codes_per_sec"`} {
		if !strings.Contains(log.String(), key) {
			t.Errorf("summary log lacks %s:\n%s", key, log.String())
		}
	}
}

func TestEmptyFileWarns(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		warn    bool
	}{
		{"no lines", "", true},
		{"no codes", "short\n\n!!!!!!!!!!\n", true},
		{"one code", "AAAAAAAA\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "couponbase3.gz")
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			zw.Write([]byte(tc.content))
			zw.Close()
			if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			var log bytes.Buffer
			if _, err := File(context.Background(), p, "t", fakeTarget{sink: &fakeSink{}}, opts(&log)); err != nil {
				t.Fatal(err)
			}
			warned := false
			for _, line := range strings.Split(log.String(), "\n") {
				if strings.Contains(line, `"level":"warn"`) && strings.Contains(line, `"msg":"file holds no codes","file":"`+p+`"`) {
					warned = true
				}
			}
			if warned != tc.warn {
				t.Fatalf("warned %v, want %v:\n%s", warned, tc.warn, log.String())
			}
		})
	}
}

func TestBadFileNeverOpensTarget(t *testing.T) {
	var log bytes.Buffer
	_, err := File(context.Background(), filepath.Join(t.TempDir(), "nope.gz"), "t", fakeTarget{err: errors.New("must not be called")}, opts(&log))
	var ie *source.InputError
	if !errors.As(err, &ie) {
		t.Fatalf("err = %v, want an input error before Kafka is touched", err)
	}
}

func TestTargetErrorReturned(t *testing.T) {
	boom := errors.New("cannot reach Kafka at k:9092")
	var log bytes.Buffer
	_, err := File(context.Background(), genFile(t, 10), "t", fakeTarget{err: boom}, opts(&log))
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
}

type stopSignal struct{}

func (stopSignal) Error() string { return "interrupted by terminated" }

// TestInterruptFlushesWithTimeout cancels the run midway: reading stops, the
// final flush gets ShutdownTimeout, and the error carries the cause.
func TestInterruptFlushesWithTimeout(t *testing.T) {
	ctx, cancel := context.WithCancelCause(context.Background())
	sink := &fakeSink{finishWait: true}
	sink.onWrite = func(n int) {
		if n == 1000 {
			cancel(stopSignal{})
		}
	}
	var log bytes.Buffer
	start := time.Now()
	sum, err := File(ctx, genFile(t, 2_000_000), "t", fakeTarget{sink: sink}, opts(&log))
	if !errors.As(err, new(stopSignal)) {
		t.Fatalf("err = %v, want the cancel cause", err)
	}
	if sum.Codes >= 2_000_000 || sum.Failed != sum.Codes {
		t.Fatalf("summary %+v: want a partial run with the unflushed codes failed", sum)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("took %s: the flush was not bounded", d)
	}
	if dl, ok := sink.finishCtx.Deadline(); ok || dl != (time.Time{}) {
		// The flush context has no deadline of its own: it is canceled by a
		// timer that starts when the run's context ends.
		t.Fatalf("flush context has a deadline %v", dl)
	}
	if !strings.Contains(log.String(), "interrupted") {
		t.Fatalf("no interruption log:\n%s", log.String())
	}
}
