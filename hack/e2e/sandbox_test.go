package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// What only a real node shows, read from outside the container: the
// chart's CronJob pod, with SASL and TLS from Secrets, in a namespace
// enforcing restricted Pod Security, runs the producer from the image as a
// process (found through its containerd task) with uid and gid 65532, no
// effective capabilities, no_new_privs and a seccomp filter (the runtime's
// default profile), on a read-only root; the config file it reads is the
// kubelet's projection of the ConfigMap (a subPath mount of a file in the
// timestamped folder the atomic writer made), and the TLS and SASL files
// that config names are the kubelet's projection of the Secrets: a ..data
// symlink to that folder and every key a symlink through it, mode 0440.
//
// The pod is the CronJob's own, given a schedule of next New Year's 03:00
// instead of running once, so that it waits long enough to be inspected.
func TestProducerSandbox(t *testing.T) {
	c, cs, brokers := needNode(t)
	ctx := context.Background()
	const ns, release = "sandbox", "sandbox"
	chartVolume(t, c, ns, release, t.TempDir(), corev1.ReadWriteMany)
	kafkaSecrets(t, cs, ns, "not-printed")
	h := newHelm(t, c)
	h.installSuspended(release, ns, producerRepo, producerTag, brokers, "-f", chartDir+"/ci/sasl-tls-values.yaml")
	defer h.must("uninstall", release, "-n", ns, "--wait", "--timeout", "60s")

	cj, err := cs.BatchV1().CronJobs(ns).Get(ctx, release+"-coupon-producer-couponbase1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	spec := cj.Spec.JobTemplate.Spec.Template.Spec.DeepCopy()
	spec.Containers[0].Args = []string{"--schedule=0 3 1 1 *"}
	spec.TerminationGracePeriodSeconds = ptr(int64(2))
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "inspected", Labels: cj.Spec.JobTemplate.Spec.Template.Labels}, Spec: *spec}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The pod holds the chart's claim: it goes before the uninstall.
	defer func() {
		_ = cs.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{})
		eventually(t, 60*time.Second, "pod "+pod.Name+" gone", func() (bool, error) {
			_, err := cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
			return err != nil, nil
		})
	}()
	eventually(t, 90*time.Second, "the producer waiting for its schedule", func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
			return false, fmt.Errorf("pod ended;%s\n%s", describePods([]corev1.Pod{*p}), podLogs(cs, []corev1.Pod{*p}))
		}
		logs, _ := containerLogs(cs, ns, pod.Name, "producer")
		return p.Status.Phase == corev1.PodRunning && strings.Contains(logs, "scheduler started"), nil
	})
	pid := containerPID(t, cs, ns, pod.Name)
	proc := func(name string) string { return fmt.Sprintf("/proc/%d/%s", pid, name) }

	t.Run("the process runs as 65532 without privileges under seccomp", func(t *testing.T) {
		cmdline, err := os.ReadFile(proc("cmdline"))
		if err != nil {
			t.Fatal(err)
		}
		if argv0, _, _ := strings.Cut(string(cmdline), "\x00"); argv0 != "/usr/local/bin/coupon-producer" {
			t.Fatalf("process %d runs %q, want the image's entrypoint", pid, argv0)
		}
		status := procStatus(t, proc("status"))
		for key, want := range map[string]string{
			"Uid":        "65532\t65532\t65532\t65532",
			"Gid":        "65532\t65532\t65532\t65532",
			"CapEff":     "0000000000000000",
			"CapPrm":     "0000000000000000",
			"CapBnd":     "0000000000000000",
			"NoNewPrivs": "1",
			"Seccomp":    "2",
		} {
			if got := status[key]; got != want {
				t.Errorf("%s of the producer's process: %q, want %q", key, got, want)
			}
		}
		t.Logf("process %d: Uid %s, Gid %s, Groups %q, CapEff %s, NoNewPrivs %s, Seccomp %s (%s filters)",
			pid, status["Uid"], status["Gid"], status["Groups"], status["CapEff"], status["NoNewPrivs"], status["Seccomp"], status["Seccomp_filters"])
	})

	mounts := containerMounts(t, proc("mountinfo"))

	t.Run("its root filesystem is read-only", func(t *testing.T) {
		root, ok := mounts["/"]
		if !ok {
			t.Fatalf("no root in the container's mounts: %v", mounts)
		}
		if !strings.Contains(","+root.options+",", ",ro,") {
			t.Errorf("the container's root is mounted %s, want ro", root.options)
		}
		// Even root of the host cannot write through a read-only mount.
		err := os.WriteFile(filepath.Join(proc("root"), "written-from-outside"), []byte("x"), 0o644)
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("writing into the container's root: %v, want %v", err, syscall.EROFS)
		}
	})

	t.Run("it reads the kubelet's projection of the ConfigMap and the Secrets", func(t *testing.T) {
		env := procEnviron(t, proc("environ"))
		configPath := env["COUPON_PRODUCER_CONFIG"]
		if configPath == "" {
			t.Fatalf("the producer's environment names no config file: %v", env)
		}
		// The chart mounts config.yaml with subPath: the kubelet binds
		// the file of the atomic writer's current timestamped folder.
		m, ok := mounts[configPath]
		if !ok {
			t.Fatalf("%s is no mount of its own in the container", configPath)
		}
		if !regexp.MustCompile(`/volumes/kubernetes\.io~configmap/config/\.\.\d{4}_\d\d_\d\d_[^/]+/config\.yaml$`).MatchString(m.root) {
			t.Errorf("%s is bound from %s, want the ConfigMap volume's timestamped folder", configPath, m.root)
		}
		raw, err := os.ReadFile(filepath.Join(proc("root"), configPath))
		if err != nil {
			t.Fatal(err)
		}
		var cfg map[string]any
		if err := yaml.Unmarshal(raw, &cfg); err != nil {
			t.Fatalf("config %s: %v\n%s", configPath, err, raw)
		}
		var files []string
		for key, v := range cfg {
			if s, ok := v.(string); ok && strings.HasSuffix(key, "-file") && s != "" {
				files = append(files, s)
			}
		}
		if len(files) != 4 {
			t.Fatalf("the config names %v, want the TLS CA, certificate and key and the SASL password file", files)
		}
		for _, f := range files {
			dir, key := filepath.Split(f)
			dir = filepath.Clean(dir)
			if _, ok := mounts[dir]; !ok {
				t.Errorf("%s: %s is not a volume mount", f, dir)
				continue
			}
			inRoot := func(p string) string { return filepath.Join(proc("root"), p) }
			data, err := os.Readlink(inRoot(filepath.Join(dir, "..data")))
			if err != nil || !regexp.MustCompile(`^\.\.\d{4}_\d\d_\d\d_`).MatchString(data) {
				t.Errorf("%s/..data: %q (%v), want a symlink to the atomic writer's timestamped folder", dir, data, err)
			}
			link, err := os.Readlink(inRoot(f))
			if err != nil || link != filepath.Join("..data", key) {
				t.Errorf("%s: %q (%v), want a symlink to ..data/%s", f, link, err, key)
			}
			fi, err := os.Stat(inRoot(f))
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o440 {
				t.Errorf("%s: mode %o, want the chart's defaultMode 0440", f, fi.Mode().Perm())
			}
		}
		t.Logf("config %s from %s; Secret files %v through ..data", configPath, m.root, files)
	})
}

// procStatus parses /proc/<pid>/status into its fields.
func procStatus(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// procEnviron parses /proc/<pid>/environ.
func procEnviron(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range strings.Split(string(b), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			out[k] = v
		}
	}
	return out
}

// mount is one line of a mountinfo file: the path inside its filesystem
// that is mounted (root) and the per-mount options.
type mount struct {
	root, options string
}

// containerMounts parses /proc/<pid>/mountinfo by mount point, as the
// process sees its mounts.
func containerMounts(t *testing.T, path string) map[string]mount {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]mount{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		out[f[4]] = mount{root: f[3], options: f[5]}
	}
	return out
}
