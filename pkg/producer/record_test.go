package producer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// decompressor is franz-go's, shared: making one per call is slow.
var decompressor = kgo.DefaultDecompressor()

// newBatch returns an empty batch of size bytes.
func newBatch(size int) *batch {
	return &batch{buf: make([]byte, headerSize, size), created: time.UnixMilli(1_700_000_000_123)}
}

// fill appends codes to b until it is full or count codes are in.
func fill(b *batch, rng *rand.Rand, count int) [][]byte {
	var codes [][]byte
	for range count {
		code := randomCode(rng)
		if !b.fits(len(code)) {
			break
		}
		b.add(code)
		codes = append(codes, code)
	}
	return codes
}

func randomCode(rng *rand.Rand) []byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	code := make([]byte, 8+rng.IntN(3))
	for i := range code {
		code[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return code
}

// decode reads a sealed batch back with franz-go's own decoders.
func decode(t *testing.T, wire []byte) (kmsg.RecordBatch, []kmsg.Record) {
	t.Helper()
	var rb kmsg.RecordBatch
	if err := rb.ReadFrom(wire); err != nil {
		t.Fatalf("kmsg cannot read the batch: %v", err)
	}
	raw, err := decompressor.Decompress(rb.Records, kgo.CompressionCodecType(rb.Attributes&7))
	if err != nil {
		t.Fatalf("cannot decompress the records (codec %d): %v", rb.Attributes&7, err)
	}
	var recs []kmsg.Record
	for len(raw) > 0 {
		length, n := binary.Varint(raw)
		if n <= 0 || int(length)+n > len(raw) {
			t.Fatalf("record %d: bad length", len(recs))
		}
		var r kmsg.Record
		if err := r.ReadFrom(raw[:n+int(length)]); err != nil {
			t.Fatalf("record %d: %v", len(recs), err)
		}
		recs = append(recs, r)
		raw = raw[n+int(length):]
	}
	return rb, recs
}

func TestBatchEncoding(t *testing.T) {
	for _, name := range []string{"none", "gzip", "snappy", "lz4", "zstd"} {
		t.Run(name, func(t *testing.T) {
			codec, err := compressor(name)
			if err != nil {
				t.Fatal(err)
			}
			// Enough records for 1-, 2- and 3-byte offset deltas.
			b := newBatch(1 << 20)
			b.part, b.pid, b.pidEpoch, b.seq = 2, 4242, 3, 77
			codes := fill(b, rand.New(rand.NewPCG(1, 2)), 20000)

			// The records section, before compression, is what franz-go
			// itself encodes.
			var want []byte
			for i, c := range codes {
				r := kmsg.Record{OffsetDelta: int32(i), Key: c, Value: c}
				r.Length = int32(len(r.AppendTo(nil)) - 1) // the length varint is 1 byte
				want = r.AppendTo(want)
			}
			if !bytes.Equal(b.buf[headerSize:], want) {
				t.Fatal("records differ from kmsg.Record encoding")
			}

			var scratch bytes.Buffer
			b.compress(codec, &scratch)
			b.seal()
			rb, recs := decode(t, b.buf)
			if name != "none" && rb.Attributes&7 == 0 {
				t.Fatalf("batch sent uncompressed with %s", name)
			}
			if rb.FirstOffset != 0 || rb.Magic != 2 || rb.PartitionLeaderEpoch != -1 ||
				int(rb.Length) != len(b.buf)-12 || rb.NumRecords != int32(len(codes)) ||
				rb.LastOffsetDelta != int32(len(codes)-1) || rb.ProducerID != 4242 ||
				rb.ProducerEpoch != 3 || rb.FirstSequence != 77 ||
				rb.FirstTimestamp != 1_700_000_000_123 || rb.MaxTimestamp != rb.FirstTimestamp ||
				rb.Attributes&^7 != 0 {
				t.Fatalf("header %+v", rb)
			}
			if got := int32(crc32.Checksum(b.buf[21:], crc32.MakeTable(crc32.Castagnoli))); rb.CRC != got {
				t.Fatalf("crc %08x, want %08x", rb.CRC, got)
			}
			if len(recs) != len(codes) {
				t.Fatalf("%d records, want %d", len(recs), len(codes))
			}
			for i, r := range recs {
				if !bytes.Equal(r.Key, codes[i]) || !bytes.Equal(r.Value, codes[i]) ||
					r.OffsetDelta != int32(i) || r.TimestampDelta64 != 0 || len(r.Headers) != 0 || r.Attributes != 0 {
					t.Fatalf("record %d = %+v, want key = value = %s", i, r, codes[i])
				}
			}
		})
	}
}

func TestCRCCoversTheBatch(t *testing.T) {
	b := newBatch(4 << 10)
	fill(b, rand.New(rand.NewPCG(3, 4)), 10)
	b.compressed = true
	b.seal()
	var rb kmsg.RecordBatch
	if err := rb.ReadFrom(b.buf); err != nil {
		t.Fatal(err)
	}
	// A change anywhere after the CRC field changes the checksum; the
	// fields before it (offset, length, leader epoch, magic) are not
	// covered, as in Kafka.
	for _, at := range []int{attrsAt, seqAt, headerSize, len(b.buf) - 1} {
		c := bytes.Clone(b.buf)
		c[at] ^= 1
		if int32(crc32.Checksum(c[attrsAt:], castagnoli)) == rb.CRC {
			t.Fatalf("flipping byte %d leaves the crc unchanged", at)
		}
	}
}

func TestBatchFillsToItsLimit(t *testing.T) {
	const size = 4 << 10
	b := newBatch(size)
	fill(b, rand.New(rand.NewPCG(5, 6)), 1<<20)
	if cap(b.buf) != size {
		t.Fatalf("buffer grew to %d bytes", cap(b.buf))
	}
	if len(b.buf)+recordSize(10, b.n) <= size {
		t.Fatalf("batch closed at %d bytes with room for another code", len(b.buf))
	}
}

func TestIncompressibleBatchGoesUncompressed(t *testing.T) {
	codec, _ := kgo.DefaultCompressor(kgo.Lz4Compression())
	b := newBatch(4 << 10)
	b.add([]byte("A1B2C3D4")) // one record: lz4's frame costs more than it saves
	var scratch bytes.Buffer
	b.compress(codec, &scratch)
	b.seal()
	rb, recs := decode(t, b.buf)
	if rb.Attributes&7 != 0 || len(recs) != 1 || string(recs[0].Value) != "A1B2C3D4" {
		t.Fatalf("attributes %d, records %+v", rb.Attributes, recs)
	}
}

func TestPartitionLikeKgo(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	part := kgo.StickyKeyPartitioner(nil).ForTopic("t")
	for i := range 1000 {
		key := make([]byte, 1+rng.IntN(20)) // every murmur2 tail length
		for j := range key {
			key[j] = byte(rng.Uint32())
		}
		for _, n := range []int{1, 3, 6, 7, 100} {
			want := part.Partition(&kgo.Record{Key: key}, n)
			if got := partitionFor(key, n); got != want {
				t.Fatalf("key %d %x, %d partitions: partition %d, kgo says %d", i, key, n, got, want)
			}
		}
	}
}

func TestNextSeqWraps(t *testing.T) {
	for _, c := range []struct{ seq, n, want int32 }{
		{0, 10, 10},
		{2147483640, 7, 2147483647},
		{2147483640, 8, 0},
		{2147483647, 3, 2},
	} {
		if got := nextSeq(c.seq, c.n); got != c.want {
			t.Errorf("nextSeq(%d, %d) = %d, want %d", c.seq, c.n, got, c.want)
		}
	}
}

func FuzzRecordRoundTrip(f *testing.F) {
	f.Add([]byte("ABCDEFGH"), 0)
	f.Add([]byte("ABCDEFGHIJ"), 200)
	f.Fuzz(func(t *testing.T, code []byte, skip int) {
		if len(code) > 1000 || skip < 0 || skip > 20000 {
			return
		}
		b := newBatch(1 << 20)
		b.n = int32(skip) // exercise offset deltas of every varint width
		if !b.fits(len(code)) {
			t.Fatalf("code of %d bytes does not fit an empty batch", len(code))
		}
		b.add(code)
		if got, want := len(b.buf)-headerSize, recordSize(len(code), int32(skip)); got != want {
			t.Fatalf("record of %d bytes, recordSize says %d", got, want)
		}
		var r kmsg.Record
		if err := r.ReadFrom(b.buf[headerSize:]); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(r.Key, code) || !bytes.Equal(r.Value, code) || r.OffsetDelta != int32(skip) ||
			int(r.Length) != len(b.buf)-headerSize-varintLen(int64(r.Length)) {
			t.Fatalf("record %+v", r)
		}
	})
}

func TestOptionsValidate(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{DeliveryTimeout: time.Minute}, ""},
		{Options{DeliveryTimeout: time.Minute, BatchMaxBytes: 100}, "batch max bytes 100 is less than min acceptable 1024"},
		{Options{DeliveryTimeout: time.Minute, BatchMaxBytes: 128 << 20}, "batch max bytes 134217728 is more than max acceptable 67108864"},
		{Options{DeliveryTimeout: time.Minute, MaxBufferedBytes: 1000}, "max buffered bytes 1000 is less than one batch of 1048576 bytes"},
		{Options{DeliveryTimeout: time.Minute, Linger: -time.Second}, "linger -1s is negative"},
		{Options{DeliveryTimeout: -time.Second}, "delivery timeout -1s is not positive: a batch could be retried forever"},
		{Options{DeliveryTimeout: 0}, "delivery timeout 0s is not positive: a batch could be retried forever"},
		{Options{DeliveryTimeout: time.Minute, Compression: "brotli"}, `compression "brotli" is not one of gzip, lz4, none, snappy, zstd`},
	} {
		c.o.defaults()
		err := c.o.validate()
		if got := fmt.Sprint(err); (err == nil) != (c.want == "") || err != nil && got != c.want {
			t.Errorf("%+v: %v, want %q", c.o, err, c.want)
		}
	}
}
