package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"github.com/couponpipeline/coupon-producer/hack/e2e/cluster"
)

// chartDir is the chart, from this folder.
const chartDir = "../../charts/coupon-producer"

// helmCLI runs the helm binary built by hack/kube/build.sh against the
// cluster, as a user would, with its config, cache and data in a folder of
// the test's own.
type helmCLI struct {
	t    *testing.T
	c    *cluster.Cluster
	home string
}

func newHelm(t *testing.T, c *cluster.Cluster) *helmCLI {
	return &helmCLI{t: t, c: c, home: t.TempDir()}
}

// run returns helm's combined output and its error.
func (h *helmCLI) run(args ...string) (string, error) {
	h.t.Helper()
	cmd := exec.Command(h.c.Bin("helm"), args...)
	cmd.Env = append(os.Environ(),
		"KUBECONFIG="+h.c.Kubeconfig,
		"HELM_CONFIG_HOME="+filepath.Join(h.home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(h.home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(h.home, "data"),
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// must runs helm and fails the test if it fails.
func (h *helmCLI) must(args ...string) string {
	h.t.Helper()
	out, err := h.run(args...)
	if err != nil {
		h.t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func kubectl(t *testing.T, c *cluster.Cluster, args ...string) string {
	t.Helper()
	out, err := exec.Command(c.Bin("kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// hostPathPV creates a PersistentVolume over a host folder, reserved for
// the claim ns/claim, and deletes it after the test.
func hostPathPV(t *testing.T, cs kubernetes.Interface, name, path, class, ns, claim string, modes ...corev1.PersistentVolumeAccessMode) {
	t.Helper()
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")},
			AccessModes:                   modes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              class,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path}},
			ClaimRef:                      &corev1.ObjectReference{Namespace: ns, Name: claim},
		},
	}
	if _, err := cs.CoreV1().PersistentVolumes().Create(context.Background(), pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().PersistentVolumes().Delete(context.Background(), name, metav1.DeleteOptions{})
	})
}

// chartVolume creates namespace ns, which enforces the restricted Pod
// Security level and is deleted after the test, and the PersistentVolume
// ns-data over the host folder data, of storage class e2e-<ns> and access
// mode mode, reserved for the data claim of release rel.
func chartVolume(t *testing.T, c *cluster.Cluster, ns, rel, data string, mode corev1.PersistentVolumeAccessMode) {
	t.Helper()
	namespace(t, c, ns, restrictedPSS)
	hostPathPV(t, adminClient(t, c), ns+"-data", data, "e2e-"+ns, ns, rel+"-coupon-producer-data", mode)
}

// installSuspended installs the chart as release rel into the namespace
// ns of chartVolume with the image repo:tag (on the node, never pulled),
// the brokers, chartVolume's storage class and the CronJobs suspended (the
// test starts the runs), then args (more -f and --set, which helm applies
// over the files whatever their order); it returns helm's output.
func (h *helmCLI) installSuspended(rel, ns, repo, tag string, brokers []string, args ...string) string {
	h.t.Helper()
	return h.must(append([]string{"install", rel, chartDir, "-n", ns,
		"--set", "image.repository=" + repo, "--set", "image.tag=" + tag, "--set", "image.pullPolicy=Never",
		"--set", "kafka.brokers={" + strings.Join(brokers, ",") + "}",
		"--set", "data.persistence.storageClass=e2e-" + ns,
		"--set", "cronJob.suspend=true"}, args...)...)
}

// The chart installed with helm into a namespace that enforces the
// restricted Pod Security level, on the real API server: what Helm rendered
// is what the server holds; every CronJob gives a Job whose pod the server
// accepts; a variant that breaks the level has its pods refused; an upgrade
// changes a schedule; an uninstall leaves nothing behind.
func TestHelmChartOnRealAPIServer(t *testing.T) {
	c := needCluster(t)
	cs := adminClient(t, c)
	ctx := context.Background()
	const ns = "chart"
	namespace(t, c, ns, restrictedPSS)
	data := t.TempDir()
	hostPathPV(t, cs, "chart-data", data, "e2e-chart", ns, "coupons-coupon-producer-data", corev1.ReadWriteMany)
	h := newHelm(t, c)

	h.must("install", "coupons", chartDir, "-n", ns, "--set", "data.persistence.storageClass=e2e-chart")

	// What Helm rendered is on the server, field for field (the server
	// only adds defaults).
	manifest := h.must("get", "manifest", "coupons", "-n", ns)
	objs := decodeManifest(t, manifest)
	kinds := map[string][]string{}
	for _, o := range objs {
		kinds[o.GetKind()] = append(kinds[o.GetKind()], o.GetName())
	}
	want := map[string]int{"CronJob": 3, "ConfigMap": 1, "PersistentVolumeClaim": 1, "ServiceAccount": 1}
	for kind, n := range want {
		if len(kinds[kind]) != n {
			t.Errorf("rendered %d %s (%v), want %d", len(kinds[kind]), kind, kinds[kind], n)
		}
	}
	dyn := dynamic.NewForConfigOrDie(c.AdminConfig())
	groups, err := restmapper.GetAPIGroupResources(cs.Discovery())
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDiscoveryRESTMapper(groups)
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatal(err)
		}
		live, err := dyn.Resource(m.Resource).Namespace(ns).Get(ctx, o.GetName(), metav1.GetOptions{})
		if err != nil {
			t.Errorf("%s %s rendered but not on the server: %v", gvk.Kind, o.GetName(), err)
			continue
		}
		for _, d := range subsetDiff(gvk.Kind+"/"+o.GetName(), o.Object, live.Object) {
			t.Errorf("server differs from the rendered manifest: %s", d)
		}
	}

	// An ad-hoc run of every file: the Job controller creates each pod, so
	// the server accepted the pod template under restricted Pod Security.
	// No kubelet serves this namespace: the pods stay Pending.
	cronJobs, err := cs.BatchV1().CronJobs(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, cj := range cronJobs.Items {
		job := cj.Name + "-manual"
		kubectl(t, c, "-n", ns, "create", "job", "--from=cronjob/"+cj.Name, job)
		eventually(t, 30*time.Second, "a pod of "+job, func() (bool, error) {
			if msg := failedCreate(t, cs, ns, job); msg != "" {
				return false, errors.New("pod refused: " + msg)
			}
			return len(jobPods(t, cs, ns, job)) == 1, nil
		})
	}

	// The same chart with a container that may escalate privileges: Pod
	// Security enforces on pods, so the CronJobs install (with a warning)
	// and every pod their Jobs try to create is refused.
	out := h.must("install", "lax", chartDir, "-n", ns,
		"--set", "data.persistence.storageClass=e2e-chart",
		"--set", "pod.containerSecurityContext.allowPrivilegeEscalation=true",
		"--set", "jobs.couponbase2=null", "--set", "jobs.couponbase3=null")
	if !strings.Contains(out, "would violate PodSecurity") || !strings.Contains(out, "restricted:latest") {
		t.Errorf("helm install of the lax variant did not pass on the server's Pod Security warning:\n%s", out)
	}
	kubectl(t, c, "-n", ns, "create", "job", "--from=cronjob/lax-coupon-producer-couponbase1", "lax-manual")
	eventually(t, 30*time.Second, "the lax Job's pod to be refused", func() (bool, error) {
		msg := failedCreate(t, cs, ns, "lax-manual")
		if msg == "" {
			return false, nil
		}
		if !strings.Contains(msg, `violates PodSecurity "restricted:latest"`) || !strings.Contains(msg, "allowPrivilegeEscalation") {
			return false, fmt.Errorf("refused, but not for allowPrivilegeEscalation by Pod Security: %s", msg)
		}
		return true, nil
	})
	if pods := jobPods(t, cs, ns, "lax-manual"); len(pods) != 0 {
		t.Errorf("the lax Job has pods;%s", describePods(pods))
	}
	h.must("uninstall", "lax", "-n", ns, "--wait", "--timeout", "60s")

	// An upgrade changes one schedule and leaves the others.
	before := schedules(t, cs, ns)
	h.must("upgrade", "coupons", chartDir, "-n", ns, "--reuse-values", "--set", "jobs.couponbase2.schedule=*/5 * * * *")
	after := schedules(t, cs, ns)
	name2 := "coupons-coupon-producer-couponbase2"
	if after[name2] != "*/5 * * * *" {
		t.Errorf("schedule of %s after the upgrade: %q", name2, after[name2])
	}
	for name, s := range before {
		if name != name2 && after[name] != s {
			t.Errorf("the upgrade changed the schedule of %s from %q to %q", name, s, after[name])
		}
	}

	// Uninstall leaves nothing of the release but the data claims, which
	// the chart keeps (helm.sh/resource-policy: keep): the manual Jobs and
	// their pods go with their CronJobs (owner references).
	h.must("uninstall", "coupons", "-n", ns, "--wait", "--timeout", "60s")
	kept := []string{"pvc/coupons-coupon-producer-data", "pvc/lax-coupon-producer-data"}
	eventually(t, 60*time.Second, "nothing of the release left but its kept claims", func() (bool, error) {
		return reflect.DeepEqual(leftovers(t, cs, ns), kept), nil
	})
}

// failedCreate returns the message of the Job controller's FailedCreate
// event for the Job, if any.
func failedCreate(t *testing.T, cs kubernetes.Interface, ns, job string) string {
	t.Helper()
	evs, err := cs.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{
		FieldSelector: "involvedObject.kind=Job,involvedObject.name=" + job + ",reason=FailedCreate",
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.Items) == 0 {
		return ""
	}
	return evs.Items[0].Message
}

func schedules(t *testing.T, cs kubernetes.Interface, ns string) map[string]string {
	t.Helper()
	list, err := cs.BatchV1().CronJobs(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, cj := range list.Items {
		out[cj.Name] = cj.Spec.Schedule
	}
	return out
}

// leftovers lists what is left in the namespace of a release: objects the
// chart creates or that come from them, and Helm's release records.
func leftovers(t *testing.T, cs kubernetes.Interface, ns string) []string {
	t.Helper()
	ctx := context.Background()
	var left []string
	add := func(kind string, names ...string) {
		for _, n := range names {
			left = append(left, kind+"/"+n)
		}
	}
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	cjs, err := cs.BatchV1().CronJobs(ns).List(ctx, metav1.ListOptions{})
	must(err)
	for _, o := range cjs.Items {
		add("cronjob", o.Name)
	}
	jobs, err := cs.BatchV1().Jobs(ns).List(ctx, metav1.ListOptions{})
	must(err)
	for _, o := range jobs.Items {
		add("job", o.Name)
	}
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	must(err)
	for _, o := range pods.Items {
		add("pod", o.Name)
	}
	cms, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
	must(err)
	for _, o := range cms.Items {
		if o.Name != "kube-root-ca.crt" { // the namespace's, published by the controller manager
			add("configmap", o.Name)
		}
	}
	pvcs, err := cs.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
	must(err)
	for _, o := range pvcs.Items {
		add("pvc", o.Name)
	}
	sas, err := cs.CoreV1().ServiceAccounts(ns).List(ctx, metav1.ListOptions{})
	must(err)
	for _, o := range sas.Items {
		if o.Name != "default" {
			add("serviceaccount", o.Name)
		}
	}
	secrets, err := cs.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
	must(err)
	for _, o := range secrets.Items {
		add("secret", o.Name)
	}
	sort.Strings(left)
	if len(left) > 0 {
		t.Logf("left: %v", left)
	}
	return left
}

// decodeManifest splits a multi-document manifest into objects.
func decodeManifest(t *testing.T, manifest string) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatalf("decode manifest: %v", err)
		}
		if len(m) == 0 {
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
}

// subsetDiff lists where got does not hold what want says: every key of a
// map, every element of a list (same length) and every scalar must match;
// keys got has beyond want (the server's defaults) are fine.
func subsetDiff(path string, want, got any) []string {
	switch w := want.(type) {
	case nil:
		return nil // rendered null: the server drops it
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s: rendered a map, server has %T", path, got)}
		}
		var diffs []string
		keys := make([]string, 0, len(w))
		for k := range w {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			diffs = append(diffs, subsetDiff(path+"."+k, w[k], g[k])...)
		}
		return diffs
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return []string{fmt.Sprintf("%s: rendered %v, server has %v", path, w, got)}
		}
		var diffs []string
		for i := range w {
			diffs = append(diffs, subsetDiff(fmt.Sprintf("%s[%d]", path, i), w[i], g[i])...)
		}
		return diffs
	}
	if !scalarEqual(want, got) {
		return []string{fmt.Sprintf("%s: rendered %v (%T), server has %v (%T)", path, want, want, got, got)}
	}
	return nil
}

// scalarEqual compares YAML and JSON scalars: numbers by value, quantities
// ("2" and 2 for a CPU) by their canonical form.
func scalarEqual(a, b any) bool {
	if reflect.DeepEqual(a, b) {
		return true
	}
	af, aNum := number(a)
	bf, bNum := number(b)
	if aNum && bNum {
		return af == bf
	}
	as, bs := fmt.Sprint(a), fmt.Sprint(b)
	qa, errA := resource.ParseQuantity(as)
	qb, errB := resource.ParseQuantity(bs)
	return errA == nil && errB == nil && qa.Cmp(qb) == 0
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case float64:
		return n, true
	case int:
		return float64(n), true
	}
	return 0, false
}

