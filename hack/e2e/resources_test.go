package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// The chart's memory limit against what a run needs, on the real node: a
// limit below it gets the container OOM-killed and the Job retried as its
// Count rule says; the chart's default limits hold one run, three runs at
// once, and the full-size file. The memory and CPU figures come from the
// containers' own cgroups and are written to the test log.

// A memory limit of 20 MiB (the run needs about 30: the record batches
// buffered up to max-buffered-bytes, 16 MiB, and the Go runtime) set
// through the chart's values: each pod is OOM-killed, exit 137, reason
// OOMKilled; the Count rule retries it up to backoffLimit (1 here) and the
// Job fails with BackoffLimitExceeded. A killed pod pushes no metrics, so
// the Pushgateway keeps no success for the file, which the chart's
// staleness alert reports. The same job with the chart's default
// resources then completes, publishes every code and pushes its success.
func TestMemoryLimit(t *testing.T) {
	c, cs, brokers := needNode(t)
	const ns, rel = "oom", "oom"
	data := generate(t, 3000000, "1")
	pg := startPushgateway(t)
	topic := fmt.Sprintf("e2e%d-couponbase1.gz", time.Now().UnixNano())
	values := func(job string) string {
		return fmt.Sprintf(`
producer:
  replicationFactor: 1
  extraConfig:
    checkpoint-interval: 1s
metrics:
  pushgatewayUrl: %s
jobs:
  couponbase1:
    file: couponbase1.gz
    schedule: "0 3 1 1 *"
    suspend: true
    topic: %s%s
  couponbase2: null
  couponbase3: null
`, pg.URL, topic, job)
	}
	h := installChart(t, c, ns, rel, data, values(`
    backoffLimit: 1
    resources:
      requests: {cpu: 100m, memory: 20Mi}
      limits: {memory: 20Mi}`))
	pods := trackPods(t, cs, ns)
	const cronJob = rel + "-coupon-producer-couponbase1"

	kubectl(t, c, "-n", ns, "create", "job", "--from=cronjob/"+cronJob, "oom")
	j := waitJob(t, cs, ns, "oom", 180*time.Second)
	ps := jobPods(t, cs, ns, "oom")
	cond := jobFinished(j)
	if cond.Type != batchv1.JobFailed || cond.Reason != batchv1.JobReasonBackoffLimitExceeded || j.Status.Failed != 2 || len(ps) != 2 {
		t.Fatalf("job oom: %s (%s: %s), %d failed, %d pods; want Failed by BackoffLimitExceeded after 2 counted pods;%s\n%s",
			cond.Type, cond.Reason, cond.Message, j.Status.Failed, len(ps), describePods(ps), podLogs(cs, ps))
	}
	for _, p := range ps {
		if term := terminated(pods.last(p.Name)); term == nil || term.ExitCode != 137 || term.Reason != "OOMKilled" {
			t.Errorf("pod %s: want exit 137, reason OOMKilled;%s", p.Name, describePods([]corev1.Pod{p}))
		}
	}
	if got := pg.of("couponbase1.gz"); len(got) != 0 {
		t.Errorf("the OOM-killed pods pushed %v; a killed process cannot push", got)
	}
	before := topicRecords(t, freshAdmin(t, brokers), topic)
	var checkpoint int64
	for _, r := range ledgerRecords(t, brokers, topic) {
		if r.Checkpoint != nil {
			checkpoint = max(checkpoint, r.Checkpoint.Codes)
		}
	}
	t.Logf("job oom: %s (%s), %d pods OOM-killed; %d records in the topic, ledger checkpoint %d", cond.Type, cond.Reason, len(ps), before, checkpoint)

	upgradeChart(t, h, ns, rel, values(""))
	kubectl(t, c, "-n", ns, "create", "job", "--from=cronjob/"+cronJob, "defaults")
	pod := runningPod(t, cs, ns, "defaults", 1, 90*time.Second)
	if lim := pod.Spec.Containers[0].Resources.Limits[corev1.ResourceMemory]; lim.Cmp(resource.MustParse("64Mi")) < 0 {
		t.Fatalf("the upgraded job's memory limit is %s, not the chart's default", lim.String())
	}
	measured := sampleUsage(t, cs, ns, pod.Name)
	j = waitJob(t, cs, ns, "defaults", 180*time.Second)
	ps = jobPods(t, cs, ns, "defaults")
	u := measured()
	if cond := jobFinished(j); cond.Type != batchv1.JobComplete || len(ps) != 1 || j.Status.Failed != 0 {
		t.Fatalf("job defaults: %s (%s), %d failed;%s\n%s", cond.Type, cond.Message, j.Status.Failed, describePods(ps), podLogs(cs, ps))
	}
	if term := terminated(&ps[0]); term == nil || term.ExitCode != 0 || term.Reason == "OOMKilled" {
		t.Fatalf("job defaults' pod;%s", describePods(ps))
	}
	logs, err := containerLogs(cs, ns, ps[0].Name, "producer")
	if err != nil {
		t.Fatal(err)
	}
	summary := summaryOf(t, logs)
	skipped, delivered := int64(summary["already_delivered"].(float64)), int64(summary["delivered"].(float64))
	// The resumed run skips at least the checkpoint's leading codes, and
	// with its per-partition prefixes possibly more, but never more than
	// the killed runs put in the topic.
	if skipped < checkpoint || skipped > before {
		t.Errorf("the run with the default limits skipped %d codes as delivered; the OOM-killed runs' last checkpoint is %d and they left %d records", skipped, checkpoint, before)
	}
	// Every code is there, and the topic holds exactly the OOM-killed
	// runs' records and the codes this run delivered.
	want := fileCodes(t, readFile(t, filepath.Join(data, "couponbase1.gz")))
	have := topicCodes(t, brokers, topic)
	for code, n := range want {
		if have[code] < n {
			t.Fatalf("code %s: %d in the topic, %d in the file", code, have[code], n)
		}
	}
	if int64(total(have)) != before+delivered {
		t.Errorf("%d records in the topic: want the %d of the killed runs and the %d delivered since", total(have), before, delivered)
	}
	pushes := pg.of("couponbase1.gz")
	if len(pushes) != 1 || pushes[0]["coupon_producer_last_exit_code"] != 0 || pushes[0]["coupon_producer_last_success_timestamp_seconds"] == 0 ||
		int64(pushes[0]["coupon_producer_last_codes_delivered"]) != delivered {
		t.Errorf("pushes after the run with the default limits: %v; want one success with %d codes delivered", pushes, delivered)
	}
	t.Logf("with the chart's default resources: %d codes delivered after %d skipped; %s", delivered, skipped, u)
}

