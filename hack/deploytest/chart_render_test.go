package deploytest

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	"sigs.k8s.io/yaml"
)

const (
	configPath = "/etc/coupon-producer/config.yaml"
	dataPath   = "/data"
	entrypoint = "/usr/local/bin/coupon-producer"
)

// producerConfigKeys are the keys of the producer's YAML config file (its
// long flag names) and the kind of value each takes. The producer exits 2 on
// an unknown key, so a key the chart writes that is not here would fail
// every run.
var producerConfigKeys = map[string]string{
	"brokers": "list", "file": "string", "topic": "string",
	"partitions": "int", "replication-factor": "int", "topic-config": "map",
	"compression": "string", "linger": "duration", "batch-max-bytes": "int",
	"max-buffered-bytes": "int", "client-id": "string",
	"connect-timeout": "duration", "delivery-timeout": "duration",
	"tls": "bool", "tls-ca-file": "string", "tls-cert-file": "string",
	"tls-key-file": "string", "tls-server-name": "string",
	"tls-insecure-skip-verify": "bool", "sasl-mechanism": "string",
	"sasl-username": "string", "sasl-password-file": "string",
	"shutdown-timeout": "duration", "progress-interval": "duration",
	"log-format": "string", "log-level": "string", "metrics-addr": "string",
	"dry-run": "bool", "pushgateway-url": "string",
}

func ciValuesFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no ci/*-values.yaml in %s (err %v)", chartDir, err)
	}
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = filepath.Base(f)
	}
	return names
}

// TestChartLint runs `helm lint` (the SDK's lint.All) with each ci values
// file; any warning or error fails.
func TestChartLint(t *testing.T) {
	for _, name := range ciValuesFiles(t) {
		t.Run(name, func(t *testing.T) {
			kv := kubeVersion
			l := lint.AllWithKubeVersion(chartDir, values(t, name), releaseNS, &kv)
			for _, m := range l.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %s", m)
				}
			}
		})
	}
}

// TestChartRendersCIValues renders each ci values file, decodes every object
// strictly and checks what must hold for any values: then what each file is
// about.
func TestChartRendersCIValues(t *testing.T) {
	specific := map[string]func(t *testing.T, r *rendered){
		"defaults-values.yaml":       checkDefaults,
		"existing-claim-values.yaml": checkExistingClaim,
		"sasl-tls-values.yaml":       checkSASLTLS,
		"one-job-values.yaml":        checkOneJob,
		"suspended-values.yaml":      checkSuspended,
		"timezone-values.yaml":       checkTimeZones,
		"zero-values.yaml":           checkZeros,
		"metrics-values.yaml":        checkMetrics,
		"kind-values.yaml":           checkKind,
		"conventions-values.yaml":    checkConventions,
	}
	for _, name := range ciValuesFiles(t) {
		t.Run(name, func(t *testing.T) {
			check, ok := specific[name]
			if !ok {
				t.Fatalf("ci/%s has no specific check: add one to this test", name)
			}
			r := render(t, values(t, name))
			checkInvariants(t, r)
			check(t, r)
		})
	}
}

// checkInvariants holds for every values file.
func checkInvariants(t *testing.T, r *rendered) {
	t.Helper()
	if len(r.cronJobs) == 0 {
		t.Fatal("no CronJob rendered")
	}
	if len(r.configMaps) != 1 {
		t.Fatalf("want 1 ConfigMap, got %d", len(r.configMaps))
	}
	cfgText := configFileText(t, r)
	cfg := parseConfig(t, cfgText)
	sum := sha256.Sum256([]byte(r.manifests["coupon-producer/templates/configmap.yaml"]))
	wantSum := hex.EncodeToString(sum[:])
	shutdown := durationKey(t, cfg, "shutdown-timeout")

	for name, cj := range r.cronJobs {
		t.Run(name, func(t *testing.T) {
			if len(name) > 52 {
				t.Errorf("CronJob name %q is %d characters; Kubernetes allows 52", name, len(name))
			}
			s := cj.Spec
			if s.ConcurrencyPolicy != batchv1.ForbidConcurrent {
				t.Errorf("concurrencyPolicy %q, want Forbid", s.ConcurrencyPolicy)
			}
			if strings.TrimSpace(s.Schedule) == "" {
				t.Error("empty schedule")
			}
			if s.Suspend == nil {
				t.Error("suspend not rendered")
			}
			js := s.JobTemplate.Spec
			checkPodFailurePolicy(t, js.PodFailurePolicy)
			pt := js.Template
			if pt.Spec.RestartPolicy != corev1.RestartPolicyNever {
				t.Errorf("restartPolicy %q, want Never (podFailurePolicy needs it)", pt.Spec.RestartPolicy)
			}
			if got := pt.Annotations["checksum/config"]; got != wantSum {
				t.Errorf("checksum/config %q, want the sha256 of the rendered ConfigMap %q", got, wantSum)
			}
			for _, obj := range []map[string]string{cj.Labels, s.JobTemplate.Labels, pt.Labels} {
				for _, k := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version", "app.kubernetes.io/managed-by", "app.kubernetes.io/component", "helm.sh/chart"} {
					if obj[k] == "" {
						t.Errorf("label %s missing in %v", k, obj)
					}
				}
			}
			if len(pt.Spec.Containers) != 1 {
				t.Fatalf("want 1 container, got %d", len(pt.Spec.Containers))
			}
			c := pt.Spec.Containers[0]
			if c.Name != "producer" {
				t.Errorf("container %q: podFailurePolicy rules name the container producer", c.Name)
			}
			if !slices.Equal(c.Command, []string{entrypoint}) || len(c.Args) != 0 {
				t.Errorf("command %q args %q, want [%s] and no args", c.Command, c.Args, entrypoint)
			}
			checkPod(t, pt.Spec, shutdown)
			checkRestricted(t, &pt.ObjectMeta, &pt.Spec)
			file := envValue(t, c, "COUPON_FILE")
			if !strings.HasPrefix(file, dataPath+"/") || !strings.HasSuffix(file, ".gz") {
				t.Errorf("COUPON_FILE %q: want a .gz file under %s", file, dataPath)
			}
		})
	}
	checkTestHook(t, r)
	for path, text := range r.manifests {
		if strings.Contains(text, "kind: Secret\n") {
			t.Errorf("%s renders a Secret: credentials come only from existing Secrets", path)
		}
	}
	if !strings.Contains(r.notes, "kubectl -n "+releaseNS+" create job --from=cronjob/") {
		t.Errorf("NOTES.txt does not say how to run a job now:\n%s", r.notes)
	}
	for name := range r.cronJobs {
		if !strings.Contains(r.notes, "--from=cronjob/"+name+" "+name+"-manual-$(date +%s)") {
			t.Errorf("NOTES.txt has no run-now line for %s", name)
		}
	}
	checkMetadata(t, r)
}

// objectMetas returns the metadata of every rendered object and, with
// templates, of the Job and pod templates of each CronJob too.
func (r *rendered) objectMetas(templates bool) []metav1.ObjectMeta {
	var metas []metav1.ObjectMeta
	for _, o := range r.cronJobs {
		metas = append(metas, o.ObjectMeta)
		if templates {
			metas = append(metas, o.Spec.JobTemplate.ObjectMeta, o.Spec.JobTemplate.Spec.Template.ObjectMeta)
		}
	}
	for _, o := range r.configMaps {
		metas = append(metas, o.ObjectMeta)
	}
	for _, o := range r.claims {
		metas = append(metas, o.ObjectMeta)
	}
	for _, o := range r.serviceAccounts {
		metas = append(metas, o.ObjectMeta)
	}
	for _, o := range r.pods {
		metas = append(metas, o.ObjectMeta)
	}
	for _, o := range r.rules {
		metas = append(metas, o.ObjectMeta)
	}
	return metas
}

// checkMetadata: every object names the release namespace (for `helm
// template | kubectl apply`) and carries the labels that identify the
// release.
func checkMetadata(t *testing.T, r *rendered) {
	t.Helper()
	metas := r.objectMetas(false)
	for _, m := range metas {
		if m.Namespace != releaseNS {
			t.Errorf("%s: metadata.namespace %q, want the release namespace %q", m.Name, m.Namespace, releaseNS)
		}
		if m.Labels["app.kubernetes.io/instance"] != releaseName || m.Labels["app.kubernetes.io/managed-by"] != "Helm" {
			t.Errorf("%s: labels %v do not identify the release", m.Name, m.Labels)
		}
	}
}

// checkPodFailurePolicy: exit codes 2, 3 and 4 fail the Job at once, a
// disruption is not counted, anything else is counted.
func checkPodFailurePolicy(t *testing.T, p *batchv1.PodFailurePolicy) {
	t.Helper()
	if p == nil || len(p.Rules) != 3 {
		t.Fatalf("podFailurePolicy: want 3 rules, got %+v", p)
	}
	fail, ignore, count := p.Rules[0], p.Rules[1], p.Rules[2]
	if fail.Action != batchv1.PodFailurePolicyActionFailJob || fail.OnExitCodes == nil ||
		fail.OnExitCodes.Operator != batchv1.PodFailurePolicyOnExitCodesOpIn ||
		!slices.Equal(fail.OnExitCodes.Values, []int32{2, 3, 4}) ||
		fail.OnExitCodes.ContainerName == nil || *fail.OnExitCodes.ContainerName != "producer" {
		t.Errorf("rule 1: want FailJob on producer exit codes In [2 3 4], got %+v %+v", fail, fail.OnExitCodes)
	}
	if ignore.Action != batchv1.PodFailurePolicyActionIgnore || len(ignore.OnPodConditions) != 1 ||
		ignore.OnPodConditions[0].Type != corev1.DisruptionTarget ||
		ignore.OnPodConditions[0].Status != corev1.ConditionTrue {
		t.Errorf("rule 2: want Ignore on DisruptionTarget=True, got %+v", ignore)
	}
	if count.Action != batchv1.PodFailurePolicyActionCount || count.OnExitCodes == nil ||
		count.OnExitCodes.Operator != batchv1.PodFailurePolicyOnExitCodesOpNotIn ||
		!slices.Equal(count.OnExitCodes.Values, []int32{0}) {
		t.Errorf("rule 3: want Count on any other exit code, got %+v", count)
	}
}

// checkPod: what the producer's pods must have whatever the values.
func checkPod(t *testing.T, spec corev1.PodSpec, shutdown time.Duration) {
	t.Helper()
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken is not false")
	}
	if spec.TerminationGracePeriodSeconds == nil ||
		time.Duration(*spec.TerminationGracePeriodSeconds)*time.Second <= shutdown {
		t.Errorf("terminationGracePeriodSeconds %v is not above shutdown-timeout %s", spec.TerminationGracePeriodSeconds, shutdown)
	}
	vols := map[string]corev1.Volume{}
	for _, v := range spec.Volumes {
		vols[v.Name] = v
	}
	for _, c := range spec.Containers {
		mounts := map[string]corev1.VolumeMount{}
		for _, m := range c.VolumeMounts {
			if !m.ReadOnly {
				t.Errorf("container %s: mount %s at %s is writable", c.Name, m.Name, m.MountPath)
			}
			if _, ok := vols[m.Name]; !ok {
				t.Errorf("container %s: mount of unknown volume %s", c.Name, m.Name)
			}
			mounts[m.MountPath] = m
		}
		data, ok := mounts[dataPath]
		if !ok {
			t.Fatalf("container %s: nothing mounted at %s", c.Name, dataPath)
		}
		claim := vols[data.Name].PersistentVolumeClaim
		if claim == nil || !claim.ReadOnly {
			t.Errorf("container %s: %s is not a read-only PVC: %+v", c.Name, dataPath, vols[data.Name])
		}
		cfg, ok := mounts[configPath]
		if !ok || vols[cfg.Name].ConfigMap == nil || cfg.SubPath != "config.yaml" {
			t.Errorf("container %s: the ConfigMap's config.yaml is not mounted at %s", c.Name, configPath)
		}
		if got := envValue(t, c, "COUPON_PRODUCER_CONFIG"); got != configPath {
			t.Errorf("container %s: COUPON_PRODUCER_CONFIG %q, want %s", c.Name, got, configPath)
		}
		for name, path := range map[string]string{
			"POD_NAME":      "metadata.name",
			"POD_NAMESPACE": "metadata.namespace",
			"JOB_NAME":      "metadata.labels['batch.kubernetes.io/job-name']",
		} {
			if got := envFieldRef(c, name); got != path {
				t.Errorf("container %s: %s from field %q, want %q", c.Name, name, got, path)
			}
		}
		for _, e := range c.Env {
			if strings.Contains(strings.ToUpper(e.Name), "PASSWORD") {
				t.Errorf("container %s: env %s: the SASL password comes only as a file", c.Name, e.Name)
			}
		}
	}
}

// checkRestricted evaluates the pod against the restricted Pod Security
// Standard with the admission plugin's own checks.
func checkRestricted(t *testing.T, meta *metav1.ObjectMeta, spec *corev1.PodSpec) {
	t.Helper()
	if reasons := restrictedViolations(t, meta, spec); reasons != "" {
		t.Errorf("pod violates restricted Pod Security: %s", reasons)
	}
}

func restrictedViolations(t *testing.T, meta *metav1.ObjectMeta, spec *corev1.PodSpec) string {
	t.Helper()
	ev, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatalf("pod security evaluator: %v", err)
	}
	lv := psapi.LevelVersion{Level: psapi.LevelRestricted, Version: psapi.LatestVersion()}
	res := policy.AggregateCheckResults(ev.EvaluatePod(lv, meta, spec))
	if res.Allowed {
		return ""
	}
	return res.ForbiddenReason() + ": " + res.ForbiddenDetail()
}

// checkTestHook: the helm test pod runs --preflight once per CronJob with
// that CronJob's environment and mounts.
func checkTestHook(t *testing.T, r *rendered) {
	t.Helper()
	if len(r.pods) == 0 {
		return // test.enabled false; checkZeros asserts it is off there
	}
	if len(r.pods) != 1 {
		t.Fatalf("want 1 test pod, got %d", len(r.pods))
	}
	for _, p := range r.pods {
		if p.Annotations["helm.sh/hook"] != "test" {
			t.Errorf("test pod %s: helm.sh/hook %q, want test", p.Name, p.Annotations["helm.sh/hook"])
		}
		if p.Spec.RestartPolicy != corev1.RestartPolicyNever {
			t.Errorf("test pod: restartPolicy %q, want Never", p.Spec.RestartPolicy)
		}
		checkRestricted(t, &p.ObjectMeta, &p.Spec)
		checkPod(t, p.Spec, 0)
		if len(p.Spec.Containers) != len(r.cronJobs) {
			t.Errorf("test pod: %d containers for %d CronJobs", len(p.Spec.Containers), len(r.cronJobs))
		}
		byFile := map[string]corev1.Container{}
		for _, c := range p.Spec.Containers {
			if !slices.Equal(c.Command, []string{entrypoint}) || !slices.Equal(c.Args, []string{"--preflight"}) {
				t.Errorf("test container %s: command %q args %q, want [%s] [--preflight]", c.Name, c.Command, c.Args, entrypoint)
			}
			byFile[envValue(t, c, "COUPON_FILE")] = c
		}
		for name, cj := range r.cronJobs {
			pc := cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0]
			tc, ok := byFile[envValue(t, pc, "COUPON_FILE")]
			if !ok {
				t.Errorf("test pod does not check the file of %s", name)
				continue
			}
			if !reflect.DeepEqual(tc.Env, pc.Env) || !reflect.DeepEqual(tc.VolumeMounts, pc.VolumeMounts) || tc.Image != pc.Image {
				t.Errorf("test container %s: env, mounts or image differ from CronJob %s", tc.Name, name)
			}
		}
	}
}

func envValue(t *testing.T, c corev1.Container, name string) string {
	t.Helper()
	for _, e := range c.Env {
		if e.Name == name {
			return e.Value
		}
	}
	t.Errorf("container %s: no env %s", c.Name, name)
	return ""
}

func envFieldRef(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			return e.ValueFrom.FieldRef.FieldPath
		}
	}
	return ""
}

func configFileText(t *testing.T, r *rendered) string {
	t.Helper()
	for _, cm := range r.configMaps {
		text, ok := cm.Data["config.yaml"]
		if !ok {
			t.Fatalf("ConfigMap %s has no config.yaml", cm.Name)
		}
		if len(cm.Data) != 1 || len(cm.BinaryData) != 0 {
			t.Errorf("ConfigMap %s: want only config.yaml, got %d keys", cm.Name, len(cm.Data)+len(cm.BinaryData))
		}
		return text
	}
	t.Fatal("no ConfigMap")
	return ""
}

// parseConfig reads the config file as the producer will: every key must be
// one of its keys, with a value of the right kind.
func parseConfig(t *testing.T, text string) map[string]any {
	t.Helper()
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(text), &cfg); err != nil {
		t.Fatalf("config.yaml is not YAML: %v\n%s", err, text)
	}
	for key, v := range cfg {
		kind, ok := producerConfigKeys[key]
		if !ok {
			t.Errorf("config.yaml: %q is not a key of the producer's config file (it would exit 2)", key)
			continue
		}
		switch kind {
		case "duration":
			durationKey(t, cfg, key)
		case "int":
			if f, ok := v.(float64); !ok || f != float64(int64(f)) {
				t.Errorf("config.yaml: %s = %v (%T), want an integer", key, v, v)
			}
		case "bool":
			if _, ok := v.(bool); !ok {
				t.Errorf("config.yaml: %s = %v (%T), want a boolean", key, v, v)
			}
		case "string":
			if _, ok := v.(string); !ok {
				t.Errorf("config.yaml: %s = %v (%T), want a string", key, v, v)
			}
		case "list":
			l, ok := v.([]any)
			if !ok || len(l) == 0 {
				t.Errorf("config.yaml: %s = %v, want a non-empty list", key, v)
			}
		case "map":
			m, ok := v.(map[string]any)
			if !ok {
				t.Errorf("config.yaml: %s = %v, want a map", key, v)
			}
			for mk, mv := range m {
				if _, ok := mv.(string); !ok {
					t.Errorf("config.yaml: %s.%s = %v (%T), want a string", key, mk, mv, mv)
				}
			}
		}
	}
	for _, key := range []string{"brokers", "shutdown-timeout", "log-format"} {
		if _, ok := cfg[key]; !ok {
			t.Errorf("config.yaml has no %s", key)
		}
	}
	for _, key := range []string{"file", "topic", "sasl-password"} {
		if _, ok := cfg[key]; ok {
			t.Errorf("config.yaml sets %s: it is per job (file, topic) or never in a ConfigMap (password)", key)
		}
	}
	return cfg
}

func durationKey(t *testing.T, cfg map[string]any, key string) time.Duration {
	t.Helper()
	s, ok := cfg[key].(string)
	if !ok {
		t.Errorf("config.yaml: %s = %v (%T), want a duration string", key, cfg[key], cfg[key])
		return 0
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Errorf("config.yaml: %s: %v", key, err)
	}
	return d
}

func cronJob(t *testing.T, r *rendered, name string) *batchv1.CronJob {
	t.Helper()
	cj, ok := r.cronJobs[name]
	if !ok {
		t.Fatalf("no CronJob %s; have %v", name, sortedKeys(r.cronJobs))
	}
	return cj
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func producerContainer(cj *batchv1.CronJob) corev1.Container {
	return cj.Spec.JobTemplate.Spec.Template.Spec.Containers[0]
}

func checkDefaults(t *testing.T, r *rendered) {
	want := []string{"coupon-producer-couponbase1", "coupon-producer-couponbase2", "coupon-producer-couponbase3"}
	if got := sortedKeys(r.cronJobs); !slices.Equal(got, want) {
		t.Fatalf("CronJobs %v, want %v", got, want)
	}
	for i, name := range want {
		cj := r.cronJobs[name]
		s := cj.Spec
		file := "/data/couponbase" + string(rune('1'+i)) + ".gz"
		if got := envValue(t, producerContainer(cj), "COUPON_FILE"); got != file {
			t.Errorf("%s: COUPON_FILE %q, want %q", name, got, file)
		}
		if s.TimeZone == nil || *s.TimeZone != "UTC" || *s.Suspend ||
			s.StartingDeadlineSeconds == nil || *s.StartingDeadlineSeconds != 3600 ||
			*s.SuccessfulJobsHistoryLimit != 3 || *s.FailedJobsHistoryLimit != 3 {
			t.Errorf("%s: CronJob defaults: %+v", name, s)
		}
		js := s.JobTemplate.Spec
		if *js.BackoffLimit != 3 || *js.ActiveDeadlineSeconds != 3600 || *js.TTLSecondsAfterFinished != 604800 {
			t.Errorf("%s: Job defaults: backoffLimit %d activeDeadlineSeconds %d ttl %d", name, *js.BackoffLimit, *js.ActiveDeadlineSeconds, *js.TTLSecondsAfterFinished)
		}
		pod := js.Template.Spec
		if *pod.TerminationGracePeriodSeconds != 30 {
			t.Errorf("%s: terminationGracePeriodSeconds %d, want shutdown 10 + 20", name, *pod.TerminationGracePeriodSeconds)
		}
		c := producerContainer(cj)
		if c.Image != "ghcr.io/couponpipeline/coupon-producer:"+appVersion(t) {
			t.Errorf("%s: image %q, want the appVersion tag", name, c.Image)
		}
		if c.Resources.Requests.Memory().String() != "64Mi" || c.Resources.Limits.Memory().String() != "128Mi" ||
			c.Resources.Requests.Cpu().String() != "500m" {
			t.Errorf("%s: resources %+v", name, c.Resources)
		}
		sc := pod.SecurityContext
		if sc == nil || *sc.RunAsUser != 65532 || *sc.RunAsGroup != 65532 || *sc.FSGroup != 65532 || !*sc.RunAsNonRoot {
			t.Errorf("%s: pod security context %+v", name, sc)
		}
		if c.SecurityContext == nil || !*c.SecurityContext.ReadOnlyRootFilesystem {
			t.Errorf("%s: root filesystem is writable", name)
		}
		for _, e := range c.Env {
			if e.Name == "KAFKA_TOPIC" {
				t.Errorf("%s: KAFKA_TOPIC set without a topic override: the topic is the file's base name", name)
			}
		}
		if claim := pod.Volumes[1].PersistentVolumeClaim; claim == nil || claim.ClaimName != "coupon-producer-data" {
			t.Errorf("%s: data volume %+v, want the chart's claim", name, pod.Volumes[1])
		}
	}
	pvc, ok := r.claims["coupon-producer-data"]
	if !ok {
		t.Fatal("no PVC coupon-producer-data")
	}
	if pvc.Spec.StorageClassName != nil || pvc.Spec.Resources.Requests.Storage().String() != "10Gi" {
		t.Errorf("PVC spec %+v: want the default StorageClass and 10Gi", pvc.Spec)
	}
	// Pods of different Jobs on different nodes mount it at once, a loader
	// writes it, and the files outlive the release.
	if !slices.Equal(pvc.Spec.AccessModes, []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}) {
		t.Errorf("PVC access modes %v, want [ReadWriteMany]", pvc.Spec.AccessModes)
	}
	if pvc.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Errorf("PVC annotations %v: want helm.sh/resource-policy: keep", pvc.Annotations)
	}
	if strings.Contains(r.notes, "WARNING") {
		t.Errorf("NOTES.txt warns about the default claim:\n%s", r.notes)
	}
	if _, ok := r.serviceAccounts["coupon-producer"]; !ok {
		t.Error("no ServiceAccount coupon-producer")
	}
	if len(r.rules) != 0 {
		t.Error("PrometheusRule rendered though not enabled")
	}
	cfg := parseConfig(t, configFileText(t, r))
	if !reflect.DeepEqual(cfg["brokers"], []any{"kafka:9092"}) || cfg["shutdown-timeout"] != "10s" || cfg["compression"] != "lz4" {
		t.Errorf("config defaults: %v", cfg)
	}
	for _, key := range []string{"tls", "sasl-mechanism", "pushgateway-url", "topic-config"} {
		if _, ok := cfg[key]; ok {
			t.Errorf("config.yaml sets %s by default", key)
		}
	}
}

func appVersion(t *testing.T) string {
	t.Helper()
	return loadChart(t).Metadata.AppVersion
}

func checkExistingClaim(t *testing.T, r *rendered) {
	if len(r.claims) != 0 {
		t.Errorf("a PVC is rendered although data.existingClaim is set: %v", sortedKeys(r.claims))
	}
	for name, cj := range r.cronJobs {
		pod := cj.Spec.JobTemplate.Spec.Template.Spec
		for _, v := range pod.Volumes {
			if v.Name == "data" && (v.PersistentVolumeClaim == nil || v.PersistentVolumeClaim.ClaimName != "coupon-files") {
				t.Errorf("%s: data volume %+v, want claim coupon-files", name, v)
			}
		}
		for _, m := range pod.Containers[0].VolumeMounts {
			if m.MountPath == dataPath && m.SubPath != "couponbase" {
				t.Errorf("%s: data subPath %q, want couponbase", name, m.SubPath)
			}
		}
	}
}

func checkSASLTLS(t *testing.T, r *rendered) {
	text := configFileText(t, r)
	cfg := parseConfig(t, text)
	want := map[string]any{
		"tls": true, "tls-ca-file": "/etc/coupon-producer/tls/ca.crt",
		"tls-cert-file": "/etc/coupon-producer/tls/tls.crt", "tls-key-file": "/etc/coupon-producer/tls/tls.key",
		"tls-server-name": "kafka.example.internal", "sasl-mechanism": "SCRAM-SHA-512",
		"sasl-username": "coupon-producer", "sasl-password-file": "/etc/coupon-producer/sasl/password",
	}
	for k, v := range want {
		if cfg[k] != v {
			t.Errorf("config.yaml: %s = %v, want %v", k, cfg[k], v)
		}
	}
	if strings.Contains(text, "scram-password") || strings.Contains(text, "kafka-client-sasl") {
		t.Errorf("config.yaml names the Secret or its key; it should only name the mounted file:\n%s", text)
	}
	for name, cj := range r.cronJobs {
		pod := cj.Spec.JobTemplate.Spec.Template.Spec
		vols := map[string]corev1.Volume{}
		for _, v := range pod.Volumes {
			vols[v.Name] = v
		}
		sasl := vols["kafka-sasl"].Secret
		if sasl == nil || sasl.SecretName != "kafka-client-sasl" || len(sasl.Items) != 1 ||
			sasl.Items[0].Key != "scram-password" || sasl.Items[0].Path != "password" {
			t.Errorf("%s: SASL secret volume %+v", name, vols["kafka-sasl"])
		}
		tls := vols["kafka-tls"].Secret
		if tls == nil || tls.SecretName != "kafka-client-tls" || len(tls.Items) != 3 {
			t.Errorf("%s: TLS secret volume %+v", name, vols["kafka-tls"])
		}
		for _, v := range []*corev1.SecretVolumeSource{sasl, tls} {
			if v != nil && (v.DefaultMode == nil || *v.DefaultMode&0o007 != 0) {
				t.Errorf("%s: secret %s is readable by others (mode %v)", name, v.SecretName, v.DefaultMode)
			}
		}
		mounts := map[string]bool{}
		for _, m := range pod.Containers[0].VolumeMounts {
			mounts[m.Name+"="+m.MountPath] = m.ReadOnly
		}
		if !mounts["kafka-sasl=/etc/coupon-producer/sasl"] || !mounts["kafka-tls=/etc/coupon-producer/tls"] {
			t.Errorf("%s: secret mounts %v", name, mounts)
		}
	}
}

func checkOneJob(t *testing.T, r *rendered) {
	if got := sortedKeys(r.cronJobs); !slices.Equal(got, []string{"coupon-producer-couponbase1"}) {
		t.Fatalf("CronJobs %v, want only couponbase1", got)
	}
	cj := r.cronJobs["coupon-producer-couponbase1"]
	c := producerContainer(cj)
	js := cj.Spec.JobTemplate.Spec
	if cj.Spec.Schedule != "*/30 * * * *" || *js.ActiveDeadlineSeconds != 1500 || *js.BackoffLimit != 1 {
		t.Errorf("per-job schedule, deadline or backoff not applied: %q %d %d", cj.Spec.Schedule, *js.ActiveDeadlineSeconds, *js.BackoffLimit)
	}
	if got := envValue(t, c, "KAFKA_TOPIC"); got != "coupons.base1" {
		t.Errorf("KAFKA_TOPIC %q, want coupons.base1", got)
	}
	if got := envValue(t, c, "LOG_LEVEL"); got != "debug" {
		t.Errorf("extraEnv LOG_LEVEL %q, want debug", got)
	}
	if c.Resources.Requests.Cpu().String() != "1" || c.Resources.Limits.Memory().String() != "192Mi" {
		t.Errorf("per-job resources not applied: %+v", c.Resources)
	}
	meta := js.Template.ObjectMeta
	if meta.Annotations["example.com/owner"] != "coupons" || meta.Labels["example.com/team"] != "coupons" {
		t.Errorf("per-job pod annotations/labels not applied: %v %v", meta.Annotations, meta.Labels)
	}
	if len(r.pods) == 1 {
		for _, p := range r.pods {
			if len(p.Spec.Containers) != 1 {
				t.Errorf("test pod has %d containers for one job", len(p.Spec.Containers))
			}
		}
	}
}

