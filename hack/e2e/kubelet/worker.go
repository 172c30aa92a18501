package kubelet

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
)

// podWorker runs one pod from binding to its terminal status, and deletes
// it from the API once a graceful deletion has ended its containers, as the
// kubelet's pod worker and status manager do.
type podWorker struct {
	k         *Kubelet
	uid       types.UID
	namespace string
	name      string
	dir       string

	mu        sync.Mutex
	pod       *corev1.Pod // latest seen
	ctrs      []*ctr
	terminate chan struct{} // closed once deletion is requested
	grace     time.Duration
	deleted   bool // the pod is gone from the API
	started   metav1.Time
	phase     corev1.PodPhase
	reason    string // the pod's status reason, e.g. DeadlineExceeded
	message   string
	sandbox   bool // volumes are in place
}

// ctr is one container's state; the worker goroutine writes it, Kill and
// status reads take podWorker.mu.
type ctr struct {
	spec     corev1.Container
	proc     *process
	state    corev1.ContainerState
	last     corev1.ContainerState
	restarts int32
}

func newPodWorker(k *Kubelet, pod *corev1.Pod) *podWorker {
	w := &podWorker{
		k:         k,
		uid:       pod.UID,
		namespace: pod.Namespace,
		name:      pod.Name,
		dir:       filepath.Join(k.cfg.Dir, "pods", string(pod.UID)),
		pod:       pod,
		terminate: make(chan struct{}),
		phase:     corev1.PodPending,
	}
	for _, c := range pod.Spec.Containers {
		w.ctrs = append(w.ctrs, &ctr{spec: c, state: corev1.ContainerState{
			Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"},
		}})
	}
	return w
}

// update records the latest pod; a deletion timestamp starts termination
// with the deletion's grace period.
func (w *podWorker) update(pod *corev1.Pod) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.pod = pod
	if pod.DeletionTimestamp != nil {
		grace := time.Duration(0)
		if pod.DeletionGracePeriodSeconds != nil {
			grace = time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
		}
		w.requestTermination(grace)
	}
}

// removed: the pod is gone from the API, so there is nothing to wait for.
func (w *podWorker) removed() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.deleted = true
	w.requestTermination(0)
}

func (w *podWorker) requestTermination(grace time.Duration) {
	select {
	case <-w.terminate:
		if grace < w.grace {
			w.grace = grace // a second, shorter deletion wins
		}
	default:
		w.grace = grace
		close(w.terminate)
	}
}

// killAll signals every running container and returns how many it
// signalled.
func (w *podWorker) killAll(sig syscall.Signal) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, c := range w.ctrs {
		if c.proc != nil && c.state.Running != nil {
			c.proc.signal(sig)
			n++
		}
	}
	return n
}

type exit struct {
	i    int
	proc *process
	err  error // a start error
}

