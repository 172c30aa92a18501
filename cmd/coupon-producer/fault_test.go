package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/couponpipeline/coupon-producer/pkg/kafkatest"
)

// The fault suite: real Apache Kafka brokers owned by each test (see
// startKafka), broken while the producer publishes a file. Each test
// checks the exit code and reads the topic back.

// produceFor runs the producer on file to topic with frequent progress
// lines, calls onProgress once at the first of them, and kills the producer
// if it runs longer than limit (a hang fails the test). It returns the
// producer's stderr and exit code.
func produceFor(t *testing.T, limit time.Duration, brokers, topic, file string, onProgress func(*exec.Cmd), extra ...string) (string, int) {
	t.Helper()
	return produceUntil(t, limit, brokers, topic, file, 0, onProgress, extra...)
}

// produceUntil is produceFor acting at the first progress line that says
// at least percent of the compressed file is read.
func produceUntil(t *testing.T, limit time.Duration, brokers, topic, file string, percent float64, onProgress func(*exec.Cmd), extra ...string) (string, int) {
	t.Helper()
	args := append([]string{"--topic", topic, "--progress-interval", "100ms"}, extra...)
	cmd := exec.Command(binary, append(args, file)...)
	cmd.Env = []string{"KAFKA_BROKERS=" + brokers, "LOG_FORMAT=json"}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	hung := time.AfterFunc(limit, func() { cmd.Process.Kill() })
	var log strings.Builder
	sc := bufio.NewScanner(stderr)
	sc.Buffer(nil, 1<<20)
	hit := false
	for sc.Scan() {
		log.Write(sc.Bytes())
		log.WriteByte('\n')
		if !hit && strings.Contains(sc.Text(), `"msg":"progress"`) && progressAt(sc.Bytes()) >= percent {
			hit = true
			onProgress(cmd)
		}
	}
	cmd.Wait()
	if !hung.Stop() {
		t.Fatalf("the producer ran past %s and was killed:\n%s", limit, tail(log.String()))
	}
	if !hit {
		t.Fatalf("the run ended before a progress line at %g%% or more:\n%s", percent, tail(log.String()))
	}
	return log.String(), cmd.ProcessState.ExitCode()
}

// progressAt is the percent of a progress line; 0 if it has none.
func progressAt(line []byte) float64 {
	var p struct{ Percent float64 }
	json.Unmarshal(line, &p)
	return p.Percent
}

func tail(log string) string {
	lines := strings.Split(log, "\n")
	return strings.Join(lines[max(0, len(lines)-30):], "\n")
}

// checkTopic reads topic back and checks it against the file and the
// summary. With every code of the file read and delivered, the topic holds
// exactly the file's codes. Otherwise (codes failed, or a signal stopped
// the reading) it holds no code twice and nothing that is not in the file;
// it holds every code counted delivered, so at least that many, and beyond
// them only codes counted failed (a batch written whose answer was lost,
// then failed at its delivery timeout).
func checkTopic(t *testing.T, brokers, topic, file, log string) (delivered, failed int64) {
	t.Helper()
	s := summary(t, log)
	codes, delivered, failed := int64(s["codes"].(float64)), int64(s["delivered"].(float64)), int64(s["failed"].(float64))
	if delivered+failed != codes {
		t.Fatalf("summary %v: delivered + failed != codes", s)
	}
	want := fileCodes(t, file)
	var got []string
	for _, r := range readTopic(t, brokers, topic) {
		got = append(got, string(r.Value))
	}
	slices.Sort(got)
	slices.Sort(want)
	if failed == 0 && codes == int64(len(want)) {
		if !slices.Equal(got, want) {
			t.Fatalf("all %d codes delivered, but the topic holds %d records and the file %d codes: the multisets differ",
				delivered, len(got), len(want))
		}
		return delivered, failed
	}
	// got must be a sub-multiset of want (the file's codes are distinct
	// but for a few shared ones; see gen.Options.Shared).
	i := 0
	for j, code := range got {
		if j > 0 && code == got[j-1] && !inFileTwice(want, code) {
			t.Fatalf("code %s is in the topic twice", code)
		}
		for i < len(want) && want[i] < code {
			i++
		}
		if i == len(want) || want[i] != code {
			t.Fatalf("code %s is in the topic more often than in the file", code)
		}
		i++
	}
	if n := int64(len(got)); n < delivered || n > delivered+failed {
		t.Fatalf("topic holds %d records; the summary says %d delivered, %d failed", n, delivered, failed)
	}
	return delivered, failed
}

