package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
)

// permanentErrs are the broker errors that no retry can fix within a run:
// credentials, authorization and configuration, and a batch the broker
// found corrupt (franz-go does not retry it either).
var permanentErrs = []error{
	kerr.SaslAuthenticationFailed,
	kerr.UnsupportedSaslMechanism,
	kerr.IllegalSaslState,
	kerr.TopicAuthorizationFailed,
	kerr.ClusterAuthorizationFailed,
	kerr.TransactionalIDAuthorizationFailed,
	kerr.CorruptMessage,
	kerr.MessageTooLarge,
	kerr.RecordListTooLarge,
	kerr.InvalidTopicException,
	kerr.InvalidRequiredAcks,
	kerr.UnsupportedForMessageFormat,
}

// Permanent reports whether err is a failure that retrying cannot fix: an
// authentication or authorization refusal, a TLS handshake that failed on
// the certificate or the protocol, or a broker error in permanentErrs. The
// producer stops at such an error instead of retrying it until the
// delivery timeout.
func Permanent(err error) bool {
	if err == nil {
		return false
	}
	for _, p := range permanentErrs {
		if errors.Is(err, p) {
			return true
		}
	}
	var (
		verify   *tls.CertificateVerificationError
		header   tls.RecordHeaderError
		alert    tls.AlertError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	return errors.As(err, &verify) || errors.As(err, &header) || errors.As(err, &alert) ||
		errors.As(err, &unknown) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		// An alert from the broker (it refused our certificate) has no
		// exported type.
		strings.Contains(err.Error(), "remote error: tls: ")
}
