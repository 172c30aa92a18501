package producer

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// RecordBatch v2 header layout (KIP-98). The CRC-32C covers every byte from
// the attributes to the end of the batch.
const (
	headerSize  = 61
	lengthAt    = 8 // batch length: every byte after this field
	epochAt     = 12
	magicAt     = 16
	crcAt       = 17
	attrsAt     = 21
	lastDeltaAt = 23
	firstTSAt   = 27
	maxTSAt     = 35
	pidAt       = 43
	pidEpochAt  = 51
	seqAt       = 53
	countAt     = 57
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// partitionFor returns the partition of a record whose key is code among n
// partitions: murmur2 of the key, as the Java client's default partitioner
// and kgo.StickyKeyPartitioner(nil) do for keyed records. It is written out
// rather than taken from kgo.KafkaHasher because kgo does not export its
// murmur2, and a call through a function value per code costs more than
// the hash itself.
func partitionFor(code []byte, n int) int {
	return int((murmur2(code) & 0x7fffffff) % uint32(n))
}

// murmur2 is Kafka's Utils.murmur2.
func murmur2(b []byte) uint32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	h := seed ^ uint32(len(b))
	for len(b) >= 4 {
		k := binary.LittleEndian.Uint32(b)
		b = b[4:]
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	switch len(b) {
	case 3:
		h ^= uint32(b[2]) << 16
		fallthrough
	case 2:
		h ^= uint32(b[1]) << 8
		fallthrough
	case 1:
		h ^= uint32(b[0])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return h
}

// batch is one partition's RecordBatch: the header (filled when the batch is
// sealed) followed by its records, appended in place.
type batch struct {
	part    int32
	buf     []byte // header, then records; cap is the batch size limit
	n       int32  // records
	first   int64  // index in the stream of the batch's first code
	created time.Time

	// Set when the batch is sealed, i.e. sent for the first time. A batch is
	// sent byte for byte the same on every attempt, with the same producer
	// ID, epoch and sequence, so that the broker can drop a duplicate.
	sealed     bool
	compressed bool
	attrs      int16
	pid        int64
	pidEpoch   int16
	seq        int32
	deadline   time.Time
	attempts   int // sent this many times
	retryAt    time.Time
}

// recordSize returns the bytes a record of a code of n bytes takes: its
// length varint, then attributes, timestampDelta (always 0: one timestamp
// per batch), offsetDelta, key, value and a header count of 0.
func recordSize(n int, offsetDelta int32) int {
	body := 1 + 1 + varintLen(int64(offsetDelta)) + 2*(varintLen(int64(n))+n) + 1
	return varintLen(int64(body)) + body
}

func varintLen(v int64) int {
	u := uint64(v<<1) ^ uint64(v>>63) // zigzag
	n := 1
	for u >= 0x80 {
		u >>= 7
		n++
	}
	return n
}

// fits reports whether a record of a code of n bytes fits in b.
func (b *batch) fits(n int) bool {
	return len(b.buf)+recordSize(n, b.n) <= cap(b.buf)
}

// add appends a record whose key and value are both code. The caller checks
// fits first, so the append never reallocates.
func (b *batch) add(code []byte) {
	n := int64(len(code))
	body := 1 + 1 + varintLen(int64(b.n)) + 2*(varintLen(n)+len(code)) + 1
	buf := binary.AppendVarint(b.buf, int64(body))
	buf = append(buf, 0, 0) // attributes, timestampDelta
	buf = binary.AppendVarint(buf, int64(b.n))
	buf = binary.AppendVarint(buf, n)
	buf = append(buf, code...)
	buf = binary.AppendVarint(buf, n)
	buf = append(buf, code...)
	b.buf = append(buf, 0) // no headers
	b.n++
}

// compress replaces the records with their compressed form when that is
// smaller; otherwise the batch goes uncompressed, which any broker accepts.
// The compressed bytes are copied back into the batch's own buffer, so a
// batch never holds more than its uncompressed size.
func (b *batch) compress(c kgo.Compressor, scratch *bytes.Buffer) {
	if b.compressed {
		return
	}
	b.compressed = true
	if c == nil {
		return
	}
	records := b.buf[headerSize:]
	scratch.Reset()
	out, codec := c.Compress(scratch, records)
	if codec <= kgo.CodecNone || len(out) >= len(records) {
		return
	}
	b.buf = append(b.buf[:headerSize], out...)
	b.attrs = int16(codec) // the codec is the low 3 bits of the attributes
}

// seal fills the header: producer ID, epoch and base sequence were set by
// the sender; the timestamp is the batch's creation, for every record.
func (b *batch) seal() {
	h := b.buf[:headerSize]
	be := binary.BigEndian
	be.PutUint64(h[0:], 0) // base offset: the broker assigns offsets
	be.PutUint32(h[lengthAt:], uint32(len(b.buf)-12))
	be.PutUint32(h[epochAt:], 0xffffffff) // partition leader epoch -1: the broker fills it
	h[magicAt] = 2
	be.PutUint16(h[attrsAt:], uint16(b.attrs))
	be.PutUint32(h[lastDeltaAt:], uint32(b.n-1))
	ts := uint64(b.created.UnixMilli())
	be.PutUint64(h[firstTSAt:], ts)
	be.PutUint64(h[maxTSAt:], ts)
	be.PutUint64(h[pidAt:], uint64(b.pid))
	be.PutUint16(h[pidEpochAt:], uint16(b.pidEpoch))
	be.PutUint32(h[seqAt:], uint32(b.seq))
	be.PutUint32(h[countAt:], uint32(b.n))
	be.PutUint32(h[crcAt:], crc32.Checksum(b.buf[attrsAt:], castagnoli))
	b.sealed = true
}

// nextSeq is the sequence after a batch of n records starting at seq:
// sequences wrap to 0 after MaxInt32, as the broker expects.
func nextSeq(seq, n int32) int32 {
	return int32((int64(seq) + int64(n)) % (1 << 31))
}
