package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// NodeName is the test node's name and InternalIP: the kubelet refuses a
// loopback --node-ip, but --hostname-override=127.0.0.1 makes 127.0.0.1
// both, which is where the API server reaches the kubelet.
const NodeName = "127.0.0.1"

// HostTools are the programs a node needs besides Binaries, on PATH:
// Debian's containerd (1.6), runc and iproute2.
var HostTools = []string{"containerd", "ctr", "runc", "ip"}

// CNIBinDir holds the CNI plugins (Debian's containernetworking-plugins).
const CNIBinDir = "/usr/lib/cni"

// PauseImage is the reference of the sandbox image the node runs every
// pod's namespaces in; StartNode imports it from NodeOptions.PauseBinary.
const PauseImage = "localhost/e2e/pause:test"

// NodeOptions configure StartNode.
type NodeOptions struct {
	// Dir receives containerd's and the kubelet's state, configs and logs.
	Dir string
	// Prefix names what the node creates outside Dir, so that runs with
	// other prefixes never collide: the bridge Prefix+"0" and the cgroup
	// root "/"+Prefix in every cgroup v1 hierarchy.
	Prefix string
	// PodSubnet is the bridge's IPv4 subnet, such as 10.251.14.0/24.
	PodSubnet string
	// PauseBinary is the pause program (cmd/pause), linked statically.
	PauseBinary string
}

// Node is a real Kubernetes node on this machine: containerd with its CRI
// plugin, runc, the CNI bridge, kube-scheduler and the kubelet, registered
// with the cluster as NodeName.
type Node struct {
	// Network is the pod network; the test's servers join it.
	Network *Network
	// Started records how long each part took, in start order.
	Started []Timing

	c          *Cluster
	dir        string
	cgroupRoot string
	socket     string
	sysctls    map[string]string
	netnsSeen  map[string]bool // network namespaces that were there before
	containerd *process
	kubelet    *process
	scheduler  *process
}