func (w *podWorker) run(ctx context.Context) {
	defer w.k.wg.Done()
	defer w.k.forget(w)
	w.mu.Lock()
	w.started = metav1.Now()
	spec := w.pod.Spec // immutable where it matters here
	w.mu.Unlock()
	w.writeStatus(ctx)

	specs, ok := w.prepare(ctx)
	if !ok {
		w.finish(ctx)
		return
	}
	w.mu.Lock()
	w.sandbox = true
	w.mu.Unlock()

	exits := make(chan exit, len(w.ctrs))
	restarts := make(chan int, len(w.ctrs))
	running := 0
	start := func(i int) {
		c := w.ctrs[i]
		log, err := w.openLog(c.spec.Name)
		if err != nil {
			exits <- exit{i: i, err: err}
			return
		}
		specPath := filepath.Join(w.dir, c.spec.Name+".json")
		p, err := w.k.startContainer(specs[i], specPath, log)
		if err != nil {
			log.Close()
			exits <- exit{i: i, proc: p, err: err}
			return
		}
		w.mu.Lock()
		c.proc = p
		c.state = corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(p.started)}}
		w.mu.Unlock()
		w.k.logf("started %s/%s %s (pid %d)", w.namespace, w.name, c.spec.Name, p.cmd.Process.Pid)
		go func() {
			<-p.done
			log.Close()
			exits <- exit{i: i, proc: p}
		}()
	}
	for i := range w.ctrs {
		start(i)
		running++
	}
	w.mu.Lock()
	w.phase = corev1.PodRunning
	w.mu.Unlock()
	w.writeStatus(ctx)

	var deadline <-chan time.Time
	if ads := spec.ActiveDeadlineSeconds; ads != nil {
		deadline = time.After(time.Until(w.started.Add(time.Duration(*ads) * time.Second)))
	}
	terminate := w.terminate
	var kill <-chan time.Time
	terminating := false
	stop := func(grace time.Duration) {
		terminating = true
		terminate, deadline = nil, nil
		w.killAll(syscall.SIGTERM)
		kill = time.After(grace)
	}
	pendingRestarts := 0
	for running > 0 || pendingRestarts > 0 {
		select {
		case ev := <-exits:
			running--
			c := w.ctrs[ev.i]
			term := &corev1.ContainerStateTerminated{ExitCode: 128, Reason: "StartError", FinishedAt: metav1.Now()}
			if ev.err != nil {
				term.Message = ev.err.Error()
				w.k.logf("start %s/%s %s: %v", w.namespace, w.name, c.spec.Name, ev.err)
			} else {
				term.ExitCode = ev.proc.exitCode
				term.Reason = "Completed"
				if term.ExitCode != 0 {
					term.Reason = "Error"
				}
				term.StartedAt = metav1.NewTime(ev.proc.started)
				term.FinishedAt = metav1.NewTime(ev.proc.finished)
				term.ContainerID = containerID(w.uid, c.spec.Name, c.restarts)
				w.k.logf("exited %s/%s %s: %d", w.namespace, w.name, c.spec.Name, term.ExitCode)
			}
			w.mu.Lock()
			c.state = corev1.ContainerState{Terminated: term}
			if !terminating && restart(spec.RestartPolicy, term.ExitCode) {
				c.last = c.state
				c.restarts++
				c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}
				pendingRestarts++
				i := ev.i
				time.AfterFunc(time.Second, func() { restarts <- i })
			}
			w.mu.Unlock()
			w.writeStatus(ctx)
		case i := <-restarts:
			pendingRestarts--
			if terminating {
				w.mu.Lock()
				w.ctrs[i].state = w.ctrs[i].last
				w.mu.Unlock()
				continue
			}
			start(i)
			running++
			w.writeStatus(ctx)
		case <-terminate:
			w.mu.Lock()
			grace := w.grace
			w.mu.Unlock()
			w.k.logf("terminating %s/%s (grace %s)", w.namespace, w.name, grace)
			stop(grace)
		case <-deadline:
			w.mu.Lock()
			w.reason = "DeadlineExceeded"
			w.message = "Pod was active on the node longer than the specified deadline"
			w.mu.Unlock()
			stop(gracePeriod(spec))
		case <-kill:
			w.killAll(syscall.SIGKILL)
		case <-ctx.Done():
			return
		}
	}
	w.finish(ctx)
}

