package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
)

// secret returns a fresh random password: the tests look for it in every
// output, so it must not be a word that could appear there by chance.
func secret(t *testing.T, prefix string) string {
	t.Helper()
	b := make([]byte, 12)
	rand.Read(b)
	return prefix + "-" + hex.EncodeToString(b)
}

// writeSecret writes a password file as a mounted Secret holds it: the
// password and a trailing newline.
func writeSecret(t *testing.T, password string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(p, []byte(password+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSecureClusters publishes through each way a managed cluster is
// secured (SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN over TLS, mutual TLS) to
// a real broker and reads every topic back, then checks that wrong
// credentials and untrusted certificates fail at once with exit 1 and a
// message that says why. No password, right or wrong, may appear in the
// output of any run, --print-config and debug logs included.
//
// The failing runs have connect and delivery timeouts of an hour: runBinary
// kills a run after two minutes, so a run that waited for a timeout instead
// of giving up on the refusal fails the test.
func TestSecureClusters(t *testing.T) {
	pki := newTestPKI(t)
	pw512, pw256, pwPlain, wrong := secret(t, "s512"), secret(t, "s256"), secret(t, "plain"), secret(t, "wrong")
	passwords := []string{pw512, pw256, pwPlain, wrong}
	c, saslAddr, mtlsAddr := startSecureKafka(t, pki, map[string]string{"plainuser": pwPlain}, []kadm.UpsertSCRAM{
		{User: "user512", Mechanism: kadm.ScramSha512, Iterations: 4096, Password: pw512},
		{User: "user256", Mechanism: kadm.ScramSha256, Iterations: 4096, Password: pw256},
	})
	k := struct{ Plain, SASL, MTLS string }{c.Bootstrap(), saslAddr, mtlsAddr}

	// run runs the binary and fails t if any password shows in its output.
	run := func(t *testing.T, env []string, args ...string) result {
		t.Helper()
		r := runBinary(t, append([]string{"LOG_FORMAT=json"}, env...), args...)
		for _, pw := range passwords {
			if strings.Contains(r.stdout+r.stderr, pw) {
				t.Fatalf("a password appears in the output of %v:\nstdout:\n%s\nstderr:\n%s", args, r.stdout, r.stderr)
			}
		}
		return r
	}

	const lines = 100_000
	for _, c := range []struct {
		name string
		env  []string
		args []string
	}{
		{
			// As the chart runs it: everything in the config file, the
			// password in a file mounted from a Secret, debug logs on.
			name: "SCRAM-SHA-512 over TLS, config file and password file",
			env: []string{"COUPON_PRODUCER_CONFIG=" + writeConfig(t, strings.Join([]string{
				"brokers: " + k.SASL, "tls: true", "tls-ca-file: " + pki.CA,
				"sasl-mechanism: SCRAM-SHA-512", "sasl-username: user512",
				"sasl-password-file: " + writeSecret(t, pw512), "log-level: debug",
			}, "\n")+"\n")},
		},
		{
			name: "SCRAM-SHA-256 over TLS, environment",
			env: []string{"KAFKA_BROKERS=" + k.SASL, "KAFKA_TLS_CA_FILE=" + pki.CA, "KAFKA_SASL_MECHANISM=SCRAM-SHA-256",
				"KAFKA_SASL_USERNAME=user256", "KAFKA_SASL_PASSWORD=" + pw256},
		},
		{
			name: "PLAIN over TLS, flags",
			args: []string{"--brokers", k.SASL, "--tls", "--tls-ca-file", pki.CA, "--sasl-mechanism", "PLAIN",
				"--sasl-username", "plainuser", "--sasl-password-file", writeSecret(t, pwPlain), "--log-level", "debug"},
		},
		{
			// The broker is dialed by address; its certificate is checked
			// for the name given.
			name: "mutual TLS, server name",
			env: []string{"KAFKA_BROKERS=" + k.MTLS, "KAFKA_TLS_CA_FILE=" + pki.CA, "KAFKA_TLS_CERT_FILE=" + pki.ClientCert,
				"KAFKA_TLS_KEY_FILE=" + pki.ClientKey, "KAFKA_TLS_SERVER_NAME=localhost"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			file := generate(t, lines, 99)
			topic := uniqueTopic("secure")
			args := append(slices.Clone(c.args), "--topic", topic, "--partitions", "3", file)

			r := run(t, c.env, append([]string{"--print-config"}, args...)...)
			if r.code != 0 {
				t.Fatalf("--print-config: exit %d; stderr:\n%s", r.code, r.stderr)
			}
			if sasl := !strings.HasPrefix(c.name, "mutual"); sasl != strings.Contains(r.stdout, `sasl-password: "<redacted>"`) {
				t.Fatalf("--print-config: a redacted sasl-password line: %v, want %v:\n%s", !sasl, sasl, r.stdout)
			}
			if r := run(t, c.env, append([]string{"--preflight"}, args...)...); r.code != 0 {
				t.Fatalf("--preflight: exit %d; stderr:\n%s", r.code, r.stderr)
			}
			r = run(t, c.env, args...)
			if r.code != 0 {
				t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
			}
			if s := summary(t, r.stderr); s["delivered"] != float64(lines) || s["failed"] != float64(0) {
				t.Fatalf("summary %v", s)
			}
			want := fileCodes(t, file)
			var got []string
			for _, rec := range readTopic(t, k.Plain, topic) {
				got = append(got, string(rec.Value))
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("topic holds %d records, the file %d codes: the multisets differ", len(got), len(want))
			}
		})
	}

	// Each refusal must be final at once, whatever the timeouts.
	patient := []string{"--connect-timeout", "1h", "--delivery-timeout", "1h"}
	for _, c := range []struct {
		name string
		env  []string
		args []string
		want []string // in stderr
	}{
		{
			name: "wrong SCRAM-SHA-512 password",
			env: []string{"KAFKA_BROKERS=" + k.SASL, "KAFKA_TLS_CA_FILE=" + pki.CA, "KAFKA_SASL_MECHANISM=SCRAM-SHA-512",
				"KAFKA_SASL_USERNAME=user512", "KAFKA_SASL_PASSWORD=" + wrong, "LOG_LEVEL=debug"},
			want: []string{k.SASL, "refuses the connection: SASL SCRAM-SHA-512 authentication as user", "user512", "SASL_AUTHENTICATION_FAILED"},
		},
		{
			name: "wrong PLAIN password",
			args: []string{"--brokers", k.SASL, "--tls-ca-file", pki.CA, "--sasl-mechanism", "PLAIN",
				"--sasl-username", "plainuser", "--sasl-password-file", writeSecret(t, wrong)},
			want: []string{k.SASL, "refuses the connection: SASL PLAIN authentication as user", "plainuser", "SASL_AUTHENTICATION_FAILED"},
		},
		{
			name: "SCRAM-SHA-256 user asking for SCRAM-SHA-512",
			env: []string{"KAFKA_BROKERS=" + k.SASL, "KAFKA_TLS_CA_FILE=" + pki.CA, "KAFKA_SASL_MECHANISM=SCRAM-SHA-512",
				"KAFKA_SASL_USERNAME=user256", "KAFKA_SASL_PASSWORD=" + pw256},
			want: []string{k.SASL, "refuses the connection: SASL SCRAM-SHA-512 authentication as user", "user256"},
		},
		{
			name: "untrusted server certificate",
			env: []string{"KAFKA_BROKERS=" + k.SASL, "KAFKA_TLS_CA_FILE=" + pki.UntrustedCA, "KAFKA_SASL_MECHANISM=SCRAM-SHA-512",
				"KAFKA_SASL_USERNAME=user512", "KAFKA_SASL_PASSWORD=" + pw512, "LOG_LEVEL=debug"},
			want: []string{k.SASL, "its TLS certificate is not trusted", "tls: failed to verify certificate", "certificate signed by unknown authority"},
		},
		{
			name: "server certificate for another name",
			env: []string{"KAFKA_BROKERS=" + k.MTLS, "KAFKA_TLS_CA_FILE=" + pki.CA, "KAFKA_TLS_SERVER_NAME=kafka.example",
				"KAFKA_TLS_CERT_FILE=" + pki.ClientCert, "KAFKA_TLS_KEY_FILE=" + pki.ClientKey},
			want: []string{k.MTLS, "its TLS certificate is not trusted", "tls: failed to verify certificate", "kafka.example"},
		},
		{
			name: "client certificate the broker does not trust",
			env: []string{"KAFKA_BROKERS=" + k.MTLS, "KAFKA_TLS_CA_FILE=" + pki.CA,
				"KAFKA_TLS_CERT_FILE=" + pki.UntrustedCert, "KAFKA_TLS_KEY_FILE=" + pki.UntrustedKey},
			want: []string{k.MTLS, "refuses the TLS handshake", "signed by a CA the brokers trust", "tls: bad certificate"},
		},
		{
			name: "no client certificate for mutual TLS",
			env:  []string{"KAFKA_BROKERS=" + k.MTLS, "KAFKA_TLS_CA_FILE=" + pki.CA},
			want: []string{k.MTLS, "refuses the TLS handshake", "set tls-cert-file and tls-key-file"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			file := writeGzip(t, "couponbase1.gz", "REFUSED1\nREFUSED2\n")
			topic := uniqueTopic("secure-refused")
			args := append(append(slices.Clone(c.args), patient...), "--topic", topic, file)
			if r := run(t, c.env, append([]string{"--print-config"}, args...)...); r.code != 0 {
				t.Fatalf("--print-config: exit %d; stderr:\n%s", r.code, r.stderr)
			}
			for _, mode := range [][]string{{"--preflight"}, nil} {
				r := run(t, c.env, append(mode, args...)...)
				if r.code != 1 {
					t.Fatalf("%v: exit %d, want 1; stderr:\n%s", mode, r.code, r.stderr)
				}
				t.Logf("%v: %s", mode, errorLines(r.stderr))
				for _, w := range c.want {
					if !strings.Contains(r.stderr, w) {
						t.Errorf("%v: stderr does not say %q:\n%s", mode, w, r.stderr)
					}
				}
			}
			// Refused at the connection: not even the topic was created.
			td, err := newAdmin(t, k.Plain).ListTopics(context.Background(), topic)
			if err != nil {
				t.Fatal(err)
			}
			if td.Has(topic) {
				t.Fatalf("topic %s was created past the refusal", topic)
			}
		})
	}
}

// errorLines returns the producer's own error log lines (the Kafka client's
// are left out: they repeat), for the test log.
func errorLines(stderr string) string {
	var out []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, `"level":"error"`) && !strings.Contains(l, `"logger":"kgo"`) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
