package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/couponpipeline/coupon-producer/hack/e2e/cluster"
)

// The chart installed with its defaults on the real API server: the claim
// it creates can be mounted by several nodes at once (ReadWriteMany, bound
// to a volume that offers it) and outlives helm uninstall, with its files;
// the loader pod that the notes and the README show for kubectl cp is
// admitted under restricted Pod Security in a namespace that enforces it,
// and so is the daily refresh CronJob's pod template. A loader that breaks
// the level is refused, so the admission check can fail.
func TestChartClaimOnRealAPIServer(t *testing.T) {
	c := needCluster(t)
	cs := adminClient(t, c)
	ctx := context.Background()
	const ns = "claim"
	namespace(t, c, ns, restrictedPSS)
	// The claim of release "files": files-coupon-producer-data. With the
	// chart's defaults it names no StorageClass, so it binds a volume of
	// none; this one offers only what the claim asks for.
	const release, claim = "files", "files-coupon-producer-data"
	hostPathPV(t, cs, "claim-data", t.TempDir(), "", ns, claim, corev1.ReadWriteMany)
	h := newHelm(t, c)

	notes := h.must("install", release, chartDir, "-n", ns)
	if strings.Contains(notes, "WARNING") || !strings.Contains(notes, "ReadWriteMany; kept on helm uninstall") ||
		!strings.Contains(notes, "claimName: "+claim) {
		t.Errorf("install notes do not describe the default claim and how to fill it:\n%s", notes)
	}
	pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(pvc.Spec.AccessModes, corev1.ReadWriteMany) || slices.Contains(pvc.Spec.AccessModes, corev1.ReadWriteOnce) {
		t.Errorf("claim access modes %v: pods on several nodes need ReadWriteMany, and no ReadWriteOnce", pvc.Spec.AccessModes)
	}
	if pvc.Annotations["helm.sh/resource-policy"] != "keep" {
		t.Errorf("claim annotations %v: want helm.sh/resource-policy: keep", pvc.Annotations)
	}
	eventually(t, 60*time.Second, "the claim bound to the ReadWriteMany volume", func() (bool, error) {
		pvc, err := cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return pvc.Status.Phase == corev1.ClaimBound && pvc.Spec.VolumeName == "claim-data" &&
			slices.Contains(pvc.Status.AccessModes, corev1.ReadWriteMany), nil
	})

	// The loader pod of k8s/, pointed at this claim as the notes say.
	loader := manifestFor(t, "data-loader-pod.yaml", "claimName: coupon-producer-data", "claimName: "+claim,
		"namespace: coupons", "namespace: "+ns)
	kubectl(t, c, "-n", ns, "apply", "-f", loader)
	pod, err := cs.CoreV1().Pods(ns).Get(ctx, "coupon-data-loader", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the loader pod was not admitted: %v", err)
	}
	var mounted bool
	for _, v := range pod.Spec.Volumes {
		mounted = mounted || (v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == claim && !v.PersistentVolumeClaim.ReadOnly)
	}
	if !mounted {
		t.Errorf("the loader pod does not mount %s read-write: %+v", claim, pod.Spec.Volumes)
	}
	if err := cs.CoreV1().Pods(ns).Delete(ctx, pod.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		t.Fatal(err)
	}
	// The same pod as root is refused by Pod Security.
	root := manifestFor(t, "data-loader-pod.yaml", "runAsUser: 65532", "runAsUser: 0", "namespace: coupons", "namespace: "+ns)
	out, err := kubectlOutput(c, "-n", ns, "apply", "--dry-run=server", "-f", root)
	if err == nil || !strings.Contains(out, `violates PodSecurity "restricted:latest"`) {
		t.Errorf("a loader running as root was not refused by Pod Security (err %v):\n%s", err, out)
	}
	// The refresh CronJob: Pod Security only warns on a template, so the
	// server's answer must carry no warning.
	refresh := manifestFor(t, "data-refresh-cronjob.yaml", "namespace: coupons", "namespace: "+ns)
	out = kubectl(t, c, "-n", ns, "apply", "--dry-run=server", "-f", refresh)
	if strings.Contains(out, "PodSecurity") {
		t.Errorf("the refresh CronJob's pods would violate restricted Pod Security:\n%s", out)
	}

	// helm uninstall removes the release and keeps the claim, still bound.
	h.must("uninstall", release, "-n", ns, "--wait", "--timeout", "60s")
	eventually(t, 60*time.Second, "the release's CronJobs gone", func() (bool, error) {
		list, err := cs.BatchV1().CronJobs(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(list.Items) == 0, err
	})
	pvc, err = cs.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		t.Fatal("helm uninstall deleted the data claim")
	case err != nil:
		t.Fatal(err)
	case pvc.DeletionTimestamp != nil || pvc.Status.Phase != corev1.ClaimBound:
		t.Errorf("after helm uninstall the claim is %s, deleting %v; want it bound and kept", pvc.Status.Phase, pvc.DeletionTimestamp)
	}
}

// repoK8s is the k8s/ folder of manifests the chart does not carry.
const repoK8s = "../../k8s"

// manifestFor writes a copy of a k8s/ manifest with each old string
// replaced by the new one after it (each must occur), as a user's sed
// would, and returns its path.
func manifestFor(t *testing.T, name string, oldNew ...string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoK8s, name))
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	for i := 0; i+1 < len(oldNew); i += 2 {
		if !strings.Contains(text, oldNew[i]) {
			t.Fatalf("k8s/%s has no %q", name, oldNew[i])
		}
		text = strings.ReplaceAll(text, oldNew[i], oldNew[i+1])
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// kubectlOutput runs kubectl and returns its combined output and error,
// for commands that are meant to fail.
func kubectlOutput(c *cluster.Cluster, args ...string) (string, error) {
	out, err := exec.Command(c.Bin("kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...).CombinedOutput()
	return string(out), err
}