func checkSuspended(t *testing.T, r *rendered) {
	want := map[string]bool{"coupon-producer-couponbase1": true, "coupon-producer-couponbase2": false}
	if got := sortedKeys(r.cronJobs); !slices.Equal(got, sortedKeys(want)) {
		t.Fatalf("CronJobs %v, want %v (couponbase3 disabled)", got, sortedKeys(want))
	}
	for name, suspended := range want {
		if got := *r.cronJobs[name].Spec.Suspend; got != suspended {
			t.Errorf("%s: suspend %v, want %v", name, got, suspended)
		}
	}
}

func checkTimeZones(t *testing.T, r *rendered) {
	want := map[string]string{
		"coupon-producer-couponbase1": "Europe/Paris",
		"coupon-producer-couponbase2": "Europe/Paris",
		"coupon-producer-couponbase3": "America/New_York",
	}
	for name, tz := range want {
		cj := cronJob(t, r, name)
		if cj.Spec.TimeZone == nil || *cj.Spec.TimeZone != tz {
			t.Errorf("%s: timeZone %v, want %s", name, cj.Spec.TimeZone, tz)
		}
		if _, err := time.LoadLocation(tz); err != nil {
			t.Errorf("%s: %v", tz, err)
		}
	}
	if s := r.cronJobs["coupon-producer-couponbase3"].Spec.Schedule; s != "0 6 * * 1" {
		t.Errorf("couponbase3 schedule %q", s)
	}
}

