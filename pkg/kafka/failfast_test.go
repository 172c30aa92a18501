package kafka

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// connectRefused connects with cfg and checks that Connect gives up at
// once, naming the refusal, instead of retrying until the connect timeout.
func connectRefused(t *testing.T, cfg Config, cause func(error) bool) {
	t.Helper()
	cfg.ConnectTimeout = time.Hour // a retry loop would outlive the test's context
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := newConn(t, cfg).Connect(ctx)
	if err == nil || !strings.Contains(err.Error(), "refuses the connection") || !cause(err) {
		t.Fatalf("Connect: %v; want a refusal naming its cause", err)
	}
}

func TestWrongSASLPasswordFailsFast(t *testing.T) {
	c := newCluster(t, kfake.EnableSASL(), kfake.Superuser("PLAIN", "producer", "right"))
	// kfake closes the connection on a wrong password; a real broker
	// answers SASL_AUTHENTICATION_FAILED first, as here.
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(req kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		resp := req.(*kmsg.SASLAuthenticateRequest).ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := "Authentication failed: Invalid username or password"
		resp.ErrorMessage = &msg
		return resp, nil, true
	})
	cfg := testConfig(c.ListenAddrs())
	cfg.Security = Security{SASLMechanism: "PLAIN", Username: "producer", Password: "wrong"}
	connectRefused(t, cfg, func(err error) bool { return errors.Is(err, kerr.SaslAuthenticationFailed) })
}

func TestUntrustedTLSCertificateFailsFast(t *testing.T) {
	c := newCluster(t, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}))
	cfg := testConfig(c.ListenAddrs())
	// The system roots do not hold the broker's self-signed certificate.
	cfg.Security = Security{TLS: true}
	connectRefused(t, cfg, func(err error) bool {
		var verify *tls.CertificateVerificationError
		return errors.As(err, &verify)
	})
}

func TestCreationRefusedFailsFast(t *testing.T) {
	c := newCluster(t)
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.CreateTopics}, Err: kerr.TopicAuthorizationFailed, Count: -1})
	cfg := testConfig(c.ListenAddrs())
	cfg.ConnectTimeout = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := newConn(t, cfg).EnsureTopic(ctx, "t1")
	if !errors.Is(err, kerr.TopicAuthorizationFailed) || !strings.Contains(err.Error(), "create topic t1: ") {
		t.Fatalf("EnsureTopic: %v; want the refusal to create the topic", err)
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kfake"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
