// Package kubelet is a test kubelet (and scheduler) for a real API server:
// it registers a Ready Node, binds each pending pod of the namespaces it
// watches to that node, and runs the pod's containers as local processes
// exactly as their spec says, then reports their status with the real exit
// codes so that the Job controller's podFailurePolicy sees what a cluster
// would show.
//
// Each container runs in a mount and UTS namespace of its own, chrooted into
// an empty root in which only the image's files (Image.Files), a few devices,
// /proc, the kubelet's /etc/hosts and the pod's volumes are mounted, at the
// spec's paths, read-only where the spec or the volume kind says so, as the
// spec's uid, gid and groups, with no_new_privs and the capability bounding
// set the securityContext asks for. The network is the host's: pods reach
// services on 127.0.0.1.
//
// Not done, because the tests here do not need them: init and sidecar
// containers, probes, resource limits (cgroups), seccomp profiles, service
// environment variables, image pulls, a kubelet API (kubectl logs/exec): the
// test reads container output with Logs.
//
// Running containers needs root (mount namespaces, chroot, setuid). The
// binary that runs a Kubelet must call Init first thing in main or TestMain.
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
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/retry"
)

// hostIP is the node's and every pod's address: pods share the host's
// network.
const hostIP = "127.0.0.1"

// Config configures a Kubelet.
type Config struct {
	// Node authenticates as system:node:<NodeName> in system:nodes, so the
	// Node authorizer and NodeRestriction admission limit it as they limit
	// a kubelet: it reads only the ConfigMaps, Secrets and claims of pods
	// bound to it.
	Node kubernetes.Interface
	// Scheduler watches the namespaces and binds pods (pods/binding); the
	// system:kube-scheduler identity is enough.
	Scheduler kubernetes.Interface
	NodeName  string
	// Namespaces to serve; pods elsewhere are left alone.
	Namespaces []string
	// Images maps an image reference, exactly as a pod spec names it, to
	// what runs for it. An unknown image leaves the pod Pending with
	// ErrImagePull.
	Images map[string]Image
	// Dir holds the pods' volumes, roots and container output.
	Dir string
	// InitBinary is the program that calls Init; the running executable
	// when empty.
	InitBinary string
	// Logf, when set, receives one line per pod event (bound, started,
	// exited, deleted).
	Logf func(format string, args ...any)
}

// Kubelet serves the pods of some namespaces on one node.
type Kubelet struct {
	cfg         Config
	node        kubernetes.Interface
	initBin     string
	allocatable corev1.ResourceList

	mu      sync.Mutex
	workers map[types.UID]*podWorker
	names   map[string]*podWorker // namespace/name -> latest worker
	binding map[types.UID]bool
	stopped bool

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New checks cfg and returns a Kubelet; Start runs it.
func New(cfg Config) (*Kubelet, error) {
	if cfg.Node == nil || cfg.Scheduler == nil {
		return nil, errors.New("kubelet: Config.Node and Config.Scheduler are required")
	}
	if cfg.NodeName == "" || len(cfg.Namespaces) == 0 || cfg.Dir == "" {
		return nil, errors.New("kubelet: Config.NodeName, Namespaces and Dir are required")
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("kubelet: running containers needs root (mount namespaces, chroot, setuid)")
	}
	bin := cfg.InitBinary
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("kubelet: own executable: %w", err)
		}
	}
	return &Kubelet{
		cfg:     cfg,
		node:    cfg.Node,
		initBin: bin,
		allocatable: corev1.ResourceList{
			corev1.ResourceCPU:              resource.MustParse("2"),
			corev1.ResourceMemory:           resource.MustParse("8Gi"),
			corev1.ResourcePods:             resource.MustParse("110"),
			corev1.ResourceEphemeralStorage: resource.MustParse("20Gi"),
		},
		workers: map[types.UID]*podWorker{},
		names:   map[string]*podWorker{},
		binding: map[types.UID]bool{},
	}, nil
}

// Start registers the node and starts watching its namespaces; it returns
// once the watches have synced.
func (k *Kubelet) Start(ctx context.Context) error {
	if err := k.register(ctx); err != nil {
		return err
	}
	k.ctx, k.cancel = context.WithCancel(context.Background())
	var synced []cache.InformerSynced
	for _, ns := range k.cfg.Namespaces {
		lw := cache.NewListWatchFromClient(k.cfg.Scheduler.CoreV1().RESTClient(), "pods", ns, fields.Everything())
		inf := cache.NewSharedIndexInformer(lw, &corev1.Pod{}, 0, cache.Indexers{})
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { k.observe(obj.(*corev1.Pod)) },
			UpdateFunc: func(_, obj any) { k.observe(obj.(*corev1.Pod)) },
			DeleteFunc: func(obj any) {
				if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = d.Obj
				}
				if pod, ok := obj.(*corev1.Pod); ok {
					k.gone(pod)
				}
			},
		}); err != nil {
			return fmt.Errorf("kubelet: watch %s: %w", ns, err)
		}
		go inf.Run(k.ctx.Done())
		synced = append(synced, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		k.cancel()
		return errors.New("kubelet: pod watches did not sync")
	}
	return nil
}

// Stop kills every container (SIGKILL, no status written: as if the node
// died) and waits for the pod workers to end.
func (k *Kubelet) Stop() {
	k.mu.Lock()
	k.stopped = true
	workers := make([]*podWorker, 0, len(k.workers))
	for _, w := range k.workers {
		workers = append(workers, w)
	}
	k.mu.Unlock()
	if k.cancel != nil {
		k.cancel()
	}
	for _, w := range workers {
		w.killAll(syscall.SIGKILL)
	}
	k.wg.Wait()
}

