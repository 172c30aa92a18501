package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/twmb/franz-go/pkg/kgo"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/couponpipeline/coupon-producer/hack/e2e/cluster"
)

// This file holds what the fault and resource tests share: the chart
// installed over a data folder, the last state of pods that are gone, a
// container's cgroup read while it runs, the topic compared with the file
// in constant memory, the run ledger's records and a Pushgateway.

// installChart installs the chart as release rel in namespace ns, which it
// creates (restricted Pod Security, deleted after the test), with the
// image, the test broker and a read-only data volume over the host folder
// data; values adds the producer, jobs and other sections (YAML, none of
// image, kafka or data).
func installChart(t *testing.T, c *cluster.Cluster, ns, rel, data, values string) *helmCLI {
	t.Helper()
	chartVolume(t, c, ns, rel, data, corev1.ReadOnlyMany)
	h := newHelm(t, c)
	h.must("install", rel, chartDir, "-n", ns, "-f", valuesFile(t, ns, values))
	return h
}

// upgradeChart upgrades the release of installChart to the values given,
// in place of those it had.
func upgradeChart(t *testing.T, h *helmCLI, ns, rel, values string) {
	t.Helper()
	h.must("upgrade", rel, chartDir, "-n", ns, "-f", valuesFile(t, ns, values))
}

// valuesFile writes the values of installChart and returns the file.
func valuesFile(t *testing.T, ns, values string) string {
	t.Helper()
	file := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf(`
image:
  repository: %s
  tag: %s
  pullPolicy: Never
kafka:
  brokers: [%s]
data:
  persistence:
    storageClass: e2e-%s
    accessModes: [ReadOnlyMany]
    size: 1Gi
%s`, producerRepo, producerTag, strings.Join(kafkaBrokers(t), ", "), ns, values)), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// generate writes the coupongen files named by files ("1,2") with lines
// lines each into a folder the pods may read, and returns it.
func generate(t *testing.T, lines int, files string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(buildCoupongen(t), "-dir", dir, "-lines", strconv.Itoa(lines), "-files", files).CombinedOutput(); err != nil {
		t.Fatalf("coupongen: %v\n%s", err, out)
	}
	return dir
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// podTracker keeps the last state the API server showed of every pod of a
// namespace, deleted pods included: the exit code and conditions of a pod
// that was drained, deleted or stopped by a deadline outlive it only here.
type podTracker struct {
	mu   sync.Mutex
	pods map[string]*corev1.Pod
	gone map[string]bool
}

func trackPods(t *testing.T, cs kubernetes.Interface, ns string) *podTracker {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	pt := &podTracker{pods: map[string]*corev1.Pod{}, gone: map[string]bool{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			pt.mu.Lock()
			pt.pods[p.Name] = p
			if ev.Type == watch.Deleted {
				pt.gone[p.Name] = true
			}
			pt.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); w.Stop(); <-done })
	return pt
}

// last returns the pod as last seen, nil if never.
func (pt *podTracker) last(name string) *corev1.Pod {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return pt.pods[name]
}

// waitGone waits until the pod is deleted and returns its last state.
func (pt *podTracker) waitGone(t *testing.T, name string, timeout time.Duration) *corev1.Pod {
	t.Helper()
	eventually(t, timeout, "pod "+name+" gone", func() (bool, error) {
		pt.mu.Lock()
		defer pt.mu.Unlock()
		return pt.gone[name], nil
	})
	return pt.last(name)
}

// terminated is the pod's producer container's final state, nil while it
// has none.
func terminated(p *corev1.Pod) *corev1.ContainerStateTerminated {
	if p == nil {
		return nil
	}
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == "producer" {
			return s.State.Terminated
		}
	}
	return nil
}

