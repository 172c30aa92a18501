package run

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/couponpipeline/coupon-producer/pkg/kafka"
	"github.com/couponpipeline/coupon-producer/pkg/ledger"
	"github.com/couponpipeline/coupon-producer/pkg/metrics"
	"github.com/couponpipeline/coupon-producer/pkg/producer"
)

// Job is one invocation's files and what surrounds each file's run: the
// ledger that decides whether and from where to publish it, and the
// Pushgateway told how it ended.
type Job struct {
	Files    []string
	TopicFor func(file string) string
	Target   Target
	Options  Options
	// Ledger, if set, is entered by every file's run (see package ledger).
	Ledger        *ledger.Ledger
	LedgerOptions ledger.Options
	Origin        Origin
	// PushgatewayURL, if set, receives each file's outcome at its end.
	PushgatewayURL string
}

// Origin is who runs, as the ledger records it: the producer's version
// and, in Kubernetes, the Job, Pod and namespace.
type Origin struct {
	Version, Job, Pod, Namespace string
}

// Files publishes each file of j to its topic, one after the other. A
// file's failure does not stop the others; the errors of all files are
// joined (OutcomeOf tells the exit code). A file the ledger finds
// unchanged is done, not an error.
func Files(ctx context.Context, j Job) error {
	log := j.Options.Logger
	if log == nil {
		log = zap.NewNop()
	}
	var errs []error
	for _, f := range j.Files {
		if ctx.Err() != nil {
			errs = append(errs, context.Cause(ctx))
			break
		}
		topic := j.TopicFor(f)
		o := j.Options
		var c *claim
		if j.Ledger != nil {
			c = &claim{led: j.Ledger, opts: j.LedgerOptions, origin: j.Origin, log: log, file: f, topic: topic}
			o = c.options(o)
		}
		sum, err := File(ctx, f, topic, j.Target, o)
		if c != nil {
			if lerr := c.finish(ctx, sum, err); lerr != nil {
				err = errors.Join(err, lerr)
			}
		}
		if errors.Is(err, ErrSkipped) {
			err = nil // unchanged: done
		}
		if err != nil {
			errs = append(errs, err)
		}
		if j.PushgatewayURL != "" {
			pushOutcome(j.PushgatewayURL, sum, OutcomeOf(err).Code, log)
		}
	}
	return errors.Join(errs...)
}

// pushTimeout bounds the push at the end of a run: the run is over, and a
// Pushgateway that does not answer must not keep the Job alive.
const pushTimeout = 10 * time.Second

// pushOutcome pushes a finished run to the Pushgateway. A failed push is
// logged, not returned: every code's fate is already decided, and the exit
// code must say that, not whether monitoring was reachable (a missing push
// shows up as a stale last-success alert).
func pushOutcome(url string, sum Summary, code int, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), pushTimeout)
	defer cancel()
	o := metrics.Outcome{
		File: filepath.Base(sum.File), Topic: sum.Topic, Finished: time.Now(), Duration: sum.Duration,
		Delivered: sum.Delivered, Failed: sum.Failed, ExitCode: code,
	}
	if err := metrics.Push(ctx, url, o, nil); err != nil {
		log.Warn("cannot push metrics", zap.String("file", sum.File), zap.NamedError("err", err))
		return
	}
	log.Debug("pushed metrics", zap.String("file", sum.File), zap.String("url", url))
}

// Kafka is the Target that publishes to Kafka through the producer,
// creating each topic first.
type Kafka struct {
	Conn    *kafka.Conn
	Options producer.Options
}

// Open creates topic if it does not exist and starts a producer stream
// to it.
func (k Kafka) Open(ctx context.Context, topic string) (Sink, error) {
	if err := k.Conn.EnsureTopic(ctx, topic); err != nil {
		return nil, err
	}
	s, err := producer.New(ctx, k.Conn.Client(), topic, k.Options)
	if err != nil {
		return nil, fmt.Errorf("start producing to %s: %w", topic, err)
	}
	return s, nil
}
