package source

import (
	"context"
	"io"
)

// Pump reads r in its own goroutine and calls fn with each chunk read, in
// order, so that decompression overlaps with what fn does. It keeps depth
// buffers of size bytes in flight; the slice passed to fn is reused once fn
// returns. Pump returns the first error of r (io.EOF ends the stream and
// returns nil) or of fn, or ctx.Err() when ctx is done first. When fn fails
// or ctx is done, Pump waits for the reading goroutine to stop before it
// returns, so r can be closed at once.
func Pump(ctx context.Context, r io.Reader, size, depth int, fn func([]byte) error) error {
	type chunk struct {
		buf []byte
		n   int
		err error
	}
	free := make(chan []byte, depth)
	for range depth {
		free <- make([]byte, size)
	}
	full := make(chan chunk, depth)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(full)
		for {
			var buf []byte
			select {
			case buf = <-free:
			case <-stop:
				return
			}
			n, err := fill(r, buf)
			select {
			case full <- chunk{buf, n, err}:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	finish := func(err error) error {
		close(stop)
		<-done
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return finish(ctx.Err())
		case c, ok := <-full:
			if !ok {
				return finish(nil)
			}
			if c.n > 0 {
				if err := fn(c.buf[:c.n]); err != nil {
					return finish(err)
				}
			}
			if c.err == io.EOF {
				return finish(nil)
			}
			if c.err != nil {
				return finish(c.err)
			}
			free <- c.buf
		}
	}
}

// fill reads into buf until it is full or r returns an error. Unlike
// io.ReadFull it passes r's errors through unchanged.
func fill(r io.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