// condition returns the pod's condition of type typ, nil if it has none.
func condition(p *corev1.Pod, typ corev1.PodConditionType) *corev1.PodCondition {
	for i, c := range p.Status.Conditions {
		if c.Type == typ {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}

// runningPod waits for the n-th pod (from 1, oldest first) of the Job to run.
func runningPod(t *testing.T, cs kubernetes.Interface, ns, job string, n int, timeout time.Duration) corev1.Pod {
	t.Helper()
	var pod corev1.Pod
	eventually(t, timeout, fmt.Sprintf("pod %d of job %s running", n, job), func() (bool, error) {
		pods := jobPods(t, cs, ns, job)
		if len(pods) < n {
			return false, nil
		}
		pod = pods[n-1]
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			return false, fmt.Errorf("pod %s ended before it was seen running;%s", pod.Name, describePods(pods))
		}
		return pod.Status.Phase == corev1.PodRunning, nil
	})
	return pod
}

// usage is what a container's cgroups (v1) said while it ran, read every
// 100 ms until they were removed: the kernel's peak of the memory charged
// (memory.max_usage_in_bytes: anonymous memory and the page cache of the
// file it read, which the kernel reclaims before it would OOM-kill), the
// peak of the anonymous memory among the samples (memory.stat rss, what
// the process itself holds), and the CPU time used (cpuacct.usage) at the
// last sample, up to 100 ms before the end.
type usage struct {
	MaxUsage, PeakRSS, Limit int64
	CPU                      time.Duration
	Samples                  int
}

func (u usage) String() string {
	return fmt.Sprintf("peak charged %.1f MiB (memory.max_usage_in_bytes, page cache included), peak rss %.1f MiB, limit %.0f MiB, cpu %.2fs, %d samples",
		mib(u.MaxUsage), mib(u.PeakRSS), mib(u.Limit), u.CPU.Seconds(), u.Samples)
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// sampleUsage starts reading the cgroups of the running pod's producer
// container; the returned function waits until they are gone (the
// container has exited) and returns what was read.
func sampleUsage(t *testing.T, cs kubernetes.Interface, ns, pod string) func() usage {
	t.Helper()
	pid := containerPID(t, cs, ns, pod)
	mem, cpu := cgroupDirs(t, pid)
	var u usage
	u.Limit = readInt(filepath.Join(mem, "memory.limit_in_bytes"))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			peak := readInt(filepath.Join(mem, "memory.max_usage_in_bytes"))
			stat, err := os.ReadFile(filepath.Join(mem, "memory.stat"))
			used := readInt(filepath.Join(cpu, "cpuacct.usage"))
			if peak < 0 || err != nil || used < 0 {
				return
			}
			u.MaxUsage, u.CPU = peak, time.Duration(used)
			for _, line := range strings.Split(string(stat), "\n") {
				if v, ok := strings.CutPrefix(line, "rss "); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					u.PeakRSS = max(u.PeakRSS, n)
				}
			}
			u.Samples++
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return func() usage {
		select {
		case <-done:
		case <-time.After(30 * time.Minute):
			t.Fatalf("the cgroups of %s/%s were never removed", ns, pod)
		}
		return u
	}
}

// cgroupDirs returns the memory and cpuacct cgroup folders of process pid.
func cgroupDirs(t *testing.T, pid int) (mem, cpu string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		for _, ctl := range strings.Split(f[1], ",") {
			switch ctl {
			case "memory":
				mem = filepath.Join("/sys/fs/cgroup/memory", f[2])
			case "cpuacct":
				cpu = filepath.Join("/sys/fs/cgroup/cpuacct", f[2])
			}
		}
	}
	if mem == "" || cpu == "" {
		t.Fatalf("process %d has no memory or cpuacct cgroup (v1):\n%s", pid, b)
	}
	return mem, cpu
}

