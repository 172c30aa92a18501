package producer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/couponpipeline/coupon-producer/pkg/extract"
	"github.com/couponpipeline/coupon-producer/pkg/gen"
	"github.com/couponpipeline/coupon-producer/pkg/kafka"
	"github.com/couponpipeline/coupon-producer/pkg/source"
)

func benchCodes(n int) [][]byte {
	rng := rand.New(rand.NewPCG(9, 10))
	cs := make([][]byte, n)
	for i := range cs {
		cs[i] = randomCode(rng)
	}
	return cs
}

// BenchmarkBatchAppend measures the per-code work of the hot path without
// the lock: choosing the partition and appending the record.
func BenchmarkBatchAppend(b *testing.B) {
	cs := benchCodes(1 << 16)
	bs := make([]*batch, 6)
	for i := range bs {
		bs[i] = newBatch(DefaultBatchMaxBytes)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		code := cs[i&(len(cs)-1)]
		bt := bs[partitionFor(code, len(bs))]
		if !bt.fits(len(code)) {
			bt.buf, bt.n = bt.buf[:headerSize], 0
		}
		bt.add(code)
	}
}

// BenchmarkStreamWrite measures Write as the extractor calls it, with a
// stand-in for the sender that acknowledges every batch at once.
func BenchmarkStreamWrite(b *testing.B) {
	s := &Stream{
		o:         Options{BatchMaxBytes: DefaultBatchMaxBytes, MaxBufferedBytes: DefaultMaxBufferedBytes},
		batchSize: DefaultBatchMaxBytes,
		writeCtx:  context.Background(),
		wake:      make(chan struct{}, 1),
		parts:     make([]partition, 6),
	}
	s.space.L = &s.mu
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-s.wake:
			}
			s.mu.Lock()
			for i := range s.parts {
				for _, bt := range s.parts[i].queue {
					s.release(bt)
				}
				s.parts[i].queue = s.parts[i].queue[:0]
			}
			s.mu.Unlock()
		}
	}()
	cs := benchCodes(1 << 16)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := s.Write(cs[i&(len(cs)-1)]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCompressSeal measures what the sender does to a full batch.
func BenchmarkCompressSeal(b *testing.B) {
	for _, name := range []string{"none", "lz4", "zstd", "snappy", "gzip"} {
		b.Run(name, func(b *testing.B) {
			codec, _ := compressor(name)
			full := newBatch(DefaultBatchMaxBytes)
			fill(full, rand.New(rand.NewPCG(11, 12)), 1<<20)
			bt := newBatch(DefaultBatchMaxBytes)
			var scratch bytes.Buffer
			b.SetBytes(int64(len(full.buf)))
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				bt.buf, bt.n, bt.compressed = append(bt.buf[:0], full.buf...), full.n, false
				bt.compress(codec, &scratch)
				bt.seal()
			}
			b.ReportMetric(float64(len(bt.buf))/float64(len(full.buf)), "ratio")
		})
	}
}

