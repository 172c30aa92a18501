package deploytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/releaseutil"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	kindv1alpha4 "sigs.k8s.io/kind/pkg/apis/config/v1alpha4"
	"sigs.k8s.io/yaml"
)

// k8sObjects decodes every document of a k8s/ file strictly into the type
// its kind names.
func k8sObjects(t *testing.T, name string) []any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot, "k8s", name))
	if err != nil {
		t.Fatal(err)
	}
	var objs []any
	for _, doc := range releaseutil.SplitManifests(string(raw)) {
		var head struct{ APIVersion, Kind string }
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			t.Fatalf("k8s/%s: %v", name, err)
		}
		var obj any
		switch head.APIVersion + "/" + head.Kind {
		case "v1/Namespace":
			obj = &corev1.Namespace{}
		case "v1/PersistentVolume":
			obj = &corev1.PersistentVolume{}
		case "v1/PersistentVolumeClaim":
			obj = &corev1.PersistentVolumeClaim{}
		case "v1/Service":
			obj = &corev1.Service{}
		case "apps/v1/Deployment":
			obj = &appsv1.Deployment{}
		case "v1/Pod":
			obj = &corev1.Pod{}
		case "batch/v1/CronJob":
			obj = &batchv1.CronJob{}
		default:
			t.Fatalf("k8s/%s: unexpected %s %s", name, head.APIVersion, head.Kind)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
			t.Fatalf("k8s/%s: %s does not decode strictly: %v", name, head.Kind, err)
		}
		objs = append(objs, obj)
	}
	return objs
}

// TestK8sManifests: the kind path's manifests fit together: the namespace
// enforces restricted Pod Security and the dev Kafka passes it, the claim
// binds the volume that exposes the node's mount, and the chart's kind
// values name this claim and this broker.
func TestK8sManifests(t *testing.T) {
	ns := k8sObjects(t, "namespace.yaml")[0].(*corev1.Namespace)
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("namespace %s does not enforce restricted: %v", ns.Name, ns.Labels)
	}

	var pv *corev1.PersistentVolume
	var pvc *corev1.PersistentVolumeClaim
	for _, o := range k8sObjects(t, "data.yaml") {
		switch o := o.(type) {
		case *corev1.PersistentVolume:
			pv = o
		case *corev1.PersistentVolumeClaim:
			pvc = o
		}
	}
	if pv == nil || pvc == nil {
		t.Fatal("k8s/data.yaml: want a PersistentVolume and a PersistentVolumeClaim")
	}
	if pvc.Namespace != ns.Name || pvc.Spec.VolumeName != pv.Name || pv.Spec.ClaimRef == nil ||
		pv.Spec.ClaimRef.Name != pvc.Name || pv.Spec.ClaimRef.Namespace != ns.Name {
		t.Errorf("claim %s/%s and volume %s are not bound to each other", pvc.Namespace, pvc.Name, pv.Name)
	}
	if pv.Spec.HostPath == nil {
		t.Fatal("k8s/data.yaml: the volume is not a hostPath of the kind node")
	}

	raw, err := os.ReadFile(filepath.Join(repoRoot, "k8s", "kind-cluster.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cluster kindv1alpha4.Cluster
	if err := yaml.UnmarshalStrict(raw, &cluster); err != nil {
		t.Fatalf("k8s/kind-cluster.yaml: %v", err)
	}
	mounted := false
	for _, n := range cluster.Nodes {
		for _, m := range n.ExtraMounts {
			if m.HostPath == "@DATA_DIR@" && m.ContainerPath == pv.Spec.HostPath.Path && m.Readonly {
				mounted = true
			}
		}
	}
	if !mounted {
		t.Errorf("k8s/kind-cluster.yaml: no read-only mount of @DATA_DIR@ at the volume's path %s", pv.Spec.HostPath.Path)
	}

	var kafka *appsv1.Deployment
	var svc *corev1.Service
	for _, o := range k8sObjects(t, "kafka.yaml") {
		switch o := o.(type) {
		case *appsv1.Deployment:
			kafka = o
		case *corev1.Service:
			svc = o
		}
	}
	if kafka == nil || svc == nil {
		t.Fatal("k8s/kafka.yaml: want a Deployment and a Service")
	}
	tpl := kafka.Spec.Template
	checkRestricted(t, &tpl.ObjectMeta, &tpl.Spec)

	r := render(t, values(t, "kind-values.yaml"))
	cfg := parseConfig(t, configFileText(t, r))
	broker := svc.Name + "." + svc.Namespace + ".svc.cluster.local:9092"
	if b, _ := cfg["brokers"].([]any); len(b) != 1 || b[0] != broker {
		t.Errorf("kind values: brokers %v, want the dev Kafka %s", cfg["brokers"], broker)
	}
	for name, cj := range r.cronJobs {
		for _, v := range cj.Spec.JobTemplate.Spec.Template.Spec.Volumes {
			if v.Name == "data" && v.PersistentVolumeClaim.ClaimName != pvc.Name {
				t.Errorf("%s: claim %s, want k8s/data.yaml's %s", name, v.PersistentVolumeClaim.ClaimName, pvc.Name)
			}
		}
	}
	var advertised string
	for _, e := range tpl.Spec.Containers[0].Env {
		if e.Name == "KAFKA_ADVERTISED_LISTENERS" {
			advertised = e.Value
		}
	}
	if !strings.Contains(advertised, "//"+broker) {
		t.Errorf("dev Kafka advertises %q, the producer is given %s", advertised, broker)
	}
}

// TestKindScript: hack/kind.sh cannot run without a Docker engine, but its
// syntax is checked everywhere, and it runs the kind and helm versions this
// module's tests use.
func TestKindScript(t *testing.T) {
	script := filepath.Join(repoRoot, "hack", "kind.sh")
	out, err := exec.Command("bash", "-n", script).CombinedOutput()
	if err != nil {
		t.Fatalf("bash -n hack/kind.sh: %v\n%s", err, out)
	}
	text, err := os.ReadFile(script)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for variable, module := range map[string]string{"KIND_VERSION": "sigs.k8s.io/kind", "HELM_VERSION": "helm.sh/helm/v3"} {
		m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(module) + ` (v\S+)`).FindSubmatch(mod)
		if m == nil {
			t.Errorf("go.mod does not require %s", module)
			continue
		}
		if want := variable + "=" + string(m[1]) + "\n"; !strings.Contains(string(text), want) {
			t.Errorf("hack/kind.sh: want %q, the version go.mod pins", strings.TrimSpace(want))
		}
	}
}