// prepare materialises the volumes and builds each container's spec,
// retrying every second while the pod waits (an unbound claim, a ConfigMap
// not yet readable by the node) until it succeeds or the pod is deleted.
func (w *podWorker) prepare(ctx context.Context) ([]*initSpec, bool) {
	lastMsg := ""
	for {
		select {
		case <-w.terminate:
			return nil, false
		case <-ctx.Done():
			return nil, false
		default:
		}
		specs, err := w.prepareOnce(ctx)
		if err == nil {
			return specs, true
		}
		reason := "ContainerCreating"
		var we *waitError
		if errors.As(err, &we) {
			reason = we.Reason
		}
		if msg := err.Error(); msg != lastMsg {
			lastMsg = msg
			w.k.logf("waiting %s/%s: %v", w.namespace, w.name, err)
			w.mu.Lock()
			for _, c := range w.ctrs {
				c.state = corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
			}
			w.mu.Unlock()
			w.writeStatus(ctx)
		}
		select {
		case <-w.terminate:
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func (w *podWorker) prepareOnce(ctx context.Context) ([]*initSpec, error) {
	w.mu.Lock()
	pod := w.pod
	w.mu.Unlock()
	if len(pod.Spec.InitContainers) > 0 {
		return nil, &waitError{"CreateContainerConfigError", errors.New("init containers are not supported by the test kubelet")}
	}
	vols, err := w.k.volumes(ctx, pod, filepath.Join(w.dir, "volumes"))
	if err != nil {
		return nil, err
	}
	specs := make([]*initSpec, len(pod.Spec.Containers))
	for i := range pod.Spec.Containers {
		s, err := w.k.containerSpec(ctx, pod, &pod.Spec.Containers[i], vols, w.dir)
		if err != nil {
			return nil, fmt.Errorf("container %s: %w", pod.Spec.Containers[i].Name, err)
		}
		specs[i] = s
	}
	return specs, nil
}

// finish writes the terminal status and, for a pod being deleted, deletes
// it for good, as the kubelet does once its containers are gone.
func (w *podWorker) finish(ctx context.Context) {
	w.mu.Lock()
	phase := corev1.PodSucceeded
	for _, c := range w.ctrs {
		if c.state.Terminated == nil || c.state.Terminated.ExitCode != 0 {
			phase = corev1.PodFailed
		}
		if c.state.Waiting != nil {
			// Never started: report it as the kubelet does for a pod
			// deleted before its containers ran.
			c.state = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 137, Reason: "ContainerStatusUnknown",
				Message: "The container could not be located when the pod was terminated", FinishedAt: metav1.Now(),
			}}
		}
	}
	w.phase = phase
	deleting := w.pod.DeletionTimestamp != nil
	deleted := w.deleted
	w.mu.Unlock()
	w.k.logf("%s %s/%s", phase, w.namespace, w.name)
	if !deleted {
		w.writeStatus(ctx)
	}
	if deleting && !deleted {
		zero := int64(0)
		err := w.k.node.CoreV1().Pods(w.namespace).Delete(ctx, w.name, metav1.DeleteOptions{
			GracePeriodSeconds: &zero,
			Preconditions:      &metav1.Preconditions{UID: &w.uid},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			w.k.logf("delete %s/%s: %v", w.namespace, w.name, err)
		}
	}
	// The mounts lived in the containers' own namespaces, gone with them:
	// what is left are plain files and folders of this kubelet's.
	if err := os.RemoveAll(w.dir); err != nil {
		w.k.logf("clean up %s/%s: %v", w.namespace, w.name, err)
	}
}

// writeStatus writes the pod's status as the node, keeping what others
// own: conditions of other types (PodScheduled, DisruptionTarget), the QoS
// class.
func (w *podWorker) writeStatus(ctx context.Context) {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := w.k.node.CoreV1().Pods(w.namespace).Get(ctx, w.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if pod.UID != w.uid {
			return nil
		}
		w.mu.Lock()
		w.fillStatus(&pod.Status)
		w.mu.Unlock()
		_, err = w.k.node.CoreV1().Pods(w.namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		w.k.logf("status %s/%s: %v", w.namespace, w.name, err)
	}
}

func (w *podWorker) fillStatus(s *corev1.PodStatus) {
	s.Phase = w.phase
	s.Reason, s.Message = w.reason, w.message
	s.HostIP, s.PodIP = hostIP, hostIP
	s.HostIPs = []corev1.HostIP{{IP: hostIP}}
	s.PodIPs = []corev1.PodIP{{IP: hostIP}}
	s.StartTime = &w.started
	allRunning := true
	s.ContainerStatuses = s.ContainerStatuses[:0]
	for _, c := range w.ctrs {
		running := c.state.Running != nil
		allRunning = allRunning && running
		started := running
		cs := corev1.ContainerStatus{
			Name:                 c.spec.Name,
			Image:                c.spec.Image,
			ImageID:              "e2e://" + c.spec.Image,
			State:                c.state,
			LastTerminationState: c.last,
			Ready:                running,
			Started:              &started,
			RestartCount:         c.restarts,
		}
		if running || c.state.Terminated != nil {
			cs.ContainerID = containerID(w.uid, c.spec.Name, c.restarts)
		}
		s.ContainerStatuses = append(s.ContainerStatuses, cs)
	}
	terminal := w.phase == corev1.PodSucceeded || w.phase == corev1.PodFailed
	ready := corev1.PodCondition{Status: corev1.ConditionFalse, Reason: "ContainersNotReady"}
	if terminal {
		ready.Reason = "PodCompleted"
	} else if w.phase == corev1.PodRunning && allRunning {
		ready = corev1.PodCondition{Status: corev1.ConditionTrue}
	}
	now := metav1.Now()
	sandbox := corev1.ConditionFalse
	if w.sandbox && !terminal {
		sandbox = corev1.ConditionTrue
	}
	for _, cond := range []corev1.PodCondition{
		{Type: corev1.PodReadyToStartContainers, Status: sandbox},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue},
		{Type: corev1.ContainersReady, Status: ready.Status, Reason: ready.Reason},
		{Type: corev1.PodReady, Status: ready.Status, Reason: ready.Reason},
	} {
		cond.LastTransitionTime = now
		setCondition(s, cond)
	}
}

func (w *podWorker) openLog(container string) (*os.File, error) {
	p := w.k.logPath(w.namespace, w.name, container)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(w.dir, 0o755); err != nil {
		return nil, err
	}
	return os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
}

// restart applies the pod's restartPolicy to an exit code.
func restart(policy corev1.RestartPolicy, code int32) bool {
	switch policy {
	case corev1.RestartPolicyAlways:
		return true
	case corev1.RestartPolicyOnFailure:
		return code != 0
	}
	return false
}

func gracePeriod(spec corev1.PodSpec) time.Duration {
	if g := spec.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return 30 * time.Second
}

func containerID(uid types.UID, name string, restarts int32) string {
	return fmt.Sprintf("e2e://%s-%s-%d", uid, name, restarts)
}