// The comparison behind "as rendered" finds what differs and accepts what
// the server adds.
func TestSubsetDiff(t *testing.T) {
	rendered := map[string]any{
		"spec": map[string]any{
			"schedule": "0 2 * * *",
			"limits":   map[string]any{"cpu": "2", "memory": "128Mi"},
			"codes":    []any{int64(2), int64(3)},
			"dropped":  nil,
		},
	}
	same := map[string]any{
		"spec": map[string]any{
			"schedule": "0 2 * * *",
			"limits":   map[string]any{"cpu": "2", "memory": "128Mi"},
			"codes":    []any{int64(2), int64(3)},
			"added":    "by the server",
		},
	}
	if d := subsetDiff("x", rendered, same); len(d) != 0 {
		t.Errorf("equal objects differ: %v", d)
	}
	for name, mutate := range map[string]func(spec map[string]any){
		"scalar":       func(s map[string]any) { s["schedule"] = "*/5 * * * *" },
		"missing key":  func(s map[string]any) { delete(s, "limits") },
		"quantity":     func(s map[string]any) { s["limits"] = map[string]any{"cpu": "1", "memory": "128Mi"} },
		"list length":  func(s map[string]any) { s["codes"] = []any{int64(2)} },
		"list element": func(s map[string]any) { s["codes"] = []any{int64(2), int64(4)} },
	} {
		got := map[string]any{"spec": map[string]any{}}
		for k, v := range same["spec"].(map[string]any) {
			got["spec"].(map[string]any)[k] = v
		}
		mutate(got["spec"].(map[string]any))
		if d := subsetDiff("x", rendered, got); len(d) != 1 {
			t.Errorf("%s: %d differences %v, want 1", name, len(d), d)
		}
	}
	if !scalarEqual("500m", "0.5") || scalarEqual("500m", "1") || !scalarEqual(int64(3), float64(3)) {
		t.Error("scalarEqual compares quantities or numbers wrongly")
	}
}
