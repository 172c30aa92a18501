// Command kafkactl runs the local single-node Apache Kafka broker (KRaft,
// broker and controller in one JVM) of `make demo`, `make test` and `make
// kafka-up`, from the Maven Central jars of hack/kafka-local/pom.xml,
// without Docker. It is pkg/kafkatest's launcher behind a command line.
//
// Progress goes to stderr; stdout carries only results (the bootstrap
// address as the last line of start, a record count, a Kafka tool's
// output). Settings come from the environment: see `kafkactl help`.
package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/couponpipeline/coupon-producer/pkg/kafkatest"
)

const host = "127.0.0.1"

// settings are the environment knobs, read once.
type settings struct {
	port, ctrlPort int
	dir            string
	startTimeout   time.Duration
	stopTimeout    time.Duration
	jvm            []string
}

func (s settings) bootstrap() string { return net.JoinHostPort(host, strconv.Itoa(s.port)) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "kafkactl: error:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	cmd := "help"
	if len(args) > 0 {
		cmd, args = args[0], args[1:]
	}
	d, err := kafkatest.FindDist()
	if err != nil {
		return err
	}
	s, err := readSettings(d)
	if err != nil {
		return err
	}
	switch cmd {
	case "fetch":
		return d.Fetch(ctx, os.Stderr)
	case "start":
		return start(ctx, d, s)
	case "stop":
		return stopBroker(s)
	case "clean":
		if err := stopBroker(s); err != nil {
			return err
		}
		logf("removing %s", s.dir)
		return os.RemoveAll(s.dir)
	case "status":
		if pids := kafkatest.RunningDir(s.dir); len(pids) > 0 && reachable(s.bootstrap()) {
			logf("running (pid %d) on %s", pids[0], s.bootstrap())
			fmt.Println(s.bootstrap())
			return nil
		}
		logf("not running")
		os.Exit(1)
	case "consume-count":
		if len(args) != 1 || args[0] == "" {
			return errors.New("usage: kafkactl consume-count TOPIC")
		}
		return count(ctx, s.bootstrap(), args[0])
	case "topics":
		return tool(ctx, d, "org.apache.kafka.tools.TopicCommand", append([]string{"--bootstrap-server", s.bootstrap()}, args...))
	case "run-class", "java-class":
		if len(args) == 0 {
			return errors.New("usage: kafkactl run-class CLASS [ARGS...]")
		}
		return tool(ctx, d, args[0], args[1:])
	case "bootstrap":
		fmt.Println(s.bootstrap())
	case "version":
		fmt.Println(d.Version)
	case "help", "-h", "--help":
		usage(d, s)
	default:
		usage(d, s)
		return fmt.Errorf("unknown command: %s", cmd)
	}
	return nil
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "kafkactl: "+format+"\n", args...) }

func readSettings(d *kafkatest.Dist) (settings, error) {
	var s settings
	var err error
	num := func(key string, def int) int {
		v := os.Getenv(key)
		if v == "" || err != nil {
			return def
		}
		n, e := strconv.Atoi(v)
		if e != nil || n < 0 {
			err = fmt.Errorf("%s must be a non-negative integer (got %q)", key, v)
		}
		return n
	}
	s.port = num("KAFKA_LOCAL_PORT", 19092)
	s.ctrlPort = num("KAFKA_LOCAL_CONTROLLER_PORT", 19093)
	s.startTimeout = time.Duration(num("KAFKA_LOCAL_START_TIMEOUT", 90)) * time.Second
	s.stopTimeout = time.Duration(num("KAFKA_LOCAL_STOP_TIMEOUT", 30)) * time.Second
	if err != nil {
		return s, err
	}
	if s.port == s.ctrlPort {
		return s, errors.New("broker and controller ports must differ")
	}
	if s.dir = os.Getenv("KAFKA_LOCAL_DIR"); s.dir == "" {
		// hack/kafka-local -> the repository root
		s.dir = filepath.Join(d.Home, "..", "..", ".kafka-local")
	}
	if s.dir, err = filepath.Abs(s.dir); err != nil {
		return s, err
	}
	heap := os.Getenv("KAFKA_LOCAL_HEAP_OPTS")
	if heap == "" {
		heap = "-Xms256m -Xmx512m"
	}
	s.jvm = strings.Fields(heap)
	if o := os.Getenv("KAFKA_LOCAL_JVM_OPTS"); o != "" {
		s.jvm = append(s.jvm, strings.Fields(o)...)
	} else {
		for _, o := range kafkatest.DefaultJVM {
			if !strings.HasPrefix(o, "-Xm") { // the heap is set above
				s.jvm = append(s.jvm, o)
			}
		}
	}
	return s, nil
}

