package metrics

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// gateway records what a push sent, the way a Pushgateway would receive it.
type gateway struct {
	method, path string
	families     map[string]*dto.MetricFamily
}

func newGateway(t *testing.T, status int) (*gateway, *httptest.Server) {
	t.Helper()
	g := &gateway{families: map[string]*dto.MetricFamily{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.method, g.path = r.Method, r.URL.EscapedPath()
		dec := expfmt.NewDecoder(r.Body, expfmt.ResponseFormat(r.Header))
		for {
			var mf dto.MetricFamily
			if err := dec.Decode(&mf); err != nil {
				if !errors.Is(err, io.EOF) {
					t.Errorf("decode pushed metrics: %v", err)
				}
				break
			}
			g.families[mf.GetName()] = &mf
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(srv.Close)
	return g, srv
}

func (g *gateway) value(t *testing.T, name string) (float64, bool) {
	t.Helper()
	mf, ok := g.families[name]
	if !ok {
		return 0, false
	}
	if len(mf.Metric) != 1 {
		t.Fatalf("%s has %d series, want 1", name, len(mf.Metric))
	}
	m := mf.Metric[0]
	var topic string
	for _, l := range m.Label {
		if l.GetName() == "topic" {
			topic = l.GetValue()
		}
	}
	if topic != "couponbase1.gz" {
		t.Errorf("%s topic label = %q, want couponbase1.gz", name, topic)
	}
	return m.GetGauge().GetValue(), true
}

func TestPushSuccess(t *testing.T) {
	g, srv := newGateway(t, http.StatusOK)
	end := time.Unix(1_800_000_000, 500_000_000)
	o := Outcome{File: "couponbase1.gz", Topic: "couponbase1.gz", Finished: end, Duration: 90 * time.Second, Delivered: 1000}
	if err := Push(context.Background(), srv.URL, o, nil); err != nil {
		t.Fatal(err)
	}
	// POST is the gateway's "add": it must not replace the group's other metrics.
	if g.method != http.MethodPost {
		t.Errorf("method = %s, want POST", g.method)
	}
	if want := "/metrics/job/coupon_producer/file/couponbase1.gz"; g.path != want {
		t.Errorf("path = %s, want %s", g.path, want)
	}
	for name, want := range map[string]float64{
		"coupon_producer_last_success_timestamp_seconds":    1_800_000_000.5,
		"coupon_producer_last_completion_timestamp_seconds": 1_800_000_000.5,
		"coupon_producer_last_duration_seconds":             90,
		"coupon_producer_last_codes_delivered":              1000,
		"coupon_producer_last_codes_failed":                 0,
		"coupon_producer_last_exit_code":                    0,
	} {
		got, ok := g.value(t, name)
		if !ok {
			t.Errorf("%s not pushed", name)
		} else if got != want {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
}

func TestPushFailureKeepsLastSuccess(t *testing.T) {
	for _, o := range []Outcome{
		{File: "couponbase1.gz", Topic: "couponbase1.gz", Finished: time.Now(), Delivered: 10, Failed: 5, ExitCode: 1},
		{File: "couponbase1.gz", Topic: "couponbase1.gz", Finished: time.Now(), ExitCode: 3},
		// Exit 0 with failed codes cannot happen, but must not count as a success.
		{File: "couponbase1.gz", Topic: "couponbase1.gz", Finished: time.Now(), Failed: 1},
	} {
		g, srv := newGateway(t, http.StatusOK)
		if err := Push(context.Background(), srv.URL, o, nil); err != nil {
			t.Fatal(err)
		}
		if _, ok := g.value(t, "coupon_producer_last_success_timestamp_seconds"); ok {
			t.Errorf("exit %d, %d failed: last success pushed; a failed run must leave the previous one", o.ExitCode, o.Failed)
		}
		if got, _ := g.value(t, "coupon_producer_last_exit_code"); got != float64(o.ExitCode) {
			t.Errorf("last_exit_code = %v, want %d", got, o.ExitCode)
		}
		if _, ok := g.value(t, "coupon_producer_last_completion_timestamp_seconds"); !ok {
			t.Errorf("exit %d: last completion not pushed", o.ExitCode)
		}
	}
}

func TestPushError(t *testing.T) {
	_, srv := newGateway(t, http.StatusInternalServerError)
	err := Push(context.Background(), srv.URL, Outcome{File: "couponbase1.gz", Topic: "couponbase1.gz"}, nil)
	if err == nil || !strings.Contains(err.Error(), srv.URL) {
		t.Fatalf("err = %v, want an error naming %s", err, srv.URL)
	}
}
