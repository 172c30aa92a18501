package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/couponpipeline/coupon-producer/hack/e2e/cluster"
)

// The version the binaries were built at is the one hack/kube pins, and the
// server reports it: Helm checks a chart's kubeVersion against it.
func TestControlPlane(t *testing.T) {
	gomod, err := os.ReadFile("../kube/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^\s*k8s\.io/kubernetes ` + regexp.QuoteMeta(cluster.KubeVersion) + `\b`).Match(gomod) {
		t.Fatalf("hack/kube/go.mod does not require k8s.io/kubernetes %s (cluster.KubeVersion); keep them in step", cluster.KubeVersion)
	}
	c := needCluster(t)
	v, err := adminClient(t, c).Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	if v.GitVersion != cluster.KubeVersion {
		t.Errorf("server version %s, want %s (version ldflags of hack/kube/build.sh)", v.GitVersion, cluster.KubeVersion)
	}
	for _, s := range c.Started {
		t.Logf("%s ready after %s", s.Component, s.Ready.Round(time.Millisecond))
	}
	rss, err := c.RSS()
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for name, n := range rss {
		total += n
		t.Logf("%s RSS %d MiB", name, n>>20)
	}
	t.Logf("control plane RSS %d MiB", total>>20)
}

// report is what cmd/e2eprobe prints for `report`.
type report struct {
	Args       []string          `json:"args"`
	UID        int               `json:"uid"`
	GID        int               `json:"gid"`
	Groups     []int             `json:"groups"`
	Hostname   string            `json:"hostname"`
	Cwd        string            `json:"cwd"`
	Env        map[string]string `json:"env"`
	Files      map[string]string `json:"files"`
	Writable   map[string]string `json:"writable"`
	NoNewPrivs string            `json:"noNewPrivs"`
	CapBnd     string            `json:"capBnd"`
}

