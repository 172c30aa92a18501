// Command coupongen writes deterministic sample coupon files couponbase1.gz,
// couponbase2.gz and couponbase3.gz: one random 8-10 character code per line,
// plus planted codes shared by two or three of the files.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/couponpipeline/coupon-producer/pkg/gen"
)

func main() {
	dir := flag.String("dir", "data/coupons", "directory to write the files into")
	lines := flag.Int64("lines", 3_000_000, "lines per file")
	seed := flag.Uint64("seed", 1, "random seed: the same seed writes the same files")
	shared := flag.Int("shared", 1000, "planted codes shared between files")
	files := flag.String("files", "1,2,3", "which of the files to write (1, 2 and/or 3)")
	force := flag.Bool("force", false, "overwrite files that exist")
	flag.Parse()

	if err := os.MkdirAll(*dir, 0o755); err != nil {
		fatal(err)
	}
	for _, c := range *files {
		if c == ',' {
			continue
		}
		n := int(c - '0')
		path := filepath.Join(*dir, fmt.Sprintf("couponbase%d.gz", n))
		if _, err := os.Stat(path); err == nil && !*force {
			fmt.Fprintf(os.Stderr, "coupongen: %s exists, kept (use -force to rewrite)\n", path)
			continue
		}
		if err := write(path, gen.Options{Seed: *seed, File: n, Lines: *lines, Shared: *shared}); err != nil {
			fatal(err)
		}
		fmt.Fprintf(os.Stderr, "coupongen: wrote %s (%d lines)\n", path, *lines)
	}
}

// write writes to a temporary file and renames it, so that an interrupted
// run never leaves a truncated file that looks complete.
func write(path string, o gen.Options) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".coupongen-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := gen.WriteGzip(tmp, o); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "coupongen:", err)
	os.Exit(1)
}
