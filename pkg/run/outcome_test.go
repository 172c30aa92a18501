package run

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"

	"github.com/couponpipeline/coupon-producer/pkg/config"
	"github.com/couponpipeline/coupon-producer/pkg/kafka"
	"github.com/couponpipeline/coupon-producer/pkg/ledger"
	"github.com/couponpipeline/coupon-producer/pkg/producer"
	"github.com/couponpipeline/coupon-producer/pkg/source"
)

// TestOutcomeOf maps every error a run returns to its files_total label
// and exit code, the README's job contract.
func TestOutcomeOf(t *testing.T) {
	input := &source.InputError{Path: "/data/x.gz", Err: source.ErrNotGzip}
	undelivered := fmt.Errorf("topic t: 3 codes: %w", kafka.ErrUndelivered)
	term := SignalError{Signal: syscall.SIGTERM}
	for _, tt := range []struct {
		name string
		err  error
		want Outcome
		code int
	}{
		{"nil", nil, OK, 0},
		{"unchanged", fmt.Errorf("%w: unchanged: run x completed this file", ErrSkipped), Skipped, 0},
		{"kafka", errors.New("cannot reach Kafka at k:9092"), KafkaError, 1},
		{"undelivered", undelivered, KafkaError, 1},
		{"canceled without a signal", fmt.Errorf("read: %w", context.Canceled), Interrupted, 1},
		{"usage", fmt.Errorf("%w: metrics-addr %q: in use", config.ErrUsage, ":9100"), UsageError, 2},
		{"batch the topic refuses", fmt.Errorf("start producing to t: %w: 4096 > max.message.bytes 2000", producer.ErrBatchTooLarge), UsageError, 2},
		{"input", input, InputError, 3},
		{"live", fmt.Errorf("%w: run abc (job %q) started", ledger.ErrLive, "j"), Live, 4},
		{"SIGINT", SignalError{Signal: syscall.SIGINT}, Signaled(syscall.SIGINT), 130},
		{"SIGTERM", term, Signaled(syscall.SIGTERM), 143},
		{"SIGTERM, then undelivered codes", errors.Join(term, undelivered), Signaled(syscall.SIGTERM), 143},
		{"input and undelivered", errors.Join(input, undelivered), InputError, 3},
		{"files: kafka, input", errors.Join(undelivered, input), InputError, 3},
		{"files: live, input", errors.Join(fmt.Errorf("%w", ledger.ErrLive), input), Live, 4},
		{"files: input, live, SIGTERM", errors.Join(input, ledger.ErrLive, term), Signaled(syscall.SIGTERM), 143},
		{"a file and the ledger's final record", errors.Join(input, errors.New("write completed record to ledger: timeout")), InputError, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := OutcomeOf(tt.err)
			if got != tt.want || got.Code != tt.code {
				t.Fatalf("OutcomeOf(%v) = %+v, want %+v (exit %d)", tt.err, got, tt.want, tt.code)
			}
		})
	}
}
