// Package cluster starts a real single-node Kubernetes for tests: etcd,
// kube-apiserver and kube-controller-manager (Start), and a node of
// kube-scheduler, the kubelet, containerd, runc and the CNI bridge
// (StartNode), the Kubernetes binaries built from source by
// hack/kube/build.sh, listening on free loopback ports with their state in
// one folder; test servers such as the Kafka broker join the node's pod
// network in network namespaces of their own (Network.AddNamespace).
package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubeVersion is the Kubernetes release hack/kube builds; it names the
// cache folder of the binaries.
const KubeVersion = "v1.37.2"

// BinEnv names the environment variable that overrides the folder of the
// binaries, as it does for hack/kube/build.sh.
const BinEnv = "COUPON_KUBE_BIN"

// Binaries are the programs a test run needs in the bin folder.
var Binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl", "helm"}

// DefaultControllers are the kube-controller-manager controllers the tests
// rely on: CronJob and Job run the workload; the service account, token and
// root CA publisher ones give every namespace what pods expect; namespace
// and garbage collection clean up after deletes (Jobs owned by CronJobs,
// pods owned by Jobs, whole namespaces); the volume binder binds claims to
// the tests' PersistentVolumes and the protection controllers let both be
// deleted again; ttl-after-finished honours ttlSecondsAfterFinished; node
// lifecycle taints a node that is not Ready, as on any cluster.
var DefaultControllers = []string{
	"cronjob-controller",
	"job-controller",
	"serviceaccount-controller",
	"serviceaccount-token-controller",
	"root-ca-certificate-publisher-controller",
	"namespace-controller",
	"garbage-collector-controller",
	"persistentvolume-binder-controller",
	"persistentvolumeclaim-protection-controller",
	"persistentvolume-protection-controller",
	"ttl-after-finished-controller",
	"node-lifecycle-controller",
}

// ErrMissingBinaries is returned by Start when the bin folder lacks one of
// Binaries; its message says how to build them.
var ErrMissingBinaries = errors.New("kubernetes binaries missing")

// BinDir returns the folder of the binaries: $COUPON_KUBE_BIN, else the
// cache folder hack/kube/build.sh fills by default.
func BinDir() string {
	if d := os.Getenv(BinEnv); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		home = os.Getenv("HOME")
	}
	return filepath.Join(home, ".cache", "coupon-producer", "kube-"+KubeVersion, "bin")
}

// CheckBinaries returns an error wrapping ErrMissingBinaries that names the
// missing programs and the command that builds them.
func CheckBinaries(dir string) error {
	var missing []string
	for _, b := range Binaries {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w in %s: %s; build them with hack/kube/build.sh (several minutes once, cached) or set %s",
		ErrMissingBinaries, dir, strings.Join(missing, ", "), BinEnv)
}

// Options configure Start.
type Options struct {
	// BinDir holds the binaries; BinDir() when empty.
	BinDir string
	// Dir receives etcd's data, certificates, kubeconfigs and one log file
	// per component; it is created if missing.
	Dir string
	// Controllers replaces DefaultControllers.
	Controllers []string
}

// Cluster is a running control plane.
type Cluster struct {
	// Server is the API server's URL, https://127.0.0.1:<port>.
	Server string
	// Kubeconfig is the path of an admin kubeconfig (system:masters), for
	// kubectl and helm.
	Kubeconfig string
	// Dir is Options.Dir: logs are in Dir/<component>.log.
	Dir string
	// Started records how long each component took to become ready, in
	// start order.
	Started []Timing

	bin        string
	ca         *authority
	adminToken string
	kcmToken   string
	etcd       *process
	apiserver  *process
	controller *process
}

// Timing is one component's start-up time.
type Timing struct {
	Component string
	Ready     time.Duration
}

