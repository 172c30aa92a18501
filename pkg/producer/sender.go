package producer

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"go.uber.org/zap"

	"github.com/couponpipeline/coupon-producer/pkg/kafka"
)

// result is the answer to one produce request.
type result struct {
	batches []*batch
	resp    *kmsg.ProduceResponse
	err     error // the request failed: no answer
}

// errNoAnswer is a partition missing from a produce response.
var errNoAnswer = errors.New("broker answered for other partitions only")

// backoff is the wait before the attempt after attempts failed ones.
var backoff = kafka.Backoff

// run is the sender: the only goroutine that closes lingering batches,
// seals, sends and retries them, and handles the answers. It stops when
// Finish was called and no batch is left, or when s.ctx ends.
func (s *Stream) run() {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if s.ctx.Err() != nil {
			s.abort()
			return
		}
		now := time.Now()
		s.refresh(now)
		reqs, next, finished := s.plan(now)
		if finished {
			return
		}
		for _, r := range reqs {
			s.send(r.leader, r.batches)
		}
		// Compress a waiting batch while its partition's previous batch
		// is in flight, so that it goes as soon as the answer comes.
		if s.compressAhead() {
			select {
			case r := <-s.results:
				s.handle(r, time.Now())
			default:
			}
			continue
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), 0)
		}
		timer.Reset(wait)
		select {
		case r := <-s.results:
			s.handle(r, time.Now())
		case <-s.wake:
		case <-timer.C:
		case <-s.ctx.Done():
		}
		timer.Stop()
	}
}

// refreshTimeout bounds a metadata or producer ID request of the sender.
const refreshTimeout = 2 * time.Second

// refresh gets a new producer ID or the leaders when they are needed: the
// leaders at most every 100ms, as retries ask for them, and each at most
// once a second while it fails.
func (s *Stream) refresh(now time.Time) {
	// The sender waits for these requests: bounded, so that batches still
	// expire on time while no broker answers.
	if s.needPID && !now.Before(s.retryPID) {
		ctx, cancel := context.WithTimeout(s.ctx, refreshTimeout)
		pid, epoch, err := s.initProducerID(ctx)
		cancel()
		if err != nil {
			s.log.Warn("cannot get a new producer id", zap.NamedError("err", err))
			s.retryPID = now.Add(time.Second)
		} else {
			s.log.Info("new producer id", zap.Int64("producer_id", pid), zap.Int16("epoch", epoch), zap.Int64("old_producer_id", s.pid))
			s.pid, s.pidEpoch, s.needPID = pid, epoch, false
		}
	}
	if s.needMeta && !now.Before(s.retryMeta) {
		ctx, cancel := context.WithTimeout(s.ctx, refreshTimeout)
		meta, err := s.metadata(ctx)
		cancel()
		if err != nil {
			s.log.Warn("cannot look up partition leaders", zap.NamedError("err", err))
			s.retryMeta = now.Add(time.Second)
		} else {
			s.setLeaders(meta)
			s.retryMeta = now.Add(100 * time.Millisecond)
		}
		s.needMeta = err != nil
	}
}

// maxRequestBytes bounds the batches of one request, unless one batch is
// larger: the Java client's max.request.size. franz-go copies a request
// into a buffer to write it; smaller requests keep that copy small, and a
// broker's requests are pipelined anyway.
const maxRequestBytes = 1 << 20

// request is what plan picks to send to one broker.
type request struct {
	leader  int32
	batches []*batch
	size    int
}

