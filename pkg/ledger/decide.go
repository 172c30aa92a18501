package ledger

import "time"

// Entry is a record read back from the ledger with its place in the log:
// the offsets order the runs, and the timestamps, appended by the broker,
// time them on one clock.
type Entry struct {
	Offset    int64
	Timestamp time.Time
	Record
}

// run is the history of one run: its first and last records.
type run struct {
	first, last Entry
}

// runs groups a key's records by run, in the order the runs started.
func runs(hist []Entry) []run {
	var out []run
	at := map[string]int{}
	for _, e := range hist {
		if i, ok := at[e.RunID]; ok {
			out[i].last = e
			continue
		}
		at[e.RunID] = len(out)
		out = append(out, run{first: e, last: e})
	}
	return out
}

func (r run) lease() time.Duration {
	if r.last.LeaseMillis <= 0 {
		return defaultLease
	}
	return time.Duration(r.last.LeaseMillis) * time.Millisecond
}

// defaultLease is the lease of a record that names none.
const defaultLease = 15 * time.Second

// verdict is what a run learns about the runs that started before it.
type verdict int

const (
	goOn   verdict = iota // none is alive: go on
	unsure                // one may be alive: look again later
	alive                 // one is alive: do not publish
)

// judge looks at the runs that started before self (the offset of its
// started record) as of now, the broker's time of self's latest record.
// A run that wrote anything but a final record after self started is
// alive: it heartbeats. One whose last record is older than its lease is
// gone. Any other may be either, until it writes again or its lease ends.
// Runs that started after self are not its concern: they see self first
// and yield to it. It returns the run that decides the verdict, if any.
func judge(hist []Entry, self int64, now time.Time) (verdict, *Entry) {
	v, by := goOn, (*Entry)(nil)
	for _, r := range runs(hist) {
		if r.first.Offset >= self || r.last.Status.Final() {
			continue
		}
		switch {
		case r.last.Offset > self:
			e := r.last
			return alive, &e
		case now.Sub(r.last.Timestamp) < r.lease():
			e := r.last
			v, by = unsure, &e
		}
	}
	return v, by
}

// lastCompleted returns the snapshot of the latest completed run that the
// history knows: every record carries the one its writer knew.
func lastCompleted(hist []Entry) *Snapshot {
	for i := len(hist) - 1; i >= 0; i-- {
		if s := hist[i].LastCompleted; s != nil {
			return s
		}
	}
	return nil
}

// sameFile reports whether the snapshot s of the last completed run is of
// the very file rec names (same size and SHA-256), so that the file may be
// skipped, unless forced.
func sameFile(s *Snapshot, rec Record, force bool) bool {
	return s != nil && !force && s.SHA256 == rec.SHA256 && s.Size == rec.Size
}

// resumable returns the last record of the run to resume, if any: the
// latest run that started before self and published (skipped runs did
// not), if it did not complete, its file had the same content, and it
// checkpointed some codes. Runs still unfinished here are gone: judge said
// so before.
func resumable(hist []Entry, self int64, size int64, sha string) *Entry {
	var last *run
	for _, r := range runs(hist) {
		if r.first.Offset >= self || r.last.Status == Skipped {
			continue
		}
		last = &r
	}
	if last == nil {
		return nil
	}
	e := last.last
	if e.Status == Completed || e.SHA256 != sha || e.Size != size || e.Checkpoint == nil || e.Checkpoint.Codes <= 0 {
		return nil
	}
	return &e
}
