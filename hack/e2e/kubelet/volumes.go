package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// volume is a pod volume materialised on the host.
type volume struct {
	path string
	// readOnly is forced for the API-backed kinds (configMap, secret,
	// downwardAPI, projected), which the kubelet always mounts read-only,
	// and for a claim or PV the spec marks read-only.
	readOnly bool
}

// volumes materialises every volume of the pod under dir: the API-backed
// kinds as files written from the objects the node may read, emptyDir as a
// fresh folder, hostPath and persistentVolumeClaim as the host folder behind
// them (a PV with hostPath or local).
func (k *Kubelet) volumes(ctx context.Context, pod *corev1.Pod, dir string) (map[string]volume, error) {
	out := map[string]volume{}
	fsGroup := (*int64)(nil)
	if pod.Spec.SecurityContext != nil {
		fsGroup = pod.Spec.SecurityContext.FSGroup
	}
	for _, v := range pod.Spec.Volumes {
		path := filepath.Join(dir, v.Name)
		var err error
		switch {
		case v.ConfigMap != nil:
			err = k.writeFiles(path, fsGroup, func(w *fileSet) error {
				return k.configMapFiles(ctx, pod.Namespace, *v.ConfigMap, w, v.ConfigMap.DefaultMode)
			})
			out[v.Name] = volume{path: path, readOnly: true}
		case v.Secret != nil:
			err = k.writeFiles(path, fsGroup, func(w *fileSet) error {
				return k.secretFiles(ctx, pod.Namespace, v.Secret.SecretName, v.Secret.Items, v.Secret.Optional, w, v.Secret.DefaultMode)
			})
			out[v.Name] = volume{path: path, readOnly: true}
		case v.DownwardAPI != nil:
			err = k.writeFiles(path, fsGroup, func(w *fileSet) error {
				return k.downwardFiles(pod, v.DownwardAPI.Items, w, v.DownwardAPI.DefaultMode)
			})
			out[v.Name] = volume{path: path, readOnly: true}
		case v.Projected != nil:
			err = k.writeFiles(path, fsGroup, func(w *fileSet) error {
				return k.projectedFiles(ctx, pod, v.Projected, w)
			})
			out[v.Name] = volume{path: path, readOnly: true}
		case v.EmptyDir != nil:
			err = emptyDir(path, fsGroup)
			out[v.Name] = volume{path: path}
		case v.HostPath != nil:
			err = hostPath(v.HostPath)
			out[v.Name] = volume{path: v.HostPath.Path}
		case v.PersistentVolumeClaim != nil:
			var p string
			p, err = k.claimPath(ctx, pod.Namespace, v.PersistentVolumeClaim.ClaimName)
			out[v.Name] = volume{path: p, readOnly: v.PersistentVolumeClaim.ReadOnly}
		default:
			err = fmt.Errorf("volume %q: kind not supported by the test kubelet", v.Name)
		}
		if err != nil {
			return nil, fmt.Errorf("volume %q: %w", v.Name, err)
		}
	}
	return out, nil
}

// fileSet collects a volume's files before they are written.
type fileSet struct {
	files map[string]fileData
}

type fileData struct {
	data []byte
	mode os.FileMode
}

func (w *fileSet) add(path string, data []byte, mode *int32, defaultMode *int32) error {
	if path == "" || filepath.IsAbs(path) || strings.HasPrefix(filepath.Clean(path), "..") {
		return fmt.Errorf("bad file path %q", path)
	}
	m := os.FileMode(0o644)
	if defaultMode != nil {
		m = os.FileMode(*defaultMode)
	}
	if mode != nil {
		m = os.FileMode(*mode)
	}
	w.files[path] = fileData{data: data, mode: m}
	return nil
}

// writeFiles writes what fill collects into a fresh folder. With an
// fsGroup the files belong to that group and are group-readable, as the
// kubelet's SetVolumeOwnership makes them.
func (k *Kubelet) writeFiles(dir string, fsGroup *int64, fill func(*fileSet) error) error {
	w := &fileSet{files: map[string]fileData{}}
	if err := fill(w); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	paths := make([]string, 0, len(w.files))
	for p := range w.files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		f := w.files[p]
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(full, f.data, 0o600); err != nil {
			return err
		}
		mode := f.mode
		if fsGroup != nil {
			if err := os.Chown(full, 0, int(*fsGroup)); err != nil {
				return err
			}
			mode |= 0o040
		}
		// Chmod after the write: WriteFile's mode passes through the umask.
		if err := os.Chmod(full, mode); err != nil {
			return err
		}
	}
	return nil
}

func (k *Kubelet) configMapFiles(ctx context.Context, ns string, src corev1.ConfigMapVolumeSource, w *fileSet, defaultMode *int32) error {
	cm, err := k.node.CoreV1().ConfigMaps(ns).Get(ctx, src.Name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) && isTrue(src.Optional) {
			return nil
		}
		return fmt.Errorf("configmap %q: %w", src.Name, err)
	}
	data := map[string][]byte{}
	for key, v := range cm.Data {
		data[key] = []byte(v)
	}
	for key, v := range cm.BinaryData {
		data[key] = v
	}
	return keyFiles("configmap "+src.Name, data, src.Items, src.Optional, w, defaultMode)
}

func (k *Kubelet) secretFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, optional *bool, w *fileSet, defaultMode *int32) error {
	s, err := k.node.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) && isTrue(optional) {
			return nil
		}
		return fmt.Errorf("secret %q: %w", name, err)
	}
	return keyFiles("secret "+name, s.Data, items, optional, w, defaultMode)
}