// The test kubelet runs a container exactly as its spec says: command and
// args with $(VAR) expansion, env from values, ConfigMap and Secret keys and
// the downward API, envFrom with a prefix, every supported volume kind at
// its mountPath, read-only where it must be, as the pod's uid, gid and
// groups, with no_new_privs and no capabilities, on a read-only root.
func TestKubeletRunsPodSpec(t *testing.T) {
	c := needCluster(t)
	cs := adminClient(t, c)
	ctx := context.Background()
	const ns = "kubelet-spec"
	namespace(t, c, ns, nil)
	k := startKubelet(t, c, "node-spec", []string{ns}, nil)

	data := t.TempDir()
	if err := os.Chmod(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "couponbase1.gz"), []byte("not really gzip"), 0o644); err != nil {
		t.Fatal(err)
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: "kubelet-spec-data"},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              "e2e-data",
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: data}},
			ClaimRef:                      &corev1.ObjectReference{Namespace: ns, Name: "data"},
		},
	}
	if _, err := cs.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{})
	})
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "data", Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadOnlyMany},
			StorageClassName: ptr("e2e-data"),
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if _, err := cs.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "config", Namespace: ns},
		Data:       map[string]string{"config.yaml": "brokers: [127.0.0.1:9092]\n", "LOG_LEVEL": "debug"},
	}
	if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "kafka", Namespace: ns},
		Data:       map[string][]byte{"password": []byte("s3cret"), "user": []byte("producer")},
	}
	if _, err := cs.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: "spec", Namespace: ns,
			Labels:      map[string]string{"app": "coupon", "tier": "batch"},
			Annotations: map[string]string{"note": "hello"},
		},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsUser: ptr(int64(65532)), RunAsGroup: ptr(int64(65532)), RunAsNonRoot: ptr(true),
				FSGroup: ptr(int64(2000)), SupplementalGroups: []int64{3000},
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:    "probe",
				Image:   probeImage,
				Command: []string{"/e2eprobe", "report"},
				Args:    []string{"/etc/coupon-producer", "/data", "/secret", "/scratch", "/podinfo", "/var/run/secrets/kubernetes.io/serviceaccount", "--file=$(COUPON_FILE)", "$$(literal)"},
				Env: []corev1.EnvVar{
					{Name: "COUPON_FILE", Value: "/data/couponbase1.gz"},
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
					{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}},
					{Name: "APP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels['app']"}}},
					{Name: "NOTE", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.annotations['note']"}}},
					{Name: "LEVEL", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "config"}, Key: "LOG_LEVEL"}}},
					{Name: "KAFKA_SASL_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "kafka"}, Key: "password"}}},
					{Name: "MISSING", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "absent"}, Key: "x", Optional: ptr(true)}}},
					{Name: "GREETING", Value: "$(POD_NAME) in $(POD_NAMESPACE), $(UNDEFINED)"},
				},
				EnvFrom: []corev1.EnvFromSource{{Prefix: "CM_", ConfigMapRef: &corev1.ConfigMapEnvSource{LocalObjectReference: corev1.LocalObjectReference{Name: "config"}}}},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "config", MountPath: "/etc/coupon-producer", ReadOnly: true},
					{Name: "data", MountPath: "/data", ReadOnly: true},
					{Name: "secret", MountPath: "/secret"},
					{Name: "scratch", MountPath: "/scratch"},
					{Name: "podinfo", MountPath: "/podinfo"},
				},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr(false),
					ReadOnlyRootFilesystem:   ptr(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: "config"},
					Items:                []corev1.KeyToPath{{Key: "config.yaml", Path: "config.yaml"}},
				}}},
				{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data"}}},
				{Name: "secret", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
					SecretName: "kafka", DefaultMode: ptr(int32(0o400)),
					Items: []corev1.KeyToPath{{Key: "user", Path: "sasl/user"}},
				}}},
				{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{Items: []corev1.DownwardAPIVolumeFile{
					{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.labels"}},
					{Path: "name", FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}},
				}}}},
			},
		},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var got *corev1.Pod
	eventually(t, 60*time.Second, "pod spec to finish", func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "spec", metav1.GetOptions{})
		got = p
		return err == nil && (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed), err
	})
	logs, err := k.Logs(ns, "spec", "probe")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Phase != corev1.PodSucceeded {
		t.Fatalf("pod %s:%s\n%s", got.Status.Phase, describePods([]corev1.Pod{*got}), logs)
	}
	if got.Spec.NodeName != "node-spec" {
		t.Errorf("pod bound to %q, want node-spec", got.Spec.NodeName)
	}
	var r report
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "{") {
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatal(err)
			}
		}
	}
	if r.Args == nil {
		t.Fatalf("no report in the container output:\n%s", logs)
	}

	wantArgs := []string{"/e2eprobe", "report", "/etc/coupon-producer", "/data", "/secret", "/scratch", "/podinfo", "/var/run/secrets/kubernetes.io/serviceaccount", "--file=/data/couponbase1.gz", "$(literal)"}
	if strings.Join(r.Args, " ") != strings.Join(wantArgs, " ") {
		t.Errorf("args\n got %q\nwant %q", r.Args, wantArgs)
	}
	if r.UID != 65532 || r.GID != 65532 {
		t.Errorf("uid:gid %d:%d, want 65532:65532", r.UID, r.GID)
	}
	if fmt.Sprint(r.Groups) != "[2000 3000 65532]" {
		t.Errorf("groups %v, want [2000 3000 65532] (fsGroup, supplementalGroups, runAsGroup)", r.Groups)
	}
	if r.Hostname != "spec" {
		t.Errorf("hostname %q, want the pod's name", r.Hostname)
	}
	if r.Cwd != "/" {
		t.Errorf("working directory %q, want /", r.Cwd)
	}
	for name, want := range map[string]string{
		"COUPON_FILE":         "/data/couponbase1.gz",
		"POD_NAME":            "spec",
		"POD_NAMESPACE":       ns,
		"APP":                 "coupon",
		"NOTE":                "hello",
		"LEVEL":               "debug",
		"KAFKA_SASL_PASSWORD": "s3cret",
		"GREETING":            "spec in " + ns + ", $(UNDEFINED)",
		"CM_LOG_LEVEL":        "debug",
		"HOSTNAME":            "spec",
	} {
		if got := r.Env[name]; got != want {
			t.Errorf("env %s = %q, want %q", name, got, want)
		}
	}
	if _, ok := r.Env["MISSING"]; ok {
		t.Error("env MISSING is set: an optional reference to a missing secret defines nothing")
	}
	// Kubernetes 1.34 passes every key, even one that is no shell name.
	if got := r.Env["CM_config.yaml"]; got != cm.Data["config.yaml"] {
		t.Errorf("env CM_config.yaml = %q, want the ConfigMap's config.yaml", got)
	}
	for path, want := range map[string]string{
		"/etc/coupon-producer/config.yaml": "brokers: [127.0.0.1:9092]\n",
		"/data/couponbase1.gz":             "not really gzip",
		"/secret/sasl/user":                "producer",
		"/podinfo/name":                    "spec",
		"/podinfo/labels":                  "app=\"coupon\"\ntier=\"batch\"",
		"/var/run/secrets/kubernetes.io/serviceaccount/namespace": ns,
	} {
		if got := r.Files[path]; got != want {
			t.Errorf("file %s = %q, want %q", path, got, want)
		}
	}
	if tok := r.Files["/var/run/secrets/kubernetes.io/serviceaccount/token"]; strings.Count(tok, ".") != 2 {
		t.Errorf("service account token %q is not a JWT", tok)
	}
	if ca := r.Files["/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"]; !strings.Contains(ca, "BEGIN CERTIFICATE") {
		t.Errorf("service account ca.crt %q is not a certificate", ca)
	}
	if len(r.Files) != 8 {
		t.Errorf("the container sees %d files under the mounts, want 8 (no stray files): %v", len(r.Files), keys(r.Files))
	}
	for path, want := range map[string]string{
		"/":                    "read-only file system",
		"/etc/coupon-producer": "read-only file system",
		"/data":                "read-only file system",
		"/secret":              "read-only file system",
		"/podinfo":             "read-only file system",
		"/scratch":             "",
	} {
		got, ok := r.Writable[path]
		if !ok || (want == "" && got != "") || (want != "" && !strings.Contains(got, want)) {
			t.Errorf("writing into %s: %q, want %q", path, got, want)
		}
	}
	if r.NoNewPrivs != "1" {
		t.Errorf("NoNewPrivs %q, want 1 (allowPrivilegeEscalation: false)", r.NoNewPrivs)
	}
	if r.CapBnd != "0000000000000000" {
		t.Errorf("capability bounding set %s, want none (drop ALL)", r.CapBnd)
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
