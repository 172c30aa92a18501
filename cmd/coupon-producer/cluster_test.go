package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// kafkaVersion is the Apache Kafka release of hack/kafka-local/pom.xml,
// whose jars kafka-local.sh fetches into the cache.
const kafkaVersion = "4.4.0"

// needOwnKafka skips t unless the real-broker tests are to run: with
// COUPON_TEST_BROKERS set, or always under CI=true, where missing Java or
// jars fail the test instead.
func needOwnKafka(t *testing.T) (java, lib string) {
	t.Helper()
	ci := os.Getenv("CI") == "true"
	if !ci && os.Getenv("COUPON_TEST_BROKERS") == "" {
		t.Skip("real-broker fault tests: set COUPON_TEST_BROKERS (make test does) or CI=true")
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
		cache = filepath.Join(home, ".cache", "coupon-pipeline", "kafka-"+kafkaVersion)
	}
	lib = filepath.Join(cache, "lib")
	if m, _ := filepath.Glob(filepath.Join(lib, "kafka_2.13-*.jar")); len(m) == 0 {
		fail("no Kafka jars in %s: run hack/kafka-local/kafka-local.sh fetch", lib)
	}
	return java, lib
}

// kafkaCluster is a KRaft cluster of real Apache Kafka brokers on loopback
// ports, each node broker and controller in one JVM, owned by one test: it
// can kill and restart its nodes, and stops them all when the test ends.
type kafkaCluster struct {
	t         *testing.T
	java, cp  string
	dir       string
	clusterID string
	nodes     []*kafkaNode
	cfg       kafkaConfig
}

// kafkaConfig is what the options of startKafka change.
type kafkaConfig struct {
	dirPrefix string          // of the state directory under the temp dir
	listeners []kafkaListener // besides PLAINTEXT and CONTROLLER
	props     []string        // more server.properties lines
}

// kafkaListener is a client listener of every node: node i listens on
// port+i-1.
type kafkaListener struct {
	name, protocol string
	port           int
}

// kafkaOpt is an option of startKafka.
type kafkaOpt func(*kafkaConfig)

// withListener adds a client listener named name (its settings are the
// listener.name.<name>.* properties) speaking protocol (SSL, SASL_SSL,
// SASL_PLAINTEXT) on port+i-1 of node i. The PLAINTEXT listener stays the
// inter-broker one and the one the tests' own clients use.
func withListener(name, protocol string, port int) kafkaOpt {
	return func(c *kafkaConfig) { c.listeners = append(c.listeners, kafkaListener{name, protocol, port}) }
}

// withProperties appends lines to every node's server.properties: key
// stores, JAAS configs, client authentication.
func withProperties(lines ...string) kafkaOpt {
	return func(c *kafkaConfig) { c.props = append(c.props, lines...) }
}

// withDirPrefix names the state directory (under the temp dir) after the
// suite, so that a kept log is easy to find.
func withDirPrefix(prefix string) kafkaOpt { return func(c *kafkaConfig) { c.dirPrefix = prefix } }

// Listener is the address list of the nodes' listener name.
func (c *kafkaCluster) Listener(name string) string {
	for _, l := range c.cfg.listeners {
		if l.name == name {
			var addrs []string
			for _, nd := range c.nodes {
				addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", l.port+nd.id-1))
			}
			return strings.Join(addrs, ",")
		}
	}
	c.t.Fatalf("no listener %s", name)
	return ""
}

type kafkaNode struct {
	id             int
	port, ctrlPort int
	advertised     int // the port clients are told to use (a proxy's)
	dir            string
	cmd            *exec.Cmd
	exited         chan struct{}
}

