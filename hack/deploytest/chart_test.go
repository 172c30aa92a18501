package deploytest

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/releaseutil"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

const (
	chartDir     = "../../charts/coupon-producer"
	releaseName  = "coupon-producer"
	releaseNS    = "coupons"
	goldenRender = "testdata/chart/default.golden.yaml"
)

// kubeVersion is the cluster version the chart is rendered for: the one the
// API-server tests build, and above the chart's kubeVersion floor (Helm's
// built-in default, 1.20, is below it).
var kubeVersion = chartutil.KubeVersion{Version: "v1.37.2", Major: "1", Minor: "37"}

// rendered is one release rendered by Helm's engine, every object decoded
// strictly into its Kubernetes type.
type rendered struct {
	manifests       map[string]string // template path -> rendered text
	notes           string
	cronJobs        map[string]*batchv1.CronJob
	configMaps      map[string]*corev1.ConfigMap
	claims          map[string]*corev1.PersistentVolumeClaim
	serviceAccounts map[string]*corev1.ServiceAccount
	pods            map[string]*corev1.Pod // helm test hooks
	rules           map[string]*monitoringv1.PrometheusRule
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart %s: %v", chartDir, err)
	}
	return c
}

// values reads the ci values file name (empty: none) and merges the YAML
// documents of overrides over it, later ones winning, as repeated -f do.
func values(t *testing.T, name string, overrides ...string) map[string]any {
	t.Helper()
	vals := map[string]any{}
	if name != "" {
		v, err := chartutil.ReadValuesFile(filepath.Join(chartDir, "ci", name))
		if err != nil {
			t.Fatalf("read values %s: %v", name, err)
		}
		vals = v
	}
	for _, o := range overrides {
		v, err := chartutil.ReadValues([]byte(o))
		if err != nil {
			t.Fatalf("parse override %q: %v", o, err)
		}
		vals = chartutil.CoalesceTables(v, vals)
	}
	return vals
}

// renderErr renders the chart as `helm install --dry-run` would: values
// coalesced with the chart's defaults and checked against values.schema.json,
// then every template executed.
func renderErr(t *testing.T, vals map[string]any) (map[string]string, error) {
	t.Helper()
	c := loadChart(t)
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = kubeVersion
	opts := chartutil.ReleaseOptions{Name: releaseName, Namespace: releaseNS, Revision: 1, IsInstall: true}
	top, err := chartutil.ToRenderValues(c, vals, opts, caps)
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	out, err := engine.Render(c, top)
	if err != nil {
		return nil, fmt.Errorf("render: %w", err)
	}
	return out, nil
}

// render renders and decodes, failing the test on any error.
func render(t *testing.T, vals map[string]any) *rendered {
	t.Helper()
	out, err := renderErr(t, vals)
	if err != nil {
		t.Fatal(err)
	}
	return decode(t, out)
}

func decode(t *testing.T, out map[string]string) *rendered {
	t.Helper()
	r := &rendered{
		manifests:       map[string]string{},
		cronJobs:        map[string]*batchv1.CronJob{},
		configMaps:      map[string]*corev1.ConfigMap{},
		claims:          map[string]*corev1.PersistentVolumeClaim{},
		serviceAccounts: map[string]*corev1.ServiceAccount{},
		pods:            map[string]*corev1.Pod{},
		rules:           map[string]*monitoringv1.PrometheusRule{},
	}
	paths := make([]string, 0, len(out))
	for p := range out {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, path := range paths {
		text := out[path]
		if strings.HasSuffix(path, "NOTES.txt") {
			r.notes = text
			continue
		}
		if strings.HasPrefix(filepath.Base(path), "_") || strings.TrimSpace(text) == "" {
			continue
		}
		r.manifests[path] = text
		for _, doc := range releaseutil.SplitManifests(text) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			r.add(t, path, []byte(doc))
		}
	}
	return r
}

