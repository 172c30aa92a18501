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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// restrictedContext is the container securityContext that the restricted
// Pod Security level asks for.
func restrictedContext() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr(false),
		ReadOnlyRootFilesystem:   ptr(true),
		RunAsNonRoot:             ptr(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// probePodSpec runs cmd/e2eprobe with args, once (restartPolicy Never).
func probePodSpec(args ...string) corev1.PodSpec {
	return corev1.PodSpec{
		RestartPolicy:                 corev1.RestartPolicyNever,
		TerminationGracePeriodSeconds: ptr(int64(2)),
		Containers: []corev1.Container{{
			Name:            "probe",
			Image:           probeImage,
			Args:            args,
			SecurityContext: restrictedContext(),
		}},
	}
}

// failurePolicy is the chart's podFailurePolicy: exit 3 fails the Job at
// once, a disrupted pod is not counted, anything else counts towards
// backoffLimit.
func failurePolicy() *batchv1.PodFailurePolicy {
	return &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{
		{
			Action:      batchv1.PodFailurePolicyActionFailJob,
			OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{2, 3}},
		},
		{
			Action:          batchv1.PodFailurePolicyActionIgnore,
			OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue}},
		},
	}}
}

func createJob(t *testing.T, cs kubernetes.Interface, ns, name string, backoff int32, spec corev1.PodSpec) {
	t.Helper()
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: batchv1.JobSpec{
			BackoffLimit:     ptr(backoff),
			PodFailurePolicy: failurePolicy(),
			Template:         corev1.PodTemplateSpec{Spec: spec},
		},
	}
	if _, err := cs.BatchV1().Jobs(ns).Create(context.Background(), job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// A container that exits 3 (bad input) under a FailJob-on-3 rule fails the
// Job at once: one pod, no retry, although backoffLimit would allow six.
func TestJobFailsAtOnceOnExit3(t *testing.T) {
	c := needCluster(t)
	cs := adminClient(t, c)
	const ns = "job-exit3"
	namespace(t, c, ns, nil)

	createJob(t, cs, ns, "bad-input", 6, probePodSpec("exit", "3"))
	job := waitJob(t, cs, ns, "bad-input", 60*time.Second)
	pods := jobPods(t, cs, ns, "bad-input")
	cond := jobFinished(job)
	if cond.Type != batchv1.JobFailed || cond.Reason != batchv1.JobReasonPodFailurePolicy {
		t.Fatalf("job finished %s (%s: %s), want Failed by PodFailurePolicy;%s", cond.Type, cond.Reason, cond.Message, describePods(pods))
	}
	if len(pods) != 1 || job.Status.Failed != 1 {
		t.Fatalf("%d pods, %d failed, want exactly one: no retry;%s", len(pods), job.Status.Failed, describePods(pods))
	}
	term := pods[0].Status.ContainerStatuses[0].State.Terminated
	if term == nil || term.ExitCode != 3 {
		t.Fatalf("pod status does not carry exit code 3;%s", describePods(pods))
	}
	if !strings.Contains(cond.Message, "exit code 3") {
		t.Errorf("failure message %q does not name exit code 3", cond.Message)
	}
}

// A pod killed mid-run (SIGKILL, 137) counts towards backoffLimit and is
// replaced; a pod killed after it got a DisruptionTarget condition is
// replaced without counting. With backoffLimit 1 the Job therefore fails
// only at the third pod, the second kill that counts.
func TestKilledPodIsRetriedAndDisruptionIgnored(t *testing.T) {
	c := needCluster(t)
	cs := adminClient(t, c)
	ctx := context.Background()
	const ns = "job-kill"
	namespace(t, c, ns, nil)

	createJob(t, cs, ns, "killed", 1, probePodSpec("sleep"))
	running := func(n int) corev1.Pod {
		var pod corev1.Pod
		eventually(t, 90*time.Second, fmt.Sprintf("pod %d of job killed running", n), func() (bool, error) {
			pods := jobPods(t, cs, ns, "killed")
			if len(pods) < n {
				return false, nil
			}
			pod = pods[n-1]
			return pod.Status.Phase == corev1.PodRunning, nil
		})
		return pod
	}
	p1 := running(1)
	killContainer(t, cs, ns, p1.Name)
	p2 := running(2)
	// What an eviction or a drain records before it kills the pod: the
	// DisruptionTarget condition, set through the status subresource.
	p2.Status.Conditions = append(p2.Status.Conditions, corev1.PodCondition{
		Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now(),
		Reason: "TerminationByKubelet", Message: "the node is being drained",
	})
	if _, err := cs.CoreV1().Pods(ns).UpdateStatus(ctx, &p2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	killContainer(t, cs, ns, p2.Name)
	p3 := running(3)
	killContainer(t, cs, ns, p3.Name)
	job := waitJob(t, cs, ns, "killed", 60*time.Second)
	pods := jobPods(t, cs, ns, "killed")
	cond := jobFinished(job)
	if cond.Type != batchv1.JobFailed || cond.Reason != batchv1.JobReasonBackoffLimitExceeded {
		t.Fatalf("job finished %s (%s), want Failed by BackoffLimitExceeded;%s", cond.Type, cond.Reason, describePods(pods))
	}
	if len(pods) != 3 || job.Status.Failed != 2 {
		t.Fatalf("%d pods, %d counted failures, want 3 pods and 2 (the disrupted one ignored);%s", len(pods), job.Status.Failed, describePods(pods))
	}
	for _, p := range pods {
		term := p.Status.ContainerStatuses[0].State.Terminated
		if p.Status.Phase != corev1.PodFailed || term == nil || term.ExitCode != 137 {
			t.Errorf("pod %s: want Failed with exit code 137 (SIGKILL);%s", p.Name, describePods([]corev1.Pod{p}))
		}
	}
}

// A CronJob scheduled every minute fires, and the Job it creates completes.
func TestCronJobFires(t *testing.T) {
	c := needCluster(t)
	cs := adminClient(t, c)
	ctx := context.Background()
	const ns = "cron-fires"
	namespace(t, c, ns, nil)

	cj := &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: "every-minute", Namespace: ns},
		Spec: batchv1.CronJobSpec{
			Schedule:          "* * * * *",
			TimeZone:          ptr("UTC"),
			ConcurrencyPolicy: batchv1.ForbidConcurrent,
			JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{
				BackoffLimit:     ptr(int32(0)),
				PodFailurePolicy: failurePolicy(),
				Template:         corev1.PodTemplateSpec{Spec: probePodSpec("exit", "0")},
			}},
		},
	}
	if _, err := cs.BatchV1().CronJobs(ns).Create(ctx, cj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The first run is due at the next full minute.
	eventually(t, 150*time.Second, "the CronJob's first run to succeed", func() (bool, error) {
		got, err := cs.BatchV1().CronJobs(ns).Get(ctx, cj.Name, metav1.GetOptions{})
		return err == nil && got.Status.LastSuccessfulTime != nil, err
	})
	jobs, err := cs.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	completed := 0
	for _, j := range jobs.Items {
		if len(j.OwnerReferences) != 1 || j.OwnerReferences[0].Kind != "CronJob" || j.OwnerReferences[0].Name != cj.Name {
			t.Errorf("job %s is not owned by the CronJob: %v", j.Name, j.OwnerReferences)
		}
		if cond := jobFinished(&j); cond != nil && cond.Type == batchv1.JobComplete {
			completed++
		}
	}
	if completed == 0 {
		t.Fatalf("no completed Job among %d", len(jobs.Items))
	}
}