// start fetches the jars if needed and starts the broker detached, or
// checks that the one already running from the state folder is ready; the
// bootstrap address is the last line on stdout.
func start(ctx context.Context, d *kafkatest.Dist, s settings) error {
	if err := d.CheckJava(); err != nil {
		return err
	}
	if err := d.Fetch(ctx, os.Stderr); err != nil {
		return err
	}
	t0 := time.Now()
	c, err := kafkatest.Start(ctx, d, kafkatest.Dir(s.dir), kafkatest.Port(s.port), kafkatest.ControllerPort(s.ctrlPort),
		kafkatest.JVM(s.jvm...), kafkatest.StartTimeout(s.startTimeout), kafkatest.StopTimeout(s.stopTimeout),
		kafkatest.Detach(), kafkatest.Output(os.Stderr))
	if err != nil {
		return fmt.Errorf("start failed: %w", err)
	}
	logf("ready on %s (pid %d, %s; log %s)", c.Bootstrap(), c.PID(1), time.Since(t0).Round(100*time.Millisecond), c.Log(1))
	fmt.Println(c.Bootstrap())
	return nil
}

func stopBroker(s settings) error {
	n, err := kafkatest.StopDir(s.dir, s.stopTimeout)
	if err != nil {
		return err
	}
	if n == 0 {
		logf("broker not running")
	} else {
		logf("stopped")
	}
	return nil
}

func reachable(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err == nil {
		conn.Close()
	}
	return err == nil
}

func count(ctx context.Context, brokers, topic string) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers))
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n, err := kafkatest.RecordCount(ctx, kadm.NewClient(cl), topic)
	if err != nil {
		return err
	}
	fmt.Println(n)
	return nil
}

func tool(ctx context.Context, d *kafkatest.Dist, class string, args []string) error {
	if err := d.Fetch(ctx, os.Stderr); err != nil {
		return err
	}
	cmd, err := d.Tool(ctx, class, args...)
	if err != nil {
		return err
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	return cmd.Run()
}

func usage(d *kafkatest.Dist, s settings) {
	fmt.Printf(`Usage: go run ./hack/kafkactl <command> [args]

Single-node Apache Kafka %[1]s (KRaft) from Maven Central jars.

Commands:
  fetch                 download the jars into the cache (no-op when complete)
  start                 fetch if needed, format the storage on first use, start
                        the broker in the background and wait until it is
                        ready; prints the bootstrap address (%[2]s) as the
                        last stdout line
  stop                  SIGTERM the broker (SIGKILL after %[3]s); keeps data
  clean                 stop, then delete the state folder
  status                exit 0 (and print the bootstrap address) if running
                        and reachable, 1 otherwise
  consume-count TOPIC   print the number of records in TOPIC (sum over
                        partitions of end offset - start offset)
  topics ARGS...        org.apache.kafka.tools.TopicCommand with
                        --bootstrap-server %[2]s
  run-class CLASS ARGS  run any class on the Kafka classpath (alias: java-class)
  bootstrap             print the bootstrap address
  version               print the Kafka version (from pom.xml)
  help                  this text

Environment (current value):
  KAFKA_LOCAL_PORT             broker port (%[4]d)
  KAFKA_LOCAL_CONTROLLER_PORT  controller port (%[5]d)
  KAFKA_LOCAL_DIR              state folder (%[6]s)
  KAFKA_LOCAL_CACHE            jar cache (%[7]s)
  KAFKA_LOCAL_VERSION          Kafka version (%[1]s; default from pom.xml)
  KAFKA_LOCAL_START_TIMEOUT    seconds to wait for readiness (%.0[8]f)
  KAFKA_LOCAL_STOP_TIMEOUT     seconds to wait before SIGKILL (%.0[9]f)
  KAFKA_LOCAL_HEAP_OPTS        broker heap (default -Xms256m -Xmx512m)
  KAFKA_LOCAL_JVM_OPTS         other broker JVM options (default G1)
  KAFKA_LOCAL_TOOL_JVM_OPTS    JVM options of the Kafka tools
  KAFKA_LOCAL_LOG_LEVEL        slf4j level instead of warn (info, debug, ...)
  KAFKA_LOCAL_MVN_ARGS         extra Maven arguments for fetch
  JAVA_HOME, MVN               java / mvn to use
`, d.Version, s.bootstrap(), s.stopTimeout, s.port, s.ctrlPort, s.dir, d.Cache,
		s.startTimeout.Seconds(), s.stopTimeout.Seconds())
}
