package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/couponpipeline/coupon-producer/hack/e2e/cluster"
	"github.com/couponpipeline/coupon-producer/pkg/kafkatest"
)

// The single-node cluster every test shares (each test works in namespaces
// of its own), its broker, or why there is none.
var (
	shared     *cluster.Cluster
	node       *cluster.Node
	broker     *kafkatest.Cluster
	skipReason string
	// noImage says why the producer's image is missing (COUPON_IMAGE_TAR
	// unset outside CI); the tests that run it skip then.
	noImage string
	// noBroker says why there is no broker.
	noBroker string
)

// The node's names and addresses: its bridge cpn0 and cgroup root /cpn
// (NodeOptions.Prefix), the pod subnet on that bridge, and the broker's
// network namespace joined to it.
const (
	nodePrefix  = "cpn"
	podSubnet   = "10.251.14.0/24"
	brokerNetns = "cpn-kafka"
	imageTarEnv = "COUPON_IMAGE_TAR"
)

// The producer's image, as hack/image/build.sh tags the one it builds from
// the Dockerfile, and the harness probe's image, built by the tests from
// cmd/e2eprobe.
const (
	producerRepo  = "ghcr.io/couponpipeline/coupon-producer"
	producerTag   = "e2e"
	producerImage = producerRepo + ":" + producerTag
	probeImage    = "localhost/e2e/e2eprobe:test"
)

func TestMain(m *testing.M) {
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
		return unavailable("the node (containerd, the kubelet, the bridge) needs root; run as root")
	}
	// One suite at a time on a machine: the bridge, the cgroup root and
	// the broker's namespace have fixed names.
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "coupon-e2e-"+nodePrefix+".lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer lock.Close()
	if syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		fmt.Fprintf(os.Stderr, "e2e: waiting for the end-to-end run that holds %s\n", lock.Name())
		if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
	}
	imageTar := os.Getenv(imageTarEnv)
	if imageTar == "" {
		if ci {
			fmt.Fprintf(os.Stderr, "e2e: %s is not set: CI=true needs the image built from the Dockerfile (hack/image/build.sh prints its path)\n", imageTarEnv)
			return 1
		}
		noImage = imageTarEnv + " is not set: build the image with hack/image/build.sh and set it to the tarball's path"
	}
	dist, err := kafkaDist()
	if err != nil {
		if ci {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		noBroker = err.Error()
	}
	dir, err := os.MkdirTemp("", "coupon-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	code := runWith(m, dir, imageTar, dist)
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	if code == 0 {
		os.RemoveAll(dir)
	} else {
		fmt.Fprintf(os.Stderr, "e2e: component logs kept in %s\n", dir)
	}
	return code
}

// runWith starts the cluster, its node and the broker, runs the tests and
// stops everything again, whatever the tests did.
func runWith(m *testing.M, dir, imageTar string, dist *kafkatest.Dist) int {
	bins := map[string]string{}
	for _, cmd := range []string{"e2eprobe", "pause"} {
		bins[cmd] = filepath.Join(dir, cmd)
		build := exec.Command("go", "build", "-trimpath", "-o", bins[cmd], "./cmd/"+cmd)
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: build %s: %v\n%s", cmd, err, out)
			return 1
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	t0 := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{Dir: filepath.Join(dir, "cluster")})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: start control plane:", err)
		return 1
	}
	defer func() {
		if err := c.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
		}
	}()
	t1 := time.Now()
	n, err := c.StartNode(ctx, cluster.NodeOptions{
		Dir:         filepath.Join(dir, "node"),
		Prefix:      nodePrefix,
		PodSubnet:   podSubnet,
		PauseBinary: bins["pause"],
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: start node:", err)
		return 1
	}
	defer func() {
		if err := n.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: stop node:", err)
		}
	}()
	fmt.Fprintf(os.Stderr, "e2e: control plane ready in %s, node %s Ready in %s %v\n",
		t1.Sub(t0).Round(time.Millisecond), cluster.NodeName, time.Since(t1).Round(time.Millisecond), n.Started)
	probeTar := filepath.Join(dir, "e2eprobe.tar")
	if err := cluster.WriteImageTar(probeTar, cluster.ImageSpec{
		Ref:        probeImage,
		Files:      map[string]string{"/e2eprobe": bins["e2eprobe"]},
		Entrypoint: []string{"/e2eprobe"},
		User:       "65532:65532",
		Comment:    "the e2e harness probe (hack/e2e/cmd/e2eprobe), built by the tests",
	}); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if err := n.ImportImage(probeTar); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	if imageTar != "" {
		if err := n.ImportImage(imageTar); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: import %s: %v\n", imageTar, err)
			return 1
		}
		if _, err := n.Ctr("images", "check", "name=="+producerImage); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %s does not hold %s: %v\n", imageTar, producerImage, err)
			return 1
		}
	}
	if noBroker == "" {
		ip, err := n.Network.AddNamespace(brokerNetns)
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: broker network:", err)
			return 1
		}
		t2 := time.Now()
		// The broker listens on and advertises its namespace's address on
		// the bridge: pods and the test process reach it alike.
		broker, err = kafkatest.Start(ctx, dist,
			kafkatest.Host(ip.String()), kafkatest.Port(9092), kafkatest.ControllerPort(9093),
			kafkatest.Prefix("ip", "netns", "exec", brokerNetns),
			kafkatest.Dir(filepath.Join(dir, "kafka")))
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: start broker:", err)
			return 1
		}
		defer func() {
			if err := broker.Stop(1); err != nil {
				fmt.Fprintln(os.Stderr, "e2e: stop broker:", err)
			}
		}()
		fmt.Fprintf(os.Stderr, "e2e: broker %s in network namespace %s ready in %s\n", broker.Bootstrap(), brokerNetns, time.Since(t2).Round(time.Millisecond))
	}
	shared, node = c, n
	return m.Run()
}

