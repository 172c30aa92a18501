package kubelet

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "a", "EMPTY": "", "B": "$(A)"}
	lookup := func(n string) (string, bool) { v, ok := vars[n]; return v, ok }
	for in, want := range map[string]string{
		"plain":          "plain",
		"$(A)":           "a",
		"x$(A)y$(A)":     "xaya",
		"$(EMPTY)|":      "|",
		"$(UNDEFINED)":   "$(UNDEFINED)",
		"$$(A)":          "$(A)",
		"$$$(A)":         "$a",
		"$(B)":           "$(A)", // values are not expanded twice
		"cost $5":        "cost $5",
		"trailing $":     "trailing $",
		"open $(A":       "open $(A",
		"--file=$(A).gz": "--file=a.gz",
	} {
		if got := expand(in, lookup); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestIdentity(t *testing.T) {
	i64 := func(v int64) *int64 { return &v }
	yes := true
	img := Image{User: "65532:65532"}
	pod := &corev1.Pod{Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{
		RunAsUser: i64(1000), FSGroup: i64(2000), SupplementalGroups: []int64{3000, 1000},
	}}}
	c := &corev1.Container{SecurityContext: &corev1.SecurityContext{RunAsGroup: i64(1000)}}
	uid, gid, groups, err := identity(pod, c, img)
	if err != nil || uid != 1000 || gid != 1000 || len(groups) != 3 || groups[0] != 1000 || groups[1] != 2000 || groups[2] != 3000 {
		t.Errorf("identity = %d %d %v %v, want 1000 1000 [1000 2000 3000]", uid, gid, groups, err)
	}
	if uid, gid, _, err := identity(&corev1.Pod{}, &corev1.Container{}, img); err != nil || uid != 65532 || gid != 65532 {
		t.Errorf("the image's user: %d:%d %v", uid, gid, err)
	}
	root := &corev1.Pod{Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: &yes}}}
	if _, _, _, err := identity(root, &corev1.Container{}, Image{}); err == nil {
		t.Error("runAsNonRoot with an image running as root was accepted")
	}
	if _, _, _, err := identity(&corev1.Pod{}, &corev1.Container{}, Image{User: "nonroot"}); err == nil {
		t.Error("a user name was accepted: only numeric users can be checked against runAsNonRoot")
	}
}

func TestCapabilityNumbers(t *testing.T) {
	all, err := capabilityNumbers([]corev1.Capability{"NET_RAW", "ALL"})
	if err != nil || len(all) != len(capabilities) {
		t.Errorf("ALL: %d capabilities, %v", len(all), err)
	}
	some, err := capabilityNumbers([]corev1.Capability{"CAP_SYS_ADMIN", "net_raw"})
	if err != nil || len(some) != 2 || some[0] != 21 || some[1] != 13 {
		t.Errorf("SYS_ADMIN, NET_RAW = %v %v, want [21 13]", some, err)
	}
	if _, err := capabilityNumbers([]corev1.Capability{"FLY"}); err == nil {
		t.Error("an unknown capability was accepted")
	}
}
