// Package gen writes realistic, deterministic coupon files for tests,
// benchmarks and the demo: one random upper-case alphanumeric code of 8 to 10
// characters per line, with a set of planted codes that several files share,
// as the real couponbase files do.
package gen

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"math/rand/v2"
)

const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// Options describe one generated file.
type Options struct {
	Seed   uint64 // same seed, same file
	File   int    // which file of the set, 1 to 3: picks the planted codes
	Lines  int64
	Shared int // planted codes in the set of files; 0: none
}

// Planted returns the i-th planted code of the set made with seed, and the
// files (1 to 3) it is planted in: {1,2}, {2,3}, {1,3} or {1,2,3}, in turn.
func Planted(seed uint64, i int) (code string, files []int) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed+uint64(i)))
	var buf [10]byte
	code = string(randomCode(rng, buf[:0]))
	switch i % 4 {
	case 0:
		files = []int{1, 2}
	case 1:
		files = []int{2, 3}
	case 2:
		files = []int{1, 3}
	default:
		files = []int{1, 2, 3}
	}
	return code, files
}

func randomCode(rng *rand.Rand, dst []byte) []byte {
	x := rng.Uint64()
	n := 8 + int(x%3)
	x /= 3
	for range n {
		dst = append(dst, alphabet[x%36])
		x /= 36
	}
	return dst
}

// Write writes the uncompressed lines of the file described by o to w.
// The planted codes of o.File are spread evenly over its lines.
func Write(w io.Writer, o Options) error {
	if o.File < 1 || o.File > 3 {
		return fmt.Errorf("file %d is not 1, 2 or 3", o.File)
	}
	var planted []string
	for i := range o.Shared {
		code, files := Planted(o.Seed, i)
		for _, f := range files {
			if f == o.File {
				planted = append(planted, code)
			}
		}
	}
	every := int64(0)
	if len(planted) > 0 {
		every = max(1, o.Lines/int64(len(planted)))
	}
	rng := rand.New(rand.NewPCG(o.Seed, uint64(o.File)))
	bw := bufio.NewWriterSize(w, 256<<10)
	line := make([]byte, 0, 16)
	next := 0
	for i := int64(0); i < o.Lines; i++ {
		line = line[:0]
		if every > 0 && i%every == every/2 && next < len(planted) {
			line = append(line, planted[next]...)
			next++
		} else {
			line = randomCode(rng, line)
		}
		line = append(line, '\n')
		if _, err := bw.Write(line); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// WriteGzip writes the file described by o to w, gzip-compressed.
func WriteGzip(w io.Writer, o Options) error {
	zw, err := gzip.NewWriterLevel(w, gzip.DefaultCompression)
	if err != nil {
		return err
	}
	if err := Write(zw, o); err != nil {
		return err
	}
	return zw.Close()
}
