package main

import (
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/couponpipeline/coupon-producer/pkg/ledger"
)

// TestLedgerSIGKILLAt40PercentResendsLittle kills a run of a 10-million-code
// file with SIGKILL once 40% of it is read, with the default checkpoint
// settings: the whole run takes less than one checkpoint-interval, so only
// the checkpoints by progress (checkpoint-percent) can bound what the rerun
// sends again. The rerun resumes after the killed run's last checkpoint:
// every code of the file is in the topic, at most 5% of them twice.
func TestLedgerSIGKILLAt40PercentResendsLittle(t *testing.T) {
	brokers := testBrokers(t)
	runs, topic := uniqueTopic("runs"), uniqueTopic("couponbase1")
	file := generate(t, 10_000_000, 16)
	log, code := produceUntil(t, 3*time.Minute, brokers, topic, file, 40, func(cmd *exec.Cmd) {
		cmd.Process.Signal(syscall.SIGKILL)
	}, "--ledger-topic", runs, "--progress-interval", "20ms")
	if code != -1 {
		t.Fatalf("killed run exited %d:\n%s", code, tail(log))
	}
	hist := readLedger(t, brokers, runs, topic)
	killed := lastRecord(t, hist)
	if killed.Status.Final() || killed.Checkpoint == nil {
		t.Fatalf("killed run's last record %+v", killed)
	}
	if killed.LeaseMillis != (15 * time.Second).Milliseconds() {
		t.Fatalf("killed run's lease %dms: the test must run with the default checkpoint-interval of 5s", killed.LeaseMillis)
	}
	killedRecords := len(hist)
	before := topicCount(t, brokers, topic)

	code, stderr, _ := runProducer(t, brokers, runs, topic, file)
	if code != 0 || !strings.Contains(stderr, `"msg":"resuming an unfinished run"`) {
		t.Fatalf("resumed run: exit %d:\n%s", code, stderr)
	}
	hist = readLedger(t, brokers, runs, topic)
	last := lastRecord(t, hist)
	if last.Status != ledger.Completed || last.ResumedFrom != killed.RunID || last.LastCompleted == nil {
		t.Fatalf("resumed run's final record %+v", last)
	}
	ckpt := killed.Checkpoint.Codes
	codes := int64(len(fileCodes(t, file)))
	already := summaryInt(t, stderr, "already_delivered")
	if already < ckpt || already > slices.Max(append(killed.Checkpoint.PartitionCodes, ckpt)) || len(killed.Checkpoint.PartitionCodes) != 6 {
		t.Fatalf("summary: already_delivered %d, want the checkpoint's %d and what its partitions acknowledged beyond it (%v)",
			already, ckpt, killed.Checkpoint.PartitionCodes)
	}
	extra := checkResumed(t, brokers, topic, file, ckpt, last.LastCompleted)
	t.Logf("killed at 40%% of the compressed file: %d of %d codes in the topic, last checkpoint %d codes, %d with its partitions' (%d ledger records); "+
		"the rerun sent %d codes (%d ledger records): %d duplicates, %.2f%% of the file",
		before, codes, ckpt, already, killedRecords, summaryInt(t, stderr, "delivered"), len(hist)-killedRecords, extra, 100*float64(extra)/float64(codes))
	// Read 40%, a little less sent: what the decompressor and the
	// engine's buffers held was not.
	if before < codes*3/10 {
		t.Fatalf("the killed run had sent %d of %d codes: too few for the test to say anything", before, codes)
	}
	if limit := codes / 20; int64(extra) > limit {
		t.Fatalf("%d codes sent twice, more than 5%% (%d) of the file's %d", extra, limit, codes)
	}
}