// The chart's three default CronJobs' Jobs at once on the one node, with
// the chart's default resources: each completes and its topic holds its
// file's codes exactly, and the three ran at the same time; each pod's peak memory, read from its cgroup, goes
// to the test log.
func TestThreeJobsAtOnce(t *testing.T) {
	c, cs, brokers := needNode(t)
	const ns, rel = "three", "three"
	data := generate(t, 10000000, "1,2,3")
	run := fmt.Sprintf("e2e%d", time.Now().UnixNano())
	var jobs strings.Builder
	for i := 1; i <= 3; i++ {
		fmt.Fprintf(&jobs, "  couponbase%d:\n    file: couponbase%d.gz\n    schedule: \"0 3 1 1 *\"\n    suspend: true\n    topic: %s-couponbase%d.gz\n", i, i, run, i)
	}
	installChart(t, c, ns, rel, data, "producer:\n  replicationFactor: 1\njobs:\n"+jobs.String())
	for i := 1; i <= 3; i++ {
		kubectl(t, c, "-n", ns, "create", "job", fmt.Sprintf("--from=cronjob/%s-coupon-producer-couponbase%d", rel, i), fmt.Sprintf("at-once-%d", i))
	}
	measured := make([]func() usage, 3)
	var lastStart, firstEnd time.Time
	for i := range measured {
		pod := runningPod(t, cs, ns, fmt.Sprintf("at-once-%d", i+1), 1, 90*time.Second)
		measured[i] = sampleUsage(t, cs, ns, pod.Name)
	}
	for i := range measured {
		job := fmt.Sprintf("at-once-%d", i+1)
		j := waitJob(t, cs, ns, job, 300*time.Second)
		ps := jobPods(t, cs, ns, job)
		u := measured[i]()
		if cond := jobFinished(j); cond.Type != batchv1.JobComplete || len(ps) != 1 {
			t.Fatalf("job %s: %s (%s);%s\n%s", job, cond.Type, cond.Message, describePods(ps), podLogs(cs, ps))
		}
		term := terminated(&ps[0])
		t.Logf("%s (couponbase%d.gz, 10M codes): %s in the container, from %s; %s", job, i+1, term.FinishedAt.Sub(term.StartedAt.Time), term.StartedAt.Format(time.TimeOnly), u)
		checkUnderLimit(t, job, u)
		if term.StartedAt.After(lastStart) {
			lastStart = term.StartedAt.Time
		}
		if firstEnd.IsZero() || term.FinishedAt.Time.Before(firstEnd) {
			firstEnd = term.FinishedAt.Time
		}
	}
	if !lastStart.Before(firstEnd) {
		t.Errorf("the three runs did not overlap: the last started at %s, the first ended at %s", lastStart.Format(time.TimeOnly), firstEnd.Format(time.TimeOnly))
	}
	for i := 1; i <= 3; i++ {
		file, topic := fmt.Sprintf("couponbase%d.gz", i), fmt.Sprintf("%s-couponbase%d.gz", run, i)
		if want, have := fileCodeSet(t, filepath.Join(data, file)), topicCodeSet(t, brokers, topic, 5*time.Minute); want != have {
			t.Errorf("topic %s: %d records, not the %d codes of %s (or not the same codes)", topic, have.N, want.N, file)
		}
	}
}

