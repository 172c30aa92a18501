// Package source opens a coupon file and streams its decompressed content.
//
// Every failure to open or decompress a file is an *InputError, so callers
// can tell bad input (exit code 3) from every other failure without looking
// at messages.
package source

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"
)

// InputError is returned for a file that cannot be read or is not a complete,
// valid gzip stream.
type InputError struct {
	Path string
	Err  error
}

func (e *InputError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// Sentinel causes, wrapped in an InputError.
var (
	// ErrEmpty is returned for a 0-byte file: it holds no gzip header.
	ErrEmpty = errors.New("empty file: not a gzip stream")
	// ErrNotGzip is returned when the gzip header is missing or malformed.
	ErrNotGzip = errors.New("not a gzip stream (bad header)")
	// ErrTruncated is returned when the stream ends inside a gzip member.
	ErrTruncated = errors.New("truncated gzip stream (unexpected end of file)")
	// ErrChecksum is returned when a member's CRC-32 or length does not match.
	ErrChecksum = errors.New("corrupt gzip stream (checksum mismatch)")
	// ErrCorrupt is returned for invalid deflate data.
	ErrCorrupt = errors.New("corrupt gzip stream (invalid deflate data)")
	// ErrDirectory is returned when the path names a directory.
	ErrDirectory = errors.New("is a directory, not a gzip file")
	// ErrTrailingData is returned for bytes after the last gzip member
	// that do not start another member, zero padding included: its
	// message says what was found and at which byte the last member ended.
	ErrTrailingData = errors.New("data after the last gzip member")
)

// readSize is the size of each read from the compressed file.
const readSize = 256 << 10

// File is an open coupon file. Read returns its decompressed content; a file
// of several gzip members reads as one continuous stream.
type File struct {
	path  string
	size  int64
	mtime time.Time
	f     *os.File
	cr    countingReader
	br    *bufio.Reader
	zr    *gzip.Reader
}

// Open opens path and reads its first gzip header, so that a file that is
// not gzip at all is refused before anything else happens.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, &InputError{Path: path, Err: describeOpen(err)}
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, &InputError{Path: path, Err: err}
	}
	if st.IsDir() {
		f.Close()
		return nil, &InputError{Path: path, Err: ErrDirectory}
	}
	s := &File{path: path, size: st.Size(), mtime: st.ModTime(), f: f}
	s.cr.r = f
	// The bufio.Reader is a flate.Reader, so gzip reads it directly instead
	// of adding a small buffer of its own.
	s.br = bufio.NewReaderSize(&s.cr, readSize)
	s.zr, err = gzip.NewReader(s.br)
	if err != nil {
		f.Close()
		if err == io.EOF && s.cr.n.Load() == 0 {
			err = ErrEmpty
		}
		return nil, &InputError{Path: path, Err: classify(err)}
	}
	// Members are chained by Read, which can then tell what follows the
	// last one.
	s.zr.Multistream(false)
	return s, nil
}

func describeOpen(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		// The path is already in InputError: keep the reason only.
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return errors.New("no such file")
		case errors.Is(err, fs.ErrPermission):
			return errors.New("permission denied")
		}
		return pe.Err
	}
	return err
}

// Read reads decompressed bytes. At the end of the last member it returns
// io.EOF; any other error is an *InputError.
func (s *File) Read(p []byte) (int, error) {
	n, err := s.zr.Read(p)
	if err == io.EOF {
		err = s.nextMember()
	}
	if err != nil && err != io.EOF {
		err = &InputError{Path: s.path, Err: classify(err)}
	}
	return n, err
}

// gzipMagic starts every gzip member.
var gzipMagic = []byte{0x1f, 0x8b}

// nextMember starts reading the member after the one that just ended. It
// returns io.EOF at the end of the file and an error wrapping
// ErrTrailingData when what follows is not a gzip member.
func (s *File) nextMember() error {
	next, err := s.br.Peek(len(gzipMagic))
	if len(next) == 0 && err == io.EOF {
		return io.EOF
	}
	if bytes.Equal(next, gzipMagic) {
		err := s.zr.Reset(s.br)
		s.zr.Multistream(false) // Reset turns it back on
		return err
	}
	end := s.cr.n.Load() - int64(s.br.Buffered())
	n, zero, first, err := scanRest(s.br)
	if err != nil {
		return fmt.Errorf("read after the last gzip member: %w", err)
	}
	if zero {
		return fmt.Errorf("%w: %d bytes of zero padding after byte %d, where the last member ends", ErrTrailingData, n, end)
	}
	return fmt.Errorf("%w: %d bytes that do not start a gzip member (first bytes % x) after byte %d, where the last member ends",
		ErrTrailingData, n, first, end)
}

// scanRest reads r to its end: how many bytes, whether all are zero, and
// the first few.
func scanRest(r io.Reader) (n int64, zero bool, first []byte, err error) {
	zero = true
	buf := make([]byte, 32<<10)
	for {
		k, err := r.Read(buf)
		if len(first) < 8 {
			first = append(first, buf[:min(k, 8-len(first))]...)
		}
		for _, c := range buf[:k] {
			zero = zero && c == 0
		}
		n += int64(k)
		if err == io.EOF {
			return n, zero, first, nil
		}
		if err != nil {
			return n, zero, first, err
		}
	}
}

// Path returns the path the file was opened with.
func (s *File) Path() string { return s.path }

// Size returns the compressed size of the file in bytes.
func (s *File) Size() int64 { return s.size }

// CompressedRead returns how many compressed bytes have been read so far. It
// is safe to call from any goroutine, for progress reports.
func (s *File) CompressedRead() int64 { return s.cr.n.Load() }

// ModTime returns the file's modification time when it was opened.
func (s *File) ModTime() time.Time { return s.mtime }

// Digest identifies a file's content: the SHA-256 of its compressed bytes
// and their count.
type Digest struct {
	Size   int64
	SHA256 [sha256.Size]byte
}

// Digest reads the whole compressed file once and hashes it, without
// decompressing. It reads through the descriptor Read decodes from, at
// explicit offsets, so it leaves Read's position alone, and a file renamed
// over path meanwhile cannot make the hash and the decoded content differ.
// It is the pass that tells whether a file changed before anything is
// published: about a tenth of the cost of decoding (see the README's ledger
// section). Errors are *InputError.
func (s *File) Digest() (Digest, error) {
	h := sha256.New()
	buf := make([]byte, readSize)
	n, err := io.CopyBuffer(h, io.NewSectionReader(s.f, 0, 1<<62), buf)
	if err != nil {
		return Digest{}, &InputError{Path: s.path, Err: fmt.Errorf("read for hashing: %w", err)}
	}
	d := Digest{Size: n}
	h.Sum(d.SHA256[:0])
	return d, nil
}

// Close closes the file.
func (s *File) Close() error { return s.f.Close() }

func classify(err error) error {
	var corrupt flate.CorruptInputError
	switch {
	case errors.Is(err, gzip.ErrHeader):
		return ErrNotGzip
	case errors.Is(err, gzip.ErrChecksum):
		return ErrChecksum
	case errors.Is(err, io.ErrUnexpectedEOF), err == io.EOF:
		return ErrTruncated
	case errors.As(err, &corrupt):
		return fmt.Errorf("%w at offset %d", ErrCorrupt, int64(corrupt))
	}
	return err
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
