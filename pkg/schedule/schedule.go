// Package schedule runs a job on a cron schedule, one run at a time
// (docker compose; on Kubernetes the CronJobs schedule).
package schedule

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/robfig/cron/v3"
)

// Parse parses a standard 5-field cron expression or a descriptor (@daily,
// @hourly, @every 1h30m, ...).
func Parse(expr string) (cron.Schedule, error) {
	s, err := cron.ParseStandard(expr)
	if err != nil {
		return nil, fmt.Errorf("schedule %q: %v", expr, err)
	}
	return s, nil
}

// Loop calls job at each time of sched in loc until ctx ends, and first at
// once when runOnStart is set. Runs never overlap: a time that comes while a
// run is still going is skipped and logged. A failed run is logged and the
// schedule goes on. Loop returns nil when ctx ends while idle; when ctx ends
// during a run, it returns that run's error (the run is expected to stop
// gracefully on its own when ctx ends).
func Loop(ctx context.Context, sched cron.Schedule, loc *time.Location, runOnStart bool,
	job func(context.Context) error, log *zap.Logger) error {
	run := func() error {
		started := time.Now()
		err := job(ctx)
		if ctx.Err() != nil {
			return err
		}
		if err != nil {
			log.Error("scheduled run failed; the schedule goes on", zap.NamedError("err", err), zap.Duration("duration", time.Since(started)))
		} else {
			log.Info("scheduled run done", zap.Duration("duration", time.Since(started)))
		}
		return nil
	}
	if runOnStart {
		if err := run(); ctx.Err() != nil {
			return err
		}
	}
	next := sched.Next(time.Now().In(loc))
	for {
		log.Info("next run", zap.String("at", next.Format(time.RFC3339)))
		timer := time.NewTimer(time.Until(next))
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case <-timer.C:
		}
		if err := run(); ctx.Err() != nil {
			return err
		}
		// Skip the times that passed while the job ran.
		now := time.Now().In(loc)
		skipped := 0
		for next = sched.Next(next); !next.After(now); next = sched.Next(next) {
			skipped++
		}
		if skipped > 0 {
			log.Warn("skipped scheduled runs that came while a run was going", zap.Int("skipped", skipped))
		}
	}
}
