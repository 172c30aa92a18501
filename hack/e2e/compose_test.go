package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/twmb/franz-go/pkg/kadm"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"
)

// The compose file and the Dockerfile, from this folder.
const (
	composeFile = "../../docker-compose.pipeline.yaml"
	dockerfile  = "../../Dockerfile"
)

// composeOneOff is what the compose file's header gives for a one-off run,
// `docker compose run --rm couponbase1 --schedule=""`: the service's
// command, after the image's entrypoint. The shell turns --schedule="" into
// the argument --schedule=.
var composeOneOff = []string{"--schedule="}

// progressIntervals are the only settings in which a compose service and
// the chart's CronJob differ on purpose: the chart's pods log progress
// every 30s, which keeps a scheduled run's log short in the cluster's log
// store; the compose file every 10s, for someone watching `docker compose
// logs -f` on a laptop. Every other effective setting must be the same.
var deliberateDifferences = []string{"progress-interval"}

// identityKeys say who runs, for the ledger: the chart sets them from the
// downward API (the Job, the pod, its namespace); a compose service has no
// such names and leaves them empty. They are compared apart.
var identityKeys = []string{"job-name", "pod-name", "pod-namespace"}

// Compose parity: a compose producer service, loaded with compose-go (the
// loader of the docker compose CLI, so interpolation, merge keys and path
// resolution are the CLI's), run as `docker compose run --rm couponbase1
// --schedule=""` runs it, publishes its file, and only its file, to the
// topic named after the file; the chart's CronJob for the same file
// publishes the same codes to the same topic, and both see the same
// effective configuration except for what the chart sets differently on
// purpose (deliberateDifferences).
//
// There is no Docker engine here, so the service becomes the equivalent pod
// (composePod), which the real node runs as it runs the chart's pods:
// containerd and runc start the image built from the Dockerfile (tagged
// with the service's image reference, as `docker compose build` would)
// with its own entrypoint, as the service's uid:gid, on a read-only root,
// with dropped capabilities and no_new_privs. Each bind mount
// becomes a hostPath volume of the same host path (the repository's shared
// config file, and COUPON_DATA_DIR set to a temporary folder as a user
// would set it), read-only as the compose file says. The pod runs in a
// namespace without Pod Security enforcement: hostPath is what compose's
// binds are, and restricted forbids it; the chart's side runs under
// restricted.
//
// The shared config file names the broker kafka:9092, the compose network's
// broker, unreachable here. The test overrides it as a compose user would,
// `docker compose run -e KAFKA_BROKERS=<broker> ...`: the environment
// outranks the config file. The chart's side gets the same broker from its
// kafka.brokers value, so brokers are compared too.
//
// The topic is the file's base name on a broker that other runs may have
// written to before, so each run is judged by what it appended: the end
// offsets before and after it.
func TestComposeParity(t *testing.T) {
	c, cs, brokers := needNode(t)

	data := generate(t, 30000, "1")

	project := loadCompose(t, map[string]string{"COUPON_DATA_DIR": data})
	svc, err := project.GetService("couponbase1")
	if err != nil {
		t.Fatal(err)
	}
	file := envValue(svc, "COUPON_FILE")
	if file == "" {
		t.Fatal("the couponbase1 service sets no COUPON_FILE")
	}
	// The file inside the container, found on the host through the
	// service's own /data bind.
	hostFile := hostPathOf(t, svc, file)
	raw, err := os.ReadFile(hostFile)
	if err != nil {
		t.Fatalf("the service's file %s: %v", file, err)
	}
	want := fileCodes(t, raw)
	topic := filepath.Base(file)
	// docker compose run -e KAFKA_BROKERS=...: added to the service's
	// environment, over what the compose file sets (it sets no broker).
	svc.Environment["KAFKA_BROKERS"] = ptr(strings.Join(brokers, ","))

	if svc.Image == "" {
		t.Fatal("the couponbase1 service names no image")
	}
	// What `docker compose build` would have tagged: the image built from
	// the Dockerfile, under the service's image reference (normalized as
	// the container runtime does), so that the pod runs it by that name.
	if err := node.TagImage(producerImage, normalizedRef(svc.Image)); err != nil {
		t.Fatal(err)
	}
	const composeNS, chartNS = "compose", "parity"
	namespace(t, c, composeNS, nil)
	// The chart, with its defaults but the broker, the data claim, the image
	// that compose builds (so both sides run the same image reference) and
	// its CronJobs suspended: the test starts the runs.
	cj := "parity-coupon-producer-couponbase1"
	chartVolume(t, c, chartNS, "parity", data, corev1.ReadWriteMany)
	repo, tag, _ := strings.Cut(svc.Image, ":")
	h := newHelm(t, c)
	h.installSuspended("parity", chartNS, repo, tag, brokers)
	defer h.must("uninstall", "parity", "-n", chartNS, "--wait", "--timeout", "60s")

	var composeConfig, chartConfig map[string]any
	t.Run("compose and the chart see the same configuration", func(t *testing.T) {
		pod, err := composePod(svc, "couponbase1-print-config", append(slices.Clone(composeOneOff), "--print-config"))
		if err != nil {
			t.Fatal(err)
		}
		out := runPod(t, cs, composeNS, pod)
		composeConfig = printedConfig(t, out)

		// The CronJob's own Job template, as the server holds it, with
		// --print-config as the container's only argument.
		pods := runFromCronJob(t, cs, chartNS, cj, "print-config", "--print-config")
		logs, err := containerLogs(cs, chartNS, pods[0].Name, "producer")
		if err != nil {
			t.Fatal(err)
		}
		chartConfig = printedConfig(t, logs)

		// The producer names the config file it read in its first line:
		// compose mounts it where the chart's ConfigMap is.
		if cf, hf := firstLine(out), firstLine(logs); cf != hf || !strings.HasPrefix(cf, "# config file: ") {
			t.Errorf("config file: compose %q, chart %q", cf, hf)
		}
		for key, want := range map[string]string{"job-name": "print-config", "pod-name": pods[0].Name, "pod-namespace": chartNS} {
			if composeConfig[key] != "" || chartConfig[key] != want {
				t.Errorf("%s: compose %q, chart %q; want empty in compose and %q from the chart's downward API", key, composeConfig[key], chartConfig[key], want)
			}
		}
		if d := configDiff(composeConfig, chartConfig, append(slices.Clone(deliberateDifferences), identityKeys...)); d != "" {
			t.Errorf("compose service couponbase1 and CronJob %s differ in their effective configuration:\n%s", cj, d)
		}
		if composeConfig["file"] != file || chartConfig["file"] != file {
			t.Errorf("file: compose %v, chart %v, want %s", composeConfig["file"], chartConfig["file"], file)
		}
		if composeConfig["topic"] != "" {
			t.Errorf("compose sets topic %v: the topic would not be the file's base name", composeConfig["topic"])
		}
		for _, key := range deliberateDifferences {
			t.Logf("on purpose: %s is %v in compose, %v in the chart", key, composeConfig[key], chartConfig[key])
		}
	})

	t.Run("the compose service publishes its file to the topic named after it", func(t *testing.T) {
		before := endOffsets(t, brokers, topic)
		// --force: the run ledger skips a file already published unchanged
		// to its topic, and this generated file is the same on every run
		// of the test against a broker that keeps its topics.
		pod, err := composePod(svc, "couponbase1", append(slices.Clone(composeOneOff), "--force"))
		if err != nil {
			t.Fatal(err)
		}
		runPod(t, cs, composeNS, pod)
		have := topicCodesFrom(t, brokers, topic, before)
		if d := multisetDiff(want, have); d != "" {
			t.Fatalf("the compose run did not append the file's codes exactly once to topic %s: %s", topic, d)
		}
		t.Logf("compose: %d codes of %s appended to topic %s, each as often as in the file", total(have), filepath.Base(hostFile), topic)
	})

	t.Run("the chart's CronJob publishes the same file to the same topic", func(t *testing.T) {
		before := endOffsets(t, brokers, topic)
		// As kubectl create job --from=cronjob makes it, with --force: the
		// compose run just published this very file to this topic, and the
		// run ledger would otherwise skip it as unchanged.
		runFromCronJob(t, cs, chartNS, cj, "couponbase1-manual", "--force")
		have := topicCodesFrom(t, brokers, topic, before)
		if d := multisetDiff(want, have); d != "" {
			t.Fatalf("the chart's run did not append the file's codes exactly once to topic %s: %s", topic, d)
		}
		t.Logf("chart: %d codes appended to topic %s, each as often as in the file", total(have), topic)
	})
}