func checkZeros(t *testing.T, r *rendered) {
	for name, cj := range r.cronJobs {
		s := cj.Spec
		js := s.JobTemplate.Spec
		if s.SuccessfulJobsHistoryLimit == nil || *s.SuccessfulJobsHistoryLimit != 0 ||
			s.FailedJobsHistoryLimit == nil || *s.FailedJobsHistoryLimit != 0 {
			t.Errorf("%s: history limits of 0 not rendered: %v %v", name, s.SuccessfulJobsHistoryLimit, s.FailedJobsHistoryLimit)
		}
		if js.BackoffLimit == nil || *js.BackoffLimit != 0 || js.TTLSecondsAfterFinished == nil || *js.TTLSecondsAfterFinished != 0 {
			t.Errorf("%s: backoffLimit/ttl of 0 not rendered: %v %v", name, js.BackoffLimit, js.TTLSecondsAfterFinished)
		}
		if s.StartingDeadlineSeconds != nil || js.ActiveDeadlineSeconds != nil {
			t.Errorf("%s: null deadlines rendered: %v %v", name, s.StartingDeadlineSeconds, js.ActiveDeadlineSeconds)
		}
		if sa := js.Template.Spec.ServiceAccountName; sa != "default" {
			t.Errorf("%s: serviceAccountName %q, want default", name, sa)
		}
	}
	if len(r.serviceAccounts) != 0 || len(r.pods) != 0 {
		t.Errorf("ServiceAccount or test pod rendered though disabled: %v %v", sortedKeys(r.serviceAccounts), sortedKeys(r.pods))
	}
}

