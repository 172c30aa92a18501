package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/couponpipeline/coupon-producer/pkg/config"
	"github.com/couponpipeline/coupon-producer/pkg/kafka"
	"github.com/couponpipeline/coupon-producer/pkg/ledger"
	"github.com/couponpipeline/coupon-producer/pkg/metrics"
	"github.com/couponpipeline/coupon-producer/pkg/preflight"
	"github.com/couponpipeline/coupon-producer/pkg/producer"
	"github.com/couponpipeline/coupon-producer/pkg/run"
	"github.com/couponpipeline/coupon-producer/pkg/schedule"
)

// serve publishes the configured files once, or on the schedule.
func serve(ctx context.Context, cfg *config.Config, stdout io.Writer, log *zap.Logger) error {
	m := metrics.New()
	if cfg.MetricsAddr != "" {
		if err := m.Serve(ctx, cfg.MetricsAddr, log); err != nil {
			err = fmt.Errorf("%w: metrics-addr %q: %v", config.ErrUsage, cfg.MetricsAddr, err)
			log.Error("cannot serve metrics", zap.NamedError("err", err))
			return err
		}
	}
	job := func(ctx context.Context) error {
		m.Running.Set(1)
		defer m.Running.Set(0)
		return runFiles(ctx, cfg, stdout, log, m)
	}
	if cfg.Schedule == "" {
		return job(ctx)
	}
	sched, err := schedule.Parse(cfg.Schedule)
	if err != nil {
		err = fmt.Errorf("%w: %v", config.ErrUsage, err)
		log.Error("bad schedule", zap.NamedError("err", err))
		return err
	}
	loc, _ := time.LoadLocation(cfg.ScheduleTZ) // validated by config
	log.Info("scheduler started", zap.String("schedule", cfg.Schedule), zap.String("tz", loc.String()), zap.Strings("files", cfg.Files))
	return schedule.Loop(ctx, sched, loc, cfg.RunOnStart, job, log)
}

// runFiles wires the files' run: the dry-run target or Kafka, the ledger
// and the Pushgateway.
func runFiles(ctx context.Context, cfg *config.Config, stdout io.Writer, log *zap.Logger, m *metrics.Metrics) error {
	job := run.Job{
		Files: cfg.Files, TopicFor: cfg.TopicFor, Target: run.Stdout{W: stdout},
		Options: run.Options{ShutdownTimeout: cfg.ShutdownTimeout, ProgressInterval: cfg.ProgressInterval, Logger: log, Metrics: m,
			CheckpointShare: float64(cfg.CheckpointPercent) / 100},
		LedgerOptions:  ledger.Options{Interval: cfg.CheckpointInterval, Force: cfg.Force, NoResume: cfg.NoResume},
		Origin:         run.Origin{Version: buildVersion(), Job: cfg.JobName, Pod: cfg.PodName, Namespace: cfg.PodNamespace},
		PushgatewayURL: cfg.PushgatewayURL,
	}
	if !cfg.DryRun {
		conn, err := newConn(cfg, log)
		if err != nil {
			return fmt.Errorf("%w: %v", config.ErrUsage, err)
		}
		defer conn.Close()
		if cfg.LedgerTopic != "" {
			var closeLedger func()
			if job.Ledger, closeLedger, err = openLedger(ctx, cfg, conn, log); err != nil {
				return err
			}
			defer closeLedger()
		}
		job.Target = run.Kafka{Conn: conn, Options: producer.Options{
			Compression:      cfg.Compression,
			Linger:           cfg.Linger,
			BatchMaxBytes:    int32(cfg.BatchMaxBytes),
			MaxBufferedBytes: cfg.MaxBufferedBytes,
			DeliveryTimeout:  cfg.DeliveryTimeout,
			Logger:           log,
		}}
	}
	return run.Files(ctx, job)
}

// openLedger connects and makes sure the ledger topic exists, with the
// data topics' replication factor. The ledger has a client of its own,
// with the same settings: a broker answers the requests of a connection
// in order, so on the engine's connection a checkpoint or a heartbeat
// would wait behind every batch queued before it (at full speed, about 2%
// of a 10M-code file; behind a slow broker, longer than the lease). The
// returned function closes it.
func openLedger(ctx context.Context, cfg *config.Config, p *kafka.Conn, log *zap.Logger) (*ledger.Ledger, func(), error) {
	if err := p.Connect(ctx); err != nil {
		log.Error("cannot reach Kafka", zap.Strings("brokers", cfg.Brokers), zap.NamedError("err", err))
		return nil, nil, err
	}
	cl, err := kgo.NewClient(p.Client().Opts()...)
	if err != nil {
		return nil, nil, fmt.Errorf("ledger client: %w", err)
	}
	led := ledger.New(cl, cfg.LedgerTopic, int16(cfg.ReplicationFactor), log)
	ectx, cancel := context.WithTimeout(ctx, cfg.ConnectTimeout)
	defer cancel()
	if err := led.Ensure(ectx); err != nil {
		cl.Close()
		log.Error("cannot use the run ledger", zap.String("ledger_topic", cfg.LedgerTopic), zap.NamedError("err", err))
		return nil, nil, err
	}
	return led, cl.Close, nil
}

