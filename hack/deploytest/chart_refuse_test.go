package deploytest

import (
	"strings"
	"testing"
)

// TestChartSchemaRefuses: values.schema.json stops bad values before a
// cluster sees them. Each case must fail in the values step (the schema),
// with a message that names the offending key.
func TestChartSchemaRefuses(t *testing.T) {
	cases := []struct{ name, values, mention string }{
		{"concurrencyPolicy Allow", "cronJob: {concurrencyPolicy: Allow}", "concurrencyPolicy"},
		{"unknown concurrencyPolicy", "cronJob: {concurrencyPolicy: Sometimes}", "concurrencyPolicy"},
		{"concurrencyPolicy in a job", "jobs: {couponbase1: {concurrencyPolicy: Replace}}", "concurrencyPolicy"},
		{"unknown key in a job", "jobs: {couponbase1: {schedul: '0 3 * * *'}}", "schedul"},
		{"negative backoffLimit", "job: {backoffLimit: -1}", "backoffLimit"},
		{"negative backoffLimit in a job", "jobs: {couponbase1: {backoffLimit: -2}}", "backoffLimit"},
		{"empty schedule", "jobs: {couponbase1: {schedule: ''}}", "schedule"},
		{"blank schedule", "jobs: {couponbase1: {schedule: '   '}}", "schedule"},
		{"empty file", "jobs: {couponbase1: {file: ''}}", "file"},
		{"absolute file", "jobs: {couponbase1: {file: /etc/passwd}}", "file"},
		{"job without a file", "jobs: {extra: {schedule: '0 4 * * *'}}", "file"},
		{"job key not a DNS label", "jobs: {Coupon_Base: {file: a.gz, schedule: '0 4 * * *'}}", "Coupon_Base"},
		{"no jobs", "jobs: {couponbase1: null, couponbase2: null, couponbase3: null}", "jobs"},
		{"startingDeadlineSeconds below 10", "cronJob: {startingDeadlineSeconds: 5}", "startingDeadlineSeconds"},
		{"negative history limit", "cronJob: {failedJobsHistoryLimit: -1}", "failedJobsHistoryLimit"},
		{"zero activeDeadlineSeconds", "job: {activeDeadlineSeconds: 0}", "activeDeadlineSeconds"},
		{"suspend as a string", "cronJob: {suspend: 'yes'}", "suspend"},
		{"unknown pull policy", "image: {pullPolicy: Sometimes}", "pullPolicy"},
		{"bad digest", "image: {digest: 'latest'}", "digest"},
		{"unknown SASL mechanism", "kafka: {sasl: {mechanism: GSSAPI}}", "mechanism"},
		{"password in values", "kafka: {sasl: {password: hunter2}}", "password"},
		{"broker without port", "kafka: {brokers: [kafka]}", "brokers"},
		{"no brokers", "kafka: {brokers: []}", "brokers"},
		{"unknown compression", "producer: {compression: brotli}", "compression"},
		{"bad duration", "producer: {linger: 10 seconds}", "linger"},
		{"zero shutdown timeout", "producer: {shutdownTimeoutSeconds: 0}", "shutdownTimeoutSeconds"},
		{"unknown top-level key", "jobz: {}", "jobz"},
		{"unknown access mode", "data: {persistence: {accessModes: [ReadMany]}}", "accessModes"},
		{"CRON_TZ in a schedule", "jobs: {couponbase1: {schedule: 'CRON_TZ=Europe/Paris 0 2 * * *'}}", "schedule"},
		{"TZ in a schedule", "jobs: {couponbase1: {schedule: ' TZ=UTC @daily'}}", "schedule"},
		{"pull secret without a name", "image: {pullSecrets: [{secret: x}]}", "pullSecrets"},
		{"tag as a list", "image: {tag: [1]}", "tag"},
		{"global pull secret empty", "global: {imagePullSecrets: ['']}", "imagePullSecrets"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := renderErr(t, values(t, "", c.values))
			if err == nil {
				t.Fatalf("%s: accepted", c.values)
			}
			msg := err.Error()
			if !strings.Contains(msg, "schema") || !strings.Contains(msg, c.mention) {
				t.Errorf("%s: want a schema error naming %q, got: %v", c.values, c.mention, err)
			}
		})
	}
}

// TestChartTemplateRefuses: what the schema cannot see, the templates check
// with fail, naming the values to change.
func TestChartTemplateRefuses(t *testing.T) {
	cases := []struct{ name, values, mention string }{
		{"CronJob name over 52", "jobs: {couponbase-of-the-spring-campaign-2027: {file: a.gz, schedule: '0 1 * * *'}}", "52"},
		{"grace period not above shutdown", "producer: {shutdownTimeoutSeconds: 30}\npod: {terminationGracePeriodSeconds: 30}", "terminationGracePeriodSeconds"},
		{"SASL without a Secret", "kafka: {sasl: {mechanism: PLAIN, username: u}}", "existingSecret"},
		{"SASL without a user", "kafka: {sasl: {mechanism: PLAIN, existingSecret: s}}", "username"},
		{"client cert without key", "kafka: {tls: {enabled: true, existingSecret: s, certKey: tls.crt}}", "keyKey"},
		{"TLS Secret with TLS off", "kafka: {tls: {existingSecret: s}}", "tls.enabled"},
		{"every job disabled", "jobs: {couponbase1: {enabled: false}, couponbase2: {enabled: false}, couponbase3: {enabled: false}}", "no job is enabled"},
		{"file in extraConfig", "producer: {extraConfig: {file: /data/x.gz}}", "extraConfig.file"},
		{"chart key in extraConfig", "producer: {extraConfig: {brokers: [x:1]}}", "extraConfig.brokers"},
		{"rule without rules", "metrics: {prometheusRule: {enabled: true, jobFailed: false}}", "no rule"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := renderErr(t, values(t, "", c.values))
			if err == nil {
				t.Fatalf("%s: accepted", c.values)
			}
			if !strings.Contains(err.Error(), c.mention) {
				t.Errorf("%s: want an error naming %q, got: %v", c.values, c.mention, err)
			}
		})
	}
}
