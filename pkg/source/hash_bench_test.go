package source

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/klauspost/compress/gzip"

	"github.com/couponpipeline/coupon-producer/pkg/gen"
)

// The benchmarks weigh the two ways to know a file's SHA-256 against
// decoding it: a separate read before decoding (File.Digest, what the
// producer does) and hashing the compressed bytes in the decoding pass
// (DecodeHashed, the same reader chain as Open with a hash teed in). Each
// reports MB/s of compressed input.

var benchFile struct {
	once sync.Once
	path string
	size int64
	err  error
}

// benchPath writes a generated file of 2 million codes (about 13 MB of
// gzip) once per test binary.
func benchPath(b *testing.B) string {
	b.Helper()
	benchFile.once.Do(func() {
		dir, err := os.MkdirTemp("", "source-bench-")
		if err != nil {
			benchFile.err = err
			return
		}
		p := filepath.Join(dir, "couponbase1.gz")
		var buf bytes.Buffer
		if err := gen.WriteGzip(&buf, gen.Options{Seed: 1, File: 1, Lines: 2_000_000}); err != nil {
			benchFile.err = err
			return
		}
		benchFile.path, benchFile.size = p, int64(buf.Len())
		benchFile.err = os.WriteFile(p, buf.Bytes(), 0o644)
	})
	if benchFile.err != nil {
		b.Fatal(benchFile.err)
	}
	b.SetBytes(benchFile.size)
	return benchFile.path
}

// BenchmarkDecode is the baseline: Open and decompress the whole file.
func BenchmarkDecode(b *testing.B) {
	path := benchPath(b)
	buf := make([]byte, 256<<10)
	for b.Loop() {
		f, err := Open(path)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(io.Discard, f, buf); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// BenchmarkDecodeHashed decompresses as Open does, hashing the compressed
// bytes on their way to the decompressor.
func BenchmarkDecodeHashed(b *testing.B) {
	path := benchPath(b)
	buf := make([]byte, 256<<10)
	for b.Loop() {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		zr, err := gzip.NewReader(bufio.NewReaderSize(io.TeeReader(f, h), readSize))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.CopyBuffer(io.Discard, zr, buf); err != nil {
			b.Fatal(err)
		}
		h.Sum(nil)
		f.Close()
	}
}

// BenchmarkDigest is the separate hashing pass.
func BenchmarkDigest(b *testing.B) {
	path := benchPath(b)
	f, err := Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for b.Loop() {
		d, err := f.Digest()
		if err != nil {
			b.Fatal(err)
		}
		if d.Size != benchFile.size {
			b.Fatalf("hashed %d bytes of %d", d.Size, benchFile.size)
		}
	}
}

// TestDigest checks Digest against crypto/sha256 of the whole file, and
// that it leaves decoding where it was.
func TestDigest(t *testing.T) {
	data := gz(t, "AAAAAAAA\nBBBBBBBB\n", "CCCCCCCC\n")
	path := writeFile(t, "x.gz", data)
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := f.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(data); d.SHA256 != want || d.Size != int64(len(data)) {
		t.Fatalf("Digest = %x size %d, want %x size %d", d.SHA256, d.Size, want, len(data))
	}
	got, err := io.ReadAll(f)
	if err != nil || string(got) != "AAAAAAAA\nBBBBBBBB\nCCCCCCCC\n" {
		t.Fatalf("decoded after Digest: %q, %v", got, err)
	}
	if f.ModTime().IsZero() {
		t.Fatal("ModTime is zero")
	}
}
