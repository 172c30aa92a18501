package kafkatest

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestPomVersion(t *testing.T) {
	for _, c := range []struct {
		name, pom, want, err string
	}{
		{"property", `<project><properties><kafka.version> 4.4.0 </kafka.version><slf4j.version>1.7.36</slf4j.version></properties></project>`, "4.4.0", ""},
		{"namespaced", `<project xmlns="http://maven.apache.org/POM/4.0.0"><properties><kafka.version>3.9.1</kafka.version></properties></project>`, "3.9.1", ""},
		{"missing", `<project><properties><slf4j.version>1.7.36</slf4j.version></properties></project>`, "", "no <kafka.version>"},
		{"not xml", `<project><properties>`, "", "read "},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "pom.xml")
			if err := os.WriteFile(p, []byte(c.pom), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := PomVersion(p)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("PomVersion = %q, %v; want an error with %q", got, err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("PomVersion = %q, %v; want %q", got, err, c.want)
			}
		})
	}
}

// TestDistReadsThePom checks that the repository's pom names a version and
// that the cache is keyed by it, so that a version bump fetches anew.
func TestDistReadsThePom(t *testing.T) {
	t.Setenv("KAFKA_LOCAL_VERSION", "")
	t.Setenv("KAFKA_LOCAL_CACHE", "")
	d, err := FindDist()
	if err != nil {
		t.Fatal(err)
	}
	want, err := PomVersion(filepath.Join(d.Home, "pom.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Version != want || filepath.Base(d.Cache) != "kafka-"+want {
		t.Fatalf("version %q, cache %s; want %q and a cache named after it", d.Version, d.Cache, want)
	}
	if !strings.HasPrefix(d.Classpath(), d.Home+string(os.PathListSeparator)) {
		t.Fatalf("classpath %s does not start with %s (simplelogger.properties)", d.Classpath(), d.Home)
	}
}

// props parses server.properties text into a map, failing on a key given
// twice (a later line would silently win).
func props(t *testing.T, text string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("line %q is not key=value", line)
		}
		if _, dup := m[k]; dup {
			t.Fatalf("key %s given twice", k)
		}
		m[k] = v
	}
	return m
}

func TestProperties(t *testing.T) {
	c := &Cluster{cfg: config{nodes: 3, host: "10.1.2.3", props: []string{"ssl.keystore.type=PEM"},
		listeners: []listener{{"SASL_SSL", "SASL_SSL", 25000}}}, dir: "/state"}
	nd := &node{id: 2, port: 24002, ctrlPort: 24003, adverted: 25900, dir: "/state/2"}
	got := props(t, c.properties(nd, "1@10.1.2.3:24001,2@10.1.2.3:24003,3@10.1.2.3:24005"))
	for k, want := range map[string]string{
		"node.id":                          "2",
		"process.roles":                    "broker,controller",
		"controller.quorum.voters":         "1@10.1.2.3:24001,2@10.1.2.3:24003,3@10.1.2.3:24005",
		"listeners":                        "PLAINTEXT://10.1.2.3:24002,CONTROLLER://10.1.2.3:24003,SASL_SSL://10.1.2.3:25001",
		"advertised.listeners":             "PLAINTEXT://10.1.2.3:25900,SASL_SSL://10.1.2.3:25001",
		"listener.security.protocol.map":   "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
		"log.dirs":                         "/state/2/data",
		"default.replication.factor":       "3",
		"offsets.topic.replication.factor": "1",
		"auto.create.topics.enable":        "false",
		"ssl.keystore.type":                "PEM",
		"broker.session.timeout.ms":        "3000",
	} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	c.cfg.nodes = 1
	if got := props(t, c.properties(nd, "2@10.1.2.3:24003")); got["broker.session.timeout.ms"] != "" || got["default.replication.factor"] != "1" {
		t.Errorf("one node: session timeout %q, replication factor %q; want the default and 1",
			got["broker.session.timeout.ms"], got["default.replication.factor"])
	}
}

