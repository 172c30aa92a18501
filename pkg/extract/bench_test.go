package extract

import (
	"bytes"
	"testing"

	"github.com/couponpipeline/coupon-producer/pkg/gen"
)

// BenchmarkExtract runs the extractor over realistic content (one code per
// line) in 256 KiB chunks, as the producer feeds it. Reports ns per code via
// the bytes/s figure: ~10 bytes per code.
func BenchmarkExtract(b *testing.B) {
	var buf bytes.Buffer
	if err := gen.Write(&buf, gen.Options{Seed: 1, File: 1, Lines: 1_000_000}); err != nil {
		b.Fatal(err)
	}
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		var n int
		e := New(func([]byte) error { n++; return nil })
		for p := data; len(p) > 0; {
			k := min(len(p), 256<<10)
			e.Write(p[:k])
			p = p[k:]
		}
		e.Close()
		if n != 1_000_000 {
			b.Fatalf("%d codes", n)
		}
	}
}
