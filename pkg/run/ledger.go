package run

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/couponpipeline/coupon-producer/pkg/ledger"
	"github.com/couponpipeline/coupon-producer/pkg/source"
)

// ledgerTimeout bounds the ledger's final record after a run, which is
// written even when the run's context has ended (SIGTERM).
const ledgerTimeout = 10 * time.Second

// claim is one file's run as the ledger sees it: File's Prepare
// hashes the file and enters the run into the ledger, Track feeds its
// checkpoints, and finish writes its final record.
type claim struct {
	led         *ledger.Ledger
	opts        ledger.Options
	origin      Origin
	log         *zap.Logger
	file, topic string
	held        *ledger.Claim // nil until Prepare decides to publish
	// resume is the checkpoint Prepare resumes after; nil: none.
	resume *ledger.Position
}

// options adds the ledger's hooks to o.
func (f *claim) options(o Options) Options {
	o.Prepare = f.prepare
	o.Track = func(position func() Position) {
		if f.held != nil {
			f.held.Track(func() ledger.Position { return toLedger(position()) })
		}
	}
	o.Checkpoint = func() {
		if f.held != nil {
			f.held.Nudge()
		}
	}
	o.ResumePartitions = func() []int64 {
		if f.resume != nil {
			return f.resume.PartitionCodes
		}
		return nil
	}
	return o
}

func toLedger(p Position) ledger.Position {
	return ledger.Position{Codes: p.Codes, Line: p.Line, Offset: p.Offset, Partitions: p.Ranges, PartitionCodes: p.PartitionCodes}
}

// prepare hashes the file (a read of its own, before decoding: skipping
// an unchanged file must not cost a decode) and asks the ledger whether to
// publish it, all of it or the codes after a checkpoint.
func (f *claim) prepare(ctx context.Context, src *source.File) (int64, error) {
	log := f.log.With(zap.String("file", f.file), zap.String("topic", f.topic))
	start := time.Now()
	d, err := src.Digest()
	if err != nil {
		log.Error("cannot read file", zap.NamedError("err", err))
		return 0, err
	}
	sha := hex.EncodeToString(d.SHA256[:])
	log.Debug("hashed file", zap.String("sha256", sha), zap.Int64("compressed_bytes", d.Size), zap.Duration("duration", time.Since(start)))
	rec := ledger.Record{
		Topic: f.topic, File: f.file, Size: d.Size, ModTime: src.ModTime().UTC(), SHA256: sha,
		ProducerVersion: f.origin.Version, Job: f.origin.Job, Pod: f.origin.Pod, Namespace: f.origin.Namespace,
	}
	r, plan, err := f.led.Begin(ctx, rec, f.opts)
	switch {
	case errors.Is(err, ledger.ErrLive):
		log.Error("not publishing: another run of this file is live", zap.NamedError("err", err))
		return 0, err
	case err != nil:
		log.Error("cannot use the run ledger", zap.String("ledger_topic", f.led.Topic()), zap.NamedError("err", err))
		return 0, err
	case plan.Unchanged:
		log.Info("unchanged", zap.String("sha256", sha), zap.String("reason", plan.Reason))
		return 0, fmt.Errorf("%w: %s", ErrSkipped, plan.Reason)
	}
	f.held = r
	fields := []zap.Field{zap.String("run_id", r.ID()), zap.String("sha256", sha)}
	if plan.Reason != "" {
		fields = append(fields, zap.String("reason", plan.Reason))
	}
	if plan.Resume != nil {
		f.resume = plan.Resume
		log.Info("resuming an unfinished run", append(fields, zap.String("resumed_from", plan.ResumedFrom),
			zap.Int64("already_delivered", plan.Resume.Codes), zap.Int64("line", plan.Resume.Line), zap.Int64("offset", plan.Resume.Offset))...)
		return plan.Resume.Codes, nil
	}
	log.Info("publishing", fields...)
	return 0, nil
}

// finish writes the run's final record: completed, interrupted (a signal)
// or failed. Its error, if any, is the ledger's: the codes' fate is in
// runErr.
func (f *claim) finish(ctx context.Context, sum Summary, runErr error) error {
	if f.held == nil {
		return nil
	}
	o := ledger.Outcome{
		Status: ledger.Completed, Lines: sum.Lines, Codes: sum.Codes, AlreadyDelivered: sum.AlreadyDelivered,
		Delivered: sum.Delivered, Failed: sum.Failed, Position: toLedger(sum.Acked),
	}
	switch {
	case runErr == nil:
	case ctx.Err() != nil:
		o.Status, o.Reason = ledger.Interrupted, runErr.Error()
	default:
		o.Status, o.Reason = ledger.Failed, runErr.Error()
	}
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ledgerTimeout)
	defer cancel()
	if err := f.held.Finish(wctx, o); err != nil {
		f.log.Error("cannot write the run's final ledger record", zap.String("file", f.file), zap.String("run_id", f.held.ID()), zap.NamedError("err", err))
		return err
	}
	f.log.Debug("ledger: final record written", zap.String("file", f.file), zap.String("run_id", f.held.ID()), zap.String("status", string(o.Status)))
	return nil
}