// `kubectl create job --from=cronjob/x` creates a Job from the CronJob's
// template (the way to run a file now), and it completes.
func TestCreateJobFromCronJob(t *testing.T) {
	c := needCluster(t)
	cs := adminClient(t, c)
	ctx := context.Background()
	const ns = "cron-manual"
	namespace(t, c, ns, nil)

	cj := &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: "nightly", Namespace: ns},
		Spec: batchv1.CronJobSpec{
			Schedule: "0 3 * * *",
			Suspend:  ptr(true),
			JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{
				BackoffLimit: ptr(int32(0)),
				Template:     corev1.PodTemplateSpec{Spec: probePodSpec("exit", "0")},
			}},
		},
	}
	if _, err := cs.BatchV1().CronJobs(ns).Create(ctx, cj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(c.Bin("kubectl"), "--kubeconfig", c.Kubeconfig, "-n", ns,
		"create", "job", "--from=cronjob/nightly", "nightly-manual").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl create job: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "job.batch/nightly-manual created") {
		t.Errorf("kubectl said %q", out)
	}
	job := waitJob(t, cs, ns, "nightly-manual", 60*time.Second)
	if cond := jobFinished(job); cond.Type != batchv1.JobComplete {
		t.Fatalf("job finished %s (%s);%s", cond.Type, cond.Message, describePods(jobPods(t, cs, ns, job.Name)))
	}
	if job.Annotations["cronjob.kubernetes.io/instantiate"] != "manual" {
		t.Errorf("job annotations %v lack cronjob.kubernetes.io/instantiate=manual", job.Annotations)
	}
	if len(job.OwnerReferences) != 1 || job.OwnerReferences[0].Name != "nightly" {
		t.Errorf("job owner %v, want the CronJob nightly", job.OwnerReferences)
	}
	pods := jobPods(t, cs, ns, job.Name)
	if len(pods) != 1 {
		t.Fatalf("%d pods;%s", len(pods), describePods(pods))
	}
	logs, err := containerLogs(cs, ns, pods[0].Name, "probe")
	if err != nil {
		t.Fatal(err)
	}
	if logs != "exiting 0\n" {
		t.Errorf("container output %q, want %q", logs, "exiting 0\n")
	}
}

