package kafka

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

func testConfig(brokers []string) Config {
	return Config{
		Brokers:           brokers,
		ClientID:          "test",
		Partitions:        3,
		ReplicationFactor: -1,
		TopicConfigs:      map[string]string{"retention.ms": "3600000"},
		ConnectTimeout:    5 * time.Second,
	}
}

func newCluster(t *testing.T, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newConn(t *testing.T, cfg Config) *Conn {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestEnsureTopicCreates(t *testing.T) {
	c := newCluster(t)
	core, logs := observer.New(zap.InfoLevel)
	cfg := testConfig(c.ListenAddrs())
	cfg.Logger = zap.New(core)
	p := newConn(t, cfg)
	ctx := context.Background()
	if err := p.EnsureTopic(ctx, "couponbase1.gz"); err != nil {
		t.Fatal(err)
	}
	adm := kadm.NewClient(p.Client())
	td, err := adm.ListTopics(ctx, "couponbase1.gz")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(td["couponbase1.gz"].Partitions); n != 3 {
		t.Fatalf("created topic has %d partitions, want 3", n)
	}
	rc, err := adm.DescribeTopicConfigs(ctx, "couponbase1.gz")
	if err != nil {
		t.Fatal(err)
	}
	cfgs, err := rc.On("couponbase1.gz", nil)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, c := range cfgs.Configs {
		found = found || c.Key == "retention.ms" && c.MaybeValue() == "3600000"
	}
	if !found {
		t.Fatalf("retention.ms=3600000 not set on the created topic: %+v", cfgs.Configs)
	}
	created := logs.FilterMessage("created topic").All()
	if len(created) != 1 || created[0].ContextMap()["topic"] != "couponbase1.gz" || created[0].ContextMap()["partitions"] != int32(3) {
		t.Fatalf("want one 'created topic' line with topic and partitions, got %+v", logs.All())
	}
	// A second file to the same topic finds it and creates nothing.
	if err := p.EnsureTopic(ctx, "couponbase1.gz"); err != nil || logs.FilterMessage("created topic").Len() != 1 {
		t.Fatalf("second EnsureTopic: %v, %d creations", err, logs.FilterMessage("created topic").Len())
	}
}

func TestExistingTopicUsedAsIs(t *testing.T) {
	c := newCluster(t, kfake.SeedTopics(5, "existing"))
	p := newConn(t, testConfig(c.ListenAddrs()))
	if err := p.EnsureTopic(context.Background(), "existing"); err != nil {
		t.Fatal(err)
	}
	td, err := kadm.NewClient(p.Client()).ListTopics(context.Background(), "existing")
	if err != nil || len(td["existing"].Partitions) != 5 {
		t.Fatalf("existing topic: %v, %d partitions, want its own 5", err, len(td["existing"].Partitions))
	}
}

func TestUnreachableBrokers(t *testing.T) {
	cfg := testConfig([]string{"127.0.0.1:1"})
	cfg.ConnectTimeout = 300 * time.Millisecond
	p := newConn(t, cfg)
	err := p.EnsureTopic(context.Background(), "t")
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("err = %v, want one naming the broker address", err)
	}
	// Connect is tried once per publisher: the next file fails at once.
	start := time.Now()
	if err2 := p.EnsureTopic(context.Background(), "u"); err2 == nil || time.Since(start) > time.Second {
		t.Fatalf("second EnsureTopic: %v after %s", err2, time.Since(start))
	}
}

// writePEM writes a self-signed certificate and its key to dir.
func writePEM(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "client"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestSecurityOptions(t *testing.T) {
	dir := t.TempDir()
	cert, key := writePEM(t, dir)
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	const password = "s3cret-Pa55word"
	for _, tc := range []struct {
		name    string
		sec     Security
		opts    int    // options returned
		wantErr string // "" for success
	}{
		{"nothing", Security{}, 0, ""},
		{"tls", Security{TLS: true}, 1, ""},
		{"ca implies tls", Security{CAFile: cert}, 1, ""},
		{"mutual tls", Security{CertFile: cert, KeyFile: key, ServerName: "kafka.example"}, 1, ""},
		{"scram over tls", Security{TLS: true, SASLMechanism: "SCRAM-SHA-512", Username: "u", Password: password}, 2, ""},
		{"plain", Security{SASLMechanism: "plain", Username: "u", Password: password}, 1, ""},
		{"cert without key", Security{CertFile: cert}, 0, "both a certificate and a key"},
		{"key is not a key", Security{CertFile: cert, KeyFile: notPEM}, 0, notPEM},
		{"ca not pem", Security{CAFile: notPEM}, 0, "no PEM certificate"},
		{"missing ca", Security{CAFile: filepath.Join(dir, "missing.pem")}, 0, "missing.pem"},
		{"unknown mechanism", Security{SASLMechanism: "GSSAPI", Password: password}, 0, "GSSAPI"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := tc.sec.opts(zap.NewNop())
			if tc.wantErr == "" {
				if err != nil || len(opts) != tc.opts {
					t.Fatalf("%d options, err %v; want %d options", len(opts), err, tc.opts)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one naming %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), password) {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
	}
}

func TestInsecureSkipVerifyWarns(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	if _, err := (Security{InsecureSkipVerify: true}).opts(zap.New(core)); err != nil {
		t.Fatal(err)
	}
	if w := logs.FilterLevelExact(zap.WarnLevel).All(); len(w) != 1 || !strings.Contains(w[0].Message, "not verified") {
		t.Fatalf("want one warning about unverified certificates, got %+v", logs.All())
	}
}
