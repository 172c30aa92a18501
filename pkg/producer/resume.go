package producer

// Resume makes the stream drop, of the codes written from now on, those of
// each partition p whose index (counted in codes written, from 0) is below
// bounds[p]: an earlier run acknowledged them (see PartitionPrefixes).
// They count as written, so the indices of Acknowledged and
// PartitionPrefixes stay those of the file, but not as sent, delivered or
// failed; Skipped counts them. It must be called before the first Write.
// It returns false, and drops nothing, unless bounds has one entry per
// partition of the topic: with partitions added, a code's partition is no
// longer the one the bounds were counted for.
func (s *Stream) Resume(bounds []int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(bounds) != len(s.parts) || s.sent != 0 {
		return false
	}
	s.resume = append([]int64(nil), bounds...)
	return true
}

// Skipped returns how many codes Resume dropped.
func (s *Stream) Skipped() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.skipped
}

// PartitionPrefixes returns, per partition, how many of the first codes
// written have all their codes of that partition acknowledged: the first
// code of the partition's oldest batch still held, or every code written,
// and never past the first code that failed in any partition. Each is at
// least the prefix of Acknowledged; together they let a resumed run leave
// out, partition by partition, what was acknowledged beyond that prefix.
// It may be called from any goroutine.
func (s *Stream) PartitionPrefixes() []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int64, len(s.parts))
	for i := range s.parts {
		p := &s.parts[i]
		n := min(s.sent, s.failedAt)
		switch {
		case len(p.queue) > 0:
			n = min(n, p.queue[0].first)
		case p.open != nil:
			n = min(n, p.open.first)
		}
		out[i] = n
	}
	return out
}
