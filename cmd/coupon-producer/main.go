// Command coupon-producer publishes every coupon code of a gzip file to the
// Kafka topic named after it, once (a Kubernetes Job) or on a schedule
// (docker compose).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"go.uber.org/zap"

	"github.com/couponpipeline/coupon-producer/pkg/config"
	"github.com/couponpipeline/coupon-producer/pkg/run"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	os.Exit(exitCode(realMain(os.Args[1:], os.Stdout, os.Stderr)))
}

func realMain(args []string, stdout, stderr io.Writer) error {
	cfg, err := config.Parse(args, stdout)
	if err != nil {
		if !errors.Is(err, config.ErrHelp) {
			fmt.Fprintf(stderr, "coupon-producer: %v\nRun 'coupon-producer --help' for usage.\n", err)
		}
		return err
	}
	switch {
	case cfg.ShowVersion:
		fmt.Fprintln(stdout, "coupon-producer", buildVersion())
		return nil
	case cfg.PrintConfig:
		if err := cfg.WriteYAML(stdout); err != nil {
			return err
		}
		if err := cfg.Validate(); err != nil {
			fmt.Fprintf(stderr, "coupon-producer: this configuration is not valid: %v\n", err)
			return fmt.Errorf("%w: %v", config.ErrUsage, err)
		}
		return nil
	}
	log := newLogger(cfg, stderr)
	defer log.Sync()

	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		if s, ok := <-sigs; ok {
			log.Warn("signal received: stopping", zap.String("signal", s.String()))
			cancel(run.SignalError{Signal: s.(syscall.Signal)})
		}
	}()
	if cfg.Preflight {
		return runPreflight(ctx, cfg, log)
	}
	return serve(ctx, cfg, stdout, log)
}

// exitCode maps an error to the process exit code (see the README's job
// contract): for several errors (one per file) the highest of their codes.
func exitCode(err error) int {
	switch {
	case errors.Is(err, config.ErrHelp):
		return 0
	default:
		return run.OutcomeOf(err).Code
	}
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
