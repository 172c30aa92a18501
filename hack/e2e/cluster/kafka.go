package cluster

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// BrokerOptions configure StartBroker.
type BrokerOptions struct {
	// Java is the java binary; Lib the folder of the Kafka jars
	// (hack/kafka-local/kafka-local.sh fetch fills it).
	Java, Lib string
	// Dir receives the broker's properties, data and log.
	Dir string
	// Netns is the network namespace the broker runs in (Network.AddNamespace)
	// and IP its address there: it listens and advertises IP:9092, so
	// pods on the bridge and the test process reach it alike.
	Netns string
	IP    net.IP
}

// Broker is a single-node Apache Kafka (KRaft, broker and controller in one
// JVM) in a network namespace of its own.
type Broker struct {
	// Addr is the bootstrap address, IP:9092.
	Addr string
	proc *process
}

// StartBroker formats the broker's storage and starts it under
// `ip netns exec`, returning once its log says it has started.
func StartBroker(ctx context.Context, opts BrokerOptions) (*Broker, error) {
	if m, _ := filepath.Glob(filepath.Join(opts.Lib, "kafka_2.13-*.jar")); len(m) == 0 {
		return nil, fmt.Errorf("no Kafka jars in %s: run hack/kafka-local/kafka-local.sh fetch", opts.Lib)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, err
	}
	addr := net.JoinHostPort(opts.IP.String(), "9092")
	props := filepath.Join(opts.Dir, "server.properties")
	// The controller listens on the namespace's loopback: only the broker
	// itself talks to it.
	if err := os.WriteFile(props, []byte(fmt.Sprintf(`process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
listeners=PLAINTEXT://%s,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://%s
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=%s
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
`, addr, addr, filepath.Join(opts.Dir, "data"))), 0o600); err != nil {
		return nil, err
	}
	// A cluster ID is 16 random bytes in URL-safe base64; one starting
	// with '-' would read as an option to the storage tool.
	var clusterID string
	for clusterID == "" || clusterID[0] == '-' {
		id := make([]byte, 16)
		_, _ = rand.Read(id)
		clusterID = base64.RawURLEncoding.EncodeToString(id)
	}
	cp := filepath.Join(opts.Lib, "*")
	format := exec.CommandContext(ctx, opts.Java, "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", cp,
		"kafka.tools.StorageTool", "format", "-t", clusterID, "-c", props)
	if out, err := format.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("format broker storage: %v\n%s", err, out)
	}
	log := filepath.Join(opts.Dir, "kafka.log")
	p, err := startProcess("kafka", "ip", log, "netns", "exec", opts.Netns,
		opts.Java, "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
		"-cp", cp, "kafka.Kafka", props)
	if err != nil {
		return nil, err
	}
	b := &Broker{Addr: addr, proc: p}
	if err := waitFor(ctx, p, 120*time.Second, func() error {
		out, _ := os.ReadFile(log)
		if !strings.Contains(string(out), "Kafka Server started") {
			return errors.New("no \"Kafka Server started\" in its log yet")
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		_ = b.Stop()
		return nil, err
	}
	return b, nil
}

// Stop stops the broker: SIGTERM, SIGKILL after 20 s.
func (b *Broker) Stop() error {
	if b == nil || b.proc == nil {
		return nil
	}
	return b.proc.stop(20 * time.Second)
}
