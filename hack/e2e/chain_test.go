package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// buildCoupongen builds the test data generator from the repository, once per
// test run; the pods never run a host binary, only the image.
func buildCoupongen(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		builtDir, buildErr = os.MkdirTemp("", "coupon-e2e-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-trimpath", "-o", builtDir+"/", "./cmd/coupongen")
		cmd.Dir = "../.."
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/coupongen: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(builtDir, "coupongen")
}

var (
	buildOnce sync.Once
	builtDir  string
	buildErr  error
)

// The whole chain with the real controllers: the chart installed with
// helm, one job's schedule every minute; the CronJob controller fires it, the
// Job controller makes the pod, the scheduler binds it, the kubelet runs the
// image built from the Dockerfile with the pod's config file, environment
// and data volume, and the producer publishes to the real broker. Then a
// corrupt file fails its Job at once through podFailurePolicy, and a pod
// killed mid-run is retried and its Job completes.
func TestWholeChain(t *testing.T) {
	c, cs, brokers := needNode(t)
	coupongen := buildCoupongen(t)
	ctx := context.Background()
	const ns = "chain"

	// The data volume: couponbase1.gz as generated, couponbase3.gz
	// corrupted in the middle, couponbase2.gz larger (1M codes), published
	// to one partition in 1 KiB batches (about 20,000 round trips, 10 s
	// here) so that its run lasts long enough to be killed after a
	// checkpoint, whatever the machine's speed.
	const lines = 100000
	data := t.TempDir()
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	gen := t.TempDir()
	if out, err := exec.Command(coupongen, "-dir", gen, "-lines", fmt.Sprint(lines), "-files", "1,2,3").CombinedOutput(); err != nil {
		t.Fatalf("coupongen: %v\n%s", err, out)
	}
	file1, err := os.ReadFile(filepath.Join(gen, "couponbase1.gz"))
	if err != nil {
		t.Fatal(err)
	}
	file2, err := os.ReadFile(filepath.Join(gen, "couponbase2.gz"))
	if err != nil {
		t.Fatal(err)
	}
	file3, err := os.ReadFile(filepath.Join(gen, "couponbase3.gz"))
	if err != nil {
		t.Fatal(err)
	}
	for i := len(file3) / 2; i < len(file3)/2+64; i++ {
		file3[i] = 0xff
	}
	if err := os.WriteFile(filepath.Join(data, "couponbase1.gz"), file1, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "couponbase3.gz"), file3, 0o644); err != nil {
		t.Fatal(err)
	}
	gen2 := t.TempDir()
	if out, err := exec.Command(coupongen, "-dir", gen2, "-lines", "1000000", "-files", "2").CombinedOutput(); err != nil {
		t.Fatalf("coupongen: %v\n%s", err, out)
	}
	file2, err = os.ReadFile(filepath.Join(gen2, "couponbase2.gz"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "couponbase2.gz"), file2, 0o644); err != nil {
		t.Fatal(err)
	}

	run := fmt.Sprintf("e2e%d", time.Now().UnixNano())
	topic := func(file string) string { return run + "-" + file }
	h := installChart(t, c, ns, "chain", data, fmt.Sprintf(`
producer:
  partitions: 3
  replicationFactor: 1
  progressInterval: 1s
  extraConfig:
    checkpoint-interval: 1s
jobs:
  couponbase1:
    file: couponbase1.gz
    schedule: "* * * * *"
    topic: %s
  couponbase2:
    file: couponbase2.gz
    schedule: "0 3 1 1 *"
    suspend: true
    topic: %s
    extraEnv:
      - name: KAFKA_PARTITIONS
        value: "1"
      - name: KAFKA_BATCH_MAX_BYTES
        value: "1024"
  couponbase3:
    file: couponbase3.gz
    schedule: "0 3 1 1 *"
    suspend: true
    topic: %s
`, topic("couponbase1.gz"), topic("couponbase2.gz"), topic("couponbase3.gz")))
	admin, err := kadm.NewOptClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()

	t.Run("the CronJob fires and its Job publishes every code", func(t *testing.T) {
		cj := "chain-coupon-producer-couponbase1"
		var job string
		eventually(t, 90*time.Second, "the every-minute CronJob to create a Job", func() (bool, error) {
			jobs, err := cs.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, err
			}
			for _, j := range jobs.Items {
				if len(j.OwnerReferences) == 1 && j.OwnerReferences[0].Name == cj {
					job = j.Name
					return true, nil
				}
			}
			return false, nil
		})
		// One run is what the counts below expect: no second one a minute
		// later.
		if _, err := cs.BatchV1().CronJobs(ns).Patch(ctx, cj, types.MergePatchType, []byte(`{"spec":{"suspend":true}}`), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		j := waitJob(t, cs, ns, job, 120*time.Second)
		pods := jobPods(t, cs, ns, job)
		if cond := jobFinished(j); cond.Type != batchv1.JobComplete || len(pods) != 1 {
			t.Fatalf("job %s: %s (%s), %d pods;%s\n%s", job, cond.Type, cond.Message, len(pods), describePods(pods), podLogs(cs, pods))
		}
		got, err := cs.BatchV1().CronJobs(ns).Get(ctx, cj, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.LastSuccessfulTime == nil {
			t.Error("the CronJob has no lastSuccessfulTime after its Job completed")
		}
		want := fileCodes(t, file1)
		have := topicCodes(t, brokers, topic("couponbase1.gz"))
		if d := multisetDiff(want, have); d != "" {
			t.Fatalf("topic %s does not hold the file's codes exactly once: %s", topic("couponbase1.gz"), d)
		}
		t.Logf("%d codes of couponbase1.gz in the topic, each as often as in the file", total(have))
	})

	t.Run("a corrupt file fails the Job at once with exit code 3", func(t *testing.T) {
		kubectl(t, c, "-n", ns, "create", "job", "--from=cronjob/chain-coupon-producer-couponbase3", "corrupt")
		j := waitJob(t, cs, ns, "corrupt", 120*time.Second)
		pods := jobPods(t, cs, ns, "corrupt")
		cond := jobFinished(j)
		if cond.Type != batchv1.JobFailed || cond.Reason != batchv1.JobReasonPodFailurePolicy || len(pods) != 1 {
			t.Fatalf("job corrupt: %s (%s: %s), %d pods, want Failed by PodFailurePolicy with one pod;%s\n%s",
				cond.Type, cond.Reason, cond.Message, len(pods), describePods(pods), podLogs(cs, pods))
		}
		if term := pods[0].Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 3 {
			t.Fatalf("the producer did not exit 3;%s\n%s", describePods(pods), podLogs(cs, pods))
		}
		if logs := podLogs(cs, pods); !strings.Contains(logs, "couponbase3.gz") {
			t.Errorf("the producer's output does not name the file:\n%s", logs)
		}
	})

	t.Run("a pod killed mid-run is retried and the retry resumes", func(t *testing.T) {
		// The first pod is killed once the run ledger holds a checkpoint of
		// its run (the chart's config checkpoints every second): the Job
		// controller retries, and the retry, finding the killed run's lease
		// expired, publishes only the codes after that checkpoint.
		kubectl(t, c, "-n", ns, "create", "job", "--from=cronjob/chain-coupon-producer-couponbase2", "killed")
		var checkpoint int64
		eventually(t, 120*time.Second, "a checkpoint of the first pod's run in the ledger", func() (bool, error) {
			checkpoint = ledgerCheckpoint(t, brokers, topic("couponbase2.gz"))
			return checkpoint > 0, nil
		})
		first := jobPods(t, cs, ns, "killed")
		if len(first) != 1 || first[0].Status.Phase != corev1.PodRunning {
			t.Fatalf("want one running pod at the checkpoint;%s\n%s", describePods(first), podLogs(cs, first))
		}
		killContainer(t, cs, ns, first[0].Name)
		j := waitJob(t, cs, ns, "killed", 180*time.Second)
		pods := jobPods(t, cs, ns, "killed")
		cond := jobFinished(j)
		if cond.Type != batchv1.JobComplete || len(pods) != 2 || j.Status.Failed != 1 || j.Status.Succeeded != 1 {
			t.Fatalf("job killed: %s (%s), %d pods, %d failed, %d succeeded; want Complete after one counted retry;%s\n%s",
				cond.Type, cond.Message, len(pods), j.Status.Failed, j.Status.Succeeded, describePods(pods), podLogs(cs, pods))
		}
		sort.Slice(pods, func(a, b int) bool { return pods[a].CreationTimestamp.Before(&pods[b].CreationTimestamp) })
		if term := pods[0].Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != 137 {
			t.Errorf("the killed pod did not end with 137;%s", describePods(pods))
		}
		logs, err := containerLogs(cs, ns, pods[1].Name, "producer")
		if err != nil {
			t.Fatal(err)
		}
		retry := summaryOf(t, logs)
		resumed := int64(retry["already_delivered"].(float64))
		if resumed < checkpoint {
			t.Errorf("the retry skipped %d codes as already delivered; the ledger had a checkpoint of %d", resumed, checkpoint)
		}
		// Every code is there; the only duplicates are codes the killed run
		// delivered after its last checkpoint, so fewer than the codes the
		// retry published itself.
		want := fileCodes(t, file2)
		have := topicCodes(t, brokers, topic("couponbase2.gz"))
		for code, n := range want {
			if have[code] < n {
				t.Fatalf("code %s: %d in the topic, %d in the file", code, have[code], n)
			}
		}
		extra := total(have) - total(want)
		if published := total(want) - int(resumed); extra < 0 || extra >= published {
			t.Errorf("%d records for %d codes: %d duplicates, want fewer than the %d codes the retry published", total(have), total(want), extra, published)
		}
		t.Logf("checkpoint %d, retry skipped %d, %d duplicates of %d codes", checkpoint, resumed, extra, total(want))
	})

	h.must("uninstall", "chain", "-n", ns, "--wait", "--timeout", "60s")
}

