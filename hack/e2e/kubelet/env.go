package kubelet

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// environment computes a container's variables as the kubelet does
// (makeEnvironmentVariables): envFrom sources in order, then env entries in
// order, each value expanded against the variables defined before it. The
// image's variables are not included: the runtime puts them first.
func (k *Kubelet) environment(ctx context.Context, pod *corev1.Pod, c *corev1.Container) ([]corev1.EnvVar, error) {
	var out []corev1.EnvVar
	set := map[string]int{} // name -> index in out
	put := func(name, value string) {
		if i, ok := set[name]; ok {
			out[i].Value = value
			return
		}
		set[name] = len(out)
		out = append(out, corev1.EnvVar{Name: name, Value: value})
	}
	ns := pod.Namespace
	for _, src := range c.EnvFrom {
		var data map[string]string
		switch {
		case src.ConfigMapRef != nil:
			cm, err := k.node.CoreV1().ConfigMaps(ns).Get(ctx, src.ConfigMapRef.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && isTrue(src.ConfigMapRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("envFrom configmap %q: %w", src.ConfigMapRef.Name, err)
			}
			data = cm.Data
		case src.SecretRef != nil:
			s, err := k.node.CoreV1().Secrets(ns).Get(ctx, src.SecretRef.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && isTrue(src.SecretRef.Optional) {
					continue
				}
				return nil, fmt.Errorf("envFrom secret %q: %w", src.SecretRef.Name, err)
			}
			data = map[string]string{}
			for key, v := range s.Data {
				data[key] = string(v)
			}
		default:
			return nil, fmt.Errorf("envFrom entry with neither configMapRef nor secretRef")
		}
		keys := make([]string, 0, len(data))
		for key := range data {
			keys = append(keys, key)
		}
		sort.Strings(keys)
		// Every key becomes a variable: since RelaxedEnvironmentVariableValidation
		// (GA in 1.34) the kubelet no longer skips names like "config.yaml".
		for _, key := range keys {
			put(src.Prefix+key, data[key])
		}
	}
	lookup := func(name string) (string, bool) {
		if i, ok := set[name]; ok {
			return out[i].Value, true
		}
		return "", false
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			put(e.Name, expand(e.Value, lookup))
			continue
		}
		v, skip, err := k.envValueFrom(ctx, pod, c, e)
		if err != nil {
			return nil, err
		}
		if !skip {
			put(e.Name, v)
		}
	}
	return out, nil
}

// envValueFrom resolves one valueFrom; skip is true for an optional
// reference to something missing, which defines no variable.
func (k *Kubelet) envValueFrom(ctx context.Context, pod *corev1.Pod, c *corev1.Container, e corev1.EnvVar) (value string, skip bool, err error) {
	ns := pod.Namespace
	vf := e.ValueFrom
	switch {
	case vf.FieldRef != nil:
		v, err := k.fieldValue(pod, vf.FieldRef.FieldPath)
		return v, false, err
	case vf.ResourceFieldRef != nil:
		v, err := k.resourceValue(pod, c, vf.ResourceFieldRef)
		return v, false, err
	case vf.ConfigMapKeyRef != nil:
		ref := vf.ConfigMapKeyRef
		cm, err := k.node.CoreV1().ConfigMaps(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) && isTrue(ref.Optional) {
				return "", true, nil
			}
			return "", false, fmt.Errorf("env %s: configmap %q: %w", e.Name, ref.Name, err)
		}
		if v, ok := cm.Data[ref.Key]; ok {
			return v, false, nil
		}
		if isTrue(ref.Optional) {
			return "", true, nil
		}
		return "", false, fmt.Errorf("env %s: configmap %q has no key %q", e.Name, ref.Name, ref.Key)
	case vf.SecretKeyRef != nil:
		ref := vf.SecretKeyRef
		s, err := k.node.CoreV1().Secrets(ns).Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) && isTrue(ref.Optional) {
				return "", true, nil
			}
			return "", false, fmt.Errorf("env %s: secret %q: %w", e.Name, ref.Name, err)
		}
		if v, ok := s.Data[ref.Key]; ok {
			return string(v), false, nil
		}
		if isTrue(ref.Optional) {
			return "", true, nil
		}
		return "", false, fmt.Errorf("env %s: secret %q has no key %q", e.Name, ref.Name, ref.Key)
	}
	return "", false, fmt.Errorf("env %s: valueFrom of a kind this kubelet does not know", e.Name)
}

// fieldValue returns a downward API field of the pod. metadata.labels and
// metadata.annotations (whole maps, for volumes only) are formatted as the
// kubelet does: one key="value" line each, sorted by key.
func (k *Kubelet) fieldValue(pod *corev1.Pod, path string) (string, error) {
	if key, ok := subscript(path, "metadata.labels"); ok {
		return pod.Labels[key], nil
	}
	if key, ok := subscript(path, "metadata.annotations"); ok {
		return pod.Annotations[key], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.hostIP", "status.podIP":
		return hostIP, nil
	case "status.hostIPs", "status.podIPs":
		return hostIP, nil
	}
	return "", fmt.Errorf("fieldRef %q is not supported", path)
}

// subscript parses `prefix['key']`.
func subscript(path, prefix string) (string, bool) {
	rest, ok := strings.CutPrefix(path, prefix+"['")
	if !ok {
		return "", false
	}
	return strings.CutSuffix(rest, "']")
}

func formatMap(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "%s=%q", k, m[k])
	}
	return b.String()
}

// resourceValue resolves a resourceFieldRef: the container's limit (the
// node's allocatable when there is none) or request, divided by the divisor
// and rounded up, as the kubelet does.
func (k *Kubelet) resourceValue(pod *corev1.Pod, c *corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	if ref.ContainerName != "" && ref.ContainerName != c.Name {
		var found *corev1.Container
		for i := range pod.Spec.Containers {
			if pod.Spec.Containers[i].Name == ref.ContainerName {
				found = &pod.Spec.Containers[i]
			}
		}
		if found == nil {
			return "", fmt.Errorf("resourceFieldRef: no container %q", ref.ContainerName)
		}
		c = found
	}
	kind, name, ok := strings.Cut(ref.Resource, ".")
	if !ok {
		return "", fmt.Errorf("resourceFieldRef %q is not supported", ref.Resource)
	}
	rn := corev1.ResourceName(name)
	var q resource.Quantity
	switch kind {
	case "limits":
		v, ok := c.Resources.Limits[rn]
		if !ok {
			v, ok = k.allocatable[rn]
		}
		if !ok {
			return "", fmt.Errorf("resourceFieldRef %q: no limit and no allocatable", ref.Resource)
		}
		q = v
	case "requests":
		q = c.Resources.Requests[rn]
	default:
		return "", fmt.Errorf("resourceFieldRef %q is not supported", ref.Resource)
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	if rn == corev1.ResourceCPU {
		return fmt.Sprint(int64(math.Ceil(float64(q.MilliValue()) / float64(divisor.MilliValue())))), nil
	}
	return fmt.Sprint(int64(math.Ceil(float64(q.Value()) / float64(divisor.Value())))), nil
}

// expand replaces $(NAME) with the variable's value as Kubernetes does for
// env values, command and args: $$ is a literal $, and a reference to an
// undefined variable stays as written.
func expand(s string, lookup func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := lookup(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}

func isTrue(b *bool) bool { return b != nil && *b }