func checkMetrics(t *testing.T, r *rendered) {
	cfg := parseConfig(t, configFileText(t, r))
	if cfg["pushgateway-url"] != "http://pushgateway.monitoring.svc:9091" || cfg["metrics-addr"] != ":9100" ||
		cfg["shutdown-timeout"] != "45s" {
		t.Errorf("config.yaml: %v", cfg)
	}
	if tc, ok := cfg["topic-config"].(map[string]any); !ok || tc["retention.ms"] != "604800000" {
		t.Errorf("topic-config %v", cfg["topic-config"])
	}
	rule, ok := r.rules["coupon-producer"]
	if !ok {
		t.Fatal("no PrometheusRule coupon-producer")
	}
	if rule.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("rule labels %v", rule.Labels)
	}
	alerts := map[string]string{}
	for _, g := range rule.Spec.Groups {
		for _, rl := range g.Rules {
			alerts[rl.Alert] = rl.Expr.String()
		}
	}
	if !strings.Contains(alerts["CouponFileStale"], `{job="coupon_producer", file=~"couponbase1\\.gz|couponbase2\\.gz|couponbase3\\.gz"}) > 108000`) || !strings.Contains(alerts["CouponProducerJobFailed"], `job_name=~"coupon-producer-.+"`) {
		t.Errorf("alerts %v", alerts)
	}
	for name, cj := range r.cronJobs {
		pod := cj.Spec.JobTemplate.Spec.Template.Spec
		c := pod.Containers[0]
		if !strings.HasSuffix(c.Image, "@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef") {
			t.Errorf("%s: image %q not pinned by digest", name, c.Image)
		}
		if *pod.TerminationGracePeriodSeconds != 60 || pod.PriorityClassName != "batch-low" ||
			pod.NodeSelector["kubernetes.io/os"] != "linux" || len(pod.Tolerations) != 1 ||
			len(pod.ImagePullSecrets) != 1 || pod.ImagePullSecrets[0].Name != "registry-credentials" {
			t.Errorf("%s: pod settings not applied: %+v", name, pod)
		}
	}
}