// loadCompose loads the compose file as `docker compose` does, with env as
// the whole environment: neither the caller's shell nor a .env file leaks
// in.
func loadCompose(t *testing.T, env map[string]string) *types.Project {
	t.Helper()
	file, err := filepath.Abs(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{file}, cli.WithWorkingDirectory(filepath.Dir(file)), cli.WithEnv(envList))
	if err != nil {
		t.Fatalf("compose options: %v", err)
	}
	p, err := cli.ProjectFromOptions(context.Background(), opts)
	if err != nil {
		t.Fatalf("load %s: %v", composeFile, err)
	}
	return p
}

func envValue(s types.ServiceConfig, key string) string {
	if v := s.Environment[key]; v != nil {
		return *v
	}
	return ""
}

// hostPathOf returns the host path behind a path inside the service's
// container, through its bind mounts.
func hostPathOf(t *testing.T, s types.ServiceConfig, path string) string {
	t.Helper()
	for _, v := range s.Volumes {
		rel, err := filepath.Rel(v.Target, path)
		if err == nil && v.Type == types.VolumeTypeBind && !strings.HasPrefix(rel, "..") {
			return filepath.Join(v.Source, rel)
		}
	}
	t.Fatalf("%s: no bind mount holds %s", s.Name, path)
	return ""
}

