package ledger

import (
	"strings"
	"testing"
	"time"

	"github.com/couponpipeline/coupon-producer/pkg/kafka"
)

var t0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// entry is a record of run id at offset, at t0 plus sec seconds, with a
// lease of 15s.
func entry(off int64, sec int, id string, st Status) Entry {
	return Entry{Offset: off, Timestamp: t0.Add(time.Duration(sec) * time.Second),
		Record: Record{RunID: id, Status: st, LeaseMillis: 15000, SHA256: "aa", Size: 10}}
}

func TestJudge(t *testing.T) {
	tests := []struct {
		name string
		hist []Entry
		self int64
		now  int // seconds after t0
		want verdict
		by   string
	}{
		{"nothing before", []Entry{entry(0, 0, "me", Started)}, 0, 0, goOn, ""},
		{"earlier run finished", []Entry{entry(0, 0, "a", Started), entry(1, 5, "a", Completed), entry(2, 6, "me", Started)}, 2, 6, goOn, ""},
		{"earlier run within its lease", []Entry{entry(0, 0, "a", Started), entry(1, 5, "a", Checkpoint), entry(2, 6, "me", Started)}, 2, 6, unsure, "a"},
		{"earlier run past its lease", []Entry{entry(0, 0, "a", Started), entry(1, 5, "a", Checkpoint), entry(2, 30, "me", Started)}, 2, 30, goOn, ""},
		{"earlier run wrote after me", []Entry{entry(0, 0, "a", Started), entry(1, 1, "me", Started), entry(2, 5, "a", Checkpoint)}, 1, 5, alive, "a"},
		{"earlier run ended after me", []Entry{entry(0, 0, "a", Started), entry(1, 1, "me", Started), entry(2, 5, "a", Interrupted)}, 1, 5, goOn, ""},
		{"later run is not my concern", []Entry{entry(0, 0, "me", Started), entry(1, 1, "b", Started), entry(2, 2, "b", Checkpoint)}, 0, 2, goOn, ""},
		{"lease lapsed at exactly the lease", []Entry{entry(0, 0, "a", Started), entry(1, 1, "me", Started)}, 1, 15, goOn, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, by := judge(tt.hist, tt.self, t0.Add(time.Duration(tt.now)*time.Second))
			if v != tt.want {
				t.Fatalf("verdict %d, want %d", v, tt.want)
			}
			if (by == nil) != (tt.by == "") || (by != nil && by.RunID != tt.by) {
				t.Fatalf("decided by %+v, want run %q", by, tt.by)
			}
		})
	}
}

func TestResumable(t *testing.T) {
	withCheckpoint := func(e Entry, codes int64) Entry {
		e.Checkpoint = &Position{Codes: codes}
		return e
	}
	other := entry(1, 5, "a", Interrupted)
	other.SHA256 = "bb"
	tests := []struct {
		name string
		hist []Entry
		want string
	}{
		{"interrupted with a checkpoint", []Entry{entry(0, 0, "a", Started), withCheckpoint(entry(1, 5, "a", Interrupted), 7), entry(2, 6, "me", Started)}, "a"},
		{"gone with a checkpoint", []Entry{entry(0, 0, "a", Started), withCheckpoint(entry(1, 5, "a", Checkpoint), 7), entry(2, 60, "me", Started)}, "a"},
		{"failed with a checkpoint", []Entry{withCheckpoint(entry(1, 5, "a", Failed), 7), entry(2, 6, "me", Started)}, "a"},
		{"completed", []Entry{withCheckpoint(entry(1, 5, "a", Completed), 7), entry(2, 6, "me", Started)}, ""},
		{"checkpoint of no code", []Entry{withCheckpoint(entry(1, 5, "a", Interrupted), 0), entry(2, 6, "me", Started)}, ""},
		{"another file", []Entry{withCheckpoint(other, 7), entry(2, 6, "me", Started)}, ""},
		{"a skipped run after it does not hide it", []Entry{withCheckpoint(entry(1, 5, "a", Interrupted), 7), entry(2, 6, "b", Skipped), entry(3, 7, "me", Started)}, "a"},
		{"a completed run after it", []Entry{withCheckpoint(entry(1, 5, "a", Interrupted), 7), withCheckpoint(entry(2, 6, "b", Completed), 9), entry(3, 7, "me", Started)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			self := tt.hist[len(tt.hist)-1].Offset
			e := resumable(tt.hist, self, 10, "aa")
			if (e == nil) != (tt.want == "") || (e != nil && e.RunID != tt.want) {
				t.Fatalf("resume %+v, want run %q", e, tt.want)
			}
		})
	}
}

func TestLastCompletedIsCarried(t *testing.T) {
	s := &Snapshot{RunID: "a"}
	a := entry(0, 0, "a", Completed)
	a.LastCompleted = s
	b := entry(1, 1, "b", Skipped)
	b.LastCompleted = s
	if got := lastCompleted([]Entry{a, b, entry(2, 2, "c", Started)}); got != s {
		t.Fatalf("lastCompleted = %+v", got)
	}
	if got := lastCompleted([]Entry{entry(2, 2, "c", Started)}); got != nil {
		t.Fatalf("lastCompleted of a ledger without a completed run = %+v", got)
	}
}

func TestMerge(t *testing.T) {
	got := Merge([]kafka.Range{{Partition: 2, First: 10, Last: 20}, {Partition: 0, First: 5, Last: 6}},
		[]kafka.Range{{Partition: 2, First: 21, Last: 40}, {Partition: 1, First: 0, Last: 3}})
	want := []kafka.Range{{Partition: 0, First: 5, Last: 6}, {Partition: 1, First: 0, Last: 3}, {Partition: 2, First: 10, Last: 40}}
	if len(got) != len(want) {
		t.Fatalf("Merge = %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Merge = %+v, want %+v", got, want)
		}
	}
}

func TestDecodeRefusesANewerVersion(t *testing.T) {
	if _, err := Decode([]byte(`{"v":2,"status":"started"}`)); err == nil || !strings.Contains(err.Error(), "version 2") {
		t.Fatalf("err = %v", err)
	}
	r, err := Decode([]byte(`{"v":1,"status":"completed","run_id":"x","future_field":3}`))
	if err != nil || r.Status != Completed || r.RunID != "x" {
		t.Fatalf("Decode = %+v, %v", r, err)
	}
}

func TestSameFile(t *testing.T) {
	rec := Record{File: "/data/couponbase1.gz", Size: 10, SHA256: "aa"}
	snap := &Snapshot{RunID: "a", Size: 10, SHA256: "aa"}
	for _, tt := range []struct {
		name  string
		s     *Snapshot
		rec   Record
		force bool
		want  bool
	}{
		{"no completed run", nil, rec, false, false},
		{"same size and digest", snap, rec, false, true},
		{"same, but forced", snap, rec, true, false},
		{"another digest", snap, Record{Size: 10, SHA256: "bb"}, false, false},
		{"another size", snap, Record{Size: 11, SHA256: "aa"}, false, false},
		{"same content under another path", snap, Record{File: "/data/copy.gz", Size: 10, SHA256: "aa"}, false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := sameFile(tt.s, tt.rec, tt.force); got != tt.want {
				t.Fatalf("sameFile = %v, want %v", got, tt.want)
			}
		})
	}
}