func checkKind(t *testing.T, r *rendered) {
	for name, cj := range r.cronJobs {
		c := producerContainer(cj)
		if c.ImagePullPolicy != corev1.PullNever || !strings.HasPrefix(c.Image, "coupon-producer:") {
			t.Errorf("%s: image %q pull %q: kind loads the image into the node", name, c.Image, c.ImagePullPolicy)
		}
	}
	if len(r.claims) != 0 {
		t.Error("kind uses the claim of k8s/, the chart must not create one")
	}
	// The manifests under k8s/ name the claim and the broker the values use.
	data, err := os.ReadFile(filepath.Join(repoRoot, "k8s", "data.yaml"))
	if err != nil || !strings.Contains(string(data), "name: coupon-data") {
		t.Errorf("k8s/data.yaml does not define the claim coupon-data (err %v)", err)
	}
	cfg := parseConfig(t, configFileText(t, r))
	if !reflect.DeepEqual(cfg["brokers"], []any{"kafka.coupons.svc.cluster.local:9092"}) {
		t.Errorf("brokers %v", cfg["brokers"])
	}
}

// TestChartDefaultGolden keeps the whole default render in a golden file, so
// a review sees every rendered change (go test -run TestChartDefaultGolden -update).
func TestChartDefaultGolden(t *testing.T) {
	r := render(t, values(t, ""))
	golden(t, goldenRender, r.all())
}