// kafkaDist returns the project's Kafka release, once java runs and its
// jars are fetched (go run ./hack/kafkactl fetch).
func kafkaDist() (*kafkatest.Dist, error) {
	d, err := kafkatest.FindDist()
	if err != nil {
		return nil, err
	}
	if err := d.CheckJava(); err != nil {
		return nil, fmt.Errorf("the test broker: %w", err)
	}
	if !d.Fetched() {
		return nil, fmt.Errorf("no Kafka %s jars in %s: run go run ./hack/kafkactl fetch", d.Version, d.Lib())
	}
	return d, nil
}

// needCluster skips the test when the cluster cannot run here (never with
// CI=true: TestMain fails then).
func needCluster(t *testing.T) *cluster.Cluster {
	t.Helper()
	if shared == nil {
		t.Skip("end-to-end tests need the Kubernetes binaries, containerd and root: " + skipReason)
	}
	if err := shared.Healthy(); err != nil {
		t.Fatal(err)
	}
	if err := node.Healthy(); err != nil {
		t.Fatal(err)
	}
	return shared
}

// needImage skips the test when the producer's image was not given (never
// with CI=true: TestMain fails then).
func needImage(t *testing.T) {
	t.Helper()
	if noImage != "" {
		t.Skip(noImage)
	}
}

// kafkaBrokers returns the address of the broker in its network namespace,
// which pods and the test process reach alike, or skips (never with
// CI=true: TestMain fails then).
func kafkaBrokers(t *testing.T) []string {
	t.Helper()
	if broker == nil {
		t.Skip("no test broker: " + noBroker)
	}
	return strings.Split(broker.Bootstrap(), ",")
}

func adminClient(t *testing.T, c *cluster.Cluster) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// needNode is what a test that runs the image on the real node against the
// test broker starts with: the cluster, its admin client and the broker's
// addresses; it skips as needCluster, kafkaBrokers and needImage do.
func needNode(t *testing.T) (*cluster.Cluster, kubernetes.Interface, []string) {
	t.Helper()
	c := needCluster(t)
	brokers := kafkaBrokers(t)
	needImage(t)
	return c, adminClient(t, c), brokers
}

// restrictedPSS are the labels of a namespace that enforces the restricted
// Pod Security level, as the chart's users run it.
var restrictedPSS = map[string]string{
	"pod-security.kubernetes.io/enforce":         "restricted",
	"pod-security.kubernetes.io/enforce-version": "latest",
}