// A namespace that enforces the restricted Pod Security level refuses a
// privileged pod, and accepts (and the kubelet runs) a pod that follows
// the level.
func TestRestrictedNamespaceRefusesPrivilegedPod(t *testing.T) {
	c := needCluster(t)
	cs := adminClient(t, c)
	ctx := context.Background()
	const ns = "restricted"
	namespace(t, c, ns, restrictedPSS)

	bad := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "privileged", Namespace: ns},
		Spec:       probePodSpec("exit", "0"),
	}
	bad.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{Privileged: ptr(true)}
	_, err := cs.CoreV1().Pods(ns).Create(ctx, bad, metav1.CreateOptions{})
	if err == nil {
		t.Fatal("the privileged pod was accepted")
	}
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `violates PodSecurity "restricted:latest"`) || !strings.Contains(err.Error(), "privileged") {
		t.Fatalf("refused, but not by Pod Security for being privileged: %v", err)
	}

	good := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "restricted", Namespace: ns},
		Spec:       probePodSpec("exit", "0"),
	}
	good.Spec.SecurityContext = &corev1.PodSecurityContext{
		RunAsNonRoot: ptr(true), RunAsUser: ptr(int64(65532)), RunAsGroup: ptr(int64(65532)),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, good, metav1.CreateOptions{}); err != nil {
		t.Fatalf("a pod that follows the restricted level was refused: %v", err)
	}
	eventually(t, 60*time.Second, "the restricted pod to succeed", func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, good.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.Status.Phase == corev1.PodFailed {
			t.Fatalf("pod failed;%s", describePods([]corev1.Pod{*p}))
		}
		return p.Status.Phase == corev1.PodSucceeded, nil
	})
}

// Deleting a running pod sends SIGTERM and, after the grace period,
// SIGKILL: a container that handles SIGTERM ends with 143, one that ignores
// it with 137; the kubelet then removes both pods from the API.
func TestDeletedPodGetsSIGTERMThenSIGKILL(t *testing.T) {
	c := needCluster(t)
	cs := adminClient(t, c)
	ctx := context.Background()
	const ns = "pod-delete"
	namespace(t, c, ns, nil)

	for name, mode := range map[string]string{"graceful": "sleep", "stubborn": "sleep-ignore-term"} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: probePodSpec(mode)}
		if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 60*time.Second, "both pods running", func() (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		n := 0
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning {
				n++
			}
		}
		return n == 2, nil
	})
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for _, name := range []string{"graceful", "stubborn"} {
		if err := cs.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	exits := map[string]int32{}
	messages := map[string]string{}
	gone := map[string]bool{}
	timeout := time.After(60 * time.Second)
	for len(gone) < 2 {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatal("watch ended")
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod {
				continue
			}
			if ev.Type == watch.Deleted {
				gone[p.Name] = true
			}
			for _, s := range p.Status.ContainerStatuses {
				if s.State.Terminated != nil {
					exits[p.Name] = s.State.Terminated.ExitCode
					messages[p.Name] = s.State.Terminated.Message
				}
			}
		case <-timeout:
			t.Fatalf("pods not gone after 60s; exits seen %v", exits)
		}
	}
	if exits["graceful"] != 143 || exits["stubborn"] != 137 {
		t.Errorf("exit codes %v, want graceful 143 (SIGTERM handled) and stubborn 137 (SIGKILL after the grace period)", exits)
	}
	// The probe writes what ended it to its termination log, which the
	// kubelet copies into the status: the pod's logs go with the pod.
	if !strings.Contains(messages["graceful"], "SIGTERM") {
		t.Errorf("graceful container's termination message %q lacks SIGTERM", messages["graceful"])
	}
}