// startKafka starts n nodes: node i listens on basePort+2i and its
// controller on basePort+2i+1. advertise, when not nil, gives the port a
// node advertises to clients (a proxy in front of it). opts add listeners
// and properties. Tests use ports below 32768, outside Linux's ephemeral
// range: a port there can be the local end of any client connection on the
// machine, and a node restarted after a kill could not bind it again.
func startKafka(t *testing.T, n, basePort int, advertise func(node int) int, opts ...kafkaOpt) *kafkaCluster {
	t.Helper()
	java, lib := needOwnKafka(t)
	cfg := kafkaConfig{dirPrefix: "kafka-delivery"}
	for _, o := range opts {
		o(&cfg)
	}
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s-%d-", cfg.dirPrefix, basePort))
	if err != nil {
		t.Fatal(err)
	}
	id := make([]byte, 16)
	rand.Read(id)
	c := &kafkaCluster{
		t: t, java: java, dir: dir, cfg: cfg,
		// The script dir first, for its simplelogger.properties.
		cp:        filepath.Join("..", "..", "hack", "kafka-local") + string(os.PathListSeparator) + filepath.Join(lib, "*"),
		clusterID: base64.RawURLEncoding.EncodeToString(id),
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			c.Kill(nd.id)
		}
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("broker logs kept in %s", dir)
		}
	})
	var voters []string
	for i := 1; i <= n; i++ {
		nd := &kafkaNode{id: i, port: basePort + 2*(i-1), ctrlPort: basePort + 2*(i-1) + 1, dir: filepath.Join(dir, fmt.Sprint(i))}
		nd.advertised = nd.port
		if advertise != nil {
			nd.advertised = advertise(i)
		}
		c.nodes = append(c.nodes, nd)
		voters = append(voters, fmt.Sprintf("%d@127.0.0.1:%d", i, nd.ctrlPort))
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, nd := range c.nodes {
		if err := os.MkdirAll(nd.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(nd.dir, "server.properties"), []byte(nodeProperties(nd, n, strings.Join(voters, ","), cfg)), 0o600); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := exec.Command(java, "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", c.cp,
				"kafka.tools.StorageTool", "format", "-t", c.clusterID, "-c", filepath.Join(nd.dir, "server.properties")).CombinedOutput()
			if err != nil {
				errs <- fmt.Errorf("format node %d: %v: %s", nd.id, err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, nd := range c.nodes {
		c.launch(nd)
	}
	c.waitBrokers(nil)
	return c
}

// nodeProperties is the server.properties of node nd (0600: the options
// may hold keys and passwords).
func nodeProperties(nd *kafkaNode, n int, voters string, cfg kafkaConfig) string {
	listeners := []string{fmt.Sprintf("PLAINTEXT://127.0.0.1:%d", nd.port), fmt.Sprintf("CONTROLLER://127.0.0.1:%d", nd.ctrlPort)}
	advertised := []string{fmt.Sprintf("PLAINTEXT://127.0.0.1:%d", nd.advertised)}
	protocols := []string{"PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"}
	for _, l := range cfg.listeners {
		addr := fmt.Sprintf("%s://127.0.0.1:%d", l.name, l.port+nd.id-1)
		listeners = append(listeners, addr)
		advertised = append(advertised, addr)
		protocols = append(protocols, l.name+":"+l.protocol)
	}
	extra := strings.Join(cfg.props, "\n")
	return fmt.Sprintf(`process.roles=broker,controller
node.id=%d
controller.quorum.voters=%s
listeners=%s
advertised.listeners=%s
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=%s
log.dirs=%s
default.replication.factor=%d
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
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
replica.lag.time.max.ms=5000
%s
`, nd.id, voters, strings.Join(listeners, ","), strings.Join(advertised, ","), strings.Join(protocols, ","),
		filepath.Join(nd.dir, "data"), n, extra)
}

func (c *kafkaCluster) node(id int) *kafkaNode { return c.nodes[id-1] }

// Bootstrap is the address list of the nodes, as clients reach them.
func (c *kafkaCluster) Bootstrap() string {
	var addrs []string
	for _, nd := range c.nodes {
		addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", nd.advertised))
	}
	return strings.Join(addrs, ",")
}

func (c *kafkaCluster) launch(nd *kafkaNode) {
	c.t.Helper()
	log, err := os.OpenFile(filepath.Join(nd.dir, "kafka.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	nd.cmd = exec.Command(c.java, "-Xms128m", "-Xmx384m", "-XX:+UseSerialGC", "-Djava.awt.headless=true",
		"-cp", c.cp, "kafka.Kafka", filepath.Join(nd.dir, "server.properties"))
	nd.cmd.Stdout, nd.cmd.Stderr = log, log
	if err := nd.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	nd.exited = make(chan struct{})
	go func() { nd.cmd.Wait(); log.Close(); close(nd.exited) }()
}

// Kill stops node id with SIGKILL, as a crash would, and waits for it.
func (c *kafkaCluster) Kill(id int) { c.stop(id, syscall.SIGKILL) }

// Stop stops node id with SIGTERM, a graceful shutdown, and waits for it.
func (c *kafkaCluster) Stop(id int) { c.stop(id, syscall.SIGTERM) }

func (c *kafkaCluster) stop(id int, sig syscall.Signal) {
	nd := c.node(id)
	if nd.cmd == nil {
		return
	}
	nd.cmd.Process.Signal(sig)
	<-nd.exited
	nd.cmd = nil
}

// Restart starts node id again (after Kill) and waits until the cluster
// lists it.
func (c *kafkaCluster) Restart(id int) {
	c.t.Helper()
	c.launch(c.node(id))
	c.waitBrokers([]int{id})
}

// waitBrokers waits until every running node (or the nodes in ids)
// answers a metadata request itself, listing the others: a node's own
// answer, as the metadata of another node may be stale (a cluster that lost
// its controller quorum still lists the nodes that died).
func (c *kafkaCluster) waitBrokers(ids []int) {
	c.t.Helper()
	if ids == nil {
		for _, nd := range c.nodes {
			if nd.cmd != nil {
				ids = append(ids, nd.id)
			}
		}
	}
	for _, id := range ids {
		c.waitNode(id, ids)
	}
}

func (c *kafkaCluster) waitNode(id int, ids []int) {
	c.t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(fmt.Sprintf("127.0.0.1:%d", c.node(id).advertised)))
	if err != nil {
		c.t.Fatal(err)
	}
	defer cl.Close()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var resp *kmsg.MetadataResponse
		kresp, err := cl.SeedBrokers()[0].Request(ctx, kmsg.NewPtrMetadataRequest())
		cancel()
		if err == nil {
			resp = kresp.(*kmsg.MetadataResponse)
			listed := map[int32]bool{}
			for _, b := range resp.Brokers {
				listed[b.NodeID] = true
			}
			all := true
			for _, id := range ids {
				all = all && listed[int32(id)]
			}
			if all {
				return
			}
		}
		select {
		case <-c.node(id).exited:
			c.t.Fatalf("kafka node %d exited while starting; log in %s", id, c.node(id).dir)
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("kafka nodes %v not ready after 2 minutes (last error %v); logs in %s", ids, err, c.dir)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// blackhole is a TCP proxy that can stop forwarding without closing its
// connections, as a network that silently drops packets does.
type blackhole struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cond   *sync.Cond
	held   bool
	conns  []net.Conn
}

func newBlackhole(t *testing.T, port int, target string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, target: target}
	b.cond = sync.NewCond(&b.mu)
	t.Cleanup(b.close)
	go b.serve()
	return b
}

func (b *blackhole) serve() {
	for {
		in, err := b.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", b.target)
		if err != nil {
			in.Close()
			continue
		}
		b.mu.Lock()
		b.conns = append(b.conns, in, out)
		b.mu.Unlock()
		go b.pipe(in, out)
		go b.pipe(out, in)
	}
}

// pipe copies src to dst, holding each chunk while the hole is closed.
func (b *blackhole) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		b.mu.Lock()
		for b.held {
			b.cond.Wait()
		}
		b.mu.Unlock()
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				return
			}
			return
		}
	}
}

// Hold stops forwarding; Heal resumes it.
func (b *blackhole) Hold() { b.mu.Lock(); b.held = true; b.mu.Unlock() }
func (b *blackhole) Heal() { b.mu.Lock(); b.held = false; b.cond.Broadcast(); b.mu.Unlock() }

func (b *blackhole) close() {
	b.ln.Close()
	b.Heal()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
}
