package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// The ports of the secure broker: one per listener.
const (
	securePlainPort = 55090 // PLAINTEXT: the tests' own admin and reader
	secureSASLPort  = 55091 // SASL_SSL: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
	secureMTLSPort  = 55092 // SSL with ssl.client.auth=required
	secureCtrlPort  = 55093 // the KRaft controller
)

// secureKafka is one real Apache Kafka node (KRaft, broker and controller
// in one JVM) with a listener per way a managed cluster is secured, owned by
// the test that started it.
type secureKafka struct {
	Plain, SASL, MTLS string // host:port of each listener
	dir               string
	cmd               *exec.Cmd
	exited            chan struct{}
}

// kafkaJars returns java and the cached Kafka jars, skipping t unless the
// real-broker tests are to run: with COUPON_TEST_BROKERS set (make test
// sets it), or always under CI=true, where missing Java or jars fail t.
func kafkaJars(t *testing.T) (java, lib string) {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	if !ci && os.Getenv("COUPON_TEST_BROKERS") == "" {
		t.Skip("real-broker tests: set COUPON_TEST_BROKERS (make test does) or CI=true")
	}
	fail := t.Skipf
	if ci {
		fail = t.Fatalf
	}
	java, err := exec.LookPath("java")
	if home := os.Getenv("JAVA_HOME"); home != "" {
		java, err = filepath.Join(home, "bin", "java"), nil
	}
	if err != nil {
		fail("no java: %v", err)
	}
	cache := os.Getenv("KAFKA_LOCAL_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "coupon-pipeline", "kafka-4.4.0")
	}
	lib = filepath.Join(cache, "lib")
	if m, _ := filepath.Glob(filepath.Join(lib, "kafka_2.13-*.jar")); len(m) == 0 {
		fail("no Kafka jars in %s: run hack/kafka-local/kafka-local.sh fetch", lib)
	}
	return java, lib
}

// startSecureKafka starts the node with pki's broker certificate, PLAIN
// users from plain (name: password, in the listener's JAAS config, as
// brokers define them) and SCRAM users from scram (created through the
// admin API, as an operator does), and waits until every listener answers.
func startSecureKafka(t *testing.T, pki *testPKI, plain map[string]string, scram []kadm.UpsertSCRAM) *secureKafka {
	t.Helper()
	java, lib := kafkaJars(t)
	dir, err := os.MkdirTemp("", "kafka-secure-")
	if err != nil {
		t.Fatal(err)
	}
	k := &secureKafka{
		Plain: fmt.Sprintf("127.0.0.1:%d", securePlainPort),
		SASL:  fmt.Sprintf("127.0.0.1:%d", secureSASLPort),
		MTLS:  fmt.Sprintf("127.0.0.1:%d", secureMTLSPort),
		dir:   dir,
	}
	t.Cleanup(func() {
		k.stop()
		if t.Failed() {
			t.Logf("broker log kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	props := filepath.Join(dir, "server.properties")
	if err := os.WriteFile(props, []byte(secureProperties(t, pki, plain, filepath.Join(dir, "data"))), 0o600); err != nil {
		t.Fatal(err)
	}
	// The script dir first, for its simplelogger.properties.
	cp := filepath.Join("..", "..", "hack", "kafka-local") + string(os.PathListSeparator) + filepath.Join(lib, "*")
	id := make([]byte, 16)
	rand.Read(id)
	format := exec.Command(java, "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", cp,
		"kafka.tools.StorageTool", "format", "-t", base64.RawURLEncoding.EncodeToString(id), "-c", props)
	if out, err := format.CombinedOutput(); err != nil {
		t.Fatalf("format the secure broker's storage: %v: %s", err, out)
	}
	log, err := os.Create(filepath.Join(dir, "kafka.log"))
	if err != nil {
		t.Fatal(err)
	}
	k.cmd = exec.Command(java, "-Xms128m", "-Xmx384m", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
		"-cp", cp, "kafka.Kafka", props)
	k.cmd.Stdout, k.cmd.Stderr = log, log
	if err := k.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	k.exited = make(chan struct{})
	go func() { k.cmd.Wait(); log.Close(); close(k.exited) }()
	k.waitReady(t)
	if len(scram) > 0 {
		k.addSCRAM(t, scram)
	}
	return k
}

// secureProperties is the node's configuration. The broker reads its
// certificate, key and trusted CA as PEM text in the properties
// (ssl.keystore.type=PEM): no keytool, no key store password.
func secureProperties(t *testing.T, pki *testPKI, plain map[string]string, data string) string {
	t.Helper()
	pemValue := func(files ...string) string {
		var b strings.Builder
		for _, f := range files {
			c, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(c)
		}
		// One property line: java.util.Properties turns \n back into
		// newlines.
		return strings.ReplaceAll(strings.TrimSpace(b.String()), "\n", `\n`)
	}
	var users strings.Builder
	for u, pw := range plain {
		fmt.Fprintf(&users, " user_%s=%q", u, pw)
	}
	return fmt.Sprintf(`process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:%[4]d
listeners=PLAINTEXT://127.0.0.1:%[1]d,SASL_SSL://127.0.0.1:%[2]d,MTLS://127.0.0.1:%[3]d,CONTROLLER://127.0.0.1:%[4]d
advertised.listeners=PLAINTEXT://127.0.0.1:%[1]d,SASL_SSL://127.0.0.1:%[2]d,MTLS://127.0.0.1:%[3]d
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,MTLS:SSL,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=%[5]s

ssl.keystore.type=PEM
ssl.keystore.certificate.chain=%[6]s
ssl.keystore.key=%[7]s
ssl.truststore.type=PEM
ssl.truststore.certificates=%[8]s
listener.name.mtls.ssl.client.auth=required

sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required%[9]s;
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;

default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
num.partitions=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
`, securePlainPort, secureSASLPort, secureMTLSPort, secureCtrlPort, data,
		pemValue(pki.BrokerCert), pemValue(pki.BrokerKey), pemValue(pki.CA), users.String())
}

// waitReady waits until the node lists itself as a broker on its
// PLAINTEXT listener.
func (k *secureKafka) waitReady(t *testing.T) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Plain))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		brokers, err := kadm.NewClient(cl).ListBrokers(ctx)
		cancel()
		if err == nil && len(brokers) == 1 {
			return
		}
		select {
		case <-k.exited:
			t.Fatalf("the secure broker exited while starting; log in %s", k.dir)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the secure broker is not ready after 2 minutes (last error %v); log in %s", err, k.dir)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// addSCRAM creates the SCRAM credentials and waits until the broker
// describes every one of them.
func (k *secureKafka) addSCRAM(t *testing.T, users []kadm.UpsertSCRAM) {
	t.Helper()
	adm := newAdmin(t, k.Plain)
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

// stop ends the node (SIGTERM, SIGKILL after 30s) and waits for it.
func (k *secureKafka) stop() {
	if k.cmd == nil || k.cmd.Process == nil {
		return
	}
	k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(30 * time.Second):
		k.cmd.Process.Kill()
		<-k.exited
	}
}