// TestChartChecksumFollowsConfig: a change to the config file changes the
// pod template (so the next run uses it); a change elsewhere does not.
func TestChartChecksumFollowsConfig(t *testing.T) {
	sum := func(r *rendered) string {
		return r.cronJobs["coupon-producer-couponbase1"].Spec.JobTemplate.Spec.Template.Annotations["checksum/config"]
	}
	base := sum(render(t, values(t, "")))
	if base == "" {
		t.Fatal("no checksum/config annotation")
	}
	for _, o := range []string{"producer: {logLevel: debug}", "kafka: {brokers: [other:9092]}", "metrics: {pushgatewayUrl: http://pg:9091}"} {
		if got := sum(render(t, values(t, "", o))); got == base {
			t.Errorf("%s: checksum unchanged", o)
		}
	}
	if got := sum(render(t, values(t, "", "pod: {labels: {a: b}}"))); got != base {
		t.Errorf("a pod label changed the config checksum")
	}
}

// TestChartRefusesRestrictedViolations proves the Pod Security check above
// can fail: values that weaken the security context are caught.
func TestChartRefusesRestrictedViolations(t *testing.T) {
	for _, o := range []string{
		"pod: {containerSecurityContext: {allowPrivilegeEscalation: true}}",
		"pod: {securityContext: {runAsNonRoot: null, seccompProfile: null}, containerSecurityContext: {runAsNonRoot: null}}",
	} {
		r := render(t, values(t, "", o))
		tpl := r.cronJobs["coupon-producer-couponbase1"].Spec.JobTemplate.Spec.Template
		if restrictedViolations(t, &tpl.ObjectMeta, &tpl.Spec) == "" {
			t.Errorf("%s: passes restricted Pod Security", o)
		}
	}
}