// checkUnderLimit fails the test unless what the process held stayed
// under half its memory limit. The charged peak is not judged: it counts
// the page cache of the file read, which the kernel reclaims at the limit.
func checkUnderLimit(t *testing.T, what string, u usage) {
	t.Helper()
	if u.Samples == 0 || u.Limit <= 0 || u.PeakRSS == 0 {
		t.Fatalf("%s: no usable cgroup sample (%s)", what, u)
	}
	if u.PeakRSS > u.Limit/2 {
		t.Errorf("%s: peak rss %.1f MiB, over half its limit of %.0f MiB", what, mib(u.PeakRSS), mib(u.Limit))
	}
}

// The full-size file, 100 million codes (about 650 MB compressed),
// published by the chart's pod with the chart's default resources: it
// completes within them, its topic holds every code of the file once, and
// the test log gets the pod's memory, wall time and CPU. The file is
// generated once and cached under $HOME/.cache/coupon-producer, keyed by
// the generator's source and parameters. -short skips it.
func TestFullSizeFile(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the full-size file takes minutes")
	}
	c, cs, brokers := needNode(t)
	const ns, rel, lines = "fullsize", "full", 100000000
	data := fullSizeFile(t, lines)
	topic := fmt.Sprintf("e2e%d-couponbase1.gz", time.Now().UnixNano())
	installChart(t, c, ns, rel, data, fmt.Sprintf(`
producer:
  replicationFactor: 1
jobs:
  couponbase1:
    file: couponbase1.gz
    schedule: "0 3 1 1 *"
    suspend: true
    topic: %s
  couponbase2: null
  couponbase3: null
`, topic))
	kubectl(t, c, "-n", ns, "create", "job", "--from=cronjob/"+rel+"-coupon-producer-couponbase1", "full")
	pod := runningPod(t, cs, ns, "full", 1, 90*time.Second)
	res := pod.Spec.Containers[0].Resources
	measured := sampleUsage(t, cs, ns, pod.Name)
	j := waitJob(t, cs, ns, "full", 20*time.Minute)
	ps := jobPods(t, cs, ns, "full")
	u := measured()
	if cond := jobFinished(j); cond.Type != batchv1.JobComplete || len(ps) != 1 {
		t.Fatalf("job full: %s (%s);%s\n%s", cond.Type, cond.Message, describePods(ps), podLogs(cs, ps))
	}
	term := terminated(&ps[0])
	logs, err := containerLogs(cs, ns, ps[0].Name, "producer")
	if err != nil {
		t.Fatal(err)
	}
	summary := summaryOf(t, logs)
	t.Logf("full-size file, %.0f codes, requests cpu %s memory %s, limits cpu %s memory %s: %s in the container (the run's own duration %.1fs, %.0f codes/s); %s",
		summary["codes"], res.Requests.Cpu(), res.Requests.Memory(), res.Limits.Cpu(), res.Limits.Memory(),
		term.FinishedAt.Sub(term.StartedAt.Time), summary["duration"], summary["codes_per_sec"], u)
	checkUnderLimit(t, "the full-size run", u)
	t0 := time.Now()
	want := fileCodeSet(t, filepath.Join(data, "couponbase1.gz"))
	have := topicCodeSet(t, brokers, topic, 15*time.Minute)
	if want != have || want.N != lines {
		t.Errorf("topic %s: %d records, the file %d codes (or not the same codes)", topic, have.N, want.N)
	}
	t.Logf("topic compared with the file in %s", time.Since(t0).Round(time.Second))
}

// fullSizeFile returns a folder holding couponbase1.gz with lines codes,
// generated by cmd/coupongen on first use and cached under
// $HOME/.cache/coupon-producer, keyed by the generator's source and
// parameters, so that a change to the generator makes a new file.
func fullSizeFile(t *testing.T, lines int) string {
	t.Helper()
	home, err := os.UserHomeDir()
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "coupongen -lines %d -files 1 -seed 1 -shared 1000\n", lines)
	for _, dir := range []string{"../../cmd/coupongen", "../../pkg/gen"} {
		srcs, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil || len(srcs) == 0 {
			t.Fatalf("the generator's source in %s: %v", dir, err)
		}
		for _, src := range srcs {
			if !strings.HasSuffix(src, "_test.go") {
				fmt.Fprintf(h, "%s\n%s\n", filepath.Base(src), readFile(t, src))
			}
		}
	}
	dir := filepath.Join(home, ".cache", "coupon-producer", "coupons-"+hex.EncodeToString(h.Sum(nil))[:16])
	if _, err := os.Stat(filepath.Join(dir, "couponbase1.gz")); err == nil {
		return dir
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if out, err := exec.Command(buildCoupongen(t), "-dir", tmp, "-lines", fmt.Sprint(lines), "-files", "1", "-seed", "1", "-shared", "1000").CombinedOutput(); err != nil {
		t.Fatalf("coupongen: %v\n%s", err, out)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		t.Fatal(err)
	}
	t.Logf("generated %s in %s", dir, time.Since(t0).Round(time.Second))
	return dir
}