// fileCodes counts each code of a generated file (one code per line).
func fileCodes(t *testing.T, gz []byte) map[string]int {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	sc := bufio.NewScanner(zr)
	for sc.Scan() {
		if code := strings.TrimSpace(sc.Text()); code != "" {
			out[code]++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// freshAdmin returns an admin client without cached metadata: a client
// that asked for a topic before a run created it would still see it
// missing for a while.
func freshAdmin(t *testing.T, brokers []string) *kadm.Client {
	t.Helper()
	admin, err := kadm.NewOptClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	return admin
}

// topicRecords returns the number of records in the topic, 0 before it
// exists.
func topicRecords(t *testing.T, admin *kadm.Client, topic string) int64 {
	t.Helper()
	ends, err := admin.ListEndOffsets(context.Background(), topic)
	if err != nil {
		return 0
	}
	var n int64
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			n += o.Offset
		}
	})
	return n
}

// topicCodes reads the whole topic and counts each record value.
func topicCodes(t *testing.T, brokers []string, topic string) map[string]int {
	t.Helper()
	return topicCodesFrom(t, brokers, topic, nil)
}

// topicCodesFrom counts each record value of the topic from the offsets in
// from (a partition not in it from its start) to its end.
func topicCodesFrom(t *testing.T, brokers []string, topic string, from map[int32]int64) map[string]int {
	t.Helper()
	out := map[string]int{}
	eachRecord(t, brokers, topic, from, func(r *kgo.Record) { out[string(r.Value)]++ })
	return out
}