// StartNode starts the node and returns once it is Ready. On error what
// was started is stopped again.
func (c *Cluster) StartNode(ctx context.Context, opts NodeOptions) (n *Node, err error) {
	for _, tool := range HostTools {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("node: %s not on PATH (apt-get install containerd runc iproute2): %w", tool, err)
		}
	}
	if _, err := os.Stat(filepath.Join(CNIBinDir, "bridge")); err != nil {
		return nil, fmt.Errorf("node: no CNI bridge plugin (apt-get install containernetworking-plugins): %w", err)
	}
	if opts.Dir == "" || opts.Prefix == "" || opts.PodSubnet == "" || opts.PauseBinary == "" {
		return nil, errors.New("node: Dir, Prefix, PodSubnet and PauseBinary are required")
	}
	n = &Node{c: c, dir: opts.Dir, cgroupRoot: "/" + opts.Prefix, netnsSeen: listNetns()}
	n.socket = n.path("containerd", "containerd.sock")
	defer func() {
		if err != nil {
			_ = n.Stop()
			n = nil
		}
	}()
	for _, d := range []string{"containerd", "cni/net.d", "cni/ipam", "kubelet", "pod-logs"} {
		if err := os.MkdirAll(n.path(d), 0o700); err != nil {
			return n, fmt.Errorf("node: %w", err)
		}
	}
	if n.sysctls, err = saveSysctls(); err != nil {
		return n, err
	}
	t0 := time.Now()
	if n.Network, err = newNetwork(opts.Prefix+"0", opts.PodSubnet); err != nil {
		return n, fmt.Errorf("node network: %w", err)
	}
	if err := os.WriteFile(n.path("cni/net.d", "10-e2e.conflist"), []byte(n.Network.CNIConfig(n.path("cni/ipam"))), 0o644); err != nil {
		return n, err
	}
	if err := n.makeCgroupRoot(); err != nil {
		return n, err
	}
	n.Started = append(n.Started, Timing{"network and cgroups", time.Since(t0)})

	t1 := time.Now()
	if err := os.WriteFile(n.path("containerd", "config.toml"), []byte(n.containerdConfig()), 0o600); err != nil {
		return n, err
	}
	n.containerd, err = startProcess("containerd", "containerd", n.path("containerd.log"),
		"--config", n.path("containerd", "config.toml"))
	if err != nil {
		return n, err
	}
	if err := waitFor(ctx, n.containerd, 30*time.Second, func() error {
		_, err := n.Ctr("version")
		return err
	}); err != nil {
		return n, err
	}
	pauseTar := n.path("pause.tar")
	if err := WriteImageTar(pauseTar, ImageSpec{
		Ref:        PauseImage,
		Files:      map[string]string{"/pause": opts.PauseBinary},
		Entrypoint: []string{"/pause"},
		User:       "65535:65535",
		Comment:    "the e2e tests' pause container (hack/e2e/cmd/pause), built by the tests",
	}); err != nil {
		return n, err
	}
	if err := n.ImportImage(pauseTar); err != nil {
		return n, err
	}
	n.Started = append(n.Started, Timing{"containerd", time.Since(t1)})

	t2 := time.Now()
	if err := n.writeKubeletFiles(); err != nil {
		return n, err
	}
	admin, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		return n, err
	}
	// The kubelet authorizes the API server's requests (logs, exec) with
	// SubjectAccessReviews, and checks bearer tokens with TokenReviews: the
	// delegated-auth role, bound to this node only.
	if _, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e:kubelet-auth-delegator"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:auth-delegator"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: "system:node:" + NodeName}},
	}, metav1.CreateOptions{}); err != nil {
		return n, fmt.Errorf("kubelet auth delegation: %w", err)
	}
	n.kubelet, err = startProcess("kubelet", c.Bin("kubelet"), n.path("kubelet.log"),
		"--config="+n.path("kubelet.yaml"),
		"--kubeconfig="+n.path("kubelet.kubeconfig"),
		"--hostname-override="+NodeName,
		"--root-dir="+n.path("kubelet"),
		"--v=1",
	)
	if err != nil {
		return n, err
	}
	ports, err := freePorts(1)
	if err != nil {
		return n, err
	}
	n.scheduler, err = startProcess("kube-scheduler", c.Bin("kube-scheduler"), n.path("kube-scheduler.log"),
		"--kubeconfig="+n.path("scheduler.kubeconfig"),
		"--authentication-kubeconfig="+n.path("scheduler.kubeconfig"),
		"--authorization-kubeconfig="+n.path("scheduler.kubeconfig"),
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", ports[0]),
		"--leader-elect=false",
		"--profiling=false",
	)
	if err != nil {
		return n, err
	}
	if err := waitFor(ctx, n.kubelet, 90*time.Second, func() error {
		if done, err := n.scheduler.exited(); done {
			return fmt.Errorf("kube-scheduler exited (%v):\n%s", err, n.scheduler.tail(20))
		}
		node, err := admin.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range node.Status.Conditions {
			if cond.Type == corev1.NodeReady {
				if cond.Status == corev1.ConditionTrue {
					return nil
				}
				return fmt.Errorf("node %s not Ready: %s", NodeName, cond.Message)
			}
		}
		return fmt.Errorf("node %s has no Ready condition yet", NodeName)
	}); err != nil {
		return n, err
	}
	n.Started = append(n.Started, Timing{"kubelet and kube-scheduler (node Ready)", time.Since(t2)})
	return n, nil
}

func (n *Node) path(elem ...string) string { return filepath.Join(append([]string{n.dir}, elem...)...) }

