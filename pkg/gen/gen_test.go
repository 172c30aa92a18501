package gen

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

func lines(t *testing.T, o Options) []string {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, o); err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(&b)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

func TestDeterministicAndRealistic(t *testing.T) {
	o := Options{Seed: 3, File: 1, Lines: 5000, Shared: 40}
	a, b := lines(t, o), lines(t, o)
	if strings.Join(a, "\n") != strings.Join(b, "\n") {
		t.Fatal("the same seed gave different files")
	}
	if len(a) != 5000 {
		t.Fatalf("%d lines, want 5000", len(a))
	}
	lengths := map[int]int{}
	for _, l := range a {
		lengths[len(l)]++
		for _, c := range []byte(l) {
			if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
				t.Fatalf("line %q has %q", l, c)
			}
		}
	}
	if len(lengths) != 3 || lengths[8] == 0 || lengths[9] == 0 || lengths[10] == 0 {
		t.Fatalf("code lengths %v, want 8, 9 and 10", lengths)
	}
	if c := lines(t, Options{Seed: 4, File: 1, Lines: 5000}); strings.Join(c, "") == strings.Join(a, "") {
		t.Fatal("another seed gave the same file")
	}
}

func TestPlantedCodesShared(t *testing.T) {
	const shared = 40
	sets := map[int]map[string]bool{}
	for f := 1; f <= 3; f++ {
		sets[f] = map[string]bool{}
		for _, l := range lines(t, Options{Seed: 9, File: f, Lines: 2000, Shared: shared}) {
			sets[f][l] = true
		}
	}
	for i := range shared {
		code, files := Planted(9, i)
		if len(files) < 2 {
			t.Fatalf("code %s planted in %v: fewer than two files", code, files)
		}
		for f := 1; f <= 3; f++ {
			want := false
			for _, g := range files {
				want = want || g == f
			}
			if sets[f][code] != want {
				t.Fatalf("code %s in file %d: %v, want %v", code, f, sets[f][code], want)
			}
		}
	}
}
