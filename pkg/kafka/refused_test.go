package kafka

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
)

// TestRefusalMessages: each refusal names the brokers and what to check,
// keeps the client's error (for errors.Is and the last words of the line),
// and never holds the password.
func TestRefusalMessages(t *testing.T) {
	sasl := Security{SASLMechanism: "scram-sha-512", Username: "producer", Password: "Pa55-not-in-messages"}
	mtls := Security{CertFile: "/certs/tls.crt", KeyFile: "/certs/tls.key"}
	alert := &net.OpError{Op: "remote error", Err: errors.New("tls: bad certificate")}
	for _, c := range []struct {
		name string
		sec  Security
		err  error
		want string
	}{
		{"sasl", sasl, fmt.Errorf("unable to initialize sasl: %w", kerr.SaslAuthenticationFailed),
			`SASL SCRAM-SHA-512 authentication as user "producer" failed: check sasl-username and the password`},
		{"mechanism", sasl, kerr.UnsupportedSaslMechanism, "SASL SCRAM-SHA-512 authentication"},
		{"untrusted", sasl, &tls.CertificateVerificationError{Err: errors.New("x509: certificate signed by unknown authority")},
			"its TLS certificate is not trusted: check tls-ca-file and tls-server-name"},
		{"plaintext port", sasl, tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"},
			"does not speak TLS on that port"},
		{"no client certificate", sasl, alert, "may require mutual TLS: set tls-cert-file and tls-key-file"},
		{"client certificate", mtls, alert, "check that tls-cert-file /certs/tls.crt is signed by a CA the brokers trust"},
		{"not authorized", sasl, kerr.ClusterAuthorizationFailed, "refuses the connection: CLUSTER_AUTHORIZATION_FAILED"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.sec.refusal("b-1:9096,b-2:9096", c.err)
			msg := err.Error()
			if !errors.Is(err, c.err) || !strings.HasPrefix(msg, "kafka at b-1:9096,b-2:9096 refuses the connection: ") ||
				!strings.Contains(msg, c.want) || !strings.HasSuffix(msg, c.err.Error()) {
				t.Fatalf("message %q: want the brokers, %q and the cause at the end", msg, c.want)
			}
			if strings.Contains(msg, sasl.Password) {
				t.Fatalf("message %q holds the password", msg)
			}
		})
	}
}
