package source

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func gz(t testing.TB, members ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, m := range members {
		w := gzip.NewWriter(&buf)
		if _, err := w.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func writeFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func readAll(path string) (string, error) {
	f, err := Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var out bytes.Buffer
	err = Pump(context.Background(), f, 7, 2, func(p []byte) error {
		out.Write(p)
		return nil
	})
	return out.String(), err
}

func TestValidFiles(t *testing.T) {
	for _, tc := range []struct {
		name    string
		members []string
		want    string
	}{
		{"one member", []string{"AAAAAAAA\nBBBBBBBB\n"}, "AAAAAAAA\nBBBBBBBB\n"},
		{"empty content", []string{""}, ""},
		{"multi member, line spans members", []string{"AAAAAAAA\nBBBB", "BBBB\nCCCCCCCC\n"}, "AAAAAAAA\nBBBBBBBB\nCCCCCCCC\n"},
		{"empty member in the middle", []string{"AAAAAAAA\n", "", "BBBBBBBB\n"}, "AAAAAAAA\nBBBBBBBB\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := gz(t, tc.members...)
			p := writeFile(t, "f.gz", data)
			got, err := readAll(p)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("content %q, want %q", got, tc.want)
			}
			f, err := Open(p)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Size() != int64(len(data)) {
				t.Fatalf("size %d, want %d", f.Size(), len(data))
			}
			if _, err := io.Copy(io.Discard, f); err != nil {
				t.Fatal(err)
			}
			if f.CompressedRead() != int64(len(data)) {
				t.Fatalf("compressed read %d, want %d", f.CompressedRead(), len(data))
			}
		})
	}
}

func TestBadFiles(t *testing.T) {
	good := gz(t, "AAAAAAAA\nBBBBBBBB\nCCCCCCCC\n")
	badCRC := bytes.Clone(good)
	badCRC[len(badCRC)-8] ^= 0xff // CRC-32 is the 8 bytes before the end
	badLen := bytes.Clone(good)
	badLen[len(badLen)-1] ^= 0x01 // ISIZE
	badDeflate := bytes.Clone(good)
	badDeflate[10] = 0xff // first byte of the deflate data: reserved block type
	badSecond := append(bytes.Clone(good), []byte("garbage after a valid member")...)

	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		path string
		want error
	}{
		{"missing", filepath.Join(dir, "nope.gz"), nil},
		{"directory", dir, ErrDirectory},
		{"zero bytes", writeFile(t, "z.gz", nil), ErrEmpty},
		{"plain text", writeFile(t, "t.gz", []byte("AAAAAAAA\nBBBBBBBB\n")), ErrNotGzip},
		{"truncated in header", writeFile(t, "h.gz", good[:5]), ErrTruncated},
		{"truncated in data", writeFile(t, "d.gz", good[:len(good)/2]), ErrTruncated},
		{"truncated in trailer", writeFile(t, "tr.gz", good[:len(good)-3]), ErrTruncated},
		{"bad crc", writeFile(t, "c.gz", badCRC), ErrChecksum},
		{"bad length", writeFile(t, "l.gz", badLen), ErrChecksum},
		{"bad deflate", writeFile(t, "x.gz", badDeflate), ErrCorrupt},
		{"garbage after member", writeFile(t, "g.gz", badSecond), ErrTrailingData},
		{"zero padding", writeFile(t, "p.gz", append(bytes.Clone(good), make([]byte, 512)...)), ErrTrailingData},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := readAll(tc.path)
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("err = %v, want an *InputError", err)
			}
			if ie.Path != tc.path {
				t.Fatalf("error names %q, want %q", ie.Path, tc.path)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestTrailingDataSaysWhatAndWhere: zero padding (as tape or block
// devices leave) and other bytes after the last member are named, with
// the byte where that member ends.
func TestTrailingDataSaysWhatAndWhere(t *testing.T) {
	good := gz(t, "AAAAAAAA\n", "BBBBBBBB\n")
	for _, tc := range []struct {
		name, want string
		tail       []byte
	}{
		{"zeros", fmt.Sprintf("512 bytes of zero padding after byte %d,", len(good)), make([]byte, 512)},
		{"text", fmt.Sprintf("5 bytes that do not start a gzip member (first bytes 6a 75 6e 6b 21) after byte %d,", len(good)), []byte("junk!")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			content, err := readAll(writeFile(t, "f.gz", append(bytes.Clone(good), tc.tail...)))
			if !errors.Is(err, ErrTrailingData) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrTrailingData saying %q", err, tc.want)
			}
			if content != "AAAAAAAA\nBBBBBBBB\n" {
				t.Fatalf("content %q: the members before the trailing data must be read", content)
			}
		})
	}
}

func TestUnreadable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads files whatever their mode")
	}
	p := writeFile(t, "u.gz", gz(t, "AAAAAAAA\n"))
	if err := os.Chmod(p, 0); err != nil {
		t.Fatal(err)
	}
	_, err := Open(p)
	var ie *InputError
	if !errors.As(err, &ie) {
		t.Fatalf("err = %v, want an *InputError", err)
	}
}

func TestPumpStopsOnCallbackError(t *testing.T) {
	stop := errors.New("stop")
	calls := 0
	err := Pump(context.Background(), bytes.NewReader(make([]byte, 100)), 10, 3, func([]byte) error {
		calls++
		if calls == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || calls != 2 {
		t.Fatalf("err %v after %d calls, want %v after 2", err, calls, stop)
	}
}

func TestPumpCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	err := Pump(ctx, zeros{}, 10, 2, func([]byte) error {
		calls++
		if calls == 3 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }
