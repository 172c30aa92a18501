package run

import (
	"context"
	"errors"
	"syscall"

	"github.com/couponpipeline/coupon-producer/pkg/config"
	"github.com/couponpipeline/coupon-producer/pkg/ledger"
	"github.com/couponpipeline/coupon-producer/pkg/producer"
	"github.com/couponpipeline/coupon-producer/pkg/source"
)

// Outcome is how a file's run ended, or a whole invocation: the
// files_total label and the pushed last_exit_code say the same as the
// process's exit code (see the README's job contract).
type Outcome struct {
	Result string // the files_total label
	Code   int    // the exit code
}

// The outcomes of a run. Interrupted is a run stopped by its context
// without a signal (a caller's cancellation); a signal gives Signaled.
var (
	OK          = Outcome{"ok", 0}
	Skipped     = Outcome{"skipped", 0} // unchanged: the ledger says it is published
	KafkaError  = Outcome{"kafka_error", 1}
	Interrupted = Outcome{"interrupted", 1}
	UsageError  = Outcome{"usage_error", 2}
	InputError  = Outcome{"input_error", 3}
	Live        = Outcome{"live", 4} // another run of the file is live
)

// Signaled is the outcome of a run stopped by sig: exit code 128 plus
// the signal's number, as a shell reports it.
func Signaled(sig syscall.Signal) Outcome { return Outcome{"interrupted", 128 + int(sig)} }

// SignalError is the cause of a run's context when a signal stopped it.
type SignalError struct{ Signal syscall.Signal }

func (e SignalError) Error() string { return "interrupted by " + e.Signal.String() }

// OutcomeOf classifies err, the error of one file's run or of several
// joined. Of joined errors the highest exit code wins, the first of
// equal ones: a file's failure is the run's.
func OutcomeOf(err error) Outcome {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		o := OK
		for _, e := range j.Unwrap() {
			if x := OutcomeOf(e); x.Code > o.Code || o == OK {
				o = x
			}
		}
		return o
	}
	var sig SignalError
	var input *source.InputError
	switch {
	case err == nil:
		return OK
	case errors.As(err, &sig):
		return Signaled(sig.Signal)
	case errors.Is(err, context.Canceled):
		return Interrupted
	case errors.As(err, &input):
		return InputError
	case errors.Is(err, ledger.ErrLive):
		return Live
	case errors.Is(err, config.ErrUsage), errors.Is(err, producer.ErrBatchTooLarge):
		// A batch larger than the topic's max.message.bytes: no retry
		// can help, the configuration or the topic must change.
		return UsageError
	case errors.Is(err, ErrSkipped):
		return Skipped
	default:
		return KafkaError
	}
}