// composePod translates a compose service into the pod that runs its
// container as `docker compose run --rm <service> <args...>` would: the
// service's entrypoint (or the image's) and args as its command, its
// environment, user, read-only root, dropped capabilities, no-new-privileges
// and stop grace period, its bind mounts as hostPath volumes at the same
// targets. It runs once (restartPolicy Never): `run` ignores the service's
// restart policy. A service setting that the pod could not reproduce is an
// error rather than silently left out.
func composePod(s types.ServiceConfig, name string, args []string) (*corev1.Pod, error) {
	switch {
	case s.Privileged, len(s.CapAdd) > 0, len(s.Tmpfs) > 0, len(s.Devices) > 0, len(s.Secrets) > 0, len(s.Configs) > 0,
		s.WorkingDir != "", s.Init != nil && *s.Init:
		return nil, fmt.Errorf("service %s: a setting this translation does not reproduce (privileged, cap_add, tmpfs, devices, secrets, configs, working_dir or init)", s.Name)
	}
	c := corev1.Container{
		Name:    s.Name,
		Image:   s.Image,
		Command: s.Entrypoint,
		Args:    args,
		SecurityContext: &corev1.SecurityContext{
			ReadOnlyRootFilesystem: ptr(s.ReadOnly),
		},
	}
	for _, key := range slices.Sorted(maps.Keys(s.Environment)) {
		v := s.Environment[key]
		if v == nil {
			return nil, fmt.Errorf("service %s: %s passes the host's value through", s.Name, key)
		}
		c.Env = append(c.Env, corev1.EnvVar{Name: key, Value: *v})
	}
	if s.User != "" {
		uid, gid, ok := strings.Cut(s.User, ":")
		u, err := strconv.ParseInt(uid, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("service %s: user %q is not numeric", s.Name, s.User)
		}
		c.SecurityContext.RunAsUser = &u
		if ok {
			g, err := strconv.ParseInt(gid, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("service %s: group of user %q is not numeric", s.Name, s.User)
			}
			c.SecurityContext.RunAsGroup = &g
		}
	}
	if len(s.CapDrop) > 0 {
		caps := &corev1.Capabilities{}
		for _, cp := range s.CapDrop {
			caps.Drop = append(caps.Drop, corev1.Capability(strings.ToUpper(strings.TrimPrefix(cp, "CAP_"))))
		}
		c.SecurityContext.Capabilities = caps
	}
	for _, opt := range s.SecurityOpt {
		switch opt {
		case "no-new-privileges", "no-new-privileges:true", "no-new-privileges=true":
			c.SecurityContext.AllowPrivilegeEscalation = ptr(false)
		default:
			return nil, fmt.Errorf("service %s: security_opt %q is not reproduced", s.Name, opt)
		}
	}
	var vols []corev1.Volume
	for i, v := range s.Volumes {
		if v.Type != types.VolumeTypeBind {
			return nil, fmt.Errorf("service %s: volume %s is a %s, only binds are reproduced", s.Name, v.Target, v.Type)
		}
		fi, err := os.Stat(v.Source)
		if err != nil {
			return nil, fmt.Errorf("service %s: bind source: %w", s.Name, err)
		}
		kind := corev1.HostPathDirectory
		if !fi.IsDir() {
			kind = corev1.HostPathFile
		}
		vname := fmt.Sprintf("bind-%d", i)
		vols = append(vols, corev1.Volume{Name: vname, VolumeSource: corev1.VolumeSource{
			HostPath: &corev1.HostPathVolumeSource{Path: v.Source, Type: &kind},
		}})
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: vname, MountPath: v.Target, ReadOnly: v.ReadOnly})
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			Containers:    []corev1.Container{c},
			Volumes:       vols,
			RestartPolicy: corev1.RestartPolicyNever,
			// A compose container gets no API token and no service links.
			AutomountServiceAccountToken: ptr(false),
			EnableServiceLinks:           ptr(false),
		},
	}
	if s.StopGracePeriod != nil {
		pod.Spec.TerminationGracePeriodSeconds = ptr(int64(time.Duration(*s.StopGracePeriod) / time.Second))
	}
	return pod, nil
}

