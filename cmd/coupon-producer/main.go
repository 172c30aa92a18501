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
	"github.com/couponpipeline/coupon-producer/pkg/ledger"
	"github.com/couponpipeline/coupon-producer/pkg/publish/batch"
	"github.com/couponpipeline/coupon-producer/pkg/source"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

// Exit codes; see the README's job contract.
const (
	exitOK       = 0
	exitKafka    = 1
	exitUsage    = 2
	exitInput    = 3
	exitLive     = 4   // another run of the file is live (see pkg/ledger)
	exitSignaled = 128 // plus the signal number
)

func main() {
	os.Exit(exitCode(realMain(os.Args[1:], os.Stdout, os.Stderr)))
}

// signalError is the cause of the run's context when a signal stopped it.
type signalError struct{ sig syscall.Signal }

func (e signalError) Error() string { return "interrupted by " + e.sig.String() }

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
			cancel(signalError{s.(syscall.Signal)})
		}
	}()
	if cfg.Preflight {
		return runPreflight(ctx, cfg, log)
	}
	return serve(ctx, cfg, stdout, log)
}

// exitCode maps an error to the process exit code. For several errors (one
// per file) it is the highest of their codes.
func exitCode(err error) int {
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
	case err == nil, errors.Is(err, config.ErrHelp):
		return exitOK
	case errors.As(err, &sig):
		return exitSignaled + int(sig.sig)
	case errors.As(err, &input):
		return exitInput
	case errors.Is(err, ledger.ErrLive):
		return exitLive
	case errors.Is(err, config.ErrUsage), errors.Is(err, batch.ErrBatchTooLarge):
		return exitUsage
	default:
		return exitKafka
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
