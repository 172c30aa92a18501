package schedule

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func TestParse(t *testing.T) {
	for _, ok := range []string{"0 2 * * *", "*/5 * * * *", "@daily", "@hourly", "@every 90s"} {
		if _, err := Parse(ok); err != nil {
			t.Errorf("Parse(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "every day", "0 2 * *", "61 * * * *", "@every soon"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestRunsRepeatAndNeverOverlap(t *testing.T) {
	sched, _ := Parse("@every 1s") // cron rounds @every to whole seconds
	var logs syncBuffer
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()), zapcore.AddSync(&logs), zapcore.InfoLevel))
	ctx, cancel := context.WithCancel(context.Background())
	var running, maxRunning, runs atomic.Int32
	job := func(context.Context) error {
		n := running.Add(1)
		if n > maxRunning.Load() {
			maxRunning.Store(n)
		}
		time.Sleep(1200 * time.Millisecond) // longer than the period
		running.Add(-1)
		if runs.Add(1) == 3 {
			cancel()
		}
		return errors.New("this run failed") // a failed run does not stop the schedule
	}
	if err := Loop(ctx, sched, time.UTC, true, job, log); err == nil {
		t.Fatal("ended during a run: want that run's error")
	}
	if runs.Load() != 3 || maxRunning.Load() != 1 {
		t.Fatalf("runs %d, at most %d at once", runs.Load(), maxRunning.Load())
	}
	if !strings.Contains(logs.String(), "skipped scheduled runs") {
		t.Fatalf("overlapping ticks were not logged as skipped:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "scheduled run failed") {
		t.Fatalf("failed runs not logged:\n%s", logs.String())
	}
}

func TestCancelWhileIdleReturnsNil(t *testing.T) {
	sched, _ := Parse("@every 1h")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- Loop(ctx, sched, time.UTC, false, func(context.Context) error {
			t.Error("the job ran")
			return nil
		}, zap.NewNop())
	}()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("err = %v, want nil when idle", err)
	}
}

func TestCancelDuringRunReturnsItsError(t *testing.T) {
	sched, _ := Parse("@every 1h")
	ctx, cancel := context.WithCancelCause(context.Background())
	stopped := errors.New("stopped by signal")
	err := Loop(ctx, sched, time.UTC, true, func(ctx context.Context) error {
		cancel(stopped)
		<-ctx.Done()
		return context.Cause(ctx)
	}, zap.NewNop())
	if !errors.Is(err, stopped) {
		t.Fatalf("err = %v, want the interrupted run's error", err)
	}
}
