// Package ledger keeps the history of the producer's runs in a compacted
// Kafka topic, keyed by data topic, so that the binary stays stateless: a
// run reads the ledger to skip a file already published unchanged, to
// resume a run whose pod died without re-sending what was acknowledged, and
// to refuse to publish while another run of the same file is alive.
//
// Compaction keeps only the latest record of a key for good, so every
// record carries what later runs and consumers need: the last completed
// run's snapshot (file digest, topic ID and offset ranges). Records
// younger than the topic's min.compaction.lag.ms are all kept; liveness
// and resume, which look at the last minutes, read those.
package ledger

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/couponpipeline/coupon-producer/pkg/kafka"
)

// Version is the record schema version this package writes and reads. A
// field may be added within a version; anything else makes a new one.
const Version = 1

// Status is what a record says about its run.
type Status string

// Statuses; the last four end a run.
const (
	Started     Status = "started"
	Checkpoint  Status = "checkpoint"
	Completed   Status = "completed"
	Failed      Status = "failed"
	Interrupted Status = "interrupted"
	Skipped     Status = "skipped"
)

// Final reports whether s ends its run.
func (s Status) Final() bool {
	switch s {
	case Completed, Failed, Interrupted, Skipped:
		return true
	}
	return false
}

// Record is one ledger record, the JSON value under the data topic's key.
// Every record of a run repeats the run's identity, so that the latest
// record of a key alone says what happened.
type Record struct {
	V      int    `json:"v"`
	Status Status `json:"status"`
	RunID  string `json:"run_id"`
	Topic  string `json:"topic"`
	File   string `json:"file"`
	// Size and SHA256 identify the compressed file's content; ModTime is
	// informational.
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mtime"`
	SHA256  string    `json:"sha256"`

	ProducerVersion string    `json:"producer_version"`
	StartedAt       time.Time `json:"started_at"`
	// Kubernetes, when the pod's environment names them (the chart
	// passes them through the downward API).
	Job       string `json:"job,omitempty"`
	Pod       string `json:"pod,omitempty"`
	Namespace string `json:"namespace,omitempty"`

	// Heartbeat is the writer's clock when it wrote the record. A run
	// whose last record is older than LeaseMillis on the broker's clock
	// (the record timestamps) is gone.
	Heartbeat   time.Time `json:"heartbeat"`
	LeaseMillis int64     `json:"lease_ms"`

	// Checkpoint is how far the run got with every code acknowledged.
	Checkpoint *Position `json:"checkpoint,omitempty"`
	// ResumedFrom names the run whose checkpoint this one started after.
	ResumedFrom string `json:"resumed_from,omitempty"`

	// Final records: the file's accounting. Codes counts every code of the
	// file; AlreadyDelivered those skipped on resume; Delivered and Failed
	// this run's. Partitions are this run's offsets.
	Lines            int64         `json:"lines,omitempty"`
	Codes            int64         `json:"codes,omitempty"`
	AlreadyDelivered int64         `json:"already_delivered,omitempty"`
	Delivered        int64         `json:"delivered,omitempty"`
	Failed           int64         `json:"failed,omitempty"`
	Partitions       []kafka.Range `json:"partitions,omitempty"`
	EndedAt          *time.Time    `json:"ended_at,omitempty"`
	// Reason says why a run was skipped or failed.
	Reason string `json:"reason,omitempty"`

	// LastCompleted is the latest completed run of the topic, this one
	// included once it completes: the snapshot a consumer reads.
	LastCompleted *Snapshot `json:"last_completed,omitempty"`
}

// Position is a point in the file up to which every code is acknowledged:
// the first Codes codes of the file, which all lie in its first Offset
// decompressed bytes, that is its first Line lines. Partitions are the
// offsets acknowledged so far, those of the runs it resumed included.
type Position struct {
	Codes      int64         `json:"codes"`
	Line       int64         `json:"line"`
	Offset     int64         `json:"offset"`
	Partitions []kafka.Range `json:"partitions,omitempty"`
	// PartitionCodes gives, per partition of the data topic (index =
	// partition), how many of the file's first codes have all their codes
	// of that partition acknowledged: each at least Codes. A resumed run
	// leaves those out too, so it sends again only what was written and
	// not acknowledged. Absent in records of older producers.
	PartitionCodes []int64 `json:"partition_codes,omitempty"`
}

// Snapshot is a completed run: every code of the file is in the topic
// whose ID is TopicID, between the First and Last offsets of Partitions
// (inclusive; codes after a resumed run's checkpoint may appear twice).
type Snapshot struct {
	RunID      string        `json:"run_id"`
	File       string        `json:"file"`
	Size       int64         `json:"size"`
	SHA256     string        `json:"sha256"`
	Codes      int64         `json:"codes"`
	TopicID    string        `json:"topic_id"`
	EndedAt    time.Time     `json:"ended_at"`
	Partitions []kafka.Range `json:"partitions"`
	// TopicIDBase64 is TopicID as Kafka's tools print topic IDs
	// (kafka-topics --describe: URL-safe base64, no padding); TopicID is
	// the same 16 bytes in hex. Empty in records written before it was
	// added.
	TopicIDBase64 string `json:"topic_id_base64,omitempty"`
}

// TopicIDBase64 is id as Kafka's Uuid.toString writes it, the form
// kafka-topics prints.
func TopicIDBase64(id [16]byte) string { return base64.RawURLEncoding.EncodeToString(id[:]) }

// Decode parses a record value. A record of a newer version is an error:
// this binary cannot know what it means.
func Decode(b []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("decode ledger record: %w", err)
	}
	if r.V > Version {
		return r, fmt.Errorf("ledger record version %d is newer than %d, the latest this producer reads: upgrade it", r.V, Version)
	}
	return r, nil
}

// Merge returns the union of two sets of ranges, one span per partition:
// the offsets of a run and of the runs it resumed.
func Merge(a, b []kafka.Range) []kafka.Range {
	byPart := map[int32]kafka.Range{}
	var order []int32
	for _, r := range append(append([]kafka.Range(nil), a...), b...) {
		g, ok := byPart[r.Partition]
		if !ok {
			byPart[r.Partition] = r
			order = append(order, r.Partition)
			continue
		}
		g.First, g.Last = min(g.First, r.First), max(g.Last, r.Last)
		byPart[r.Partition] = g
	}
	slices.Sort(order)
	out := make([]kafka.Range, 0, len(order))
	for _, p := range order {
		out = append(out, byPart[p])
	}
	return out
}