// namespace creates a namespace for the test and deletes it afterwards,
// waiting until it is gone: its pods then are too, and the kubelet has torn
// them down.
func namespace(t *testing.T, c *cluster.Cluster, name string, labels map[string]string) {
	t.Helper()
	ctx := context.Background()
	if err := c.CreateNamespace(ctx, name, labels); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cs := adminClient(t, c)
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
		eventually(t, 120*time.Second, "namespace "+name+" deleted", func() (bool, error) {
			_, err := cs.CoreV1().Namespaces().Get(context.Background(), name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
	})
}

// containerLogs returns a container's output as the kubelet keeps it,
// through the API server (kubectl logs).
func containerLogs(cs kubernetes.Interface, ns, pod, container string) (string, error) {
	b, err := cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(context.Background())
	if err != nil {
		return "", fmt.Errorf("logs of %s/%s %s: %w", ns, pod, container, err)
	}
	return string(b), nil
}

// podLogs is a failure message's account of the pods' output.
func podLogs(cs kubernetes.Interface, pods []corev1.Pod) string {
	var b strings.Builder
	for _, p := range pods {
		for _, c := range p.Spec.Containers {
			logs, err := containerLogs(cs, p.Namespace, p.Name, c.Name)
			if err != nil {
				logs = err.Error()
			}
			fmt.Fprintf(&b, "--- %s %s:\n%s\n", p.Name, c.Name, logs)
		}
	}
	return b.String()
}

// containerPID returns the host PID of the pod's first container's
// process, found through its containerd task.
func containerPID(t *testing.T, cs kubernetes.Interface, ns, pod string) int {
	t.Helper()
	p, err := cs.CoreV1().Pods(ns).Get(context.Background(), pod, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Status.ContainerStatuses) == 0 || p.Status.ContainerStatuses[0].ContainerID == "" {
		t.Fatalf("pod %s/%s has no container ID yet;%s", ns, pod, describePods([]corev1.Pod{*p}))
	}
	pid, err := node.ContainerPID(p.Status.ContainerStatuses[0].ContainerID)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// killContainer kills the pod's container's process with SIGKILL from
// outside, as the kernel's OOM killer or a crash would end it.
func killContainer(t *testing.T, cs kubernetes.Interface, ns, pod string) {
	t.Helper()
	if err := syscall.Kill(containerPID(t, cs, ns, pod), syscall.SIGKILL); err != nil {
		t.Fatalf("kill the container of %s/%s: %v", ns, pod, err)
	}
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

// logCollector follows the output of every container of a namespace from
// the moment it starts, as `kubectl logs -f` would, so that the output
// outlives the pod: the kubelet's logs go when the pod is deleted (Helm
// deletes a test hook that succeeded).
type logCollector struct {
	mu      sync.Mutex
	streams map[string]*logStream // by pod/container
	wg      sync.WaitGroup
	stopped chan struct{}
}

// logStream is one container's output; done is closed when it ends.
type logStream struct {
	b    strings.Builder
	err  error
	done chan struct{}
}

// collectLogs starts a collector for namespace ns, stopped when the test
// ends.
func collectLogs(t *testing.T, cs kubernetes.Interface, ns string) *logCollector {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	lc := &logCollector{streams: map[string]*logStream{}, stopped: make(chan struct{})}
	go func() {
		<-lc.stopped
		cancel()
	}()
	follow := func(pod, container string, ls *logStream) {
		defer lc.wg.Done()
		defer close(ls.done)
		rc, err := cs.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container, Follow: true}).Stream(ctx)
		if err != nil {
			lc.mu.Lock()
			ls.err = err
			lc.mu.Unlock()
			return
		}
		defer rc.Close()
		buf := make([]byte, 32<<10)
		for {
			n, err := rc.Read(buf)
			lc.mu.Lock()
			ls.b.Write(buf[:n])
			lc.mu.Unlock()
			if err != nil {
				return
			}
		}
	}
	lc.wg.Add(1)
	go func() {
		defer lc.wg.Done()
		defer w.Stop()
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			for _, st := range p.Status.ContainerStatuses {
				if st.State.Running == nil && st.State.Terminated == nil {
					continue
				}
				key := p.Name + "/" + st.Name
				lc.mu.Lock()
				_, seen := lc.streams[key]
				if !seen {
					ls := &logStream{done: make(chan struct{})}
					lc.streams[key] = ls
					lc.wg.Add(1)
					go follow(p.Name, st.Name, ls)
				}
				lc.mu.Unlock()
			}
		}
	}()
	t.Cleanup(lc.Stop)
	return lc
}

// Logs returns a container's whole output once its stream has ended (the
// container exited), waiting up to 30 s for that.
func (lc *logCollector) Logs(pod, container string) (string, error) {
	key := pod + "/" + container
	lc.mu.Lock()
	ls, ok := lc.streams[key]
	lc.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("no output of %s collected: the container was never seen started", key)
	}
	select {
	case <-ls.done:
	case <-time.After(30 * time.Second):
		return "", fmt.Errorf("the output of %s did not end within 30s", key)
	}
	lc.mu.Lock()
	defer lc.mu.Unlock()
	if ls.err != nil {
		return "", fmt.Errorf("logs of %s: %w", key, ls.err)
	}
	return ls.b.String(), nil
}

// Stop ends the collector's watch and streams.
func (lc *logCollector) Stop() {
	select {
	case <-lc.stopped:
	default:
		close(lc.stopped)
	}
	lc.wg.Wait()
}