// ledgerCheckpoint returns the highest count of acknowledged codes that a
// checkpoint of the run ledger (the producer's default ledger topic) holds
// for topic, 0 when there is none yet.
func ledgerCheckpoint(t *testing.T, brokers []string, topic string) int64 {
	t.Helper()
	const ledgerTopic = "coupon-producer.runs"
	topics, err := freshAdmin(t, brokers).ListTopics(context.Background(), ledgerTopic)
	if err != nil || !topics.Has(ledgerTopic) {
		return 0
	}
	var best int64
	eachRecord(t, brokers, ledgerTopic, nil, func(r *kgo.Record) {
		if string(r.Key) != topic {
			return
		}
		var rec struct {
			Status     string `json:"status"`
			Checkpoint *struct {
				Codes int64 `json:"codes"`
			} `json:"checkpoint"`
		}
		if err := json.Unmarshal(r.Value, &rec); err != nil {
			t.Fatalf("ledger record %s: %v", r.Value, err)
		}
		if rec.Status == "checkpoint" && rec.Checkpoint != nil {
			best = max(best, rec.Checkpoint.Codes)
		}
	})
	return best
}

// eachRecord calls fn for every record of topic from the offsets in from (a
// partition not in it from its start) up to its end offsets. It asks a
// fresh admin client for them: a long-lived one may still hold a topic that
// a run created since as unknown.
func eachRecord(t *testing.T, brokers []string, topic string, from map[int32]int64, fn func(*kgo.Record)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ends, err := freshAdmin(t, brokers).ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	remaining := map[int32]int64{}
	start := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err != nil {
			t.Fatalf("end offset of %s/%d: %v", topic, o.Partition, o.Err)
		}
		if o.Offset > from[o.Partition] {
			remaining[o.Partition] = o.Offset
			start[o.Partition] = kgo.NewOffset().At(from[o.Partition])
		}
	})
	if len(remaining) == 0 {
		return
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for len(remaining) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("read %s: %v (partitions left: %v)", topic, err, remaining)
		}
		fs.EachError(func(_ string, p int32, err error) { t.Fatalf("read %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			fn(r)
			if end, ok := remaining[r.Partition]; ok && r.Offset+1 >= end {
				delete(remaining, r.Partition)
			}
		})
	}
}

// multisetDiff describes how two multisets differ, "" when they are equal.
func multisetDiff(want, have map[string]int) string {
	var diffs []string
	for code, n := range want {
		if have[code] != n {
			diffs = append(diffs, fmt.Sprintf("%s: %d in the topic, %d in the file", code, have[code], n))
		}
	}
	for code, n := range have {
		if _, ok := want[code]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: %d in the topic, not in the file", code, n))
		}
	}
	if len(diffs) == 0 {
		return ""
	}
	sort.Strings(diffs)
	if len(diffs) > 5 {
		diffs = append(diffs[:5], fmt.Sprintf("... %d more", len(diffs)-5))
	}
	return fmt.Sprintf("%d records for %d codes; %s", total(have), total(want), strings.Join(diffs, "; "))
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// summaryOf returns the fields of the producer's summary line ("file done")
// in its JSON log.
func summaryOf(t *testing.T, log string) map[string]any {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "file done" {
			return m
		}
	}
	t.Fatalf("no summary line in the producer's log:\n%s", log)
	return nil
}
