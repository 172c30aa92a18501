package publish

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
)

// ErrRefused is returned by Connect when the brokers answer but the
// connection cannot be made for a reason retrying cannot fix: the SASL
// credentials are wrong, or one side does not trust the other's TLS
// certificate. Connect returns it at once instead of retrying until the
// connect timeout.
var ErrRefused = errors.New("refused")

// refused explains err and wraps it with ErrRefused when it is a refusal;
// it returns nil for errors that retrying may fix (a broker still starting,
// a network outage). The explanation names the brokers and, for SASL, the
// mechanism and user, never the password.
func (s Security) refused(brokers string, err error) error {
	var (
		verify *tls.CertificateVerificationError
		header tls.RecordHeaderError
		op     *net.OpError
		why    string
	)
	switch {
	case errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.UnsupportedSaslMechanism),
		errors.Is(err, kerr.IllegalSaslState):
		why = fmt.Sprintf("Kafka at %s refuses SASL %s authentication as user %q: check sasl-username and the password",
			brokers, strings.ToUpper(s.SASLMechanism), s.Username)
	case errors.As(err, &verify):
		why = fmt.Sprintf("the TLS certificate of Kafka at %s is not trusted: check tls-ca-file and tls-server-name", brokers)
	case errors.As(err, &header):
		why = fmt.Sprintf("Kafka at %s does not speak TLS on that port: check brokers and tls", brokers)
	case errors.As(err, &op) && op.Op == "remote error" && s.CertFile == "":
		// crypto/tls reports a TLS alert from the peer this way; during
		// the handshake a broker sends one when it wants a client
		// certificate and gets none, or one it does not trust.
		why = fmt.Sprintf("Kafka at %s refuses the TLS handshake: it may require mutual TLS: set tls-cert-file and tls-key-file", brokers)
	case errors.As(err, &op) && op.Op == "remote error":
		why = fmt.Sprintf("Kafka at %s refuses the TLS handshake: check that tls-cert-file %s is signed by a CA the brokers trust", brokers, s.CertFile)
	default:
		return nil
	}
	return refusal{why: why, err: err}
}

// refusal is an ErrRefused: its explanation, then the client's error.
type refusal struct {
	why string
	err error
}

func (r refusal) Error() string        { return r.why + ": " + r.err.Error() }
func (r refusal) Unwrap() error        { return r.err }
func (r refusal) Is(target error) bool { return target == ErrRefused }
