// Command coupon-producer publishes every coupon code of gzip files to Kafka,
// one topic per file, once or on a schedule.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/couponpipeline/coupon-producer/pkg/config"
	"github.com/couponpipeline/coupon-producer/pkg/metrics"
	"github.com/couponpipeline/coupon-producer/pkg/publish"
	"github.com/couponpipeline/coupon-producer/pkg/publish/batch"
	"github.com/couponpipeline/coupon-producer/pkg/run"
	"github.com/couponpipeline/coupon-producer/pkg/schedule"
	"github.com/couponpipeline/coupon-producer/pkg/source"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

// Exit codes; see the README.
const (
	exitOK       = 0
	exitKafka    = 1
	exitUsage    = 2
	exitInput    = 3
	exitSignaled = 128 // plus the signal number
)

func main() {
	os.Exit(exitCode(realMain(os.Args[1:], os.Getenv, os.Stdout, os.Stderr)))
}

// signalError is the cause of the run's context when a signal stopped it.
type signalError struct{ sig syscall.Signal }

func (e signalError) Error() string { return "interrupted by " + e.sig.String() }

func realMain(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.Parse(args, getenv, stderr)
	if errors.Is(err, config.ErrHelp) {
		return nil
	}
	if err != nil {
		fmt.Fprintf(stderr, "coupon-producer: %v\nRun 'coupon-producer --help' for usage.\n", err)
		return err
	}
	if cfg.ShowVersion {
		fmt.Fprintln(stdout, "coupon-producer", buildVersion())
		return nil
	}
	log := newLogger(cfg, stderr)

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if s, ok := <-sigs; ok {
			log.Warn("signal received: stopping", "signal", s.String())
			cancel(signalError{s.(syscall.Signal)})
		}
	}()

	m := metrics.New()
	if cfg.MetricsAddr != "" {
		if err := m.Serve(ctx, cfg.MetricsAddr, log); err != nil {
			err = fmt.Errorf("%w: --metrics-addr %q: %v", config.ErrUsage, cfg.MetricsAddr, err)
			log.Error("cannot serve metrics", "err", err)
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
		log.Error("bad schedule", "err", err)
		return err
	}
	loc, _ := time.LoadLocation(cfg.ScheduleTZ) // validated by config
	log.Info("scheduler started", "schedule", cfg.Schedule, "tz", loc.String(), "files", cfg.Files)
	return schedule.Run(ctx, sched, loc, cfg.RunOnStart, job, log)
}

// runFiles publishes each file to its topic, one after the other. A file's
// failure does not stop the others; the errors of all files are joined.
func runFiles(ctx context.Context, cfg *config.Config, stdout io.Writer, log *slog.Logger, m *metrics.Metrics) error {
	var target run.Target = run.Lines{W: stdout}
	if !cfg.DryRun {
		p, err := newPublisher(cfg, log)
		if err != nil {
			return fmt.Errorf("%w: %v", config.ErrUsage, err)
		}
		defer p.Close()
		k := run.Kafka{P: p}
		if cfg.Engine == "batch" {
			k.Batch = &batch.Options{
				Compression:      cfg.Compression,
				Linger:           cfg.Linger,
				BatchMaxBytes:    int32(cfg.BatchMaxBytes),
				MaxBufferedBytes: cfg.MaxBufferedBytes,
				DeliveryTimeout:  cfg.DeliveryTimeout,
				Logger:           log,
			}
		}
		target = k
	}
	opts := run.Options{ShutdownTimeout: cfg.ShutdownTimeout, ProgressInterval: cfg.ProgressInterval, Logger: log, Metrics: m}
	var errs []error
	for _, f := range cfg.Files {
		if ctx.Err() != nil {
			errs = append(errs, context.Cause(ctx))
			break
		}
		if _, err := run.File(ctx, f, cfg.TopicFor(f), target, opts); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func newPublisher(cfg *config.Config, log *slog.Logger) (*publish.Publisher, error) {
	sec, err := publish.Security{
		TLS: cfg.TLS, CAFile: cfg.TLSCAFile, InsecureSkipVerify: cfg.TLSInsecure,
		SASLMechanism: cfg.SASLMechanism, Username: cfg.SASLUsername, Password: cfg.SASLPassword,
	}.Opts()
	if err != nil {
		return nil, err
	}
	return publish.New(publish.Config{
		Brokers:           cfg.Brokers,
		ClientID:          cfg.ClientID,
		Partitions:        int32(cfg.Partitions),
		ReplicationFactor: int16(cfg.ReplicationFactor),
		TopicConfigs:      cfg.TopicConfigs,
		Compression:       cfg.Compression,
		Linger:            cfg.Linger,
		BatchMaxBytes:     int32(cfg.BatchMaxBytes),
		MaxBuffered:       cfg.MaxBuffered,
		ConnectTimeout:    cfg.ConnectTimeout,
		DeliveryTimeout:   cfg.DeliveryTimeout,
		Extra:             sec,
		Logger:            log,
	})
}

// exitCode maps an error to the process exit code. For several errors (one
// per file) it is the highest of their codes.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		code := exitOK
		for _, e := range j.Unwrap() {
			code = max(code, exitCode(e))
		}
		return code
	}
	var sig signalError
	var input *source.InputError
	switch {
	case errors.As(err, &sig):
		return exitSignaled + int(sig.sig)
	case errors.As(err, &input):
		return exitInput
	case errors.Is(err, config.ErrUsage):
		return exitUsage
	default:
		return exitKafka
	}
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	format := cfg.LogFormat
	if format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "dev"
}
