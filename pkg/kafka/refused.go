package kafka

import (
	"crypto/tls"
	"errors"
	"fmt"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
)

// refusal is the error Connect returns for a connection error that
// retrying cannot fix (Permanent): it names the brokers and says what
// to check, for SASL the mechanism and the user, never the password; the
// client's error follows.
func (s Security) refusal(brokers string, err error) error {
	var (
		verify *tls.CertificateVerificationError
		header tls.RecordHeaderError
		check  string
	)
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.UnsupportedSaslMechanism),
		errors.Is(err, kerr.IllegalSaslState):
		check = fmt.Sprintf("SASL %s authentication as user %q failed: check sasl-username and the password",
			strings.ToUpper(s.SASLMechanism), s.Username)
	case errors.As(err, &verify):
		check = "its TLS certificate is not trusted: check tls-ca-file and tls-server-name"
	case errors.As(err, &header):
		check = "it does not speak TLS on that port: check brokers and tls"
	case strings.Contains(err.Error(), "remote error: tls: ") && s.CertFile == "":
		// A TLS alert from the broker during the handshake: it wants a
		// client certificate and got none, or one it does not trust.
		check = "it refuses the TLS handshake and may require mutual TLS: set tls-cert-file and tls-key-file"
	case strings.Contains(err.Error(), "remote error: tls: "):
		check = fmt.Sprintf("it refuses the TLS handshake: check that tls-cert-file %s is signed by a CA the brokers trust", s.CertFile)
	default:
		return fmt.Errorf("kafka at %s refuses the connection: %w", brokers, err)
	}
	return fmt.Errorf("kafka at %s refuses the connection: %s: %w", brokers, check, err)
}