// keyFiles writes every key as a file of its name, or only the items at
// their paths; an item whose key is missing is an error unless optional.
func keyFiles(what string, data map[string][]byte, items []corev1.KeyToPath, optional *bool, w *fileSet, defaultMode *int32) error {
	if len(items) == 0 {
		for key, v := range data {
			if err := w.add(key, v, nil, defaultMode); err != nil {
				return err
			}
		}
		return nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if isTrue(optional) {
				continue
			}
			return fmt.Errorf("%s has no key %q", what, it.Key)
		}
		if err := w.add(it.Path, v, it.Mode, defaultMode); err != nil {
			return err
		}
	}
	return nil
}

func (k *Kubelet) downwardFiles(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, w *fileSet, defaultMode *int32) error {
	for _, it := range items {
		var v string
		var err error
		switch {
		case it.FieldRef != nil:
			v, err = k.fieldValue(pod, it.FieldRef.FieldPath)
		case it.ResourceFieldRef != nil:
			if it.ResourceFieldRef.ContainerName == "" {
				return fmt.Errorf("downwardAPI %q: resourceFieldRef needs containerName", it.Path)
			}
			v, err = k.resourceValue(pod, &corev1.Container{}, it.ResourceFieldRef)
		default:
			err = fmt.Errorf("downwardAPI %q: neither fieldRef nor resourceFieldRef", it.Path)
		}
		if err != nil {
			return err
		}
		if err := w.add(it.Path, []byte(v), it.Mode, defaultMode); err != nil {
			return err
		}
	}
	return nil
}

// projectedFiles serves the projected volume that the ServiceAccount
// admission plugin adds to every pod that does not opt out: a bound token
// requested as the node, the cluster's CA from kube-root-ca.crt and the
// namespace.
func (k *Kubelet) projectedFiles(ctx context.Context, pod *corev1.Pod, src *corev1.ProjectedVolumeSource, w *fileSet) error {
	for _, s := range src.Sources {
		var err error
		switch {
		case s.ConfigMap != nil:
			err = k.configMapFiles(ctx, pod.Namespace, corev1.ConfigMapVolumeSource{
				LocalObjectReference: s.ConfigMap.LocalObjectReference,
				Items:                s.ConfigMap.Items,
				Optional:             s.ConfigMap.Optional,
			}, w, src.DefaultMode)
		case s.Secret != nil:
			err = k.secretFiles(ctx, pod.Namespace, s.Secret.Name, s.Secret.Items, s.Secret.Optional, w, src.DefaultMode)
		case s.DownwardAPI != nil:
			err = k.downwardFiles(pod, s.DownwardAPI.Items, w, src.DefaultMode)
		case s.ServiceAccountToken != nil:
			err = k.tokenFile(ctx, pod, s.ServiceAccountToken, w, src.DefaultMode)
		default:
			err = fmt.Errorf("projected source of a kind this kubelet does not know")
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (k *Kubelet) tokenFile(ctx context.Context, pod *corev1.Pod, src *corev1.ServiceAccountTokenProjection, w *fileSet, defaultMode *int32) error {
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: src.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}
	if src.Audience != "" {
		req.Spec.Audiences = []string{src.Audience}
	}
	tr, err := k.node.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token for service account %q: %w", sa, err)
	}
	return w.add(src.Path, []byte(tr.Status.Token), nil, defaultMode)
}

// emptyDir creates the folder world-writable (0777), as the kubelet does;
// with an fsGroup it belongs to that group with the setgid bit.
func emptyDir(path string, fsGroup *int64) error {
	if err := os.MkdirAll(path, 0o755); err != nil {
		return err
	}
	mode := os.FileMode(0o777)
	if fsGroup != nil {
		if err := os.Chown(path, 0, int(*fsGroup)); err != nil {
			return err
		}
		mode |= os.ModeSetgid
	}
	return os.Chmod(path, mode)
}

func hostPath(src *corev1.HostPathVolumeSource) error {
	t := corev1.HostPathUnset
	if src.Type != nil {
		t = *src.Type
	}
	switch t {
	case corev1.HostPathDirectoryOrCreate:
		return os.MkdirAll(src.Path, 0o755)
	case corev1.HostPathDirectory:
		if fi, err := os.Stat(src.Path); err != nil || !fi.IsDir() {
			return fmt.Errorf("hostPath %s is not a directory", src.Path)
		}
	case corev1.HostPathFile:
		if fi, err := os.Stat(src.Path); err != nil || !fi.Mode().IsRegular() {
			return fmt.Errorf("hostPath %s is not a file", src.Path)
		}
	case corev1.HostPathUnset:
	default:
		return fmt.Errorf("hostPath type %q not supported", t)
	}
	return nil
}

// claimPath returns the host folder behind a bound claim: the path of its
// PV's hostPath or local source. An unbound claim is an error, retried by
// the caller, as a real kubelet waits for the binder.
func (k *Kubelet) claimPath(ctx context.Context, ns, claim string) (string, error) {
	pvc, err := k.node.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("claim %q: %w", claim, err)
	}
	if pvc.Status.Phase != corev1.ClaimBound || pvc.Spec.VolumeName == "" {
		return "", fmt.Errorf("claim %q is %s, not bound", claim, pvc.Status.Phase)
	}
	pv, err := k.node.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("claim %q: volume %q: %w", claim, pvc.Spec.VolumeName, err)
	}
	switch {
	case pv.Spec.HostPath != nil:
		return pv.Spec.HostPath.Path, nil
	case pv.Spec.Local != nil:
		return pv.Spec.Local.Path, nil
	}
	return "", fmt.Errorf("claim %q: volume %q is neither hostPath nor local", claim, pv.Name)
}