// Start starts etcd, kube-apiserver and kube-controller-manager and returns
// once the API server is ready and the controller manager has created the
// default namespace's service account (proof that its controllers run). On
// error everything started is stopped again.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	bin := opts.BinDir
	if bin == "" {
		bin = BinDir()
	}
	if err := CheckBinaries(bin); err != nil {
		return nil, err
	}
	if opts.Dir == "" {
		return nil, errors.New("cluster: Options.Dir is required")
	}
	controllers := opts.Controllers
	if len(controllers) == 0 {
		controllers = DefaultControllers
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	c = &Cluster{Dir: opts.Dir, bin: bin, adminToken: randomToken(), kcmToken: randomToken()}
	defer func() {
		if err != nil {
			_ = c.Stop()
			c = nil
		}
	}()
	if err := c.writeCredentials(); err != nil {
		return c, err
	}
	ports, err := freePorts(4)
	if err != nil {
		return c, err
	}
	etcdClient, etcdPeer, apiPort, kcmPort := ports[0], ports[1], ports[2], ports[3]
	c.Server = fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	if err := c.writeKubeconfigs(); err != nil {
		return c, err
	}

	t0 := time.Now()
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPeer)
	c.etcd, err = startProcess("etcd", filepath.Join(bin, "etcd"), c.path("etcd.log"),
		"--name=e2e",
		"--data-dir="+c.path("etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL,
		"--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=e2e="+peerURL,
		// Test data: durability is not worth an fsync per write.
		"--unsafe-no-fsync",
		"--log-level=warn",
	)
	if err != nil {
		return c, err
	}
	if err := waitFor(ctx, c.etcd, 30*time.Second, func() error {
		return httpOK(http.DefaultClient, etcdURL+"/health", "")
	}); err != nil {
		return c, err
	}
	c.Started = append(c.Started, Timing{"etcd", time.Since(t0)})

	t1 := time.Now()
	c.apiserver, err = startProcess("kube-apiserver", filepath.Join(bin, "kube-apiserver"), c.path("kube-apiserver.log"),
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		// Since 1.37 the endpoint reconciler refuses a loopback address
		// for the kubernetes Service; no pod here talks to the API.
		"--endpoint-reconciler-type=none",
		fmt.Sprintf("--secure-port=%d", apiPort),
		"--tls-cert-file="+c.path("apiserver.crt"),
		"--tls-private-key-file="+c.path("apiserver.key"),
		"--client-ca-file="+c.path("ca.crt"),
		"--token-auth-file="+c.path("tokens.csv"),
		// Node before RBAC, as kubeadm has it: the kubelet may read only
		// what the pods bound to its node reference.
		"--authorization-mode=Node,RBAC",
		// Added to the default plugins, PodSecurity among them.
		"--enable-admission-plugins=NodeRestriction",
		// Privileged containers are allowed by the server, so that what
		// refuses them in a restricted namespace is Pod Security admission.
		"--allow-privileged=true",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+c.path("sa.pub"),
		"--service-account-signing-key-file="+c.path("sa.key"),
		"--service-cluster-ip-range=10.96.0.0/24",
		// Logs, exec and port-forward go through the kubelet's API: the
		// server presents a client certificate and checks the kubelet's
		// serving certificate against the one CA.
		"--kubelet-client-certificate="+c.path("apiserver-kubelet-client.crt"),
		"--kubelet-client-key="+c.path("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority="+c.path("ca.crt"),
		"--profiling=false",
	)
	if err != nil {
		return c, err
	}
	tlsClient, err := c.httpClient()
	if err != nil {
		return c, err
	}
	if err := waitFor(ctx, c.apiserver, 90*time.Second, func() error {
		return httpOK(tlsClient, c.Server+"/readyz", c.adminToken)
	}); err != nil {
		return c, err
	}
	c.Started = append(c.Started, Timing{"kube-apiserver", time.Since(t1)})

	t2 := time.Now()
	c.controller, err = startProcess("kube-controller-manager", filepath.Join(bin, "kube-controller-manager"), c.path("kube-controller-manager.log"),
		"--kubeconfig="+c.path("controller-manager.kubeconfig"),
		"--authentication-kubeconfig="+c.path("controller-manager.kubeconfig"),
		"--authorization-kubeconfig="+c.path("controller-manager.kubeconfig"),
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", kcmPort),
		"--leader-elect=false",
		// Each controller acts as its own service account, as in kubeadm
		// clusters, so RBAC is exercised the way it is in production.
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+c.path("sa.key"),
		"--root-ca-file="+c.path("ca.crt"),
		"--cluster-name=e2e",
		"--controllers="+strings.Join(controllers, ","),
		// The volume binder's resync, 15 s by default, would make every
		// claim wait that long.
		"--pvclaimbinder-sync-period=1s",
		"--profiling=false",
	)
	if err != nil {
		return c, err
	}
	admin, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		return c, fmt.Errorf("admin client: %w", err)
	}
	if err := waitFor(ctx, c.controller, 60*time.Second, func() error {
		_, err := admin.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	}); err != nil {
		return c, fmt.Errorf("controller manager: no default service account: %w", err)
	}
	c.Started = append(c.Started, Timing{"kube-controller-manager", time.Since(t2)})
	return c, nil
}

