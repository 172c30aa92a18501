package e2e

import (
	"context"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
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

// The node is the real thing at the pinned version: the kubelet built with
// the control plane, containerd's CRI as its runtime, the cgroupfs driver,
// 127.0.0.1 as its InternalIP, Ready and without taints.
func TestNode(t *testing.T) {
	c := needCluster(t)
	n, err := adminClient(t, c).CoreV1().Nodes().Get(context.Background(), cluster.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	info := n.Status.NodeInfo
	if info.KubeletVersion != cluster.KubeVersion {
		t.Errorf("kubelet version %s, want %s", info.KubeletVersion, cluster.KubeVersion)
	}
	if !strings.HasPrefix(info.ContainerRuntimeVersion, "containerd://") {
		t.Errorf("container runtime %s, want containerd", info.ContainerRuntimeVersion)
	}
	var addrs []string
	for _, a := range n.Status.Addresses {
		addrs = append(addrs, string(a.Type)+"="+a.Address)
	}
	if !slices.Contains(addrs, "InternalIP=127.0.0.1") {
		t.Errorf("node addresses %v, want InternalIP=127.0.0.1", addrs)
	}
	ready := false
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
			ready = true
		}
	}
	if !ready || n.Spec.Unschedulable || len(n.Spec.Taints) > 0 {
		t.Errorf("node ready %v, unschedulable %v, taints %v: want Ready and schedulable", ready, n.Spec.Unschedulable, n.Spec.Taints)
	}
	t.Logf("node %s: kubelet %s, %s, kernel %s, %s", n.Name, info.KubeletVersion, info.ContainerRuntimeVersion, info.KernelVersion, info.OSImage)
	for _, s := range node.Started {
		t.Logf("%s ready after %s", s.Component, s.Ready.Round(time.Millisecond))
	}
}
