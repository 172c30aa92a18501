// Package extract finds coupon codes in a stream of bytes.
//
// A code is a maximal run of ASCII letters and digits ([A-Za-z0-9]) whose
// length is MinLen to MaxLen. Every other byte ends a run, so a code is
// never cut out of a longer run and never glued across a separator. Lines
// only matter for counting: '\n' is one more separator.
package extract

import "bytes"

const (
	// MinLen is the length of the shortest code.
	MinLen = 8
	// MaxLen is the length of the longest code.
	MaxLen = 10
)

// tooLong marks a carried run that is already longer than MaxLen and so can
// never become a code, however it continues.
const tooLong = MaxLen + 1

var alnum = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
		t[c+'a'-'A'] = true
	}
	return t
}()

// Stats counts what an Extractor has seen.
type Stats struct {
	Bytes int64 // decompressed bytes fed
	Lines int64 // lines, counting a last line without '\n'
	Codes int64 // codes emitted
}

// EmitFunc receives each code in input order. The slice aliases either the
// chunk passed to Write or the Extractor's own carry buffer: it is valid only
// until EmitFunc returns, so a callee that keeps the code must copy it.
// A non-nil error stops extraction and is returned by Write.
type EmitFunc func(code []byte) error

// Extractor finds codes in a stream fed to it in chunks of any size, with
// memory bounded by MaxLen whatever the length of lines or runs. The zero
// value is not usable: use New.
type Extractor struct {
	emit  EmitFunc
	carry [MaxLen]byte // the run that touched the end of the previous chunk
	n     int          // its length, or tooLong
	last  byte         // last byte fed, to count a final line without '\n'
	stats Stats
}

// New returns an Extractor that calls emit for each code.
func New(emit EmitFunc) *Extractor {
	return &Extractor{emit: emit}
}

// Write feeds the next chunk of the stream. It implements io.Writer, so an
// Extractor can be the destination of io.Copy.
func (e *Extractor) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	e.stats.Bytes += int64(len(p))
	e.stats.Lines += int64(bytes.Count(p, newline))
	e.last = p[len(p)-1]

	i := 0
	if e.n > 0 {
		// Finish the run carried over from the previous chunk.
		for i < len(p) && alnum[p[i]] {
			i++
		}
		total := e.n + i
		if i == len(p) {
			e.keep(p)
			return len(p), nil
		}
		if e.n != tooLong && total >= MinLen && total <= MaxLen {
			copy(e.carry[e.n:], p[:i])
			if err := e.code(e.carry[:total]); err != nil {
				e.n = 0
				return len(p), err
			}
		}
		e.n = 0
	}
	for i < len(p) {
		for i < len(p) && !alnum[p[i]] {
			i++
		}
		start := i
		for i < len(p) && alnum[p[i]] {
			i++
		}
		if i == len(p) {
			// The run may go on in the next chunk.
			e.keep(p[start:])
			break
		}
		if l := i - start; l >= MinLen && l <= MaxLen {
			if err := e.code(p[start:i]); err != nil {
				return len(p), err
			}
		}
	}
	return len(p), nil
}

// keep appends run, which reaches the end of the current chunk, to the carry.
func (e *Extractor) keep(run []byte) {
	if e.n == tooLong {
		return
	}
	if e.n+len(run) > MaxLen {
		e.n = tooLong
		return
	}
	e.n += copy(e.carry[e.n:], run)
}

func (e *Extractor) code(c []byte) error {
	e.stats.Codes++
	return e.emit(c)
}

// Close ends the stream: a run that reaches the end of the input is a code
// if its length fits. Close must be called once, after the last Write.
func (e *Extractor) Close() error {
	n := e.n
	e.n = 0
	if n != tooLong && n >= MinLen {
		return e.code(e.carry[:n])
	}
	return nil
}

// Stats returns the counts so far. After Close, Lines includes a last line
// that has no trailing '\n'.
func (e *Extractor) Stats() Stats {
	s := e.stats
	if s.Bytes > 0 && e.last != '\n' {
		s.Lines++
	}
	return s
}

var newline = []byte{'\n'}