// add decodes one document into the Go type of its kind. UnmarshalStrict
// refuses unknown and duplicate fields, so a misspelt or misplaced field in a
// template fails here instead of being dropped by the API server.
func (r *rendered) add(t *testing.T, path string, doc []byte) {
	t.Helper()
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		t.Fatalf("%s: not YAML: %v\n%s", path, err, doc)
	}
	if head.Metadata.Name == "" {
		t.Fatalf("%s: %s without a name", path, head.Kind)
	}
	strict := func(into any) {
		t.Helper()
		if err := yaml.UnmarshalStrict(doc, into); err != nil {
			t.Fatalf("%s: %s %s does not decode strictly: %v", path, head.Kind, head.Metadata.Name, err)
		}
	}
	put := func(m any, obj any) {
		t.Helper()
		strict(obj)
		key := head.Metadata.Name
		switch m := m.(type) {
		case map[string]*batchv1.CronJob:
			dup(t, m, key, path)
			m[key] = obj.(*batchv1.CronJob)
		case map[string]*corev1.ConfigMap:
			dup(t, m, key, path)
			m[key] = obj.(*corev1.ConfigMap)
		case map[string]*corev1.PersistentVolumeClaim:
			dup(t, m, key, path)
			m[key] = obj.(*corev1.PersistentVolumeClaim)
		case map[string]*corev1.ServiceAccount:
			dup(t, m, key, path)
			m[key] = obj.(*corev1.ServiceAccount)
		case map[string]*corev1.Pod:
			dup(t, m, key, path)
			m[key] = obj.(*corev1.Pod)
		case map[string]*monitoringv1.PrometheusRule:
			dup(t, m, key, path)
			m[key] = obj.(*monitoringv1.PrometheusRule)
		}
	}
	switch head.APIVersion + "/" + head.Kind {
	case "batch/v1/CronJob":
		put(r.cronJobs, &batchv1.CronJob{})
	case "v1/ConfigMap":
		put(r.configMaps, &corev1.ConfigMap{})
	case "v1/PersistentVolumeClaim":
		put(r.claims, &corev1.PersistentVolumeClaim{})
	case "v1/ServiceAccount":
		put(r.serviceAccounts, &corev1.ServiceAccount{})
	case "v1/Pod":
		put(r.pods, &corev1.Pod{})
	case "monitoring.coreos.com/v1/PrometheusRule":
		put(r.rules, &monitoringv1.PrometheusRule{})
	default:
		t.Fatalf("%s: unexpected object %s %s %s: add its type to the decoder", path, head.APIVersion, head.Kind, head.Metadata.Name)
	}
}

func dup[V any](t *testing.T, m map[string]V, name, path string) {
	t.Helper()
	if _, ok := m[name]; ok {
		t.Fatalf("%s: a second object named %q of the same kind", path, name)
	}
}

// all returns the rendered manifests in a stable order, as one YAML stream.
func (r *rendered) all() string {
	paths := make([]string, 0, len(r.manifests))
	for p := range r.manifests {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var b strings.Builder
	for _, p := range paths {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", p, strings.TrimSpace(r.manifests[p]))
	}
	return b.String()
}

// golden compares got with the file at path, or rewrites it with -update.
func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden file (go test -run %s -update writes it): %v", t.Name(), err)
	}
	if !bytes.Equal(want, []byte(got)) {
		t.Errorf("render differs from %s (rerun with -update if the change is intended):\n%s", path, lineDiff(string(want), got))
	}
}

// lineDiff shows the first lines where a and b differ; enough to see what
// changed without a diff library.
func lineDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := 0; i < len(al) || i < len(bl); i++ {
		var x, y string
		if i < len(al) {
			x = al[i]
		}
		if i < len(bl) {
			y = bl[i]
		}
		if x != y {
			return fmt.Sprintf("line %d:\n- %s\n+ %s", i+1, x, y)
		}
	}
	return "(same lines, different bytes)"
}
