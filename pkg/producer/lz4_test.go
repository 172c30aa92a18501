package producer

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestLZ4HeaderIsStandard(t *testing.T) {
	var buf bytes.Buffer
	w := lz4.NewWriter(&buf)
	if err := w.Apply(lz4.BlockSizeOption(lz4.Block64Kb), lz4.ChecksumOption(false)); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("x"))
	w.Close()
	if got := buf.Bytes()[:len(lz4Header)]; !bytes.Equal(got, lz4Header) {
		t.Fatalf("pierrec/lz4 writes header % x for the same options, we write % x", got, lz4Header)
	}
}

// checkLZ4 compresses src and decompresses it with franz-go's decompressor
// (pierrec/lz4).
func checkLZ4(t *testing.T, src []byte) []byte {
	t.Helper()
	var dst bytes.Buffer
	out, codec := lz4Records{}.Compress(&dst, src)
	if codec != kgo.CodecLz4 {
		t.Fatalf("codec %d", codec)
	}
	got, err := decompressor.Decompress(out, kgo.CodecLz4)
	if err != nil {
		t.Fatalf("decompress %d bytes of %d: %v", len(out), len(src), err)
	}
	if !bytes.Equal(got, src) {
		t.Fatalf("round trip of %d bytes gives %d different bytes", len(src), len(got))
	}
	return out
}

func TestLZ4RoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	// Whole batches of codes, one to many 64 KiB blocks.
	for _, size := range []int{headerSize + 40, 1 << 10, 64 << 10, 65<<10 + 7, 1 << 20} {
		b := newBatch(size)
		fill(b, rng, 1<<20)
		out := checkLZ4(t, b.buf[headerSize:])
		if bound := lz4Bound(len(b.buf) - headerSize); len(out) > bound {
			t.Fatalf("%d bytes out of %d, bound %d", len(out), len(b.buf)-headerSize, bound)
		}
		if size >= 1<<10 && len(out) > len(b.buf[headerSize:])*85/100 {
			t.Errorf("batch of %d bytes compresses to %d only", len(b.buf)-headerSize, len(out))
		}
	}
	// Records whose value is not the key, or too short to match.
	var recs []byte
	for i, kv := range [][2]string{{"KEY12345", "VALUE678"}, {"ABC", "ABC"}, {"", ""}, {"SAMESAME", "SAMESAME"}} {
		r := kmsg.Record{OffsetDelta: int32(i), Key: []byte(kv[0]), Value: []byte(kv[1])}
		r.Length = int32(len(r.AppendTo(nil)) - 1)
		recs = r.AppendTo(recs)
	}
	checkLZ4(t, recs)
	// A record longer than a block, and bytes that are no records at all.
	big := newBatch(300 << 10)
	big.add(bytes.Repeat([]byte("Z"), 100<<10))
	checkLZ4(t, big.buf[headerSize:])
	noise := make([]byte, 200<<10)
	for i := range noise {
		noise[i] = byte(rng.Uint32())
	}
	checkLZ4(t, noise)
	checkLZ4(t, []byte{1})
}

func TestLZ4RandomRecords(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	for range 50 {
		// Records of 0 to 300 bytes, most with value == key, across many
		// block boundaries.
		b := newBatch(200<<10 + rng.IntN(100<<10))
		for {
			code := make([]byte, rng.IntN(300))
			for i := range code {
				code[i] = byte('A' + rng.IntN(4))
			}
			if !b.fits(len(code)) {
				break
			}
			if rng.IntN(10) == 0 {
				r := kmsg.Record{OffsetDelta: b.n, Key: code, Value: append([]byte("x"), code...)}
				r.Length = int32(len(r.AppendTo(nil)) - 1) // less the 1-byte varint of Length 0
				b.buf = r.AppendTo(b.buf)
				b.n++
				continue
			}
			b.add(code)
		}
		checkLZ4(t, b.buf[headerSize:])
	}
}

func FuzzLZ4(f *testing.F) {
	b := newBatch(4 << 10)
	fill(b, rand.New(rand.NewPCG(15, 16)), 100)
	f.Add(b.buf[headerSize:])
	f.Add([]byte{0x14, 0, 0, 0, 8, 'A', 'B', 'C', 'D', 8, 'A', 'B', 'C', 'D', 0})
	f.Fuzz(func(t *testing.T, src []byte) {
		if len(src) == 0 {
			return
		}
		checkLZ4(t, src)
	})
}

func BenchmarkLZ4(b *testing.B) {
	full := newBatch(DefaultBatchMaxBytes)
	fill(full, rand.New(rand.NewPCG(11, 12)), 1<<20)
	src := full.buf[headerSize:]
	b.Run("records", func(b *testing.B) {
		var dst bytes.Buffer
		b.SetBytes(int64(len(src)))
		b.ReportAllocs()
		var out []byte
		for range b.N {
			out, _ = lz4Records{}.Compress(&dst, src)
		}
		b.ReportMetric(float64(len(out))/float64(len(src)), "ratio")
	})
	b.Run("pierrec", func(b *testing.B) {
		c, _ := kgo.DefaultCompressor(kgo.Lz4Compression())
		var dst bytes.Buffer
		b.SetBytes(int64(len(src)))
		b.ReportAllocs()
		var out []byte
		for range b.N {
			dst.Reset()
			out, _ = c.Compress(&dst, src)
		}
		b.ReportMetric(float64(len(out))/float64(len(src)), "ratio")
	})
}
