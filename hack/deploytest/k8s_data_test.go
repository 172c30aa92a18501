package deploytest

import (
	"strings"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

// dataWriter checks what a pod that writes the coupon files must have: it
// passes restricted Pod Security, mounts the chart's default claim
// read-write at /data, and writes as the producer's user, so that the
// producer (which mounts the claim read-only, where fsGroup does not apply)
// can read what it wrote.
func dataWriter(t *testing.T, what string, meta *corev1.Pod) {
	t.Helper()
	checkRestricted(t, &meta.ObjectMeta, &meta.Spec)
	defaults := render(t, values(t, ""))
	var claim string
	for name := range defaults.claims {
		claim = name
	}
	spec := meta.Spec
	var mounted bool
	for _, v := range spec.Volumes {
		if v.PersistentVolumeClaim == nil {
			continue
		}
		if v.PersistentVolumeClaim.ClaimName != claim || v.PersistentVolumeClaim.ReadOnly {
			t.Errorf("%s: volume %s: claim %q read-only %v, want the chart's default claim %q read-write",
				what, v.Name, v.PersistentVolumeClaim.ClaimName, v.PersistentVolumeClaim.ReadOnly, claim)
		}
		for _, c := range spec.Containers {
			for _, m := range c.VolumeMounts {
				if m.Name == v.Name && m.MountPath == dataPath && !m.ReadOnly {
					mounted = true
				}
			}
		}
	}
	if !mounted {
		t.Errorf("%s: no container mounts the claim read-write at %s", what, dataPath)
	}
	sc := spec.SecurityContext
	if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 65532 || sc.RunAsGroup == nil || *sc.RunAsGroup != 65532 {
		t.Errorf("%s: pod security context %+v: want uid and gid 65532, the producer's", what, sc)
	}
}

// TestK8sDataLoader: the loader pod that the chart's notes and README name
// for kubectl cp.
func TestK8sDataLoader(t *testing.T) {
	pod := oneObject[*corev1.Pod](t, "data-loader-pod.yaml")
	dataWriter(t, "loader pod", pod)
	if pod.Name != "coupon-data-loader" || pod.Spec.ActiveDeadlineSeconds == nil {
		t.Errorf("loader pod %q, deadline %v: the notes name coupon-data-loader, and a forgotten one must end", pod.Name, pod.Spec.ActiveDeadlineSeconds)
	}
	r := render(t, values(t, ""))
	if !strings.Contains(r.notes, "pod/coupon-data-loader") || !strings.Contains(r.notes, "k8s/data-loader-pod.yaml") {
		t.Errorf("NOTES.txt does not show how to load the files with the loader pod:\n%s", r.notes)
	}
}

// TestK8sDataRefresh: the daily refresh pattern writes to temporary names
// and renames, one run at a time, into the chart's claim.
func TestK8sDataRefresh(t *testing.T) {
	cj := oneObject[*batchv1.CronJob](t, "data-refresh-cronjob.yaml")
	if cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
		t.Errorf("concurrencyPolicy %q, want Forbid", cj.Spec.ConcurrencyPolicy)
	}
	tpl := cj.Spec.JobTemplate.Spec.Template
	dataWriter(t, "refresh pod", &corev1.Pod{ObjectMeta: tpl.ObjectMeta, Spec: tpl.Spec})
	script := strings.Join(tpl.Spec.Containers[0].Command, " ")
	if !strings.Contains(script, ".tmp") || !strings.Contains(script, "mv -f") {
		t.Errorf("refresh script does not write a temporary file and rename it:\n%s", script)
	}
}

// oneObject decodes a k8s/ file that holds exactly one object, of type T.
func oneObject[T any](t *testing.T, name string) T {
	t.Helper()
	objs := k8sObjects(t, name)
	if len(objs) != 1 {
		t.Fatalf("k8s/%s: want one object, got %d", name, len(objs))
	}
	obj, ok := objs[0].(T)
	if !ok {
		t.Fatalf("k8s/%s: %T, want %T", name, objs[0], obj)
	}
	return obj
}
