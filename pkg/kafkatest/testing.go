package kafkatest

import (
	"context"
	"os"
	"testing"
)

// NeedDist returns the Dist of the real-broker tests, or skips t unless
// they are to run: with COUPON_TEST_BROKERS set (make test sets it) or
// always under CI=true, where a missing java or jar cache fails t instead.
func NeedDist(t testing.TB) *Dist {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	if !ci && os.Getenv("COUPON_TEST_BROKERS") == "" {
		t.Skip("real-broker tests: set COUPON_TEST_BROKERS (make test does) or CI=true")
	}
	fail := t.Skipf
	if ci {
		fail = t.Fatalf
	}
	d, err := FindDist()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.CheckJava(); err != nil {
		fail("%v", err)
	}
	if err := d.needJars(); err != nil {
		fail("%v", err)
	}
	return d
}

// StartTest starts a cluster for t (see NeedDist for when it skips) and
// kills its nodes when t ends. Its state folder, a new temporary one unless
// opts name one, is removed then, or kept and named in the log if t failed.
func StartTest(t testing.TB, opts ...Opt) *Cluster {
	t.Helper()
	d := NeedDist(t)
	c, err := Start(context.Background(), d, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("broker logs kept in %s", c.Dir())
		} else {
			os.RemoveAll(c.Dir())
		}
	})
	return c
}