// Ctr runs containerd's ctr against the node's containerd in the k8s.io
// namespace, the CRI plugin's, and returns its output.
func (n *Node) Ctr(args ...string) ([]byte, error) {
	out, err := exec.Command("ctr", append([]string{"--address", n.socket, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// ImportImage imports an OCI or Docker image tarball into the CRI
// plugin's namespace, where the kubelet finds it (pullPolicy Never or
// IfNotPresent: nothing is pulled).
func (n *Node) ImportImage(tar string) error {
	_, err := n.Ctr("images", "import", tar)
	return err
}

// TagImage gives an imported image another reference, as `docker tag`
// does.
func (n *Node) TagImage(src, dst string) error {
	_, err := n.Ctr("images", "tag", "--force", src, dst)
	return err
}

// ContainerPID returns the host PID of a running container's process, from
// its containerd task; id is the container ID of the pod status, with or
// without its containerd:// prefix.
func (n *Node) ContainerPID(id string) (int, error) {
	id = strings.TrimPrefix(id, "containerd://")
	out, err := n.Ctr("tasks", "ls")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 3 && f[0] == id {
			if f[2] != "RUNNING" {
				return 0, fmt.Errorf("container %s is %s", id, f[2])
			}
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("container %s: no containerd task", id)
}

// Healthy returns an error naming any node component that has exited.
func (n *Node) Healthy() error {
	var errs []error
	for _, p := range []*process{n.containerd, n.kubelet, n.scheduler} {
		if p == nil {
			continue
		}
		if done, err := p.exited(); done {
			errs = append(errs, fmt.Errorf("%s exited (%v):\n%s", p.name, err, p.tail(20)))
		}
	}
	return errors.Join(errs...)
}

// Stop deletes the pods still on the node and waits for the kubelet to
// tear them down (containers, sandboxes, their network namespaces), stops
// the scheduler, the kubelet and containerd, kills what tasks remain, then
// unmounts what is left under Dir, removes the cgroup root, the network and
// the CNI network namespaces the node made, and puts back the sysctls the
// kubelet changed.
func (n *Node) Stop() error {
	var errs []error
	if n.kubelet != nil {
		if done, _ := n.kubelet.exited(); !done {
			if err := n.drain(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, p := range []*process{n.scheduler, n.kubelet} {
		if p != nil {
			if err := p.stop(10 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if n.containerd != nil {
		if done, _ := n.containerd.exited(); !done {
			if out, err := n.Ctr("tasks", "ls", "-q"); err == nil {
				for _, id := range strings.Fields(string(out)) {
					_, _ = n.Ctr("tasks", "kill", "--signal", "SIGKILL", id)
					_, _ = n.Ctr("tasks", "delete", "--force", id)
				}
			}
		}
		if err := n.containerd.stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	n.killShims()
	if err := unmountUnder(n.dir); err != nil {
		errs = append(errs, err)
	}
	for name := range listNetns() {
		if strings.HasPrefix(name, "cni-") && !n.netnsSeen[name] {
			if err := run("ip", "netns", "del", name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := n.removeCgroupRoot(); err != nil {
		errs = append(errs, err)
	}
	if n.Network != nil {
		if err := n.Network.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if n.sysctls != nil {
		if err := restoreSysctls(n.sysctls); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// drain deletes every pod bound to the node and waits up to a minute for
// the kubelet to confirm each is gone.
func (n *Node) drain() error {
	admin, err := kubernetes.NewForConfig(n.c.AdminConfig())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sel := metav1.ListOptions{FieldSelector: "spec.nodeName=" + NodeName}
	for {
		pods, err := admin.CoreV1().Pods("").List(ctx, sel)
		if err != nil {
			return fmt.Errorf("drain node: %w", err)
		}
		if len(pods.Items) == 0 {
			return nil
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil {
				_ = admin.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptrTo(int64(1))})
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drain node: %d pods still there after a minute", len(pods.Items))
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// killShims kills the containerd shims of this node's containerd that
// outlived it (a shim names its containerd's socket in its arguments).
func (n *Node) killShims() {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if !strings.Contains(args[0], "containerd-shim") || !strings.Contains(string(b), n.socket) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// unmountUnder detaches every mount below dir, deepest first: the kubelet's
// volumes, containerd's rootfs and shm mounts.
func unmountUnder(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			points = append(points, f[4])
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, p := range points {
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", p, err))
		}
	}
	return errors.Join(errs...)
}

func listNetns() map[string]bool {
	out := map[string]bool{}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		out[e.Name()] = true
	}
	return out
}

// cgroupHierarchies are the mounted cgroup hierarchies (v1 controllers,
// the named systemd one and, on a hybrid host, the unified one).
func cgroupHierarchies() ([]string, error) {
	entries, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			if _, err := os.Stat(filepath.Join(p, "cgroup.procs")); err == nil {
				out = append(out, p)
			}
		}
	}
	if len(out) == 0 {
		if _, err := os.Stat("/sys/fs/cgroup/cgroup.procs"); err == nil {
			out = append(out, "/sys/fs/cgroup") // cgroup v2 only
		}
	}
	return out, nil
}

// makeCgroupRoot creates the kubelet's cgroupRoot in every hierarchy,
// which the kubelet with the cgroupfs driver requires, with the cpuset of
// the root so that tasks may join it.
func (n *Node) makeCgroupRoot() error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		d := filepath.Join(h, n.cgroupRoot)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("cgroup root %s: %w", d, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if v, err := os.ReadFile(filepath.Join(h, f)); err == nil {
				if err := os.WriteFile(filepath.Join(d, f), v, 0o644); err != nil {
					return fmt.Errorf("cgroup root %s: %w", d, err)
				}
			}
		}
	}
	return nil
}

// removeCgroupRoot removes the cgroup root and every cgroup below it,
// deepest first; a cgroup that still holds a process stays and is named.
func (n *Node) removeCgroupRoot() error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hs {
		root := filepath.Join(h, n.cgroupRoot)
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := syscall.Rmdir(dirs[i]); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

func (n *Node) containerdConfig() string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = %q

[plugins."io.containerd.internal.v1.opt"]
  path = %q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # Root here lacks CAP_SYS_RESOURCE: a negative oom_score_adj makes runc
  # fail ("can't get final child's PID from pipe: EOF"); never ask for one
  # below containerd's own.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
    max_conf_num = 1
`, n.path("containerd", "root"), n.path("containerd", "state"), n.socket, n.path("containerd", "opt"),
		PauseImage, CNIBinDir, n.path("cni/net.d"))
}

// writeKubeletFiles writes the kubelet's configuration, its kubeconfig and
// serving certificate, and the scheduler's kubeconfig.
func (n *Node) writeKubeletFiles() error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	kubeletCert, kubeletKey, err := n.c.ca.issue("system:node:"+NodeName, []string{"system:nodes"}, nil, nil)
	if err != nil {
		return err
	}
	servingCert, servingKey, err := n.c.ca.issue(NodeName, nil, []net.IP{net.IPv4(127, 0, 0, 1)}, nil)
	if err != nil {
		return err
	}
	schedCert, schedKey, err := n.c.ca.issue("system:kube-scheduler", nil, nil, nil)
	if err != nil {
		return err
	}
	for name, data := range map[string][]byte{
		"kubelet.crt":  servingCert,
		"kubelet.key":  servingKey,
		"resolv.conf":  []byte("options ndots:1\n"),
		"kubelet.yaml": []byte(n.kubeletConfig(ports[0], ports[1])),
	} {
		if err := os.WriteFile(n.path(name), data, 0o600); err != nil {
			return err
		}
	}
	if err := n.writeCertKubeconfig(n.path("kubelet.kubeconfig"), "kubelet", kubeletCert, kubeletKey); err != nil {
		return err
	}
	return n.writeCertKubeconfig(n.path("scheduler.kubeconfig"), "scheduler", schedCert, schedKey)
}

func (n *Node) writeCertKubeconfig(path, user string, cert, key []byte) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: n.c.Server, CertificateAuthorityData: n.c.ca.certPEM}
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: user}
	cfg.CurrentContext = "e2e"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig %s: %w", path, err)
	}
	return nil
}

// kubeletConfig is the KubeletConfiguration of the node. Each setting off
// the defaults is there for a fact of these machines, said beside it.
func (n *Node) kubeletConfig(port, healthzPort int) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: %d
tlsCertFile: %s
tlsPrivateKeyFile: %s
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %s
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://%s
# No systemd here: the cgroupfs driver, under a cgroup root of the test's
# own in every hierarchy (made before the kubelet starts). The machine has
# cgroup v1, which the kubelet refuses since 1.35 unless told.
cgroupDriver: cgroupfs
cgroupRoot: %s
failCgroupV1: false
failSwapOn: false
# Root here lacks CAP_SYS_RESOURCE: no negative oom_score_adj, not even
# for the kubelet itself.
oomScoreAdj: 0
# The KUBE-FIREWALL chain would drop traffic to 127.0.0.0/8 from other
# sources, and the node adds no iptables rules at all.
makeIPTablesUtilChains: false
podLogsDir: %s
resolvConf: %s
# The machine's disk is shared and busy: evict only when it is all but
# full, and never collect the imported images (nothing can pull them back).
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  nodefs.inodesFree: 1%%
  imagefs.available: 1%%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
`, port, healthzPort, n.path("kubelet.crt"), n.path("kubelet.key"), n.c.path("ca.crt"), n.socket,
		n.cgroupRoot, n.path("pod-logs"), n.path("resolv.conf"))
}

func ptrTo[T any](v T) *T { return &v }