// plan closes the batches whose linger is over, fails the ones past their
// delivery timeout, and picks the batches to send now, in requests by
// leader. It returns when to look again, and whether everything is done.
func (s *Stream) plan(now time.Time) (reqs []request, next time.Time, finished bool) {
	earliest := func(t time.Time) {
		t = later(t, now) // a zero or past time: look again at once
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	pending := false
	for i := range s.parts {
		p := &s.parts[i]
		if s.stopped != nil {
			s.failIdle(p, s.stopped)
		}
		s.expire(p, now, earliest)
		if p.open != nil && !p.busy && len(p.queue) == 0 {
			if due := p.open.created.Add(s.o.Linger); s.flushing || s.starved || !now.Before(due) {
				p.queue = append(p.queue, p.open)
				p.open = nil
			} else {
				earliest(due)
			}
		}
		pending = pending || p.open != nil || len(p.queue) > 0
		if p.busy || len(p.queue) == 0 {
			continue
		}
		b := p.queue[0]
		switch {
		case now.Before(b.retryAt):
			earliest(b.retryAt)
			continue
		case p.leader < 0:
			s.needMeta = true
			earliest(s.retryMeta)
			continue
		case !b.sealed && s.needPID:
			earliest(s.retryPID)
			continue
		case !b.sealed:
			// Stamp the batch now, not when it was closed: a batch that
			// waited while the producer ID changed takes the new one.
			if p.pid != s.pid || p.pidEpoch != s.pidEpoch {
				p.pid, p.pidEpoch, p.seq = s.pid, s.pidEpoch, 0
			}
			b.pid, b.pidEpoch, b.seq = p.pid, p.pidEpoch, p.seq
		}
		p.busy = true
		reqs = addToRequest(reqs, p.leader, b)
	}
	return reqs, next, s.flushing && !pending && s.outstanding == 0
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// addToRequest adds b to the last request to leader that has room for it,
// or to a new one. A batch not compressed yet counts at its raw size.
func addToRequest(reqs []request, leader int32, b *batch) []request {
	for i := len(reqs) - 1; i >= 0; i-- {
		if r := &reqs[i]; r.leader == leader {
			if r.size+len(b.buf) > maxRequestBytes {
				break
			}
			r.batches = append(r.batches, b)
			r.size += len(b.buf)
			return reqs
		}
	}
	return append(reqs, request{leader: leader, batches: []*batch{b}, size: len(b.buf)})
}

// expire fails p's batches that are past their delivery timeout and not in
// flight. s.mu is held.
func (s *Stream) expire(p *partition, now time.Time, earliest func(time.Time)) {
	err := fmt.Errorf("not delivered within the delivery timeout of %s", s.o.DeliveryTimeout)
	keep := p.queue[:0]
	for i, b := range p.queue {
		if i == 0 && p.busy {
			keep = append(keep, b) // its request ends in time: see send
			continue
		}
		if now.Before(b.deadline) {
			keep = append(keep, b)
			earliest(b.deadline)
			continue
		}
		if b.attempts > 0 {
			s.needPID = true // see handle
		}
		s.fail(b, err)
	}
	clear(p.queue[len(keep):])
	p.queue = keep
	if b := p.open; b != nil {
		if now.Before(b.deadline) {
			earliest(b.deadline)
		} else {
			p.open = nil
			s.fail(b, err)
		}
	}
}

// failIdle fails p's batches that are not in flight. s.mu is held.
func (s *Stream) failIdle(p *partition, err error) {
	keep := p.queue[:0]
	for i, b := range p.queue {
		if i == 0 && p.busy {
			keep = append(keep, b)
			continue
		}
		s.fail(b, err)
	}
	clear(p.queue[len(keep):])
	p.queue = keep
	if p.open != nil {
		s.fail(p.open, err)
		p.open = nil
	}
}

// send compresses and seals the batches that are sent for the first time
// and sends them in one request to their leader.
func (s *Stream) send(leader int32, bs []*batch) {
	req := kmsg.NewPtrProduceRequest()
	req.Acks = -1
	req.TimeoutMillis = int32(produceTimeout / time.Millisecond)
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.TopicID = s.topic, s.topicID // the produce version picks one
	var deadline time.Time
	for _, b := range bs {
		if !b.sealed {
			b.compress(s.codec, &s.scratch)
			b.seal()
		}
		b.attempts++
		rp := kmsg.NewProduceRequestTopicPartition()
		rp.Partition, rp.Records = b.part, b.buf
		rt.Partitions = append(rt.Partitions, rp)
		if b.deadline.After(deadline) {
			deadline = b.deadline
		}
	}
	req.Topics = append(req.Topics, rt)
	// A request may outlive the delivery timeout of its batches only by as
	// long as it takes the client to give up on it.
	ctx, cancel := context.WithDeadline(s.ctx, deadline)
	s.outstanding++
	go func() {
		defer cancel()
		resp, err := s.cl.Broker(int(leader)).Request(ctx, req)
		r := result{batches: bs, err: err}
		if err == nil {
			r.resp = resp.(*kmsg.ProduceResponse)
		}
		s.results <- r
	}()
}

// compressAhead compresses one closed batch that is waiting behind its
// partition's batch in flight. It reports whether there was one.
func (s *Stream) compressAhead() bool {
	if s.codec == nil {
		return false
	}
	s.mu.Lock()
	var todo *batch
	for i := range s.parts {
		for _, b := range s.parts[i].queue {
			if !b.compressed {
				todo = b
				break
			}
		}
		if todo != nil {
			break
		}
	}
	s.mu.Unlock()
	if todo == nil {
		return false
	}
	// Only this goroutine touches a closed batch, so no lock is needed.
	todo.compress(s.codec, &s.scratch)
	return true
}

// handle accounts for the answer to a request: acknowledged batches free
// their buffers, retryable failures are retried, others fail.
func (s *Stream) handle(r result, now time.Time) {
	s.outstanding--
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range r.batches {
		p := &s.parts[b.part]
		p.busy = false
		err := r.err
		base := int64(-1)
		if err == nil {
			base, err = partitionResult(r.resp, b.part)
		}
		switch {
		case err == nil || errors.Is(err, kerr.DuplicateSequenceNumber):
			// A duplicate was written by an earlier attempt.
			p.seq = nextSeq(b.seq, b.n)
			s.delivered += int64(b.n)
			p.acked(base, b.n)
			if s.acked != nil {
				s.acked(b)
			}
			s.pop(p)
			s.release(b)
			continue
		case errors.Is(err, kerr.InvalidTimestamp):
			s.stop(s.timestampRefused(b, now, err))
		case kafka.Permanent(err):
			s.stop(err)
		case errors.Is(err, kerr.OutOfOrderSequenceNumber) ||
			errors.Is(err, kerr.UnknownProducerID) ||
			errors.Is(err, kerr.InvalidProducerEpoch):
			// The broker lost this producer's state: retrying under the
			// same producer ID cannot succeed.
		case s.retryable(r.err, err) && now.Before(b.deadline):
			// The same bytes again: if an attempt was written (a
			// timeout, a lost connection), the broker drops the copy.
			b.retryAt = now.Add(backoff(b.attempts))
			s.needMeta = true // the leader may have moved
			s.log.Debug("retrying batch", zap.Int32("partition", b.part), zap.Int("attempt", b.attempts), zap.NamedError("err", err))
			continue
		}
		// The batch was sent and fails. Whether the broker wrote it is
		// not always known: a REQUEST_TIMED_OUT or
		// NOT_ENOUGH_REPLICAS_AFTER_APPEND comes after the append, and a
		// request may end after the batch's own deadline. The next batch
		// of the partition would reuse its sequence, and if it has as
		// many records the broker would take it for a duplicate of this
		// one and acknowledge it unwritten. So the batches that follow
		// start under a new producer ID, as the Java client bumps the
		// epoch for any failed batch. A stopped stream sends no more
		// batches: the other batches in flight that fail with it must
		// not take one each.
		if s.stopped == nil {
			s.needPID = true
		}
		s.pop(p)
		s.fail(b, err)
	}
}

func (s *Stream) pop(p *partition) {
	p.queue[0] = nil
	p.queue = p.queue[1:]
}

func (s *Stream) retryable(reqErr, err error) bool {
	if s.ctx.Err() != nil {
		return false
	}
	if reqErr != nil {
		return !errors.Is(reqErr, kgo.ErrClientClosed)
	}
	return errors.Is(err, errNoAnswer) || kerr.IsRetriable(err)
}

// partitionResult returns the base offset the broker gave part's batch,
// and its error.
func partitionResult(resp *kmsg.ProduceResponse, part int32) (int64, error) {
	for _, t := range resp.Topics {
		for _, rp := range t.Partitions {
			if rp.Partition == part {
				return rp.BaseOffset, kerr.ErrorForCode(rp.ErrorCode)
			}
		}
	}
	return -1, errNoAnswer
}

// acked widens p's acknowledged offsets by a batch of n records at base.
// A broker that answers a duplicate batch without its offset (-1) leaves
// the range as it is: it can then miss that batch only if it is the
// partition's first or last.
func (p *partition) acked(base int64, n int32) {
	if base < 0 {
		return
	}
	if p.firstOffset < 0 {
		p.firstOffset = base
	}
	p.lastOffset = max(p.lastOffset, base+int64(n)-1)
}

// abort runs when Finish gave up: it waits for the requests in flight,
// whose acknowledgements still count, and fails every other batch.
func (s *Stream) abort() {
	for s.outstanding > 0 {
		s.handle(<-s.results, time.Now())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := errors.New("not acknowledged when finish gave up")
	for i := range s.parts {
		s.failIdle(&s.parts[i], err) // none is in flight any more
	}
}

// metadata looks up the topic's partitions, leaders and ID.
func (s *Stream) metadata(ctx context.Context) (*kmsg.MetadataResponseTopic, error) {
	return kafka.TopicMetadata(ctx, s.cl, s.topic)
}

// setLeaders records the leaders of t; a partition without one has leader
// -1. The partition's error code is not looked at: REPLICA_NOT_AVAILABLE
// comes with a leader that works. Partitions added since the stream started
// are ignored: a code's partition must not change mid-file.
func (s *Stream) setLeaders(t *kmsg.MetadataResponseTopic) {
	for i := range s.parts {
		s.parts[i].leader = -1
	}
	for _, pm := range t.Partitions {
		if pm.Partition >= 0 && int(pm.Partition) < len(s.parts) {
			s.parts[pm.Partition].leader = pm.Leader
		}
	}
}

// initProducerID gets a new idempotent producer ID (no transactional ID),
// retrying retryable errors for up to produceTimeout.
func (s *Stream) initProducerID(ctx context.Context) (int64, int16, error) {
	give := time.Now().Add(produceTimeout)
	for attempt := 1; ; attempt++ {
		req := kmsg.NewPtrInitProducerIDRequest()
		resp, err := req.RequestWith(ctx, s.cl)
		if err == nil {
			err = kerr.ErrorForCode(resp.ErrorCode)
		}
		if err == nil {
			return resp.ProducerID, resp.ProducerEpoch, nil
		}
		if !kerr.IsRetriable(err) || time.Now().After(give) {
			return 0, 0, fmt.Errorf("init producer id: %w", err)
		}
		select {
		case <-ctx.Done():
			return 0, 0, fmt.Errorf("init producer id: %w", ctx.Err())
		case <-time.After(backoff(attempt)):
		}
	}
}

// checkMaxMessageBytes refuses a BatchMaxBytes larger than the topic's
// max.message.bytes, which bounds a record batch with its log overhead, as
// a batch buffer is. A topic whose configs cannot be read is not checked:
// a batch the broker refuses as too large then stops the stream.
func (s *Stream) checkMaxMessageBytes(ctx context.Context) error {
	req := kmsg.NewPtrDescribeConfigsRequest()
	rr := kmsg.NewDescribeConfigsRequestResource()
	rr.ResourceType = kmsg.ConfigResourceTypeTopic
	rr.ResourceName = s.topic
	rr.ConfigNames = []string{"max.message.bytes"}
	req.Resources = append(req.Resources, rr)
	resp, err := req.RequestWith(ctx, s.cl)
	if err == nil && len(resp.Resources) == 1 {
		err = kerr.ErrorForCode(resp.Resources[0].ErrorCode)
	}
	if err != nil || len(resp.Resources) != 1 {
		s.log.Warn("cannot read the topic's max.message.bytes", zap.NamedError("err", err))
		return nil
	}
	for _, c := range resp.Resources[0].Configs {
		if c.Name != "max.message.bytes" || c.Value == nil {
			continue
		}
		limit, err := strconv.ParseInt(*c.Value, 10, 32)
		if err == nil && int64(s.o.BatchMaxBytes) > limit {
			return fmt.Errorf("%w: batch max bytes %d is more than max.message.bytes %d of topic %s",
				ErrBatchTooLarge, s.o.BatchMaxBytes, limit, s.topic)
		}
	}
	return nil
}