// BenchmarkPublishFile publishes a whole coupon file to a real broker
// through the producer's read path and this package, once per iteration,
// and reports codes per second, CPU seconds per file, the batch buffers
// and the peak RSS. It runs only when COUPON_BENCH_BROKERS is set:
//
//	COUPON_BENCH_BROKERS=127.0.0.1:19092 COUPON_BENCH_FILE=couponbase1.gz \
//	  go test -run '^$' -bench PublishFile -benchtime 1x ./pkg/producer
//
// Without COUPON_BENCH_FILE it generates a 10M-line file first, outside
// the timing (run the compiled test binary under /usr/bin/time for a peak
// RSS that excludes the generator). COUPON_BENCH_TOPIC (default: a new
// topic of COUPON_BENCH_PARTITIONS, 6), COUPON_BENCH_COMPRESSION,
// COUPON_BENCH_LINGER, COUPON_BENCH_BATCH_BYTES and
// COUPON_BENCH_BUFFER_BYTES tune the run.
func BenchmarkPublishFile(b *testing.B) {
	brokers := os.Getenv("COUPON_BENCH_BROKERS")
	if brokers == "" {
		b.Skip("COUPON_BENCH_BROKERS is not set")
	}
	path := os.Getenv("COUPON_BENCH_FILE")
	if path == "" {
		path = filepath.Join(b.TempDir(), "couponbase1.gz")
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := gen.WriteGzip(f, gen.Options{Seed: 1, File: 1, Lines: 10_000_000}); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	topic := envOr("COUPON_BENCH_TOPIC", fmt.Sprintf("bench-batch-%d", time.Now().UnixNano()))
	partitions, _ := strconv.Atoi(envOr("COUPON_BENCH_PARTITIONS", "6"))
	o := Options{Compression: envOr("COUPON_BENCH_COMPRESSION", "lz4"), DeliveryTimeout: 2 * time.Minute, Logger: quiet}
	o.Linger, _ = time.ParseDuration(envOr("COUPON_BENCH_LINGER", "10ms"))
	batchBytes, _ := strconv.Atoi(envOr("COUPON_BENCH_BATCH_BYTES", "0"))
	o.BatchMaxBytes = int32(batchBytes)
	o.MaxBufferedBytes, _ = strconv.Atoi(envOr("COUPON_BENCH_BUFFER_BYTES", "0"))

	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.ClientID("bench"),
		kgo.RequiredAcks(kgo.AllISRAcks()))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	// The topic is created here as the producer creates it; an existing one
	// is used as it is.
	if resp, err := kadm.NewClient(cl).CreateTopic(ctx, int32(partitions), -1, nil, topic); err != nil {
		b.Fatal(err)
	} else if resp.Err != nil && !errors.Is(resp.Err, kerr.TopicAlreadyExists) {
		b.Fatal(resp.Err)
	}
	for attempt := 1; ; attempt++ { // until the new topic has its leaders
		if _, err := kafka.TopicMetadata(ctx, cl, topic); err == nil {
			break
		} else if attempt == 50 {
			b.Fatal(err)
		}
		time.Sleep(kafka.Backoff(attempt))
	}
	if st, err := os.Stat(path); err == nil {
		b.SetBytes(st.Size()) // MB/s of the compressed file
	}

	var before, after syscall.Rusage
	var codes int64
	var buffers int
	syscall.Getrusage(syscall.RUSAGE_SELF, &before)
	b.ResetTimer()
	for range b.N {
		n, allocated := publishFile(ctx, b, cl, topic, path, o)
		codes += n
		buffers = max(buffers, allocated)
	}
	b.StopTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &after)
	cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
	b.ReportMetric(float64(codes)/b.Elapsed().Seconds(), "codes/s")
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
	b.ReportMetric(float64(buffers>>20), "buffers-MiB")
	b.ReportMetric(float64(after.Maxrss>>10), "peak-rss-MiB")
}

// publishFile publishes every code of path to topic, as a run does, and
// returns how many were delivered and the stream's batch buffer bytes.
func publishFile(ctx context.Context, b *testing.B, cl *kgo.Client, topic, path string, o Options) (int64, int) {
	src, err := source.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	s, err := New(ctx, cl, topic, o)
	if err != nil {
		b.Fatal(err)
	}
	ex := extract.New(s.Write)
	err = source.Pump(ctx, src, 256<<10, 4, func(p []byte) error { _, err := ex.Write(p); return err })
	if err == nil {
		err = ex.Close()
	}
	if err != nil {
		b.Fatal(err)
	}
	d, err := s.Finish(ctx)
	if err != nil || d.Delivered != ex.Stats().Codes {
		b.Fatalf("delivery %+v of %d codes: %v", d, ex.Stats().Codes, err)
	}
	return d.Delivered, s.allocated
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
