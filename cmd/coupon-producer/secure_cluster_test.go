package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/couponpipeline/coupon-producer/pkg/kafkatest"
)

// The ports of the secure node: startKafka's PLAINTEXT and controller
// ports, then one per secured listener.
const (
	securePort     = 23090 // PLAINTEXT (the tests' own admin and reader); controller on 23091
	secureSASLPort = 23092 // SASL_SSL: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
	secureMTLSPort = 23093 // SSL with ssl.client.auth=required
)

// startSecureKafka starts one node with a listener per way a managed
// cluster is secured: SASL_SSL with PLAIN and SCRAM, and SSL requiring a
// client certificate signed by pki's CA. PLAIN users come from plain
// (name: password, in the listener's JAAS config, as brokers define them);
// SCRAM users from scram, created through the admin API as an operator
// does. It returns the cluster and the SASL_SSL and mutual-TLS addresses.
func startSecureKafka(t *testing.T, pki *testPKI, plain map[string]string, scram []kadm.UpsertSCRAM) (c *kafkatest.Cluster, sasl, mtls string) {
	t.Helper()
	var users strings.Builder
	for u, pw := range plain {
		fmt.Fprintf(&users, " user_%s=%q", u, pw)
	}
	c = startKafka(t, 1, securePort,
		kafkatest.Listener("SASL_SSL", "SASL_SSL", secureSASLPort),
		kafkatest.Listener("MTLS", "SSL", secureMTLSPort),
		// The broker reads its certificate, key and trusted CA as PEM text
		// in the properties: no keytool, no key store password.
		kafkatest.Properties(
			"ssl.keystore.type=PEM",
			"ssl.keystore.certificate.chain="+pemProperty(t, pki.BrokerCert),
			"ssl.keystore.key="+pemProperty(t, pki.BrokerKey),
			"ssl.truststore.type=PEM",
			"ssl.truststore.certificates="+pemProperty(t, pki.CA),
			"listener.name.mtls.ssl.client.auth=required",
			"sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
			"listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required"+users.String()+";",
			"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
			"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
		))
	if len(scram) > 0 {
		addSCRAM(t, c.Bootstrap(), scram)
	}
	return c, c.Listener("SASL_SSL"), c.Listener("MTLS")
}

// pemProperty is a PEM file as one property line: java.util.Properties
// turns the \n back into newlines.
func pemProperty(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", `\n`)
}

// addSCRAM creates the SCRAM credentials through the admin API at brokers
// and waits until the broker describes every one of them.
func addSCRAM(t *testing.T, brokers string, users []kadm.UpsertSCRAM) {
	t.Helper()
	adm := newAdmin(t, brokers)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	altered, err := adm.AlterUserSCRAMs(ctx, nil, users)
	if err == nil {
		err = altered.Error()
	}
	if err != nil {
		t.Fatalf("create SCRAM users: %v", err)
	}
	var names []string
	for _, u := range users {
		names = append(names, u.User)
	}
	for {
		described, err := adm.DescribeUserSCRAMs(ctx, names...)
		if err == nil && described.Ok() && len(described) == len(names) {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("SCRAM users %v not described after a minute: %v", names, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