// readInt reads a cgroup file holding one number, -1 once it is gone.
func readInt(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return -1
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// codeSet is a multiset of codes in constant space: how many, and the sums
// of two independent 64-bit hashes of each. Two multisets with the same
// count and sums are equal but with a chance of about 2^-128, so a topic of
// 100 million records is compared with its file without holding either.
type codeSet struct {
	N    int64
	A, B uint64
}

var codeSeeds = [2]maphash.Seed{maphash.MakeSeed(), maphash.MakeSeed()}

func (s *codeSet) add(code []byte) {
	s.N++
	s.A += maphash.Bytes(codeSeeds[0], code)
	s.B += maphash.Bytes(codeSeeds[1], code)
}

// fileCodeSet reads a generated gzip file (one code per line).
func fileCodeSet(t *testing.T, path string) codeSet {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	var s codeSet
	sc := bufio.NewScanner(zr)
	for sc.Scan() {
		if code := bytes.TrimSpace(sc.Bytes()); len(code) > 0 {
			s.add(code)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return s
}

// topicCodeSet reads every record of the topic up to its end offsets, with
// large fetches and no deadline short of timeout.
func topicCodeSet(t *testing.T, brokers []string, topic string, timeout time.Duration) codeSet {
	t.Helper()
	ends := endOffsets(t, brokers, topic)
	remaining := map[int32]int64{}
	start := map[int32]kgo.Offset{}
	for p, end := range ends {
		if end > 0 {
			remaining[p], start[p] = end, kgo.NewOffset().AtStart()
		}
	}
	var s codeSet
	if len(remaining) == 0 {
		return s
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}),
		kgo.FetchMaxBytes(64<<20), kgo.FetchMaxPartitionBytes(16<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for len(remaining) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %s: %v after %d records (partitions left: %v)", topic, err, s.N, remaining)
		}
		fs.EachError(func(_ string, p int32, err error) { t.Fatalf("read %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			if end, ok := remaining[r.Partition]; ok {
				s.add(r.Value)
				if r.Offset+1 >= end {
					delete(remaining, r.Partition)
				}
			}
		})
	}
	return s
}

// ledgerRecord is a record of the run ledger, the fields the tests read.
type ledgerRecord struct {
	Status      string `json:"status"`
	RunID       string `json:"run_id"`
	Pod         string `json:"pod"`
	Reason      string `json:"reason"`
	ResumedFrom string `json:"resumed_from"`
	Checkpoint  *struct {
		Codes int64 `json:"codes"`
	} `json:"checkpoint"`
	AlreadyDelivered int64 `json:"already_delivered"`
	Delivered        int64 `json:"delivered"`
}

// ledgerRecords returns the records of the run ledger (the producer's
// default ledger topic) about topic, in their order.
func ledgerRecords(t *testing.T, brokers []string, topic string) []ledgerRecord {
	t.Helper()
	var out []ledgerRecord
	eachRecord(t, brokers, "coupon-producer.runs", nil, func(r *kgo.Record) {
		if string(r.Key) != topic {
			return
		}
		var rec ledgerRecord
		if err := json.Unmarshal(r.Value, &rec); err != nil {
			t.Fatalf("ledger record %s: %v", r.Value, err)
		}
		out = append(out, rec)
	})
	return out
}

// finalRecord returns the run's final record (completed, failed or
// interrupted), nil if it has none.
func finalRecord(recs []ledgerRecord, run string) *ledgerRecord {
	for i := len(recs) - 1; i >= 0; i-- {
		switch r := recs[i]; {
		case r.RunID != run:
		case r.Status == "completed" || r.Status == "failed" || r.Status == "interrupted":
			return &recs[i]
		}
	}
	return nil
}

// runOf returns the ID of the run that the pod made, from the ledger.
func runOf(t *testing.T, recs []ledgerRecord, pod string) string {
	t.Helper()
	for _, r := range recs {
		if r.Pod == pod && r.Status == "started" {
			return r.RunID
		}
	}
	t.Fatalf("no run of pod %s in the ledger: %+v", pod, recs)
	return ""
}

// pushgateway stands in for a Prometheus Pushgateway on the node's bridge,
// where pods reach the host: it keeps the metric families of every push,
// by URL path (/metrics/job/coupon_producer/file/<file>).
type pushgateway struct {
	URL    string
	mu     sync.Mutex
	pushes map[string][]map[string]float64
}

func startPushgateway(t *testing.T) *pushgateway {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(node.Network.HostIP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	pg := &pushgateway{URL: "http://" + ln.Addr().String(), pushes: map[string][]map[string]float64{}}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := map[string]float64{}
		dec := expfmt.NewDecoder(r.Body, expfmt.ResponseFormat(r.Header))
		for {
			var mf dto.MetricFamily
			if err := dec.Decode(&mf); err != nil {
				break
			}
			for _, m := range mf.GetMetric() {
				got[mf.GetName()] = m.GetGauge().GetValue()
			}
		}
		pg.mu.Lock()
		pg.pushes[r.Method+" "+r.URL.Path] = append(pg.pushes[r.Method+" "+r.URL.Path], got)
		pg.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return pg
}

// of returns the pushes of the file's group, oldest first.
func (pg *pushgateway) of(file string) []map[string]float64 {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	return append([]map[string]float64(nil), pg.pushes["POST /metrics/job/coupon_producer/file/"+file]...)
}

// The comparison the large topics rely on tells multisets apart: another
// order is the same set, a code missing, replaced or repeated is not.
func TestCodeSet(t *testing.T) {
	of := func(codes ...string) codeSet {
		var s codeSet
		for _, c := range codes {
			s.add([]byte(c))
		}
		return s
	}
	base := of("AAAA1111", "BBBB2222", "CCCC3333")
	if of("CCCC3333", "AAAA1111", "BBBB2222") != base {
		t.Error("the same codes in another order compare unequal")
	}
	for name, other := range map[string]codeSet{
		"missing":  of("AAAA1111", "BBBB2222"),
		"replaced": of("AAAA1111", "BBBB2222", "CCCC3334"),
		"repeated": of("AAAA1111", "BBBB2222", "CCCC3333", "CCCC3333"),
		"doubled":  of("AAAA1111", "AAAA1111", "CCCC3333"),
	} {
		if other == base {
			t.Errorf("%s: compares equal", name)
		}
	}
}
