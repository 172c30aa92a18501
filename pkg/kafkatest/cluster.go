package kafkatest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Cluster is a KRaft cluster of real Apache Kafka nodes started by Start,
// each node broker and controller in one JVM. Node ids count from 1.
type Cluster struct {
	dist      *Dist
	cfg       config
	dir       string
	clusterID string
	nodes     []*node
}

type node struct {
	id                       int
	port, ctrlPort, adverted int
	dir                      string

	mu     sync.Mutex
	pid    int           // 0 when not running
	exited chan struct{} // closed when the process pid has ended
}

type listener struct {
	name, protocol string
	port           int
}

type config struct {
	nodes     int
	port      int
	ctrlPort  int
	host      string
	advertise func(node int) int
	listeners []listener
	props     []string
	dir       string
	prefix    []string
	jvm       []string
	out       io.Writer
	timeout   time.Duration
	stopAfter time.Duration
	dial      func(ctx context.Context, network, addr string) (net.Conn, error)
	detach    bool
}

// Opt is an option of Start.
type Opt func(*config)

// Nodes sets the number of nodes (default 1). Every node is a voter of the
// controller quorum, and the default replication factor is n.
func Nodes(n int) Opt { return func(c *config) { c.nodes = n } }

// Port sets the port of node 1's PLAINTEXT listener (default 19092): node i
// listens on port+2(i-1) and its controller on the port after it. Choose
// ports below the kernel's ephemeral range (32768 on Linux): a port there
// can be the local end of any client connection on the machine, and a node
// restarted after a kill could not bind it again.
func Port(port int) Opt { return func(c *config) { c.port = port } }

// ControllerPort sets the port of node 1's controller listener, when it is
// not the one after its PLAINTEXT port: node i's is port+2(i-1).
func ControllerPort(port int) Opt { return func(c *config) { c.ctrlPort = port } }

// Host sets the address every listener binds and advertises (default
// 127.0.0.1): the address of a network namespace's interface when Prefix
// runs the nodes inside it.
func Host(host string) Opt { return func(c *config) { c.host = host } }

// AdvertisedPort sets the PLAINTEXT port node i tells clients to use, when
// it is not the one it listens on (a proxy in front of it).
func AdvertisedPort(port func(node int) int) Opt { return func(c *config) { c.advertise = port } }

// Listener adds a client listener named name (its settings are the
// listener.name.<name>.* properties) speaking protocol (SSL, SASL_SSL,
// SASL_PLAINTEXT) on port+i-1 of node i. PLAINTEXT stays the inter-broker
// listener and the one the cluster's own readiness checks use.
func Listener(name, protocol string, port int) Opt {
	return func(c *config) { c.listeners = append(c.listeners, listener{name, protocol, port}) }
}

// Properties appends lines to every node's server.properties (key stores,
// JAAS configs, client authentication); a later line overrides an earlier
// key.
func Properties(lines ...string) Opt {
	return func(c *config) { c.props = append(c.props, lines...) }
}

// Dir sets the state folder: cluster.id and a folder per node (1, 2, ...)
// with its server.properties, data, kafka.pid and kafka.log. By default
// Start makes a new temporary folder; the caller removes it (Dir says
// where). A folder that holds formatted nodes is started again with its
// data, and a node still running from it (a detached start) is adopted.
func Dir(dir string) Opt { return func(c *config) { c.dir = dir } }

// Prefix runs each node's java (and its storage format) through a command
// prefix, e.g. "ip", "netns", "exec", "NAME" to run it inside a network
// namespace. The prefix must exec the command (as ip netns exec, nsenter
// and setpriv do) so that the process Start signals is the JVM.
func Prefix(argv ...string) Opt { return func(c *config) { c.prefix = argv } }

// JVM replaces the nodes' JVM options (default: DefaultJVM).
func JVM(opts ...string) Opt { return func(c *config) { c.jvm = opts } }

// DefaultJVM are the JVM options of a node unless JVM changes them.
var DefaultJVM = []string{"-Xms256m", "-Xmx512m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
	"-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
	"-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"}

// Output sets where Start writes its progress lines (default: nowhere).
func Output(w io.Writer) Opt { return func(c *config) { c.out = w } }

// StartTimeout bounds how long Start and Restart wait for the nodes to be
// ready (default 2 minutes), fetch and format aside.
func StartTimeout(d time.Duration) Opt { return func(c *config) { c.timeout = d } }