// checkConventions: commonLabels and commonAnnotations on every object,
// one value per label key; a registry mirror and pull Secrets in either
// form, merged; extra volumes, mounts and init containers on every pod; a
// numeric tag.
func checkConventions(t *testing.T, r *rendered) {
	metas := r.objectMetas(true)
	for _, m := range metas {
		if m.Annotations["example.com/owner"] != "coupons-team" {
			t.Errorf("%s: commonAnnotations missing: %v", m.Name, m.Annotations)
		}
		if m.Labels["app.kubernetes.io/part-of"] != "coupons-platform" {
			t.Errorf("%s: part-of %q, want the commonLabels value", m.Name, m.Labels["app.kubernetes.io/part-of"])
		}
	}
	for name, cj := range r.cronJobs {
		if got := cj.Labels["example.com/cost-center"]; got != "4712" {
			t.Errorf("%s: cronJob.labels should win over commonLabels, got %q", name, got)
		}
		if got := cj.Spec.JobTemplate.Spec.Template.Labels["example.com/cost-center"]; got != "4711" {
			t.Errorf("%s: pod cost-center %q, want commonLabels' 4711", name, got)
		}
	}
	// A key rendered twice in one map is refused by the strict decoder
	// above; check the text too, for the one the chart sets itself.
	for path, text := range r.manifests {
		for _, doc := range strings.Split(text, "\n---") {
			if n := strings.Count(doc, "app.kubernetes.io/part-of:"); n > 3 {
				t.Errorf("%s: part-of rendered %d times in one document", path, n)
			}
		}
	}
	pods := []corev1.PodSpec{}
	for _, cj := range r.cronJobs {
		pods = append(pods, cj.Spec.JobTemplate.Spec.Template.Spec)
	}
	for _, p := range r.pods {
		pods = append(pods, p.Spec)
	}
	for i, pod := range pods {
		var secrets []string
		for _, s := range pod.ImagePullSecrets {
			secrets = append(secrets, s.Name)
		}
		if !slices.Equal(secrets, []string{"mirror-credentials", "registry-credentials"}) {
			t.Errorf("pod %d: imagePullSecrets %v, want global's then image's, each once", i, secrets)
		}
		if len(pod.InitContainers) != 1 || pod.InitContainers[0].Name != "wait" {
			t.Errorf("pod %d: init containers %+v", i, pod.InitContainers)
		}
		var ca bool
		for _, v := range pod.Volumes {
			ca = ca || (v.Name == "kafka-ca" && v.ConfigMap != nil && v.ConfigMap.Name == "kafka-ca-bundle")
		}
		if !ca {
			t.Errorf("pod %d: no kafka-ca volume", i)
		}
		for _, c := range pod.Containers {
			if c.Image != "registry.example.com/couponpipeline/coupon-producer:2" {
				t.Errorf("pod %d: image %q, want the mirror and the numeric tag", i, c.Image)
			}
			var mounted bool
			for _, m := range c.VolumeMounts {
				mounted = mounted || (m.Name == "kafka-ca" && m.MountPath == "/etc/coupon-producer/ca")
			}
			if !mounted {
				t.Errorf("pod %d: container %s does not mount the CA", i, c.Name)
			}
		}
	}
}

// TestChartImageReference: global.imageRegistry replaces the registry of
// image.repository, or prefixes a repository that names none; the digest
// pins; a number is a tag.
func TestChartImageReference(t *testing.T) {
	cases := []struct{ values, want string }{
		{"", "ghcr.io/couponpipeline/coupon-producer:" + appVersion(t)},
		{"global: {imageRegistry: mirror.example.com}", "mirror.example.com/couponpipeline/coupon-producer:" + appVersion(t)},
		{"global: {imageRegistry: 'mirror.example.com:5000/'}\nimage: {repository: 'localhost/coupon-producer', tag: v1}", "mirror.example.com:5000/coupon-producer:v1"},
		{"global: {imageRegistry: mirror.example.com}\nimage: {repository: team/coupon-producer}", "mirror.example.com/team/coupon-producer:" + appVersion(t)},
		{"global: {imageRegistry: mirror.example.com}\nimage: {repository: coupon-producer}", "mirror.example.com/coupon-producer:" + appVersion(t)},
		{"image: {tag: 2}", "ghcr.io/couponpipeline/coupon-producer:2"},
		{"image: {tag: '1.10', digest: 'sha256:" + strings.Repeat("ab", 32) + "'}", "ghcr.io/couponpipeline/coupon-producer:1.10@sha256:" + strings.Repeat("ab", 32)},
	}
	for _, c := range cases {
		r := render(t, values(t, "", c.values))
		if got := producerContainer(r.cronJobs["coupon-producer-couponbase1"]).Image; got != c.want {
			t.Errorf("%q: image %q, want %q", c.values, got, c.want)
		}
	}
}

// TestChartNotesJobNames: the run-now Job name of the notes fits the 63
// characters of a Job name even with the longest CronJob name allowed.
func TestChartNotesJobNames(t *testing.T) {
	long := strings.Repeat("f", 40)
	r := render(t, values(t, "", "fullnameOverride: "+long+"\njobs: {couponbase1: null, couponbase2: null, couponbase3: null, b1: {file: b1.gz, schedule: '0 1 * * *'}, abcdefghijk: {file: b.gz, schedule: '0 1 * * *'}}"))
	names := regexp.MustCompile(`create job --from=cronjob/(\S+) (\S+)-manual-\$\(date \+%s\)`).FindAllStringSubmatch(r.notes, -1)
	if len(names) != 2 {
		t.Fatalf("want 2 run-now lines, got %d:\n%s", len(names), r.notes)
	}
	for _, m := range names {
		// 18 = "-manual-" and 10 digits of seconds since the epoch.
		if n := len(m[2]) + 18; n > 63 {
			t.Errorf("run-now Job %s-manual-<epoch> is %d characters, Kubernetes allows 63", m[2], n)
		}
		if !strings.HasPrefix(m[1], strings.TrimSuffix(m[2], "-")) {
			t.Errorf("run-now Job %s does not start with its CronJob's name %s", m[2], m[1])
		}
	}
	cut := false
	for _, m := range names {
		if len(m[1]) == 52 {
			cut = len(m[2]) == 45
		}
	}
	if !cut {
		t.Errorf("the 52-character CronJob should give a 45-character prefix: %q", names)
	}
}

// TestChartNotesWarnsOnReadWriteOnce: a claim only one node can mount is
// named as such in the install notes.
func TestChartNotesWarnsOnReadWriteOnce(t *testing.T) {
	r := render(t, values(t, "", "data: {persistence: {accessModes: [ReadWriteOnce]}}"))
	if !strings.Contains(r.notes, "WARNING: the claim is ReadWriteOnce") || !strings.Contains(r.notes, "Multi-Attach") {
		t.Errorf("NOTES.txt does not warn about a ReadWriteOnce claim:\n%s", r.notes)
	}
	r = render(t, values(t, "", "data: {persistence: {keep: false}}"))
	if _, ok := r.claims["coupon-producer-data"].Annotations["helm.sh/resource-policy"]; ok {
		t.Error("keep: false still renders helm.sh/resource-policy")
	}
}
