package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/couponpipeline/coupon-producer/hack/e2e/cluster"
)

// What a cluster does to a running Job, on the real node, with the chart's
// podFailurePolicy and the run ledger against the real broker: a drain
// evicts the pod, a user deletes it, a deadline stops a run whose broker no
// longer answers. Each run is slowed by its own settings (one partition,
// 1 KiB batches, at most 64 KiB in flight, a checkpoint every second) so
// that the fault lands mid-run whatever the machine's speed, and the flush
// after SIGTERM has little to deliver.
func TestDisruptions(t *testing.T) {
	c, cs, brokers := needNode(t)
	const ns, rel = "disrupt", "dis"
	data := generate(t, 1000000, "1,2")
	small := generate(t, 300000, "3")
	if out, err := exec.Command("cp", small+"/couponbase3.gz", data+"/").CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	run := fmt.Sprintf("e2e%d", time.Now().UnixNano())
	topic := func(file string) string { return run + "-" + file }
	slow := `
    extraEnv:
      - {name: KAFKA_PARTITIONS, value: "1"}
      - {name: KAFKA_BATCH_MAX_BYTES, value: "1024"}
      - {name: KAFKA_MAX_BUFFERED_BYTES, value: "65536"}`
	installChart(t, c, ns, rel, data, fmt.Sprintf(`
producer:
  replicationFactor: 1
  progressInterval: 1s
  extraConfig:
    checkpoint-interval: 1s
jobs:
  couponbase1:
    file: couponbase1.gz
    schedule: "0 3 1 1 *"
    suspend: true
    topic: %s%s
  couponbase2:
    file: couponbase2.gz
    schedule: "0 3 1 1 *"
    suspend: true
    topic: %s%s
  couponbase3:
    file: couponbase3.gz
    schedule: "0 3 1 1 *"
    suspend: true
    topic: %s
    activeDeadlineSeconds: 40%s
`, topic("couponbase1.gz"), slow, topic("couponbase2.gz"), slow, topic("couponbase3.gz"), slow))
	pods := trackPods(t, cs, ns)
	logs := collectLogs(t, cs, ns)
	cronJob := func(file string) string { return rel + "-coupon-producer-" + strings.TrimSuffix(file, ".gz") }

	// startMidRun creates a Job from the file's CronJob and returns its pod
	// once the ledger holds a checkpoint of its run, with that checkpoint.
	startMidRun := func(t *testing.T, file, job string) (corev1.Pod, int64) {
		t.Helper()
		kubectl(t, c, "-n", ns, "create", "job", "--from=cronjob/"+cronJob(file), job)
		pod := runningPod(t, cs, ns, job, 1, 90*time.Second)
		var checkpoint int64
		eventually(t, 90*time.Second, "a checkpoint of "+job+"'s run in the ledger", func() (bool, error) {
			checkpoint = ledgerCheckpoint(t, brokers, topic(file))
			return checkpoint > 0, nil
		})
		return pod, checkpoint
	}
	// exactly checks that the topic holds every code of the file once.
	exactly := func(t *testing.T, file string) {
		t.Helper()
		want := fileCodes(t, readFile(t, data+"/"+file))
		if d := multisetDiff(want, topicCodes(t, brokers, topic(file))); d != "" {
			t.Fatalf("topic %s does not hold the file's codes exactly once: %s", topic(file), d)
		}
	}
	// resumedAt checks that the retry's summary skipped exactly the codes
	// the interrupted run's final record says were acknowledged.
	resumedAt := func(t *testing.T, file string, first, retry corev1.Pod) int64 {
		t.Helper()
		recs := ledgerRecords(t, brokers, topic(file))
		final := finalRecord(recs, runOf(t, recs, first.Name))
		if final == nil || final.Status != "interrupted" || final.Checkpoint == nil || final.Checkpoint.Codes == 0 {
			t.Fatalf("the first run's final record is %+v, want interrupted with a checkpoint: %+v", final, recs)
		}
		out, err := logs.Logs(retry.Name, "producer")
		if err != nil {
			t.Fatal(err)
		}
		if skipped := int64(summaryOf(t, out)["already_delivered"].(float64)); skipped != final.Checkpoint.Codes {
			t.Errorf("the retry skipped %d codes as already delivered; the interrupted run's final checkpoint is %d", skipped, final.Checkpoint.Codes)
		}
		return final.Checkpoint.Codes
	}

	t.Run("a drain evicts the pod, which flushes, and the retry after uncordon sends no code twice", func(t *testing.T) {
		const job = "drained"
		first, checkpoint := startMidRun(t, "couponbase1.gz", job)
		t.Cleanup(func() { kubectlRun(c, "uncordon", cluster.NodeName) })
		// kubectl drain cordons the node, evicts the pod through the
		// eviction API (which puts the DisruptionTarget condition on it) and
		// waits until the pod is gone.
		start := time.Now()
		kubectl(t, c, "drain", cluster.NodeName, "--ignore-daemonsets", "--delete-emptydir-data",
			"--pod-selector=batch.kubernetes.io/job-name="+job, "--timeout=120s")
		p := pods.waitGone(t, first.Name, 60*time.Second)
		term, dt := terminated(p), condition(p, corev1.DisruptionTarget)
		if term == nil || term.ExitCode != 143 || dt == nil || dt.Status != corev1.ConditionTrue {
			t.Fatalf("the drained pod: want exit 143 (SIGTERM) and DisruptionTarget True;%s conditions %+v", describePods([]corev1.Pod{*p}), p.Status.Conditions)
		}
		t.Logf("drained after checkpoint %d: exit %d in %s, DisruptionTarget %s (%s)", checkpoint, term.ExitCode, time.Since(start).Round(time.Second), dt.Reason, dt.Message)
		// The node is cordoned: the Job's replacement pod waits unscheduled,
		// and the evicted pod was not counted against backoffLimit.
		var second corev1.Pod
		eventually(t, 60*time.Second, "the replacement pod pending on the cordoned node", func() (bool, error) {
			ps := jobPods(t, cs, ns, job)
			if len(ps) != 1 || ps[0].Name == first.Name {
				return false, nil
			}
			second = ps[0]
			sched := condition(&second, corev1.PodScheduled)
			return sched != nil && sched.Status == corev1.ConditionFalse && sched.Reason == corev1.PodReasonUnschedulable, nil
		})
		if j, err := cs.BatchV1().Jobs(ns).Get(context.Background(), job, metav1.GetOptions{}); err != nil || j.Status.Failed != 0 {
			t.Fatalf("job %s after the drain: %+v, %v; want no failure counted", job, j.Status, err)
		}
		kubectl(t, c, "uncordon", cluster.NodeName)
		j := waitJob(t, cs, ns, job, 180*time.Second)
		if cond := jobFinished(j); cond.Type != batchv1.JobComplete || j.Status.Failed != 0 || j.Status.Succeeded != 1 {
			t.Fatalf("job %s: %s (%s), %d failed, %d succeeded; want Complete with the drained pod not counted", job, cond.Type, cond.Message, j.Status.Failed, j.Status.Succeeded)
		}
		resumed := resumedAt(t, "couponbase1.gz", first, second)
		exactly(t, "couponbase1.gz")
		t.Logf("the retry resumed after %d codes; every code of the file once in the topic", resumed)
	})

	t.Run("a deleted pod exits 143 within its grace period and the retry resumes", func(t *testing.T) {
		const job = "deleted"
		first, checkpoint := startMidRun(t, "couponbase2.gz", job)
		grace := *first.Spec.TerminationGracePeriodSeconds
		deleted := metav1.Now()
		kubectl(t, c, "-n", ns, "delete", "pod", first.Name, "--wait=false")
		p := pods.waitGone(t, first.Name, time.Duration(grace+30)*time.Second)
		term := terminated(p)
		if term == nil || term.ExitCode != 143 {
			t.Fatalf("the deleted pod: want exit 143 (SIGTERM handled);%s", describePods([]corev1.Pod{*p}))
		}
		// The kubelet's times have a resolution of a second.
		if took := term.FinishedAt.Sub(deleted.Time.Truncate(time.Second)); took > time.Duration(grace)*time.Second {
			t.Errorf("the pod ended %s after its deletion, past its grace period of %ds", took, grace)
		}
		t.Logf("deleted after checkpoint %d: exit %d at %s, within the grace period of %ds", checkpoint, term.ExitCode, term.FinishedAt.Sub(deleted.Time.Truncate(time.Second)), grace)
		j := waitJob(t, cs, ns, job, 180*time.Second)
		ps := jobPods(t, cs, ns, job)
		// A deleted pod has no DisruptionTarget: its exit 143 counts.
		if cond := jobFinished(j); cond.Type != batchv1.JobComplete || j.Status.Failed != 1 || j.Status.Succeeded != 1 || len(ps) != 1 {
			t.Fatalf("job %s: %s (%s), %d failed, %d succeeded; want Complete after one counted retry;%s", job, cond.Type, cond.Message, j.Status.Failed, j.Status.Succeeded, describePods(ps))
		}
		resumed := resumedAt(t, "couponbase2.gz", first, ps[0])
		exactly(t, "couponbase2.gz")
		t.Logf("the retry resumed after %d codes; every code of the file once in the topic", resumed)
	})

	t.Run("a run whose broker stops answering fails by its deadline and the next run starts after the lease", func(t *testing.T) {
		const job = "stalled"
		file := "couponbase3.gz"
		first, checkpoint := startMidRun(t, file, job)
		// The blackhole: inside the broker's network namespace, every
		// packet from the pod is dropped; the broker stops answering it
		// while the test still reaches it.
		first = *getPod(t, cs, ns, first.Name)
		rule := []string{"INPUT", "-s", first.Status.PodIP, "-p", "tcp", "--dport", "9092", "-j", "DROP"}
		iptables(t, append([]string{"-I"}, rule...)...)
		dropped := true
		undrop := func() {
			if dropped {
				iptables(t, append([]string{"-D"}, rule...)...)
				dropped = false
			}
		}
		t.Cleanup(undrop)
		j := waitJob(t, cs, ns, job, 180*time.Second)
		cond := jobFinished(j)
		if cond.Type != batchv1.JobFailed || cond.Reason != batchv1.JobReasonDeadlineExceeded {
			t.Fatalf("job %s: %s (%s: %s), want Failed by DeadlineExceeded;%s", job, cond.Type, cond.Reason, cond.Message, describePods(jobPods(t, cs, ns, job)))
		}
		p := pods.waitGone(t, first.Name, 60*time.Second)
		undrop()
		recs := ledgerRecords(t, brokers, topic(file))
		stalled := runOf(t, recs, first.Name)
		if f := finalRecord(recs, stalled); f != nil {
			t.Errorf("the blackholed run wrote a final record %+v: its broker was not unreachable", f)
		}
		t.Logf("blackholed after checkpoint %d; the Job failed with %s; the pod ended%s", checkpoint, cond.Reason, describePods([]corev1.Pod{*p}))
		// The next run: the stalled run never wrote a final record, its
		// lease (three checkpoint intervals) is long past, so the run does
		// not yield with exit 4 but resumes after its checkpoint.
		const next = "after-deadline"
		kubectl(t, c, "-n", ns, "create", "job", "--from=cronjob/"+cronJob(file), next)
		j = waitJob(t, cs, ns, next, 120*time.Second)
		ps := jobPods(t, cs, ns, next)
		if cond := jobFinished(j); cond.Type != batchv1.JobComplete || len(ps) != 1 {
			t.Fatalf("job %s: %s (%s);%s\n%s", next, cond.Type, cond.Message, describePods(ps), podLogs(cs, ps))
		}
		recs = ledgerRecords(t, brokers, topic(file))
		final := finalRecord(recs, runOf(t, recs, ps[0].Name))
		if final == nil || final.Status != "completed" || final.ResumedFrom != stalled || final.AlreadyDelivered < checkpoint {
			t.Fatalf("the next run's final record %+v: want completed, resumed from %s after at least %d codes", final, stalled, checkpoint)
		}
		// Every code is there; the only duplicates are codes the stalled
		// run had delivered after its last checkpoint.
		want := fileCodes(t, readFile(t, data+"/"+file))
		have := topicCodes(t, brokers, topic(file))
		for code, n := range want {
			if have[code] < n {
				t.Fatalf("code %s: %d in the topic, %d in the file", code, have[code], n)
			}
		}
		extra := total(have) - total(want)
		if published := total(want) - int(final.AlreadyDelivered); extra < 0 || extra >= published {
			t.Errorf("%d records for %d codes: %d duplicates, want fewer than the %d codes the next run published", total(have), total(want), extra, published)
		}
		t.Logf("the next run resumed after %d codes; %d duplicates of %d codes", final.AlreadyDelivered, extra, total(want))
	})
}

// iptables changes the filter table of the broker's network namespace,
// and only that.
func iptables(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", brokerNetns, "iptables", "-w"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("iptables %s in %s: %v\n%s", strings.Join(args, " "), brokerNetns, err, out)
	}
}

// kubectlRun runs kubectl for a cleanup, where a failure has no test to
// fail.
func kubectlRun(c *cluster.Cluster, args ...string) {
	_ = exec.Command(c.Bin("kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...).Run()
}

func getPod(t *testing.T, cs kubernetes.Interface, ns, name string) *corev1.Pod {
	t.Helper()
	p, err := cs.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}