func inFileTwice(sorted []string, code string) bool {
	i, _ := slices.BinarySearch(sorted, code)
	return i+1 < len(sorted) && sorted[i+1] == code
}

func createTopic(t *testing.T, brokers, topic string, partitions int32, rf int16, configs map[string]*string) {
	t.Helper()
	resp, err := newAdmin(t, brokers).CreateTopic(context.Background(), partitions, rf, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
}

// TestFaultBrokerRestart stops the broker mid-file, with SIGKILL as a
// crash does or with SIGTERM as a graceful shutdown does, and starts it
// again: the producer retries within its delivery timeout, exits 0, and
// the topic holds exactly the file's codes (default lz4).
func TestFaultBrokerRestart(t *testing.T) {
	for _, c := range []struct {
		name string
		port int
		stop func(*kafkatest.Cluster, int) error
	}{
		{"SIGKILL", 23110, (*kafkatest.Cluster).Kill},
		{"SIGTERM", 23114, (*kafkatest.Cluster).Stop},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := startKafka(t, 1, c.port)
			file := generate(t, 3_000_000, 21)
			topic := uniqueTopic("fault-restart")
			log, code := produceFor(t, 4*time.Minute, k.Bootstrap(), topic, file, func(*exec.Cmd) {
				must(t, c.stop(k, 1))
				time.Sleep(2 * time.Second)
				must(t, k.Restart(context.Background(), 1))
			}, "--partitions", "6")
			if code != 0 {
				t.Fatalf("exit %d after a broker %s and restart, want 0:\n%s", code, c.name, tail(log))
			}
			checkTopic(t, k.Bootstrap(), topic, file, log)
		})
	}
}

// TestFaultBrokerDownPastDeliveryTimeout keeps the broker down longer than
// the delivery timeout: exit 1, and the topic holds what the summary says.
func TestFaultBrokerDownPastDeliveryTimeout(t *testing.T) {
	c := startKafka(t, 1, 23118)
	file := generate(t, 3_000_000, 22)
	topic := uniqueTopic("fault-down")
	log, code := produceFor(t, 3*time.Minute, c.Bootstrap(), topic, file, func(*exec.Cmd) { must(t, c.Kill(1)) },
		"--partitions", "6", "--delivery-timeout", "8s")
	if code != 1 {
		t.Fatalf("exit %d with the broker down past the delivery timeout, want 1:\n%s", code, tail(log))
	}
	must(t, c.Restart(context.Background(), 1))
	if d, _ := checkTopic(t, c.Bootstrap(), topic, file, log); d == 0 {
		t.Logf("nothing was delivered before the broker went down")
	}
}

// TestFaultThreeBrokers runs a three-node cluster with a topic of
// replication factor 3 and min.insync.replicas=2. Killing the leader of
// several partitions mid-file moves leadership: exit 0, every code once.
// With two of three nodes down, NOT_ENOUGH_REPLICAS (or no leader) is
// retried until the delivery timeout: exit 1, accounting exact.
func TestFaultThreeBrokers(t *testing.T) {
	c := startKafka(t, 3, 23130)
	brokers := c.Bootstrap()
	minISR := "2"
	configs := map[string]*string{"min.insync.replicas": &minISR}

	t.Run("leader killed", func(t *testing.T) {
		file := generate(t, 3_000_000, 23)
		topic := uniqueTopic("fault-leader")
		createTopic(t, brokers, topic, 6, 3, configs)
		victim := 0
		log, code := produceFor(t, 4*time.Minute, brokers, topic, file, func(*exec.Cmd) {
			victim = busiestLeader(t, brokers, topic)
			must(t, c.Kill(victim))
		})
		if code != 0 {
			t.Fatalf("exit %d after the leader of several partitions died, want 0:\n%s", code, tail(log))
		}
		checkTopic(t, brokers, topic, file, log)
		must(t, c.Restart(context.Background(), victim))
	})

	t.Run("two of three down", func(t *testing.T) {
		file := generate(t, 3_000_000, 24)
		topic := uniqueTopic("fault-no-isr")
		createTopic(t, brokers, topic, 6, 3, configs)
		log, code := produceFor(t, 3*time.Minute, brokers, topic, file, func(*exec.Cmd) {
			must(t, c.Kill(2))
			must(t, c.Kill(3))
		}, "--delivery-timeout", "10s")
		if code != 1 {
			t.Fatalf("exit %d with two of three nodes down, want 1:\n%s", code, tail(log))
		}
		must(t, c.Restart(context.Background(), 2))
		must(t, c.Restart(context.Background(), 3))
		waitLeaders(t, brokers, topic)
		checkTopic(t, brokers, topic, file, log)
	})
}

