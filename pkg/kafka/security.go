package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
	"go.uber.org/zap"
)

// Security is how to authenticate to the brokers and encrypt the traffic.
type Security struct {
	TLS                bool
	CAFile             string // PEM CAs to trust instead of the system's; implies TLS
	CertFile, KeyFile  string // PEM client certificate and key (mutual TLS); imply TLS
	ServerName         string // expected in the brokers' certificates; empty: the host dialed
	InsecureSkipVerify bool   // implies TLS
	SASLMechanism      string // PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or empty
	Username           string
	Password           string // never in an error or a log line
}

// tlsOn reports whether the connection uses TLS.
func (s Security) tlsOn() bool {
	return s.TLS || s.CAFile != "" || s.CertFile != "" || s.KeyFile != "" || s.ServerName != "" || s.InsecureSkipVerify
}

// opts returns the client options for s. It reads the TLS files now, so
// that a wrong path fails at start and not at the first connection.
func (s Security) opts(log *zap.Logger) ([]kgo.Opt, error) {
	var opts []kgo.Opt
	if s.tlsOn() {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: s.ServerName, InsecureSkipVerify: s.InsecureSkipVerify}
		if s.InsecureSkipVerify {
			log.Warn("TLS certificates of the brokers are not verified (tls-insecure-skip-verify): anyone on the path can read and change the traffic")
		}
		if s.CAFile != "" {
			pem, err := os.ReadFile(s.CAFile)
			if err != nil {
				return nil, fmt.Errorf("read TLS CA file: %w", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("TLS CA file %s holds no PEM certificate", s.CAFile)
			}
		}
		if s.CertFile != "" || s.KeyFile != "" {
			if s.CertFile == "" || s.KeyFile == "" {
				return nil, fmt.Errorf("mutual TLS needs both a certificate and a key file (got certificate %q, key %q)", s.CertFile, s.KeyFile)
			}
			cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("load TLS client certificate %s and key %s: %w", s.CertFile, s.KeyFile, err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		opts = append(opts, kgo.DialTLSConfig(cfg))
	}
	switch strings.ToUpper(s.SASLMechanism) {
	case "":
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: s.Username, Pass: s.Password}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: s.Username, Pass: s.Password}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: s.Username, Pass: s.Password}.AsSha512Mechanism()))
	default:
		return nil, fmt.Errorf("unknown SASL mechanism %q", s.SASLMechanism)
	}
	return opts, nil
}
