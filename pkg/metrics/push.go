package metrics

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/push"
)

// PushJob is the grouping key "job" of every push: one job for all files,
// told apart by the "file" grouping label.
const PushJob = "coupon_producer"

// Outcome is what one finished run of a file reports to a Pushgateway.
type Outcome struct {
	File      string // base name of the input file: the "file" grouping label
	Topic     string
	Finished  time.Time
	Duration  time.Duration
	Delivered int64
	Failed    int64
	ExitCode  int
}

// Succeeded says whether the run published every code of its file.
func (o Outcome) Succeeded() bool { return o.ExitCode == 0 && o.Failed == 0 }

// Push sends the outcome of one run to the Pushgateway at url, grouped by
// job and file. It uses the gateway's "add" method (HTTP POST): only the
// metrics pushed replace those of the group, so a failed run, which does not
// push last_success_timestamp_seconds, leaves the last success in place for
// an alert on staleness. This is the Prometheus convention for batch jobs: a
// Job that exits cannot be scraped.
func Push(ctx context.Context, url string, o Outcome, client *http.Client) error {
	reg := prometheus.NewRegistry()
	gauge := func(name, help string, v float64) {
		g := prometheus.NewGauge(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help,
			ConstLabels: prometheus.Labels{"topic": o.Topic}})
		g.Set(v)
		reg.MustRegister(g)
	}
	gauge("last_completion_timestamp_seconds", "When the last run of the file ended, successfully or not.", unixSeconds(o.Finished))
	gauge("last_duration_seconds", "How long the last run of the file took.", o.Duration.Seconds())
	gauge("last_codes_delivered", "Codes the brokers acknowledged in the last run of the file.", float64(o.Delivered))
	gauge("last_codes_failed", "Codes not acknowledged in the last run of the file.", float64(o.Failed))
	gauge("last_exit_code", "Exit code of the last run of the file.", float64(o.ExitCode))
	if o.Succeeded() {
		gauge("last_success_timestamp_seconds", "When the file was last published with every code delivered.", unixSeconds(o.Finished))
	}
	p := push.New(url, PushJob).Grouping("file", o.File).Gatherer(reg)
	if client != nil {
		p = p.Client(client)
	}
	if err := p.AddContext(ctx); err != nil {
		return fmt.Errorf("push metrics to %s: %w", url, err)
	}
	return nil
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }
