package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testPKI is the certificates of the secure-cluster tests, made fresh for
// each run so that no key is ever committed: a CA that the broker and the
// producer trust, the broker's certificate for 127.0.0.1 and localhost, a
// client certificate for mutual TLS, and a second CA with a certificate of
// its own that nobody trusts, for the negative tests. Every file is PEM;
// private keys are unencrypted PKCS#8, which the broker reads as a PEM key
// store (ssl.keystore.type=PEM) and the producer with tls.LoadX509KeyPair.
type testPKI struct {
	CA                    string // the trusted CA certificate
	BrokerCert, BrokerKey string // signed by CA, for 127.0.0.1 and localhost
	ClientCert, ClientKey string // signed by CA, client authentication
	UntrustedCA           string // a CA neither side trusts
	// Signed by UntrustedCA, valid as a server and a client certificate.
	UntrustedCert, UntrustedKey string
}

// newTestPKI writes a testPKI into a new temporary directory.
func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, blocks ...*pem.Block) string {
		t.Helper()
		var b strings.Builder
		for _, bl := range blocks {
			b.Write(pem.EncodeToMemory(bl))
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ca := newCA(t, "coupon-producer test CA")
	untrusted := newCA(t, "untrusted test CA")
	server := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	client := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	broker := ca.issue(t, "kafka broker", server)
	producer := ca.issue(t, "coupon-producer", client)
	stranger := untrusted.issue(t, "stranger", append(server, client...))
	return &testPKI{
		CA:            write("ca.pem", ca.certPEM()),
		BrokerCert:    write("broker.pem", broker.certPEM()),
		BrokerKey:     write("broker-key.pem", broker.keyPEM(t)),
		ClientCert:    write("client.pem", producer.certPEM()),
		ClientKey:     write("client-key.pem", producer.keyPEM(t)),
		UntrustedCA:   write("untrusted-ca.pem", untrusted.certPEM()),
		UntrustedCert: write("untrusted.pem", stranger.certPEM()),
		UntrustedKey:  write("untrusted-key.pem", stranger.keyPEM(t)),
	}
}

// keyPair is a certificate and its private key.
type keyPair struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func (k keyPair) certPEM() *pem.Block { return &pem.Block{Type: "CERTIFICATE", Bytes: k.cert.Raw} }

func (k keyPair) keyPEM(t *testing.T) *pem.Block {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k.key)
	if err != nil {
		t.Fatal(err)
	}
	return &pem.Block{Type: "PRIVATE KEY", Bytes: der}
}

var serial = big.NewInt(time.Now().UnixNano())

func nextSerial() *big.Int { return serial.Add(serial, big.NewInt(1)) }

func newCA(t *testing.T, name string) keyPair {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	return sign(t, tmpl, nil)
}

// issue signs a leaf certificate for 127.0.0.1 and localhost with ca.
func (ca keyPair) issue(t *testing.T, name string, usage []x509.ExtKeyUsage) keyPair {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage,
	}
	return sign(t, tmpl, &ca)
}

// sign creates a certificate from tmpl with a new key, signed by parent, or
// by itself when parent is nil.
func sign(t *testing.T, tmpl *x509.Certificate, parent *keyPair) keyPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	issuer, signer := tmpl, key
	if parent != nil {
		issuer, signer = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{cert: cert, key: key}
}