// Kill sends SIGKILL to every running container of the pod, as the OOM
// killer or a crash would end it: the pod fails with exit code 137.
func (k *Kubelet) Kill(namespace, name string) error {
	k.mu.Lock()
	w := k.names[namespace+"/"+name]
	k.mu.Unlock()
	if w == nil {
		return fmt.Errorf("kubelet: pod %s/%s is not on node %s", namespace, name, k.cfg.NodeName)
	}
	if w.killAll(syscall.SIGKILL) == 0 {
		return fmt.Errorf("kubelet: pod %s/%s has no running container", namespace, name)
	}
	return nil
}

// SetCondition adds or replaces a pod condition as the node, e.g.
// DisruptionTarget before the kubelet or a drain ends the pod; the
// kubelet's own status writes keep it.
func (k *Kubelet) SetCondition(ctx context.Context, namespace, name string, cond corev1.PodCondition) error {
	if cond.LastTransitionTime.IsZero() {
		cond.LastTransitionTime = metav1.Now()
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pod, err := k.node.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		setCondition(&pod.Status, cond)
		_, err = k.node.CoreV1().Pods(namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{})
		return err
	})
}

// Logs returns what the container wrote to stdout and stderr, every run
// of it in order, as one stream.
func (k *Kubelet) Logs(namespace, name, container string) (string, error) {
	b, err := os.ReadFile(k.logPath(namespace, name, container))
	if err != nil {
		return "", fmt.Errorf("kubelet: logs of %s/%s %s: %w", namespace, name, container, err)
	}
	return string(b), nil
}

func (k *Kubelet) logPath(namespace, name, container string) string {
	return filepath.Join(k.cfg.Dir, "logs", namespace, name, container+".log")
}

func (k *Kubelet) logf(format string, args ...any) {
	if k.cfg.Logf != nil {
		k.cfg.Logf("kubelet %s: "+format, append([]any{k.cfg.NodeName}, args...)...)
	}
}

// register creates the Node (or takes over an existing one of the same
// name) with a Ready condition and the node's capacity.
func (k *Kubelet) register(ctx context.Context) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name: k.cfg.NodeName,
		Labels: map[string]string{
			"kubernetes.io/hostname": k.cfg.NodeName,
			"kubernetes.io/os":       "linux",
			"kubernetes.io/arch":     "amd64",
		},
	}}
	if _, err := k.node.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("kubelet: register node %s: %w", k.cfg.NodeName, err)
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := k.node.CoreV1().Nodes().Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("kubelet: node %s: %w", k.cfg.NodeName, err)
		}
		now := metav1.Now()
		n.Status.Capacity = k.allocatable
		n.Status.Allocatable = k.allocatable
		n.Status.Addresses = []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: hostIP},
			{Type: corev1.NodeHostName, Address: k.cfg.NodeName},
		}
		n.Status.NodeInfo = corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: "amd64", KubeletVersion: "e2e"}
		n.Status.Conditions = []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "test kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientMemory", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasNoDiskPressure", LastHeartbeatTime: now, LastTransitionTime: now},
			{Type: corev1.NodePIDPressure, Status: corev1.ConditionFalse, Reason: "KubeletHasSufficientPID", LastHeartbeatTime: now, LastTransitionTime: now},
		}
		_, err = k.node.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
}

// observe handles every pod event: binds an unscheduled pod, and starts or
// signals the worker of a pod bound here.
func (k *Kubelet) observe(pod *corev1.Pod) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopped {
		return
	}
	if pod.Spec.NodeName == "" {
		sched := pod.Spec.SchedulerName
		if pod.DeletionTimestamp == nil && (sched == "" || sched == corev1.DefaultSchedulerName) && !k.binding[pod.UID] {
			k.binding[pod.UID] = true
			k.wg.Add(1)
			go k.bind(pod.DeepCopy())
		}
		return
	}
	if pod.Spec.NodeName != k.cfg.NodeName {
		return
	}
	w := k.workers[pod.UID]
	if w == nil {
		if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
			return // finished before this kubelet saw it
		}
		w = newPodWorker(k, pod)
		k.workers[pod.UID] = w
		k.names[pod.Namespace+"/"+pod.Name] = w
		k.wg.Add(1)
		go w.run(k.ctx)
	}
	w.update(pod)
}

// gone handles a pod deleted from the API: its containers are killed now.
func (k *Kubelet) gone(pod *corev1.Pod) {
	k.mu.Lock()
	w := k.workers[pod.UID]
	delete(k.binding, pod.UID)
	k.mu.Unlock()
	if w != nil {
		w.removed()
	}
}

func (k *Kubelet) bind(pod *corev1.Pod) {
	defer k.wg.Done()
	b := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: pod.Name, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: k.cfg.NodeName},
	}
	err := retry.OnError(retry.DefaultBackoff, func(err error) bool {
		return !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && !apierrors.IsInvalid(err)
	}, func() error {
		return k.cfg.Scheduler.CoreV1().Pods(pod.Namespace).Bind(k.ctx, b, metav1.CreateOptions{})
	})
	if err != nil {
		k.logf("bind %s/%s: %v", pod.Namespace, pod.Name, err)
		return
	}
	k.logf("bound %s/%s", pod.Namespace, pod.Name)
}

func (k *Kubelet) forget(w *podWorker) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.binding, w.uid)
}

func setCondition(s *corev1.PodStatus, cond corev1.PodCondition) {
	for i := range s.Conditions {
		if s.Conditions[i].Type == cond.Type {
			if s.Conditions[i].Status == cond.Status {
				cond.LastTransitionTime = s.Conditions[i].LastTransitionTime
			}
			s.Conditions[i] = cond
			return
		}
	}
	s.Conditions = append(s.Conditions, cond)
}

// sleep waits d or until ctx ends, reporting false then.
func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
