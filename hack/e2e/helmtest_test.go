package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// `helm test` on the real API server: the chart's test hook, one
// `coupon-producer --preflight` container per job with that job's
// environment and mounts, is admitted under restricted Pod Security, run on
// the real node from the image against the real broker and the data
// volume, and passes when every file is there and gzip. With one file not
// gzip and another missing, `helm test` fails, the containers of those two
// jobs exit 3 (bad input) and each one's log names its file; the third
// still passes. A variant that breaks restricted Pod Security has its hook
// pod refused, so the namespace really judges the hook pod.
func TestHelmTestPreflight(t *testing.T) {
	c, cs, brokers := needNode(t)
	ctx := context.Background()
	const ns, release = "preflight", "preflight"
	data := generate(t, 2000, "1,2,3")
	chartVolume(t, c, ns, release, data, corev1.ReadWriteMany)
	h := newHelm(t, c)
	// The CronJobs are suspended: only the hook runs here.
	h.installSuspended(release, ns, producerRepo, producerTag, brokers)
	hook := release + "-coupon-producer-preflight"

	t.Run("every file there and gzip: helm test passes", func(t *testing.T) {
		// Helm deletes the hook pod once it succeeded, and its logs with it:
		// they are followed from its start.
		lc := collectLogs(t, cs, ns)
		out, err := h.run("test", release, "-n", ns, "--timeout", "2m")
		if err != nil {
			t.Fatalf("helm test: %v\n%s\n%s", err, out, hookLogs(cs, ns, hook))
		}
		if !strings.Contains(out, "TEST SUITE:     "+hook) || !strings.Contains(out, "Phase:          Succeeded") {
			t.Errorf("helm test passed without reporting the hook %s as Succeeded:\n%s", hook, out)
		}
		for _, job := range []string{"couponbase1", "couponbase2", "couponbase3"} {
			logs, err := lc.Logs(hook, "preflight-"+job)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"preflight: file is readable gzip", "/data/" + job + ".gz", "preflight: topic can be written or created"} {
				if !strings.Contains(logs, want) {
					t.Errorf("preflight-%s: no %q in its log:\n%s", job, want, logs)
				}
			}
		}
	})

	t.Run("a file not gzip and a file missing: helm test fails and names them", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(data, "couponbase2.gz"), []byte("ABCD1234\nEFGH5678\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(data, "couponbase3.gz")); err != nil {
			t.Fatal(err)
		}
		out, err := h.run("test", release, "-n", ns, "--timeout", "2m")
		if err == nil {
			t.Fatalf("helm test passed with couponbase2.gz not gzip and couponbase3.gz missing:\n%s", out)
		}
		if !strings.Contains(out, "TEST SUITE:     "+hook) || !strings.Contains(out, "Phase:          Failed") {
			t.Errorf("helm test failed without naming the hook %s as failed:\n%s", hook, out)
		}
		// The failed hook pod stays (hook-delete-policy: hook-succeeded).
		pod, err := cs.CoreV1().Pods(ns).Get(ctx, hook, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the failed hook pod is gone: %v", err)
		}
		if pod.Status.Phase != corev1.PodFailed {
			t.Errorf("hook pod %s, want Failed;%s", pod.Status.Phase, describePods([]corev1.Pod{*pod}))
		}
		want := map[string]int32{"preflight-couponbase1": 0, "preflight-couponbase2": 3, "preflight-couponbase3": 3}
		for _, st := range pod.Status.ContainerStatuses {
			code, ok := want[st.Name]
			if !ok {
				t.Errorf("unexpected container %s", st.Name)
				continue
			}
			delete(want, st.Name)
			if st.State.Terminated == nil || st.State.Terminated.ExitCode != code {
				t.Errorf("container %s: want exit %d;%s", st.Name, code, describePods([]corev1.Pod{*pod}))
			}
		}
		if len(want) > 0 {
			t.Errorf("no status for containers %v", want)
		}
		for _, file := range []string{"couponbase2.gz", "couponbase3.gz"} {
			name := "preflight-" + strings.TrimSuffix(file, ".gz")
			logs, err := containerLogs(cs, ns, hook, name)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs, "/data/"+file) || !strings.Contains(logs, `"preflight: file"`) {
				t.Errorf("%s: the log does not name /data/%s as the failed file:\n%s", name, file, logs)
			}
			t.Logf("%s: %s", name, errorLine(logs))
		}
	})

	t.Run("a hook pod that breaks restricted Pod Security is refused", func(t *testing.T) {
		h.must("upgrade", release, chartDir, "-n", ns, "--reuse-values",
			"--set", "pod.containerSecurityContext.allowPrivilegeEscalation=true")
		out, err := h.run("test", release, "-n", ns, "--timeout", "1m")
		if err == nil {
			t.Fatalf("helm test passed with a hook pod that allows privilege escalation:\n%s", out)
		}
		if !strings.Contains(out, `violates PodSecurity "restricted:latest"`) || !strings.Contains(out, "allowPrivilegeEscalation") {
			t.Errorf("helm test failed, but not because Pod Security refused the hook pod:\n%s", out)
		}
	})

	h.must("uninstall", release, "-n", ns, "--wait", "--timeout", "60s")
}

// hookLogs is a failure message's account of the hook pod's containers.
func hookLogs(cs kubernetes.Interface, ns, pod string) string {
	var b strings.Builder
	for _, job := range []string{"couponbase1", "couponbase2", "couponbase3"} {
		logs, err := containerLogs(cs, ns, pod, "preflight-"+job)
		if err != nil {
			logs = err.Error()
		}
		fmt.Fprintf(&b, "--- preflight-%s:\n%s\n", job, logs)
	}
	return b.String()
}

// errorLine returns the first log line at level error.
func errorLine(logs string) string {
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, `"level":"error"`) {
			return l
		}
	}
	return ""
}
