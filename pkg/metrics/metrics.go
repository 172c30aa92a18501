// Package metrics exposes the producer's Prometheus metrics and a health
// endpoint. Counters are updated per chunk of input and per file, never per
// code, so they cost nothing on the hot path.
package metrics

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

const namespace = "coupon_producer"

// Metrics is the producer's own registry and its collectors.
type Metrics struct {
	Registry        *prometheus.Registry
	CodesRead       *prometheus.CounterVec // by topic
	CodesDelivered  *prometheus.CounterVec // by topic
	CodesFailed     *prometheus.CounterVec // by topic
	CompressedBytes *prometheus.CounterVec // by topic
	Files           *prometheus.CounterVec // by topic and result
	FileDuration    *prometheus.HistogramVec
	LastSuccess     *prometheus.GaugeVec // unix seconds, by topic
	Running         prometheus.Gauge
}

// New registers the metrics in a fresh registry, with the Go runtime and
// process collectors.
func New() *Metrics {
	byTopic := []string{"topic"}
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		CodesRead: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "codes_read_total",
			Help: "Codes extracted from the input files."}, byTopic),
		CodesDelivered: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "codes_delivered_total",
			Help: "Codes acknowledged by the brokers (or written to stdout in dry-run)."}, byTopic),
		CodesFailed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "codes_failed_total",
			Help: "Codes that were not acknowledged."}, byTopic),
		CompressedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "input_compressed_bytes_total",
			Help: "Compressed bytes of the input files read."}, byTopic),
		Files: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "files_total",
			Help: "Files processed, by result: ok, skipped (unchanged), live (another run of the file is live), input_error, kafka_error or interrupted."}, []string{"topic", "result"}),
		FileDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "file_duration_seconds",
			Help: "Time to publish one file.", Buckets: prometheus.ExponentialBuckets(1, 2, 12)}, byTopic),
		LastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: namespace, Name: "last_success_timestamp_seconds",
			Help: "When a file was last published with every code delivered."}, byTopic),
		Running: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: "running",
			Help: "1 while a run is publishing files."}),
	}
	m.Registry.MustRegister(m.CodesRead, m.CodesDelivered, m.CodesFailed, m.CompressedBytes, m.Files,
		m.FileDuration, m.LastSuccess, m.Running,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Serve serves /metrics and /healthz on addr until ctx ends. It returns once
// the listener is open, so that a bad address is reported at start.
func (m *Metrics) Serve(ctx context.Context, addr string, log *zap.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("ok\n")) })
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", zap.NamedError("err", err))
		}
	}()
	context.AfterFunc(ctx, func() {
		shut, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(shut)
	})
	log.Info("serving metrics", zap.String("addr", ln.Addr().String()))
	return nil
}