// Stop stops the controller manager, the API server and etcd, in that
// order, each with SIGTERM and then SIGKILL after 10 s.
func (c *Cluster) Stop() error {
	var errs []error
	for _, p := range []*process{c.controller, c.apiserver, c.etcd} {
		if p != nil {
			if err := p.stop(10 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// AdminConfig returns a client configuration with cluster-admin rights.
func (c *Cluster) AdminConfig() *rest.Config {
	return &rest.Config{
		Host:            c.Server,
		BearerToken:     c.adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.ca.certPEM},
		QPS:             50,
		Burst:           100,
	}
}

// UserConfig returns a client configuration that authenticates with a
// client certificate as user in groups: "system:node:<name>" in
// "system:nodes" is a kubelet, "system:kube-scheduler" the scheduler.
func (c *Cluster) UserConfig(user string, groups ...string) (*rest.Config, error) {
	certPEM, keyPEM, err := c.ca.issue(user, groups, nil, nil)
	if err != nil {
		return nil, err
	}
	return &rest.Config{
		Host: c.Server,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   c.ca.certPEM,
			CertData: certPEM,
			KeyData:  keyPEM,
		},
		QPS:   50,
		Burst: 100,
	}, nil
}

// RSS returns the resident set size in bytes of each running component.
func (c *Cluster) RSS() (map[string]int64, error) {
	out := map[string]int64{}
	for _, p := range []*process{c.etcd, c.apiserver, c.controller} {
		if p == nil {
			continue
		}
		n, err := p.rss()
		if err != nil {
			return nil, err
		}
		out[p.name] = n
	}
	return out, nil
}

// Bin returns the path of one of Binaries.
func (c *Cluster) Bin(name string) string { return filepath.Join(c.bin, name) }

// Healthy returns an error naming any component that has exited, with the
// end of its log.
func (c *Cluster) Healthy() error {
	var errs []error
	for _, p := range []*process{c.etcd, c.apiserver, c.controller} {
		if p == nil {
			continue
		}
		if done, err := p.exited(); done {
			errs = append(errs, fmt.Errorf("%s exited (%v):\n%s", p.name, err, p.tail(20)))
		}
	}
	return errors.Join(errs...)
}

// CreateNamespace creates a namespace with labels and waits until its
// default service account exists, since pods are refused before that.
func (c *Cluster) CreateNamespace(ctx context.Context, name string, labels map[string]string) error {
	cs, err := kubernetes.NewForConfig(c.AdminConfig())
	if err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", name, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := cs.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		if err == nil {
			return nil
		}
		if !apierrors.IsNotFound(err) || time.Now().After(deadline) {
			return fmt.Errorf("namespace %s: default service account: %w", name, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *Cluster) path(name string) string { return filepath.Join(c.Dir, name) }

// writeCredentials writes the CA, the API server's serving certificate, the
// service account key pair and the token file (admin and the controller
// manager).
func (c *Cluster) writeCredentials() error {
	ca, err := newAuthority()
	if err != nil {
		return err
	}
	c.ca = ca
	certPEM, keyPEM, err := ca.issue("kube-apiserver", nil,
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv4(10, 96, 0, 1)},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"})
	if err != nil {
		return err
	}
	clientCert, clientKey, err := ca.issue("kube-apiserver-kubelet-client", []string{"system:masters"}, nil, nil)
	if err != nil {
		return err
	}
	tokens := fmt.Sprintf("%s,admin,admin,system:masters\n%s,system:kube-controller-manager,kcm\n",
		c.adminToken, c.kcmToken)
	for name, data := range map[string][]byte{
		"ca.crt":                       ca.certPEM,
		"apiserver.crt":                certPEM,
		"apiserver.key":                keyPEM,
		"tokens.csv":                   []byte(tokens),
		"apiserver-kubelet-client.crt": clientCert,
		"apiserver-kubelet-client.key": clientKey,
	} {
		if err := os.WriteFile(c.path(name), data, 0o600); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
		}
	}
	return writeServiceAccountKeys(c.path("sa.key"), c.path("sa.pub"))
}

func (c *Cluster) writeKubeconfigs() error {
	write := func(path, user, token string) error {
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: c.Server, CertificateAuthorityData: c.ca.certPEM}
		cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Token: token}
		cfg.Contexts["e2e"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: user, Namespace: "default"}
		cfg.CurrentContext = "e2e"
		if err := clientcmd.WriteToFile(*cfg, path); err != nil {
			return fmt.Errorf("write kubeconfig %s: %w", path, err)
		}
		return nil
	}
	c.Kubeconfig = c.path("admin.kubeconfig")
	if err := write(c.Kubeconfig, "admin", c.adminToken); err != nil {
		return err
	}
	return write(c.path("controller-manager.kubeconfig"), "system:kube-controller-manager", c.kcmToken)
}

func (c *Cluster) httpClient() (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(c.ca.certPEM) {
		return nil, errors.New("cluster: ca certificate does not parse")
	}
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}, nil
}

// waitFor polls ready every 100 ms until it succeeds, p exits (then the
// error quotes p's log) or the timeout passes.
func waitFor(ctx context.Context, p *process, timeout time.Duration, ready func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return nil
		}
		if done, werr := p.exited(); done {
			return fmt.Errorf("%s exited (%v) before it was ready:\n%s", p.name, werr, p.tail(20))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %w\n%s", p.name, timeout, err, p.tail(20))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func httpOK(client *http.Client, url, token string) error {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// freePorts asks the kernel for n free loopback ports. Another process may
// take one before the component binds it; the component then fails to
// start and says so in its log, which the error quotes.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