// normalizedRef is a short image reference in full, as Docker and
// containerd's CRI read it: coupon-producer:local is
// docker.io/library/coupon-producer:local.
func normalizedRef(ref string) string {
	name, _, _ := strings.Cut(ref, ":")
	first, _, hasSlash := strings.Cut(name, "/")
	switch {
	case !hasSlash:
		return "docker.io/library/" + ref
	case !strings.ContainsAny(first, ".:") && first != "localhost":
		return "docker.io/" + ref
	}
	return ref
}

// runPod creates the pod, waits for it to finish, fails the test unless its
// container exited 0, and returns the container's output.
func runPod(t *testing.T, cs kubernetes.Interface, ns string, pod *corev1.Pod) string {
	t.Helper()
	code, logs := runPodCode(t, cs, ns, pod)
	if code != 0 {
		t.Fatalf("pod %s exited %d, want 0:\n%s", pod.Name, code, logs)
	}
	return logs
}

// runPodCode creates the pod, waits for it to end and returns its
// container's exit code and output.
func runPodCode(t *testing.T, cs kubernetes.Interface, ns string, pod *corev1.Pod) (int32, string) {
	t.Helper()
	ctx := context.Background()
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var got *corev1.Pod
	eventually(t, 120*time.Second, "pod "+ns+"/"+pod.Name+" finished", func() (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		got = p
		return err == nil && (p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed), err
	})
	if len(got.Status.ContainerStatuses) != 1 || got.Status.ContainerStatuses[0].State.Terminated == nil {
		t.Fatalf("pod %s ended without one terminated container;%s", pod.Name, describePods([]corev1.Pod{*got}))
	}
	logs, err := containerLogs(cs, ns, pod.Name, pod.Spec.Containers[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	return got.Status.ContainerStatuses[0].State.Terminated.ExitCode, logs
}

// printedConfig parses --print-config's output, a YAML config file whose
// comments say where each value came from.
func printedConfig(t *testing.T, out string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal([]byte(out), &m); err != nil || len(m) == 0 {
		t.Fatalf("--print-config output is not a config file (%v):\n%s", err, out)
	}
	return m
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// configDiff lists the keys whose values differ, but for those in skip.
func configDiff(a, b map[string]any, skip []string) string {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	var diffs []string
	for k := range keys {
		if slices.Contains(skip, k) {
			continue
		}
		av, aok := a[k]
		bv, bok := b[k]
		if aok != bok || fmt.Sprint(av) != fmt.Sprint(bv) {
			diffs = append(diffs, fmt.Sprintf("  %s: compose %v, chart %v", k, av, bv))
		}
	}
	sort.Strings(diffs)
	return strings.Join(diffs, "\n")
}

// endOffsets returns the end offset of each partition of the topic, none
// before it exists.
func endOffsets(t *testing.T, brokers []string, topic string) map[int32]int64 {
	t.Helper()
	out := map[int32]int64{}
	ends, err := freshAdmin(t, brokers).ListEndOffsets(context.Background(), topic)
	if err != nil {
		t.Fatalf("end offsets of %s: %v", topic, err)
	}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Err == nil {
			out[o.Partition] = o.Offset
		}
	})
	return out
}

// The translation of a compose service into a pod keeps what makes the
// service's container what it is, and refuses what it cannot keep.
func TestComposePod(t *testing.T) {
	data := t.TempDir()
	p := loadCompose(t, map[string]string{"COUPON_DATA_DIR": data})
	svc, err := p.GetService("couponbase2")
	if err != nil {
		t.Fatal(err)
	}
	pod, err := composePod(svc, "couponbase2", []string{"--schedule="})
	if err != nil {
		t.Fatal(err)
	}
	c := pod.Spec.Containers[0]
	sc := c.SecurityContext
	if c.Image != "coupon-producer:local" || c.Command != nil || !slices.Equal(c.Args, []string{"--schedule="}) {
		t.Errorf("image %q, command %q, args %q: want the compose image, its entrypoint, the one-off args", c.Image, c.Command, c.Args)
	}
	if *sc.RunAsUser != 65532 || *sc.RunAsGroup != 65532 || !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation ||
		!slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("security context %+v: want 65532:65532, read-only root, no privilege escalation, drop ALL", sc)
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["COUPON_FILE"] != "/data/couponbase2.gz" || env["COUPON_PRODUCER_CONFIG"] != "/etc/coupon-producer/config.yaml" || env["SCHEDULE"] != "0 2 * * *" {
		t.Errorf("environment %v", env)
	}
	config, err := filepath.Abs("../compose/coupon-producer.yaml")
	if err != nil {
		t.Fatal(err)
	}
	mounts := map[string]string{}
	for i, m := range c.VolumeMounts {
		if !m.ReadOnly {
			t.Errorf("%s is mounted read-write", m.MountPath)
		}
		mounts[m.MountPath] = pod.Spec.Volumes[i].HostPath.Path
	}
	if len(mounts) != 2 || mounts["/data"] != data || mounts["/etc/coupon-producer/config.yaml"] != config {
		t.Errorf("mounts %v: want /data from COUPON_DATA_DIR and the repository's config file", mounts)
	}
	if g := pod.Spec.TerminationGracePeriodSeconds; g == nil || *g != 30 {
		t.Errorf("grace period %v, want the service's stop_grace_period 30s", g)
	}

	lax := svc
	lax.CapAdd = []string{"NET_ADMIN"}
	if _, err := composePod(lax, "lax", nil); err == nil {
		t.Error("a service with cap_add translated without error")
	}
	lax = svc
	lax.Environment = types.MappingWithEquals{"FROM_HOST": nil}
	if _, err := composePod(lax, "lax", nil); err == nil {
		t.Error("a service passing a host variable through translated without error")
	}
}

// runFromCronJob creates a Job from the CronJob's own Job template, as the
// server holds it and as `kubectl create job --from=cronjob` does, with
// args as the container's arguments, owned by the CronJob (so that the
// uninstall removes it and its pod, which hold the claim). It waits for the
// Job to complete and returns its pod.
func runFromCronJob(t *testing.T, cs kubernetes.Interface, ns, cronJob, name string, args ...string) []corev1.Pod {
	t.Helper()
	ctx := context.Background()
	tmpl, err := cs.BatchV1().CronJobs(ns).Get(ctx, cronJob, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name:   name,
			Labels: tmpl.Spec.JobTemplate.Labels,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "batch/v1", Kind: "CronJob", Name: tmpl.Name, UID: tmpl.UID, Controller: ptr(true),
			}},
		},
		Spec: *tmpl.Spec.JobTemplate.Spec.DeepCopy(),
	}
	job.Spec.Template.Spec.Containers[0].Args = args
	if _, err := cs.BatchV1().Jobs(ns).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	j := waitJob(t, cs, ns, name, 120*time.Second)
	pods := jobPods(t, cs, ns, name)
	if cond := jobFinished(j); cond.Type != batchv1.JobComplete || len(pods) != 1 {
		t.Fatalf("job %s: %s (%s);%s\n%s", name, cond.Type, cond.Message, describePods(pods), podLogs(cs, pods))
	}
	return pods
}
