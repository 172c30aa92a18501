package extract

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// reference is the obviously-correct statement of the rule: split into lines,
// take every maximal [A-Za-z0-9] run, keep those of length 8 to 10.
func reference(data []byte) (codes []string, lines int64) {
	run := regexp.MustCompile(`[A-Za-z0-9]+`)
	if len(data) == 0 {
		return nil, 0
	}
	parts := strings.Split(string(data), "\n")
	lines = int64(len(parts))
	if data[len(data)-1] == '\n' {
		lines-- // the empty string after the final newline is not a line
	}
	for _, line := range parts {
		for _, r := range run.FindAllString(line, -1) {
			if len(r) >= 8 && len(r) <= 10 {
				codes = append(codes, r)
			}
		}
	}
	return codes, lines
}

// collect runs the Extractor over r, copying each code (the emitted slice is
// only valid during the call).
func collect(t testing.TB, r io.Reader) ([]string, Stats, error) {
	t.Helper()
	var got []string
	e := New(func(c []byte) error {
		got = append(got, string(c))
		return nil
	})
	if _, err := io.Copy(e, r); err != nil {
		return got, e.Stats(), err
	}
	err := e.Close()
	return got, e.Stats(), err
}

func TestExtractTable(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"empty", "", nil},
		{"plain lines", "HAPPYHRS\nSUPER100\nABCDEFGHIJ\n", []string{"HAPPYHRS", "SUPER100", "ABCDEFGHIJ"}},
		{"no final newline", "HAPPYHRS\nSUPER100", []string{"HAPPYHRS", "SUPER100"}},
		{"whitespace and CR", "  HAPPYHRS \r\n", []string{"HAPPYHRS"}},
		{"CRLF", "AAAAAAAA\r\nBBBBBBBBB\r\n", []string{"AAAAAAAA", "BBBBBBBBB"}},
		{"tabs", "\tAAAAAAAA\tBBBBBBBB\t\n", []string{"AAAAAAAA", "BBBBBBBB"}},
		{"too long is not cut", "ABCDEFGHIJK\n", nil},
		{"too short", "ABCDEFG\n", nil},
		{"lengths 7 to 11", "1234567 12345678 123456789 1234567890 12345678901", []string{"12345678", "123456789", "1234567890"}},
		{"several per line", "code: SUPER100, x: XY12345678!", []string{"SUPER100", "XY12345678"}},
		{"underscore separates", "abc_DEFGHIJK", []string{"DEFGHIJK"}},
		{"NUL separates", "AAAAAAAA\x00BBBBBBBB", []string{"AAAAAAAA", "BBBBBBBB"}},
		{"non-ASCII separates", "AAAAAAAA\xc3\xa9BBBBBBBB\xff", []string{"AAAAAAAA", "BBBBBBBB"}},
		{"non-ASCII letters are not code bytes", "CAFÉ1234X", nil},
		{"punctuation", "(AAAAAAAA);[BBBBBBBBBB]-CCCCCCCCC.", []string{"AAAAAAAA", "BBBBBBBBBB", "CCCCCCCCC"}},
		{"repeats kept", "SAMECODE\nSAMECODE\n", []string{"SAMECODE", "SAMECODE"}},
		{"lower and digits", "abcdefgh 01234567", []string{"abcdefgh", "01234567"}},
		{"blank lines", "\n\n\nAAAAAAAA\n\n", []string{"AAAAAAAA"}},
		{"only separators", " \t\r\n,;", nil},
		{"code at very end", "xx AAAAAAAAAA", []string{"AAAAAAAAAA"}},
		{"long run at very end", "xx AAAAAAAAAAA", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if ref, _ := reference([]byte(tc.in)); !slices.Equal(ref, tc.want) {
				t.Fatalf("reference disagrees with the table: %q", ref)
			}
			got, _, err := collect(t, strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("codes of %q = %q, want %q", tc.in, got, tc.want)
			}
			// One byte at a time puts every run across a chunk boundary.
			got, _, err = collect(t, iotest.OneByteReader(strings.NewReader(tc.in)))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("byte by byte, codes of %q = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestLineCount(t *testing.T) {
	for in, want := range map[string]int64{
		"": 0, "\n": 1, "a": 1, "a\n": 1, "a\nb": 2, "a\nb\n": 2, "\n\n\n": 3,
	} {
		_, st, err := collect(t, strings.NewReader(in))
		if err != nil {
			t.Fatal(err)
		}
		if st.Lines != want {
			t.Errorf("lines of %q = %d, want %d", in, st.Lines, want)
		}
		if st.Bytes != int64(len(in)) {
			t.Errorf("bytes of %q = %d, want %d", in, st.Bytes, len(in))
		}
	}
}

// TestEveryChunking splits an input at every pair of offsets, so each run is
// cut at each possible place, including runs longer than the carry buffer.
func TestEveryChunking(t *testing.T) {
	in := []byte("AAAAAAAA BBBBBBBBBBB_CCCCCCCCC\r\nDDDDDDDDDD,E12345678901234F GGGGGGGG")
	want, _ := reference(in)
	for i := 0; i <= len(in); i++ {
		for j := i; j <= len(in); j++ {
			var got []string
			e := New(func(c []byte) error { got = append(got, string(c)); return nil })
			for _, part := range [][]byte{in[:i], in[i:j], in[j:]} {
				if _, err := e.Write(part); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.Close(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("split at %d,%d: got %q, want %q", i, j, got, want)
			}
		}
	}
}

func TestReaderErrorMidStream(t *testing.T) {
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("AAAAAAAA\nBBBB"), iotest.ErrReader(boom))
	got, _, err := collect(t, r)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
	// The partial run "BBBB" must not be emitted: the stream did not end.
	if !slices.Equal(got, []string{"AAAAAAAA"}) {
		t.Fatalf("codes before the error = %q", got)
	}
}

func TestEmitErrorStops(t *testing.T) {
	stop := errors.New("stop")
	n := 0
	e := New(func([]byte) error {
		n++
		if n == 2 {
			return stop
		}
		return nil
	})
	_, err := e.Write([]byte("AAAAAAAA BBBBBBBB CCCCCCCC DDDDDDDD\n"))
	if !errors.Is(err, stop) {
		t.Fatalf("err = %v, want %v", err, stop)
	}
	if n != 2 {
		t.Fatalf("emit called %d times after it failed, want 2", n)
	}
}

// TestLongLineBoundedMemory feeds a 64 MiB line with no newline made of
// alternating codes and separators, and a 64 MiB run: the extractor keeps no
// more than the carry buffer whatever the line length.
func TestLongLine(t *testing.T) {
	const size = 64 << 20
	longRun := io.LimitReader(repeatReader('Z'), size)
	got, st, err := collect(t, longRun)
	if err != nil || len(got) != 0 || st.Lines != 1 || st.Bytes != size {
		t.Fatalf("one %d-byte run: codes %d, stats %+v, err %v", size, len(got), st, err)
	}

	pattern := []byte("ABCDEFGH,")
	r := io.LimitReader(&cycleReader{p: pattern}, int64(len(pattern))*(size/int64(len(pattern))))
	var count int64
	e := New(func(c []byte) error {
		if string(c) != "ABCDEFGH" {
			t.Fatalf("code %q", c)
		}
		count++
		return nil
	})
	if _, err := io.Copy(e, r); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if want := int64(size / len(pattern)); count != want {
		t.Fatalf("codes = %d, want %d", count, want)
	}
}

type repeatReader byte

func (b repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(b)
	}
	return len(p), nil
}

