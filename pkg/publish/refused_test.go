package publish

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestRefused(t *testing.T) {
	sec := Security{SASLMechanism: "scram-sha-512", Username: "producer", Password: "Pa55-not-in-messages"}
	for _, c := range []struct {
		name string
		err  error
		want string // in the message; empty: not a refusal
	}{
		{"sasl", fmt.Errorf("unable to initialize sasl: %w", kerr.SaslAuthenticationFailed),
			`Kafka at b:9093 refuses SASL SCRAM-SHA-512 authentication as user "producer"`},
		{"mechanism", kerr.UnsupportedSaslMechanism, "refuses SASL SCRAM-SHA-512"},
		{"untrusted", &tls.CertificateVerificationError{Err: errors.New("x509: certificate signed by unknown authority")},
			"the TLS certificate of Kafka at b:9093 is not trusted"},
		{"plaintext port", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"},
			"does not speak TLS"},
		{"alert", &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")},
			"refuses the TLS handshake: it may require mutual TLS"},
		{"connection refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, ""},
		{"timeout", kerr.RequestTimedOut, ""},
		{"deadline", context.DeadlineExceeded, ""},
		{"not leader", kerr.NotLeaderForPartition, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := sec.refused("b:9093", c.err)
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused(%v) = %v, want nil: retrying may fix it", c.err, err)
				}
				return
			}
			if !errors.Is(err, ErrRefused) || !errors.Is(err, c.err) {
				t.Fatalf("refused(%v) = %v: want it to wrap ErrRefused and the cause", c.err, err)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.HasSuffix(err.Error(), c.err.Error()) {
				t.Fatalf("message %q: want %q and the cause at the end", err, c.want)
			}
			if strings.Contains(err.Error(), sec.Password) {
				t.Fatalf("message %q holds the password", err)
			}
		})
	}
	withCert := Security{CertFile: "/certs/tls.crt"}
	err := withCert.refused("b:9093", &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")})
	if err == nil || !strings.Contains(err.Error(), "check that tls-cert-file /certs/tls.crt is signed by a CA the brokers trust") {
		t.Fatalf("refused with a client certificate: %v", err)
	}
}

// TestConnectGivesUpOnSASLRefusal makes the kfake broker answer the first
// SASL authentication with SASL_AUTHENTICATION_FAILED, as Kafka answers a
// wrong password (kfake itself would only close the connection): Connect
// returns ErrRefused without waiting for its hour-long timeout. The next
// connection, answered by kfake with the right password, succeeds.
func TestConnectGivesUpOnSASLRefusal(t *testing.T) {
	c := newCluster(t, kfake.EnableSASL(), kfake.Superuser("PLAIN", "producer", "right-password"))
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		resp := req.(*kmsg.SASLAuthenticateRequest).ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := "Authentication failed: Invalid username or password"
		resp.ErrorMessage = &msg
		return resp, nil, true
	})
	cfg := testConfig(c.ListenAddrs())
	cfg.ConnectTimeout = time.Hour
	cfg.Security = Security{SASLMechanism: "PLAIN", Username: "producer", Password: "right-password"}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := newPublisher(t, cfg).Connect(ctx)
	if !errors.Is(err, ErrRefused) || !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Fatalf("Connect: %v; want ErrRefused for SASL_AUTHENTICATION_FAILED", err)
	}
	if !strings.Contains(err.Error(), `refuses SASL PLAIN authentication as user "producer"`) || strings.Contains(err.Error(), "right-password") {
		t.Fatalf("message %q", err)
	}
	if err := newPublisher(t, cfg).Connect(ctx); err != nil {
		t.Fatalf("Connect once the broker accepts: %v", err)
	}
}