// TestStartKillRestart runs one real node: it serves, Kill ends it, Restart
// brings it back with its data, and a detached start from the same folder
// is found again (adopted) by a second Start and stopped by StopDir.
func TestStartKillRestart(t *testing.T) {
	d := NeedDist(t)
	ctx := context.Background()
	var dir string
	port := 0
	start := func(opts ...Opt) (*Cluster, error) {
		c, err := Start(ctx, d, append([]Opt{Dir(dir), Port(port), JVM("-Xmx256m", "-XX:+UseSerialGC")}, opts...)...)
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
		return c, err
	}
	// Ports below 32768, outside Linux's ephemeral range (32768-60999 by
	// default), where the local end of any client connection on the
	// machine may hold a port; 23170-23177 are used by no other test (the
	// fault suite has 23090-23160, the development and test brokers
	// 19092-19095). The next pair is tried if one is in use, as when the
	// same tests run in another checkout at once.
	var c *Cluster
	var err error
	for _, port = range []int{23170, 23172, 23174, 23176} {
		dir = t.TempDir()
		if c, err = start(); err == nil || !strings.Contains(err.Error(), "in use") {
			break
		}
		t.Logf("port %d or %d in use: %.200s", port, port+1, err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("127.0.0.1:%d", port); c.Bootstrap() != want {
		t.Fatalf("bootstrap %s, want %s", c.Bootstrap(), want)
	}
	produce := func(topic string) {
		t.Helper()
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.Bootstrap()), kgo.DefaultProduceTopic(topic), kgo.AllowAutoTopicCreation())
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if _, err := kadm.NewClient(cl).CreateTopic(ctx, 1, 1, nil, topic); err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("x")}, &kgo.Record{Value: []byte("y")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	count := func(topic string) (int64, error) {
		cl, err := kgo.NewClient(kgo.SeedBrokers(c.Bootstrap()))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return RecordCount(rctx, kadm.NewClient(cl), topic)
	}
	countIs := func(topic string, want int64) {
		t.Helper()
		if n, err := count(topic); err != nil || n != want {
			t.Fatalf("RecordCount(%s) = %d, %v; want %d", topic, n, err, want)
		}
	}
	produce("before-kill")
	pid := c.PID(1)
	if err := c.Kill(1); err != nil {
		t.Fatal(err)
	}
	if c.PID(1) != 0 || processAlive(pid) {
		t.Fatalf("node 1 (pid %d) still running after Kill", pid)
	}
	if err := c.Restart(ctx, 1); err != nil {
		t.Fatal(err)
	}
	countIs("before-kill", 2)
	if n, err := count("no-such-topic"); err == nil {
		t.Fatalf("RecordCount of a missing topic = %d, nil; want an error", n)
	}
	if err := c.Stop(1); err != nil {
		t.Fatal(err)
	}

	detached, err := start(Detach())
	if err != nil {
		t.Fatal(err)
	}
	pid = detached.PID(1)
	again, err := start(Detach())
	if err != nil {
		t.Fatal(err)
	}
	if again.PID(1) != pid {
		t.Fatalf("the second start ran pid %d, want the running %d adopted", again.PID(1), pid)
	}
	countIs("before-kill", 2)
	if got := RunningDir(dir); len(got) != 1 || got[0] != pid {
		t.Fatalf("RunningDir = %v, want [%d]", got, pid)
	}
	if n, err := StopDir(dir, 30*time.Second); err != nil || n != 1 {
		t.Fatalf("StopDir = %d, %v; want 1 node stopped", n, err)
	}
	if processAlive(pid) || len(RunningDir(dir)) != 0 {
		t.Fatalf("pid %d still running after StopDir", pid)
	}
}

// TestClusterIDNotAnOption: a quarter of random base64 ids start with '-',
// which the storage tool would read as an option.
func TestClusterIDNotAnOption(t *testing.T) {
	for i := 0; i < 200; i++ {
		c := &Cluster{dir: t.TempDir()}
		id, err := c.readClusterID()
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(id, "-") || len(id) != 22 {
			t.Fatalf("cluster id %q", id)
		}
		if again, _ := c.readClusterID(); again != id {
			t.Fatalf("second read %q, want the stored %q", again, id)
		}
	}
}

// TestStartFailureLeavesNoTempDir: a start that fails (here the port is
// taken) removes the temporary state folder it made.
func TestStartFailureLeavesNoTempDir(t *testing.T) {
	d := NeedDist(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	pattern := filepath.Join(os.TempDir(), fmt.Sprintf("kafka-%d-*", port))
	before, _ := filepath.Glob(pattern)
	if c, err := Start(context.Background(), d, Port(port)); err == nil {
		c.Close()
		t.Fatal("Start on a port in use succeeded")
	} else if !strings.Contains(err.Error(), "already in use") {
		t.Fatalf("Start: %v; want the port in use named", err)
	}
	if after, _ := filepath.Glob(pattern); len(after) != len(before) {
		t.Fatalf("temporary folders %v, before the start %v", after, before)
	}
}