// runPreflight checks, publishing nothing, what a run of the configured
// files would need: each file a readable gzip file (exit 3 otherwise), the
// brokers reachable, each topic writable or creatable and the ledger
// topic readable and writable or creatable (exit 1).
func runPreflight(ctx context.Context, cfg *config.Config, log *zap.Logger) error {
	var errs []error
	for _, f := range cfg.Files {
		if err := preflight.File(f); err != nil {
			log.Error("preflight: file", zap.String("file", f), zap.NamedError("err", err))
			errs = append(errs, err)
			continue
		}
		log.Info("preflight: file is readable gzip", zap.String("file", f))
	}
	if cfg.DryRun {
		return errors.Join(errs...)
	}
	p, err := newConn(cfg, log)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("%w: %v", config.ErrUsage, err))...)
	}
	defer p.Close()
	if err := p.Connect(ctx); err != nil {
		log.Error("preflight: brokers", zap.Strings("brokers", cfg.Brokers), zap.NamedError("err", err))
		return errors.Join(append(errs, err)...)
	}
	log.Info("preflight: brokers answer", zap.Strings("brokers", cfg.Brokers))
	for _, f := range cfg.Files {
		topic := cfg.TopicFor(f)
		if err := preflight.Topic(ctx, p.Client(), topic, int32(cfg.Partitions), int16(cfg.ReplicationFactor), cfg.TopicConfigs); err != nil {
			log.Error("preflight: topic", zap.String("topic", topic), zap.NamedError("err", err))
			errs = append(errs, err)
			continue
		}
		log.Info("preflight: topic can be written or created", zap.String("topic", topic))
	}
	if err := preflightLedger(ctx, cfg, p, log); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// preflightLedger checks that the run ledger's topic, if there is one, can
// be read and written, or created as a run would create it.
func preflightLedger(ctx context.Context, cfg *config.Config, p *kafka.Conn, log *zap.Logger) error {
	if cfg.LedgerTopic == "" {
		return nil
	}
	if err := preflight.LedgerTopic(ctx, p.Client(), cfg.LedgerTopic, int16(cfg.ReplicationFactor), ledger.TopicConfigs()); err != nil {
		log.Error("preflight: ledger topic", zap.String("ledger_topic", cfg.LedgerTopic), zap.NamedError("err", err))
		return err
	}
	log.Info("preflight: ledger topic can be read and written, or created", zap.String("ledger_topic", cfg.LedgerTopic))
	return nil
}

func newConn(cfg *config.Config, log *zap.Logger) (*kafka.Conn, error) {
	return kafka.New(kafka.Config{
		Brokers:           cfg.Brokers,
		ClientID:          cfg.ClientID,
		Partitions:        int32(cfg.Partitions),
		ReplicationFactor: int16(cfg.ReplicationFactor),
		TopicConfigs:      cfg.TopicConfigs,
		ConnectTimeout:    cfg.ConnectTimeout,
		RecordTimeout:     cfg.DeliveryTimeout,
		Security: kafka.Security{
			TLS: cfg.TLS, CAFile: cfg.TLSCAFile, CertFile: cfg.TLSCertFile, KeyFile: cfg.TLSKeyFile,
			ServerName: cfg.TLSServerName, InsecureSkipVerify: cfg.TLSInsecureSkipVerify,
			SASLMechanism: cfg.SASLMechanism, Username: cfg.SASLUsername, Password: cfg.SASLPassword,
		},
		Logger: log,
	})
}

// newLogger builds the process logger on w: zap's production JSON encoder,
// or its console encoder when asked for or when w is a terminal. There is no
// sampling: the producer logs a few lines a minute (progress, the summary),
// and sampling would drop repeated warnings and errors, which must all be
// seen. Durations are written in seconds.
func newLogger(cfg *config.Config, w io.Writer) *zap.Logger {
	format := cfg.LogFormat
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "console"
			}
		}
	}
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	var enc zapcore.Encoder
	if format == "console" {
		ec.EncodeLevel = zapcore.CapitalLevelEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		enc = zapcore.NewJSONEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), cfg.LogLevel))
}