type cycleReader struct {
	p   []byte
	off int
}

func (c *cycleReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = c.p[c.off]
		c.off = (c.off + 1) % len(c.p)
	}
	return len(p), nil
}

// TestRandomAgainstReference compares with the reference on random inputs
// whose alphabet makes runs of every length around the limits likely.
func TestRandomAgainstReference(t *testing.T) {
	alphabet := []byte("AB9z\n\r \t_,\x00\xff")
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 2000; iter++ {
		in := make([]byte, rng.IntN(400))
		for i := range in {
			if rng.IntN(4) == 0 {
				in[i] = alphabet[rng.IntN(len(alphabet))]
			} else {
				in[i] = alphabet[rng.IntN(4)]
			}
		}
		checkAgainstReference(t, in, 1+rng.IntN(17))
	}
}

func checkAgainstReference(t *testing.T, in []byte, chunk int) {
	t.Helper()
	want, wantLines := reference(in)
	got, st, err := collect(t, iotest.HalfReader(&chunkReader{data: in, n: chunk}))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("input %q (chunk %d): got %q, want %q", in, chunk, got, want)
	}
	if st.Lines != wantLines || st.Codes != int64(len(want)) || st.Bytes != int64(len(in)) {
		t.Fatalf("input %q: stats %+v, want lines %d codes %d bytes %d", in, st, wantLines, len(want), len(in))
	}
}

// chunkReader returns at most n bytes per Read.
type chunkReader struct {
	data []byte
	n    int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	k := min(len(p), c.n, len(c.data))
	copy(p, c.data[:k])
	c.data = c.data[k:]
	return k, nil
}

func FuzzExtract(f *testing.F) {
	seeds, err := readSeeds()
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range seeds {
		f.Add(s, 3)
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk int) {
		if chunk <= 0 || chunk > 1<<16 {
			chunk = 1 + (chunk&0xffff+0xffff)%0xffff
		}
		checkAgainstReference(t, in, chunk)
	})
}

// readSeeds returns the fuzz seeds: the tricky fixture kept in testdata.
func readSeeds() ([][]byte, error) {
	data, err := os.ReadFile("testdata/tricky.txt")
	if err != nil {
		return nil, err
	}
	return append(bytes.SplitAfter(data, []byte("\n")), data), nil
}
