package deploytest

import (
	"maps"
	"path"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// secretFileKeys are the config keys that name a file the producer reads
// a credential from.
var secretFileKeys = []string{"tls-ca-file", "tls-cert-file", "tls-key-file", "sasl-password-file"}

// TestChartSecretFiles renders the ways a cluster is secured and follows
// every credential file the config file names to the Secret key that
// provides it, in each CronJob's pod and in the helm test pod (which
// connects as the jobs do): the path lies under a read-only mount of a
// Secret volume whose items map exactly that key to that file, with no
// permission for others. Nothing of the Secrets, not even their names,
// is in the ConfigMap, and no credential comes through the environment.
func TestChartSecretFiles(t *testing.T) {
	for _, c := range []struct {
		name, file, values string
		want               map[string]string // config key -> "secret/key"
	}{
		{
			name: "SCRAM over mutual TLS with a private CA (ci/sasl-tls-values.yaml)", file: "sasl-tls-values.yaml",
			want: map[string]string{
				"tls-ca-file": "kafka-client-tls/ca.crt", "tls-cert-file": "kafka-client-tls/tls.crt",
				"tls-key-file": "kafka-client-tls/tls.key", "sasl-password-file": "kafka-client-sasl/scram-password",
			},
		},
		{
			name:   "private CA only",
			values: "kafka: {tls: {enabled: true, existingSecret: corp-ca, caKey: ca.pem}}",
			want:   map[string]string{"tls-ca-file": "corp-ca/ca.pem"},
		},
		{
			name:   "PLAIN over TLS with the system CAs (a managed cluster)",
			values: "kafka: {tls: {enabled: true}, sasl: {mechanism: PLAIN, username: svc-coupons, existingSecret: confluent-api-key, passwordKey: api-secret}}",
			want:   map[string]string{"sasl-password-file": "confluent-api-key/api-secret"},
		},
		{
			name:   "client certificate with the system CAs",
			values: "kafka: {tls: {enabled: true, existingSecret: client-cert, caKey: '', certKey: cert.pem, keyKey: key.pem}}",
			want:   map[string]string{"tls-cert-file": "client-cert/cert.pem", "tls-key-file": "client-cert/key.pem"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			var overrides []string
			if c.values != "" {
				overrides = append(overrides, c.values)
			}
			r := render(t, values(t, c.file, overrides...))
			text := configFileText(t, r)
			cfg := parseConfig(t, text)
			if cfg["tls"] != true {
				t.Errorf("config.yaml: tls = %v, want true", cfg["tls"])
			}
			for _, secretKey := range c.want {
				name, key, _ := strings.Cut(secretKey, "/")
				for _, s := range []string{name, key} {
					if !strings.HasSuffix(s, ".crt") && !strings.HasSuffix(s, ".key") && strings.Contains(text, s) {
						t.Errorf("config.yaml names the Secret or its key %q; it should name only the mounted file:\n%s", s, text)
					}
				}
			}
			if strings.Contains(text, "BEGIN") || strings.Contains(text, "sasl-password:") {
				t.Errorf("config.yaml holds credential data:\n%s", text)
			}

			pods := map[string]corev1.PodSpec{}
			for name, cj := range r.cronJobs {
				pods["CronJob "+name] = cj.Spec.JobTemplate.Spec.Template.Spec
			}
			for name, p := range r.pods {
				pods["test pod "+name] = p.Spec
			}
			if len(r.pods) == 0 {
				t.Error("no helm test pod: it checks the brokers with the jobs' credentials")
			}
			for name, pod := range pods {
				for _, ctr := range pod.Containers {
					got := map[string]string{}
					for _, k := range secretFileKeys {
						file, _ := cfg[k].(string)
						if file == "" {
							continue
						}
						got[k] = secretSource(t, pod, ctr, file)
					}
					if !maps.Equal(got, c.want) {
						t.Errorf("%s, container %s: credential files come from %v, want %v", name, ctr.Name, got, c.want)
					}
					for _, e := range ctr.Env {
						if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
							t.Errorf("%s, container %s: env %s from Secret %s: credentials come only as files", name, ctr.Name, e.Name, e.ValueFrom.SecretKeyRef.Name)
						}
					}
					if len(ctr.EnvFrom) != 0 {
						t.Errorf("%s, container %s: envFrom %v", name, ctr.Name, ctr.EnvFrom)
					}
				}
			}
		})
	}
}

// secretSource returns "secret/key" for the Secret item that ctr sees at
// file, failing t if none does, or if it is writable or readable by others.
func secretSource(t *testing.T, pod corev1.PodSpec, ctr corev1.Container, file string) string {
	t.Helper()
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	for _, m := range ctr.VolumeMounts {
		rel, ok := strings.CutPrefix(file, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !ok || m.SubPath != "" {
			continue
		}
		s := vols[m.Name].Secret
		if s == nil {
			t.Errorf("container %s: %s lies under %s, which is not a Secret volume", ctr.Name, file, m.MountPath)
			return ""
		}
		if !m.ReadOnly {
			t.Errorf("container %s: Secret %s is mounted writable at %s", ctr.Name, s.SecretName, m.MountPath)
		}
		if s.DefaultMode == nil || *s.DefaultMode&0o007 != 0 {
			t.Errorf("container %s: Secret %s is readable by others (defaultMode %v)", ctr.Name, s.SecretName, s.DefaultMode)
		}
		for _, it := range s.Items {
			if path.Clean(it.Path) == rel {
				return s.SecretName + "/" + it.Key
			}
		}
		t.Errorf("container %s: Secret %s mounted at %s has no item for %s (items %+v)", ctr.Name, s.SecretName, m.MountPath, rel, s.Items)
		return ""
	}
	t.Errorf("container %s: nothing is mounted at %s", ctr.Name, file)
	return ""
}
