package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/couponpipeline/coupon-producer/hack/e2e/cluster"
	"github.com/couponpipeline/coupon-producer/hack/e2e/kubelet"
)

// The control plane every test shares (each test works in namespaces of
// its own), or why there is none.
var (
	shared     *cluster.Cluster
	skipReason string
	probeBin   string
)

// probeImage is the image reference the harness tests' pods name; the test
// kubelet runs cmd/e2eprobe for it.
const probeImage = "e2eprobe:test"

func TestMain(m *testing.M) {
	kubelet.Init()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ci := os.Getenv("CI") == "true"
	unavailable := func(reason string) int {
		if ci {
			fmt.Fprintf(os.Stderr, "e2e: %s (CI=true: the end-to-end tests must run)\n", reason)
			return 1
		}
		skipReason = reason
		return m.Run()
	}
	if err := cluster.CheckBinaries(cluster.BinDir()); err != nil {
		return unavailable(err.Error())
	}
	if os.Geteuid() != 0 {
		return unavailable("the test kubelet needs root (mount namespaces, chroot, setuid); run as root")
	}
	dir, err := os.MkdirTemp("", "coupon-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	probeBin = filepath.Join(dir, "e2eprobe")
	build := exec.Command("go", "build", "-o", probeBin, "./cmd/e2eprobe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build e2eprobe: %v\n%s", err, out)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	c, err := cluster.Start(ctx, cluster.Options{Dir: filepath.Join(dir, "cluster")})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: start control plane:", err)
		return 1
	}
	shared = c
	code := m.Run()
	if err := c.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
	}
	if code == 0 {
		os.RemoveAll(dir)
	} else {
		fmt.Fprintf(os.Stderr, "e2e: component logs kept in %s\n", dir)
	}
	return code
}

// needCluster skips the test when the control plane cannot run here (never
// with CI=true: TestMain fails then).
func needCluster(t *testing.T) *cluster.Cluster {
	t.Helper()
	if shared == nil {
		t.Skip("end-to-end tests need the Kubernetes binaries and root: " + skipReason)
	}
	if err := shared.Healthy(); err != nil {
		t.Fatal(err)
	}
	return shared
}

func adminClient(t *testing.T, c *cluster.Cluster) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// namespace creates a namespace for the test and deletes it afterwards.
func namespace(t *testing.T, c *cluster.Cluster, name string, labels map[string]string) {
	t.Helper()
	ctx := context.Background()
	if err := c.CreateNamespace(ctx, name, labels); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = adminClient(t, c).CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// startKubelet starts a test kubelet on a node of its own serving the
// namespaces, with the probe image known besides images.
func startKubelet(t *testing.T, c *cluster.Cluster, node string, namespaces []string, images map[string]kubelet.Image) *kubelet.Kubelet {
	t.Helper()
	nodeCfg, err := c.UserConfig("system:node:"+node, "system:nodes")
	if err != nil {
		t.Fatal(err)
	}
	schedCfg, err := c.UserConfig("system:kube-scheduler")
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]kubelet.Image{probeImage: {
		Entrypoint: []string{"/e2eprobe"},
		User:       "65532:65532",
		Files:      map[string]string{"/e2eprobe": probeBin},
	}}
	for k, v := range images {
		all[k] = v
	}
	k, err := kubelet.New(kubelet.Config{
		Node:       kubernetes.NewForConfigOrDie(nodeCfg),
		Scheduler:  kubernetes.NewForConfigOrDie(schedCfg),
		NodeName:   node,
		Namespaces: namespaces,
		Images:     all,
		Dir:        t.TempDir(),
		Logf:       t.Logf,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := k.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Stop)
	return k
}

// eventually polls cond every 200 ms until it returns true, an error, or
// timeout passes; what describes the awaited state in the failure.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %s", what, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// jobFinished returns the Job's Complete or Failed condition once it has
// one.
func jobFinished(j *batchv1.Job) *batchv1.JobCondition {
	for i, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return &j.Status.Conditions[i]
		}
	}
	return nil
}

// waitJob waits for the Job to finish and returns it.
func waitJob(t *testing.T, cs kubernetes.Interface, ns, name string, timeout time.Duration) *batchv1.Job {
	t.Helper()
	var job *batchv1.Job
	eventually(t, timeout, "job "+ns+"/"+name+" finished", func() (bool, error) {
		j, err := cs.BatchV1().Jobs(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		job = j
		return jobFinished(j) != nil, nil
	})
	return job
}

// jobPods returns the pods of a Job, oldest first.
func jobPods(t *testing.T, cs kubernetes.Interface, ns, job string) []corev1.Pod {
	t.Helper()
	pods, err := cs.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + job})
	if err != nil {
		t.Fatal(err)
	}
	items := pods.Items
	for i := 1; i < len(items); i++ {
		for j := i; j > 0 && items[j].CreationTimestamp.Before(&items[j-1].CreationTimestamp); j-- {
			items[j], items[j-1] = items[j-1], items[j]
		}
	}
	return items
}

// describePods is a failure message's account of the pods.
func describePods(pods []corev1.Pod) string {
	var b strings.Builder
	for _, p := range pods {
		fmt.Fprintf(&b, "\n  %s: %s", p.Name, p.Status.Phase)
		for _, cs := range p.Status.ContainerStatuses {
			switch {
			case cs.State.Terminated != nil:
				fmt.Fprintf(&b, " %s exit %d (%s)", cs.Name, cs.State.Terminated.ExitCode, cs.State.Terminated.Reason)
			case cs.State.Waiting != nil:
				fmt.Fprintf(&b, " %s waiting %s: %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
			case cs.State.Running != nil:
				fmt.Fprintf(&b, " %s running", cs.Name)
			}
		}
	}
	return b.String()
}

func ptr[T any](v T) *T { return &v }