// StopTimeout bounds how long Stop waits after SIGTERM before it sends
// SIGKILL (default 30 seconds).
func StopTimeout(d time.Duration) Opt { return func(c *config) { c.stopAfter = d } }

// Dialer sets how the readiness checks connect to the nodes, for nodes the
// calling process cannot reach with a plain dial (inside a network
// namespace without a route to it).
func Dialer(dial func(ctx context.Context, network, addr string) (net.Conn, error)) Opt {
	return func(c *config) { c.dial = dial }
}

// Detach starts the nodes in their own session, so that they outlive the
// calling process (a command that starts a broker and exits); StopDir stops
// them later.
func Detach() Opt { return func(c *config) { c.detach = true } }

// Start formats the storage of every node on first use, starts the nodes
// and waits until each answers a metadata request listing all of them. On
// failure it stops the nodes it started and returns an error holding the
// end of the failed node's log.
func Start(ctx context.Context, d *Dist, opts ...Opt) (_ *Cluster, err error) {
	cfg := config{nodes: 1, port: 19092, host: "127.0.0.1", jvm: DefaultJVM, out: io.Discard,
		timeout: 2 * time.Minute, stopAfter: 30 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.nodes < 1 {
		return nil, fmt.Errorf("nodes %d: want at least 1", cfg.nodes)
	}
	if cfg.ctrlPort == 0 {
		cfg.ctrlPort = cfg.port + 1
	}
	if cfg.ctrlPort == cfg.port {
		return nil, fmt.Errorf("controller port %d is the broker port", cfg.ctrlPort)
	}
	if err := d.needJars(); err != nil {
		return nil, err
	}
	c := &Cluster{dist: d, cfg: cfg, dir: cfg.dir}
	if c.dir == "" {
		dir, mkErr := os.MkdirTemp("", fmt.Sprintf("kafka-%d-", cfg.port))
		if mkErr != nil {
			return nil, mkErr
		}
		c.dir = dir
		// A failed start leaves no folder behind: its error holds the
		// end of the log.
		defer func() {
			if err != nil {
				os.RemoveAll(dir)
			}
		}()
	} else {
		if err := os.MkdirAll(c.dir, 0o755); err != nil {
			return nil, err
		}
		// A state folder inside a work tree stays out of git.
		if err := writeIfMissing(filepath.Join(c.dir, ".gitignore"), "*\n"); err != nil {
			return nil, err
		}
		// Two starts on one folder (two terminals) must not both format
		// and launch.
		unlock, err := lockFile(filepath.Join(c.dir, ".lock"))
		if err != nil {
			return nil, err
		}
		defer unlock()
	}
	if c.clusterID, err = c.readClusterID(); err != nil {
		return nil, err
	}
	var voters []string
	for i := 1; i <= cfg.nodes; i++ {
		nd := &node{id: i, port: cfg.port + 2*(i-1), ctrlPort: cfg.ctrlPort + 2*(i-1), dir: filepath.Join(c.dir, strconv.Itoa(i))}
		nd.adverted = nd.port
		if cfg.advertise != nil {
			nd.adverted = cfg.advertise(i)
		}
		c.nodes = append(c.nodes, nd)
		voters = append(voters, fmt.Sprintf("%d@%s", i, net.JoinHostPort(cfg.host, strconv.Itoa(nd.ctrlPort))))
	}
	if err := c.prepare(ctx, strings.Join(voters, ",")); err != nil {
		return nil, err
	}
	for _, nd := range c.nodes {
		if nd.running() {
			fmt.Fprintf(cfg.out, "kafkatest: node %d already running (pid %d)\n", nd.id, nd.pid)
			continue
		}
		fmt.Fprintf(cfg.out, "kafkatest: starting Kafka %s node %d on %s, state in %s\n",
			d.Version, nd.id, net.JoinHostPort(cfg.host, strconv.Itoa(nd.port)), nd.dir)
		if err := c.launch(nd); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := c.wait(ctx, nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func writeIfMissing(path, content string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	return os.WriteFile(path, []byte(content), 0o644)
}

// readClusterID returns the id of the cluster in the state folder, making
// one on first use (the format Kafka's random-uuid prints).
func (c *Cluster) readClusterID() (string, error) {
	path := filepath.Join(c.dir, "cluster.id")
	if b, err := os.ReadFile(path); err == nil && len(bytes.TrimSpace(b)) > 0 {
		return string(bytes.TrimSpace(b)), nil
	}
	// As Kafka's Uuid.randomUuid: an id starting with '-' would be read
	// as an option by the storage tool.
	id := "-"
	for strings.HasPrefix(id, "-") {
		b := make([]byte, 16)
		rand.Read(b)
		id = base64.RawURLEncoding.EncodeToString(b)
	}
	return id, os.WriteFile(path, []byte(id+"\n"), 0o644)
}

// prepare writes every node's server.properties, adopts a node still
// running from the folder, checks that the ports of the others are free
// and formats the storage of those never formatted, in parallel.
func (c *Cluster) prepare(ctx context.Context, voters string) error {
	var wg sync.WaitGroup
	errs := make([]error, len(c.nodes))
	for i, nd := range c.nodes {
		if err := os.MkdirAll(nd.dir, 0o755); err != nil {
			return err
		}
		if pid := livePID(nd); pid != 0 {
			nd.adopt(pid) // it runs the properties it was started with
			continue
		}
		// 0600: the properties may hold keys and passwords.
		if err := os.WriteFile(nd.props(), []byte(c.properties(nd, voters)), 0o600); err != nil {
			return err
		}
		for _, p := range append([]int{nd.port, nd.ctrlPort}, c.listenerPorts(nd)...) {
			if portOpen(c.cfg.host, p, c.cfg.dial) {
				return fmt.Errorf("port %s:%d is already in use by another process", c.cfg.host, p)
			}
		}
		if _, err := os.Stat(filepath.Join(nd.dir, "data", "meta.properties")); err == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			args := c.dist.javaArgs(c.dist.ToolJVM, "kafka.tools.StorageTool", "format", "-t", c.clusterID, "-c", nd.props())
			out, err := c.command(ctx, args).CombinedOutput()
			if err != nil {
				errs[i] = fmt.Errorf("format node %d: %w: %s", nd.id, err, out)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *Cluster) listenerPorts(nd *node) []int {
	var ps []int
	for _, l := range c.cfg.listeners {
		ps = append(ps, l.port+nd.id-1)
	}
	return ps
}

// command is java with args, through the prefix.
func (c *Cluster) command(ctx context.Context, args []string) *exec.Cmd {
	argv := append(append(append([]string(nil), c.cfg.prefix...), c.dist.Java), args...)
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}

func (nd *node) props() string   { return filepath.Join(nd.dir, "server.properties") }
func (nd *node) pidFile() string { return filepath.Join(nd.dir, "kafka.pid") }
func (nd *node) logFile() string { return filepath.Join(nd.dir, "kafka.log") }

// properties is the server.properties of node nd.
func (c *Cluster) properties(nd *node, voters string) string {
	h := c.cfg.host
	addr := func(name string, port int) string { return name + "://" + net.JoinHostPort(h, strconv.Itoa(port)) }
	listeners := []string{addr("PLAINTEXT", nd.port), addr("CONTROLLER", nd.ctrlPort)}
	advertised := []string{addr("PLAINTEXT", nd.adverted)}
	protocols := []string{"PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"}
	for _, l := range c.cfg.listeners {
		listeners = append(listeners, addr(l.name, l.port+nd.id-1))
		advertised = append(advertised, addr(l.name, l.port+nd.id-1))
		protocols = append(protocols, l.name+":"+l.protocol)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# Written by kafkatest on every start; edits are overwritten.
process.roles=broker,controller
node.id=%d
controller.quorum.voters=%s
listeners=%s
advertised.listeners=%s
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=%s
log.dirs=%s
default.replication.factor=%d
# The internal topics have one replica and accept one in sync, whatever
# the number of nodes, so that a node killed by a test stops nothing else.
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
`, nd.id, voters, strings.Join(listeners, ","), strings.Join(advertised, ","), strings.Join(protocols, ","),
		filepath.Join(nd.dir, "data"), c.cfg.nodes)
	if c.cfg.nodes > 1 {
		// A killed node is fenced, and its partitions led elsewhere, within
		// seconds. A single node keeps the defaults: its own controller
		// never fences it for a slow heartbeat on a loaded machine.
		b.WriteString("broker.heartbeat.interval.ms=500\nbroker.session.timeout.ms=3000\nreplica.lag.time.max.ms=5000\n")
	}
	for _, l := range c.cfg.props {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

// launch starts node nd's JVM, its output appended to its log.
func (c *Cluster) launch(nd *node) error {
	log, err := os.OpenFile(nd.logFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close() // the child holds its own descriptor
	cmd := c.command(context.Background(), c.dist.javaArgs(c.cfg.jvm, "kafka.Kafka", nd.props()))
	cmd.Stdout, cmd.Stderr = log, log
	if c.cfg.detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start node %d: %w", nd.id, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	nd.mu.Lock()
	nd.pid, nd.exited = cmd.Process.Pid, exited
	nd.mu.Unlock()
	return os.WriteFile(nd.pidFile(), []byte(strconv.Itoa(nd.pid)+"\n"), 0o644)
}

// adopt makes pid, a process this one did not start, node nd's.
func (nd *node) adopt(pid int) {
	exited := make(chan struct{})
	go func() {
		for processAlive(pid) {
			time.Sleep(100 * time.Millisecond)
		}
		close(exited)
	}()
	nd.mu.Lock()
	nd.pid, nd.exited = pid, exited
	nd.mu.Unlock()
}

func (nd *node) running() bool {
	nd.mu.Lock()
	defer nd.mu.Unlock()
	if nd.pid == 0 {
		return false
	}
	select {
	case <-nd.exited:
		return false
	default:
		return true
	}
}

// livePID is the pid in nd's pid file if that process is alive and runs
// nd's server.properties (not a reused pid).
func livePID(nd *node) int {
	b, err := os.ReadFile(nd.pidFile())
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || !processAlive(pid) {
		return 0
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return 0
	}
	for _, arg := range bytes.Split(cmdline, []byte{0}) {
		if string(arg) == nd.props() {
			return pid
		}
	}
	return 0
}

// processAlive reports whether pid exists and is not a zombie.
func processAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true // no /proc: trust kill -0
	}
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		return stat[i+2] != 'Z'
	}
	return true
}

func portOpen(host string, port int, dial func(ctx context.Context, network, addr string) (net.Conn, error)) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	conn, err := dial(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// Dir is the state folder.
func (c *Cluster) Dir() string { return c.dir }

// Version is the Kafka version the nodes run.
func (c *Cluster) Version() string { return c.dist.Version }

// Bootstrap is the comma-separated PLAINTEXT address list of the nodes, as
// clients reach them.
func (c *Cluster) Bootstrap() string {
	var addrs []string
	for _, nd := range c.nodes {
		addrs = append(addrs, net.JoinHostPort(c.cfg.host, strconv.Itoa(nd.adverted)))
	}
	return strings.Join(addrs, ",")
}

// Listener is the comma-separated address list of the listener added with
// the option Listener(name, ...), or "" if there is none.
func (c *Cluster) Listener(name string) string {
	for _, l := range c.cfg.listeners {
		if l.name == name {
			var addrs []string
			for _, nd := range c.nodes {
				addrs = append(addrs, net.JoinHostPort(c.cfg.host, strconv.Itoa(l.port+nd.id-1)))
			}
			return strings.Join(addrs, ",")
		}
	}
	return ""
}

// PID is the process id of node id, or 0 when it is not running.
func (c *Cluster) PID(id int) int {
	nd := c.nodes[id-1]
	if !nd.running() {
		return 0
	}
	return nd.pid
}

// Log is the path of node id's log.
func (c *Cluster) Log(id int) string { return c.nodes[id-1].logFile() }

// Kill stops node id with SIGKILL, as a crash would, and waits until it
// has exited.
func (c *Cluster) Kill(id int) error { return c.signal(id, syscall.SIGKILL, 0) }

// Stop stops node id with SIGTERM, a graceful shutdown, waits until it has
// exited, and sends SIGKILL if it has not after the stop timeout.
func (c *Cluster) Stop(id int) error { return c.signal(id, syscall.SIGTERM, c.cfg.stopAfter) }

func (c *Cluster) signal(id int, sig syscall.Signal, grace time.Duration) error {
	if id < 1 || id > len(c.nodes) {
		return fmt.Errorf("no node %d in a cluster of %d", id, len(c.nodes))
	}
	nd := c.nodes[id-1]
	if !nd.running() {
		return nil
	}
	stopProcess(nd.pid, nd.exited, sig, grace)
	nd.mu.Lock()
	nd.pid = 0
	nd.mu.Unlock()
	return os.Remove(nd.pidFile())
}

// stopProcess sends sig to pid and waits for exited; after grace (if not
// 0) it sends SIGKILL and waits again.
func stopProcess(pid int, exited <-chan struct{}, sig syscall.Signal, grace time.Duration) {
	syscall.Kill(pid, sig)
	if grace > 0 {
		select {
		case <-exited:
			return
		case <-time.After(grace):
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	<-exited
}

// Restart starts node id again (after Kill or Stop) and waits until it
// answers a metadata request listing itself.
func (c *Cluster) Restart(ctx context.Context, id int) error {
	if id < 1 || id > len(c.nodes) {
		return fmt.Errorf("no node %d in a cluster of %d", id, len(c.nodes))
	}
	nd := c.nodes[id-1]
	if nd.running() {
		return fmt.Errorf("node %d is running", id)
	}
	if err := c.launch(nd); err != nil {
		return err
	}
	return c.wait(ctx, []int{id})
}

// Close kills every node still running. The state folder stays.
func (c *Cluster) Close() error {
	var errs []error
	for _, nd := range c.nodes {
		errs = append(errs, c.Kill(nd.id))
	}
	return errors.Join(errs...)
}

// wait waits until every running node (or the nodes in ids) answers a
// metadata request itself, listing the others: a node's own answer, as the
// metadata of another node may be stale (a cluster that lost its quorum
// still lists the nodes that died).
func (c *Cluster) wait(ctx context.Context, ids []int) error {
	if ids == nil {
		for _, nd := range c.nodes {
			if nd.running() {
				ids = append(ids, nd.id)
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.timeout)
	defer cancel()
	for _, id := range ids {
		if err := c.waitNode(ctx, c.nodes[id-1], ids); err != nil {
			return err
		}
	}
	return nil
}

func (c *Cluster) waitNode(ctx context.Context, nd *node, ids []int) error {
	opts := []kgo.Opt{kgo.SeedBrokers(net.JoinHostPort(c.cfg.host, strconv.Itoa(nd.adverted)))}
	if c.cfg.dial != nil {
		opts = append(opts, kgo.Dialer(c.cfg.dial))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := cl.SeedBrokers()[0].Request(rctx, kmsg.NewPtrMetadataRequest())
		rcancel()
		if err == nil {
			listed := map[int32]bool{}
			for _, b := range resp.(*kmsg.MetadataResponse).Brokers {
				listed[b.NodeID] = true
			}
			all := true
			for _, id := range ids {
				all = all && listed[int32(id)]
			}
			if all {
				return nil
			}
			err = fmt.Errorf("node %d lists %d of nodes %v", nd.id, len(listed), ids)
		}
		select {
		case <-nd.exited:
			return fmt.Errorf("kafka node %d exited while starting; the end of %s:\n%s", nd.id, nd.logFile(), logTail(nd.logFile(), 40))
		case <-ctx.Done():
			return fmt.Errorf("kafka nodes %v not ready after %s (last error: %v); the end of %s:\n%s",
				ids, c.cfg.timeout, err, nd.logFile(), logTail(nd.logFile(), 40))
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// logTail is the last n lines of the file at path.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// StopDir stops the nodes running from the state folder dir (a detached
// start), each with SIGTERM, then SIGKILL after grace. It returns the
// number of nodes it stopped.
func StopDir(dir string, grace time.Duration) (int, error) {
	nodes, err := filepath.Glob(filepath.Join(dir, "*", "kafka.pid"))
	if err != nil {
		return 0, err
	}
	stopped := 0
	var wg sync.WaitGroup
	for _, pidFile := range nodes {
		nd := &node{dir: filepath.Dir(pidFile)}
		if pid := livePID(nd); pid != 0 {
			nd.adopt(pid)
			stopped++
			wg.Add(1)
			go func() { defer wg.Done(); stopProcess(pid, nd.exited, syscall.SIGTERM, grace) }()
		}
	}
	wg.Wait()
	for _, pidFile := range nodes {
		if err := os.Remove(pidFile); err != nil && !errors.Is(err, os.ErrNotExist) {
			return stopped, err
		}
	}
	return stopped, nil
}

// RunningDir returns the process ids of the nodes running from the state
// folder dir.
func RunningDir(dir string) []int {
	nodes, _ := filepath.Glob(filepath.Join(dir, "*", "kafka.pid"))
	var pids []int
	for _, pidFile := range nodes {
		if pid := livePID(&node{dir: filepath.Dir(pidFile)}); pid != 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}