// busiestLeader returns the node that leads the most partitions of topic.
func busiestLeader(t *testing.T, brokers, topic string) int {
	t.Helper()
	td, err := newAdmin(t, brokers).ListTopics(context.Background(), topic)
	if err != nil {
		t.Fatal(err)
	}
	led := map[int32]int{}
	for _, p := range td[topic].Partitions {
		led[p.Leader]++
	}
	best := int32(-1)
	for id, n := range led {
		if best < 0 || n > led[best] {
			best = id
		}
	}
	if led[best] < 2 {
		t.Fatalf("no node leads several partitions: %v", led)
	}
	return int(best)
}

// waitLeaders waits until every partition of topic has a leader again.
func waitLeaders(t *testing.T, brokers, topic string) {
	t.Helper()
	adm := newAdmin(t, brokers)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(300 * time.Millisecond) {
		td, err := adm.ListTopics(context.Background(), topic)
		ok := err == nil && len(td[topic].Partitions) > 0
		if ok {
			for _, p := range td[topic].Partitions {
				ok = ok && p.Leader >= 0 && p.Err == nil
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("topic %s has partitions without a leader: %v", topic, err)
		}
	}
}

// TestFaultNetworkBlackhole stops forwarding traffic between the producer
// and the broker for 20s without closing the connections, then heals: the
// run completes or fails with exact accounting, and does not hang (the
// producer is killed, failing the test, past its delivery timeout plus a
// margin).
func TestFaultNetworkBlackhole(t *testing.T) {
	const proxyPort, brokerPort = 23150, 23140
	hole := newBlackhole(t, proxyPort, fmt.Sprintf("127.0.0.1:%d", brokerPort))
	c := startKafka(t, 1, brokerPort, kafkatest.AdvertisedPort(func(int) int { return proxyPort }))
	file := generate(t, 3_000_000, 25)
	topic := uniqueTopic("fault-blackhole")
	log, code := produceFor(t, 3*time.Minute, c.Bootstrap(), topic, file, func(*exec.Cmd) {
		hole.Hold()
		time.AfterFunc(20*time.Second, hole.Heal)
	}, "--partitions", "6", "--delivery-timeout", "30s")
	if code != 0 && code != 1 {
		t.Fatalf("exit %d, want 0 or 1:\n%s", code, tail(log))
	}
	d, f := checkTopic(t, c.Bootstrap(), topic, file, log)
	t.Logf("exit %d: %d delivered, %d failed", code, d, f)
}

// TestFaultSIGTERM stops a run midway on a healthy broker: exit 143 within
// the shutdown timeout, and the topic holds exactly the delivered count.
func TestFaultSIGTERM(t *testing.T) {
	c := startKafka(t, 1, 23152)
	file := generate(t, 3_000_000, 26)
	topic := uniqueTopic("fault-sigterm")
	var signaled time.Time
	log, code := produceFor(t, 2*time.Minute, c.Bootstrap(), topic, file, func(cmd *exec.Cmd) {
		signaled = time.Now()
		cmd.Process.Signal(syscall.SIGTERM)
	}, "--partitions", "6", "--shutdown-timeout", "10s")
	took := time.Since(signaled)
	if code != 143 {
		t.Fatalf("exit %d, want 143:\n%s", code, tail(log))
	}
	s := summary(t, log)
	delivered, failed := int64(s["delivered"].(float64)), int64(s["failed"].(float64))
	if s["codes"].(float64) >= 3_000_000 {
		t.Fatalf("summary %v: the run was not stopped midway", s)
	}
	n := topicCount(t, c.Bootstrap(), topic)
	if failed == 0 && n != delivered {
		t.Fatalf("topic holds %d records, the summary says all %d codes delivered", n, delivered)
	}
	checkTopic(t, c.Bootstrap(), topic, file, log)
	t.Logf("stopped %s after SIGTERM: %d delivered, %d failed", took.Round(time.Millisecond), delivered, failed)
}
