package main

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func gz(t *testing.T, content string) string {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(content))
	w.Close()
	p := filepath.Join(t.TempDir(), "f.gz")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCountFile: the expected records of a run are counted apart from the
// extractor, so the rule is spelled out here: maximal runs of [A-Za-z0-9]
// of 8 to 10 bytes, and a last line without '\n' counts as a line.
func TestCountFile(t *testing.T) {
	for _, c := range []struct {
		name, content string
		lines, codes  int64
	}{
		{"one code a line", "ABCDEFGH\nabcdefghij\n", 2, 2},
		{"no final newline", "ABCDEFGH\nABCDEFGHI", 2, 2},
		{"too short and too long", "ABCDEFG\nABCDEFGHIJK\n", 2, 0},
		{"separators", "ABCDEFGH,12345678 x-ABCDEFGHIJ;\n", 1, 3},
		{"run across a non-ASCII byte", "ABCD\xe9EFGHIJKL\n", 1, 1},
		{"empty", "", 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := gz(t, c.content)
			got, err := countFile(p, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if got.lines != c.lines || got.codes != c.codes || got.bytes != int64(len(c.content)) {
				t.Fatalf("counts %+v, want %d lines, %d codes, %d bytes", got, c.lines, c.codes, len(c.content))
			}
		})
	}
}

func TestCountFileCache(t *testing.T) {
	p, cache := gz(t, "ABCDEFGH\n"), t.TempDir()
	if _, err := countFile(p, cache); err != nil {
		t.Fatal(err)
	}
	// A newer file is counted again, not read from the cache.
	later := time.Now().Add(time.Hour)
	if err := os.WriteFile(p, mustRead(t, gz(t, "ABCDEFGH\nABCDEFGH\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Chtimes(p, later, later)
	if got, err := countFile(p, cache); err != nil || got.codes != 2 {
		t.Fatalf("after a rewrite: %+v, %v; want 2 codes", got, err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestThousandsAndMedian(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 10_000_000: "10,000,000", 4_000_063: "4,000,063"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %s, want %s", n, got, want)
		}
	}
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median of 3 = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median of 4 = %v", m)
	}
}

// TestSummary checks the summary's medians, the runs that failed left out,
// and the ratios dividing B's figures by lines and A's by codes.
func TestSummary(t *testing.T) {
	b := &bench{status: map[runKey]string{}}
	b.counts = fileCounts{lines: 2_000_000, codes: 1_000_000}
	add := func(kind string, round int, wall, cpu float64, rss int64, st string) {
		b.runs = append(b.runs, result{kind: kind, round: round, broker: 1, usage: usage{
			wall: time.Duration(wall * float64(time.Second)), cpu: time.Duration(cpu * float64(time.Second)), rss: rss, rss2: -1}})
		b.status[runKey{kind, round}] = st
	}
	add("producer", 1, 1, 0.5, 40*1024, "ok")
	add("producer", 2, 3, 0.7, 41*1024, "ok")
	add("producer", 3, 9, 9, 99*1024, "exit 1")
	add("kcat", 1, 4, 2, 20*1024, "ok")
	var w strings.Builder
	b.summary(&w)
	for _, want := range []string{
		"| A producer | 2/3 | 2.00 | 0.60 | 0.600 | 0.50 | 41.0 | 1.00 | 0.00 |",
		// B: 2M lines; its peak RSS cell names both sides of the pipe.
		"| B igzip \\| kcat | 1/1 | 4.00 | 2.00 | 1.000 | 0.50 | kcat 20.0, igzip 0.0 | 1.00 | 0.00 |",
		// wall 2/4, CPU 0.6/2, per record (0.6/1M)/(2/2M) = 0.6, rate (1M/2)/(2M/4) = 1.
		"| **ratio A / B** | | **0.50** | **0.30** | **0.60** | 1.00 | 2.05 | 1.00 | |",
	} {
		if !strings.Contains(w.String(), want+"\n") {
			t.Errorf("summary lacks\n%s\nin\n%s", want, w.String())
		}
	}
}

// TestBaseAndLedger checks what BENCH_BASE adds: the base's row and the
// ratio of A to it in the summary, and the ledger records per run over the
// runs that passed.
func TestBaseAndLedger(t *testing.T) {
	b := &bench{status: map[runKey]string{}, ledger: map[runKey]int64{}}
	b.counts = fileCounts{lines: 1_000_000, codes: 1_000_000}
	add := func(kind string, round int, wall float64, ledger int64, st string) {
		b.runs = append(b.runs, result{kind: kind, round: round, broker: 1, usage: usage{
			wall: time.Duration(wall * float64(time.Second)), cpu: time.Second, rss: 40 * 1024, rss2: -1}})
		b.status[runKey{kind, round}] = st
		if st == "ok" {
			b.ledger[runKey{kind, round}] = ledger
		}
	}
	add("base", 1, 2, 2, "ok")
	add("producer", 1, 1, 55, "ok")
	add("base", 2, 4, 2, "ok")
	add("producer", 2, 3, 68, "ok")
	add("producer", 3, 2, 63, "ok")
	add("producer", 4, 9, 0, "exit 1")
	var w strings.Builder
	b.summary(&w)
	b.ledgerTable(&w)
	for _, want := range []string{
		"| base producer | 2/2 | 3.00 | 1.00 | 1.000 | 0.33 | 40.0 | 1.00 | 0.00 |",
		"| A producer | 3/4 | 2.00 | 1.00 | 1.000 | 0.50 | 40.0 | 1.00 | 0.00 |",
		// wall 2/3; rate (1M/2)/(1M/3) = 1.5.
		"| **ratio A / base** | | **0.67** | **1.00** | **1.00** | 1.50 | 1.00 | 1.00 | |",
		"| base producer | 2 | 2 | 2 | 2 |",
		// The failed run's records are left out: 55, 63, 68.
		"| A producer | 3 | 63 | 55 | 68 |",
	} {
		if !strings.Contains(w.String(), want+"\n") {
			t.Errorf("report lacks\n%s\nin\n%s", want, w.String())
		}
	}
}
