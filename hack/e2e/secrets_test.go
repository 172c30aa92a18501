package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// TestChartSecretsMounted installs the chart with SASL and TLS from existing
// Secrets (ci/sasl-tls-values.yaml) on the real API server, under restricted
// Pod Security, and runs the CronJob's own pod spec on the real node: the
// producer reads the password from the Secret as the kubelet mounts it
// (it never prints it), and presents the client certificate and key of the
// other Secret to a TLS endpoint that trusts only the test CA and requires
// a client certificate, verifying the endpoint against the CA and server
// name the chart configured.
func TestChartSecretsMounted(t *testing.T) {
	c := needCluster(t)
	needImage(t)
	cs := adminClient(t, c)
	ctx := context.Background()
	const ns, release, password = "secrets", "sec", "Scram-pa55-from-a-Secret"
	data := generate(t, 1000, "1")
	chartVolume(t, c, ns, release, data, corev1.ReadWriteMany)

	pki := kafkaSecrets(t, cs, ns, password)

	// The "broker": a TLS endpoint that requires a client certificate
	// signed by the test CA and reports the name of each one it verified.
	// It listens on the node's bridge, where pods reach the host.
	ln, err := tls.Listen("tcp", net.JoinHostPort(node.Network.HostIP.String(), "0"), &tls.Config{
		Certificates: []tls.Certificate{pki.server},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pki.pool,
		MinVersion:   tls.VersionTLS12,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	verified := make(chan string, 16)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			tc := conn.(*tls.Conn)
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			if tc.Handshake() == nil {
				if peers := tc.ConnectionState().PeerCertificates; len(peers) > 0 {
					verified <- peers[0].Subject.CommonName
				}
			}
			conn.Close()
		}
	}()

	h := newHelm(t, c)
	h.installSuspended(release, ns, producerRepo, producerTag, []string{ln.Addr().String()},
		"-f", chartDir+"/ci/sasl-tls-values.yaml", "--set", "producer.connectTimeout=3s")
	defer h.must("uninstall", release, "-n", ns, "--wait", "--timeout", "60s")
	// The bare pods below hold the chart's claim: they go before it.
	defer func() {
		for _, name := range []string{"print-config", "preflight"} {
			_ = cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
		}
		eventually(t, 60*time.Second, "the test's pods gone", func() (bool, error) {
			pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			return err == nil && len(pods.Items) == 0, err
		})
	}()

	cj, err := cs.BatchV1().CronJobs(ns).Get(ctx, release+"-coupon-producer-couponbase1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The CronJob's pod, as its Jobs would make it, with other arguments.
	podWith := func(name string, args ...string) *corev1.Pod {
		spec := cj.Spec.JobTemplate.Spec.Template.Spec.DeepCopy()
		spec.Containers[0].Args = args
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: cj.Spec.JobTemplate.Spec.Template.Labels}, Spec: *spec}
	}
	noPassword := func(t *testing.T, out string) {
		t.Helper()
		if strings.Contains(out, password) {
			t.Fatalf("the password is in the producer's output:\n%s", out)
		}
	}

	t.Run("the password is read from its Secret and never printed", func(t *testing.T) {
		out := runPod(t, cs, ns, podWith("print-config", "--print-config"))
		noPassword(t, out)
		for _, want := range []string{
			`sasl-mechanism: "SCRAM-SHA-512"`,
			`sasl-password-file: "/etc/coupon-producer/sasl/password"`,
			`tls-ca-file: "/etc/coupon-producer/tls/ca.crt"`,
			`tls-cert-file: "/etc/coupon-producer/tls/tls.crt"`,
			`tls-key-file: "/etc/coupon-producer/tls/tls.key"`,
			`sasl-password: "<redacted>"`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("--print-config lacks %s:\n%s", want, out)
			}
		}
	})

	t.Run("the client certificate from its Secret is presented and verified", func(t *testing.T) {
		code, out := runPodCode(t, cs, ns, podWith("preflight", "--preflight"))
		noPassword(t, out)
		select {
		case cn := <-verified:
			if cn != "coupon-producer" {
				t.Errorf("the endpoint verified a client certificate for %q, want coupon-producer", cn)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no TLS handshake with a verified client certificate reached the endpoint (exit %d):\n%s", code, out)
		}
		// The endpoint speaks TLS but not Kafka: the brokers never answer.
		if code != 1 || !strings.Contains(out, ln.Addr().String()) {
			t.Errorf("exit %d, want 1 naming %s:\n%s", code, ln.Addr(), out)
		}
	})
}

// kafkaSecrets creates the Secrets that ci/sasl-tls-values.yaml names in
// ns: kafka-client-tls with a new test PKI's CA and client certificate,
// kafka-client-sasl with the password; it returns the PKI.
func kafkaSecrets(t *testing.T, cs kubernetes.Interface, ns, password string) testPKI {
	t.Helper()
	pki := newTestPKI(t, "kafka.example.internal")
	for name, data := range map[string]map[string][]byte{
		"kafka-client-tls":  {"ca.crt": pki.caPEM, "tls.crt": pki.clientCertPEM, "tls.key": pki.clientKeyPEM},
		"kafka-client-sasl": {"scram-password": []byte(password)},
	} {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}
		if _, err := cs.CoreV1().Secrets(ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return pki
}

// testPKI is a CA, a server certificate for 127.0.0.1 and serverName, and a
// client certificate (CN coupon-producer), all signed by the CA.
type testPKI struct {
	pool                               *x509.CertPool
	server                             tls.Certificate
	caPEM, clientCertPEM, clientKeyPEM []byte
}

func newTestPKI(t *testing.T, serverName string) testPKI {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP, names []string) ([]byte, *ecdsa.PrivateKey) {
		key := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: ips, DNSNames: names,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	pemOf := func(typ string, b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}) }
	keyPEM := func(k *ecdsa.PrivateKey) []byte {
		b, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pemOf("EC PRIVATE KEY", b)
	}
	srvDER, srvKey := issue(2, serverName, x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)}, []string{serverName})
	server, err := tls.X509KeyPair(pemOf("CERTIFICATE", srvDER), keyPEM(srvKey))
	if err != nil {
		t.Fatal(fmt.Errorf("server key pair: %w", err))
	}
	cliDER, cliKey := issue(3, "coupon-producer", x509.ExtKeyUsageClientAuth, nil, nil)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return testPKI{
		pool: pool, server: server,
		caPEM: pemOf("CERTIFICATE", caDER), clientCertPEM: pemOf("CERTIFICATE", cliDER), clientKeyPEM: keyPEM(cliKey),
	}
}
