package deploytest

import (
	"context"
	"encoding/base64"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/robfig/cron/v3"
	"go.yaml.in/yaml/v3"
)

// loadCompose loads the compose file the way `docker compose` does (schema
// validation, interpolation, merge keys, path resolution), but with env as
// the whole environment: neither the caller's shell nor a .env file leaks in.
func loadCompose(t *testing.T, env map[string]string, profiles ...string) *types.Project {
	t.Helper()
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	opts, err := cli.NewProjectOptions(
		[]string{abs(t, composeFile)},
		cli.WithWorkingDirectory(abs(t, repoRoot)),
		cli.WithEnv(envList),
		cli.WithProfiles(profiles),
	)
	if err != nil {
		t.Fatalf("compose options: %v", err)
	}
	p, err := cli.ProjectFromOptions(context.Background(), opts)
	if err != nil {
		t.Fatalf("load %s: %v", composeFile, err)
	}
	return p
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, err := p.GetService(name)
	if err != nil {
		t.Fatalf("service %q: %v", name, err)
	}
	return s
}

// env returns the value of key in the service's environment, and whether it
// is set with a value (a bare "KEY" passes the host's value through, which
// the pipeline never relies on).
func env(s types.ServiceConfig, key string) (string, bool) {
	v, ok := s.Environment[key]
	if !ok || v == nil {
		return "", false
	}
	return *v, true
}

func sortedNames(services types.Services) []string {
	return slices.Sorted(maps.Keys(services))
}

// producers are the producer services: one per coupon file, as the chart
// has one CronJob per file.
var producers = []string{"couponbase1", "couponbase2", "couponbase3"}

func TestComposeServices(t *testing.T) {
	// `docker compose up -d` starts every service: no profiles.
	def := loadCompose(t, nil)
	want := append([]string{}, producers...)
	want = append(want, "kafka", "redis")
	if got := sortedNames(def.Services); !slices.Equal(got, want) {
		t.Errorf("services = %v, want %v", got, want)
	}
	if len(def.DisabledServices) != 0 {
		t.Errorf("disabled services = %v, want none", sortedNames(def.DisabledServices))
	}
}

func TestComposeKafka(t *testing.T) {
	kafka := service(t, loadCompose(t, nil), "kafka")

	if !regexp.MustCompile(`^apache/kafka:4\.\d+`).MatchString(kafka.Image) {
		t.Errorf("kafka image = %q, want apache/kafka:4.x", kafka.Image)
	}

	hc := kafka.HealthCheck
	switch {
	case hc == nil || hc.Disable || len(hc.Test) == 0:
		t.Errorf("kafka has no healthcheck; depends_on service_healthy would never pass")
	default:
		test := strings.Join(hc.Test, " ")
		if !strings.Contains(test, "kafka-broker-api-versions") && !strings.Contains(test, "kafka-topics") {
			t.Errorf("kafka healthcheck %q does not ask the broker (kafka-broker-api-versions or kafka-topics)", test)
		}
		if !strings.Contains(test, "kafka:9092") {
			t.Errorf("kafka healthcheck %q does not use the listener that clients use, kafka:9092", test)
		}
		if hc.Interval == nil || hc.Timeout == nil || hc.Retries == nil || hc.StartPeriod == nil {
			t.Errorf("kafka healthcheck must set interval, timeout, retries and start_period: %+v", hc)
		}
	}

	hostPort := false
	for _, p := range kafka.Ports {
		if p.Target == 9093 && p.Published == "9093" {
			hostPort = true
		}
	}
	if !hostPort {
		t.Errorf("kafka ports = %+v, want 9093:9093 for host clients", kafka.Ports)
	}
	loopbackPorts(t, "kafka", kafka)
	// A clean stop flushes and closes the logs; after a kill the next start
	// recovers every segment, which can outlast the health check.
	if g := kafka.StopGracePeriod; g == nil || time.Duration(*g) < 60*time.Second {
		t.Errorf("kafka stop_grace_period = %v, want at least 60s for a clean shutdown", g)
	}

	mustEnv := map[string]string{
		"KAFKA_NODE_ID":                                  "1",
		"KAFKA_PROCESS_ROLES":                            "broker,controller",
		"KAFKA_CONTROLLER_QUORUM_VOTERS":                 "1@kafka:29093",
		"KAFKA_CONTROLLER_LISTENER_NAMES":                "CONTROLLER",
		"KAFKA_INTER_BROKER_LISTENER_NAME":               "PLAINTEXT",
		"KAFKA_AUTO_CREATE_TOPICS_ENABLE":                "false",
		"KAFKA_LOG_DIRS":                                 "/var/lib/kafka/data",
		"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":         "1",
		"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
	}
	for k, want := range mustEnv {
		if got, _ := env(kafka, k); got != want {
			t.Errorf("kafka %s = %q, want %q", k, got, want)
		}
	}

	// The image's launch script formats storage with CLUSTER_ID: a base64url
	// encoded 16-byte UUID, as printed by kafka-storage.sh random-uuid.
	id, _ := env(kafka, "CLUSTER_ID")
	if b, err := base64.RawURLEncoding.Strict().DecodeString(id); err != nil || len(b) != 16 {
		t.Errorf("kafka CLUSTER_ID %q is not a base64url 16-byte UUID (decoded %d bytes, err %v)", id, len(b), err)
	}

	checkListeners(t, kafka)

	dataVolume := false
	for _, v := range kafka.Volumes {
		if v.Type == types.VolumeTypeVolume && v.Source == "kafka-data" && v.Target == "/var/lib/kafka/data" {
			dataVolume = true
		}
	}
	if !dataVolume {
		t.Errorf("kafka volumes = %+v, want named volume kafka-data at /var/lib/kafka/data", kafka.Volumes)
	}
}

// checkListeners catches the listener mistakes that stop a KRaft broker at
// start-up or hand clients an address they cannot reach.
func checkListeners(t *testing.T, kafka types.ServiceConfig) {
	t.Helper()
	parse := func(key string) map[string]string { // listener name -> host:port
		v, _ := env(kafka, key)
		out := map[string]string{}
		for _, l := range strings.Split(v, ",") {
			name, addr, ok := strings.Cut(strings.TrimSpace(l), "://")
			if !ok {
				t.Errorf("kafka %s entry %q is not NAME://host:port", key, l)
				continue
			}
			out[name] = addr
		}
		return out
	}
	listeners := parse("KAFKA_LISTENERS")
	advertised := parse("KAFKA_ADVERTISED_LISTENERS")

	protocols := map[string]string{}
	pm, _ := env(kafka, "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP")
	for _, e := range strings.Split(pm, ",") {
		name, proto, _ := strings.Cut(e, ":")
		protocols[name] = proto
	}

	want := map[string]string{ // name -> port
		"PLAINTEXT":      "9092",
		"PLAINTEXT_HOST": "9093",
		"CONTROLLER":     "29093",
	}
	for name, port := range want {
		addr, ok := listeners[name]
		if !ok || !strings.HasSuffix(addr, ":"+port) {
			t.Errorf("kafka listener %s = %q, want port %s", name, addr, port)
		}
		if _, ok := protocols[name]; !ok {
			t.Errorf("kafka listener %s has no entry in KAFKA_LISTENER_SECURITY_PROTOCOL_MAP %q", name, pm)
		}
	}
	if got := advertised["PLAINTEXT"]; got != "kafka:9092" {
		t.Errorf("kafka advertises PLAINTEXT as %q, want kafka:9092 for the compose network", got)
	}
	if got := advertised["PLAINTEXT_HOST"]; got != "localhost:9093" {
		t.Errorf("kafka advertises PLAINTEXT_HOST as %q, want localhost:9093 for the host", got)
	}
	if _, ok := advertised["CONTROLLER"]; ok {
		t.Errorf("kafka advertises the CONTROLLER listener; KRaft rejects that")
	}
	for name, addr := range advertised {
		l, ok := listeners[name]
		if !ok {
			t.Errorf("kafka advertises %s://%s but does not listen on %s", name, addr, name)
			continue
		}
		if _, lport, _ := strings.Cut(l, ":"); !strings.HasSuffix(addr, ":"+lport) {
			t.Errorf("kafka advertises %s://%s but listens on port %s", name, addr, lport)
		}
	}
}

func TestComposeRedis(t *testing.T) {
	redis := service(t, loadCompose(t, nil), "redis")
	if !strings.HasPrefix(redis.Image, "redis:7") {
		t.Errorf("redis image = %q, want redis:7*", redis.Image)
	}
	if hc := redis.HealthCheck; hc == nil || hc.Disable || !strings.Contains(strings.Join(hc.Test, " "), "redis-cli ping") {
		t.Errorf("redis healthcheck = %+v, want one that runs redis-cli ping", hc)
	}
	if cmd := strings.Join(redis.Command, " "); !strings.Contains(cmd, "--appendonly yes") {
		t.Errorf("redis command = %q, want --appendonly yes so data survives a restart", cmd)
	}
	persisted := false
	for _, v := range redis.Volumes {
		if v.Type == types.VolumeTypeVolume && v.Source == "redis-data" && v.Target == "/data" {
			persisted = true
		}
	}
	if !persisted {
		t.Errorf("redis volumes = %+v, want named volume redis-data at /data", redis.Volumes)
	}
	loopbackPorts(t, "redis", redis)
}

// loopbackPorts: a service without authentication publishes its ports on
// the host's loopback only, never on every interface.
func loopbackPorts(t *testing.T, name string, s types.ServiceConfig) {
	t.Helper()
	if len(s.Ports) == 0 {
		t.Errorf("%s publishes no port", name)
	}
	for _, p := range s.Ports {
		if p.HostIP != "127.0.0.1" {
			t.Errorf("%s port %s:%d is published on %q, want 127.0.0.1 only", name, p.Published, p.Target, p.HostIP)
		}
	}
}

// TestComposeProducerServices checks what the producers share: the image,
// the mounted config file, their file, and the hardening.
func TestComposeProducerServices(t *testing.T) {
	p := loadCompose(t, nil)
	wantContext := abs(t, producerDir)

	for _, name := range producers {
		t.Run(name, func(t *testing.T) {
			s := service(t, p, name)

			if s.Build == nil {
				t.Fatalf("%s has no build section", name)
			}
			if s.Build.Context != wantContext {
				t.Errorf("build context = %q, want %q", s.Build.Context, wantContext)
			}
			if s.Build.Dockerfile != "Dockerfile" {
				t.Errorf("dockerfile = %q, want Dockerfile", s.Build.Dockerfile)
			}
			if s.Image != "coupon-producer:local" {
				t.Errorf("image = %q, want coupon-producer:local (the producers share one build)", s.Image)
			}

			if got, _ := env(s, "COUPON_PRODUCER_CONFIG"); got != configTarget {
				t.Errorf("COUPON_PRODUCER_CONFIG = %q, want %s", got, configTarget)
			}
			if got, _ := env(s, "COUPON_FILE"); got != "/data/"+name+".gz" {
				t.Errorf("COUPON_FILE = %q, want /data/%s.gz: one service per file", got, name)
			}
			// The environment outranks the config file: what the shared
			// file says must not be overridden per service.
			for _, k := range []string{"KAFKA_BROKERS", "LOG_FORMAT", "KAFKA_COMPRESSION", "COUPON_FILES", "KAFKA_TOPIC", "KAFKA_SASL_PASSWORD"} {
				if _, ok := s.Environment[k]; ok {
					t.Errorf("environment sets %s; it belongs in the shared config file (or, for the password, a secret)", k)
				}
			}

			cfg := mountAt(t, s, configTarget)
			if cfg.Type != types.VolumeTypeBind || !cfg.ReadOnly {
				t.Errorf("%s mount = %+v, want a read-only bind", configTarget, cfg)
			}
			if want := abs(t, configFile); cfg.Source != want {
				t.Errorf("%s source = %q, want %q", configTarget, cfg.Source, want)
			}

			data := dataMount(t, s)
			if data.Type != types.VolumeTypeBind {
				t.Errorf("/data mount type = %q, want bind", data.Type)
			}
			// Never created by compose: a missing folder fails `up` at once
			// instead of mounting an empty one owned by root.
			for _, m := range []types.ServiceVolumeConfig{data, cfg} {
				if m.Bind == nil || m.Bind.CreateHostPath || m.Bind.SELinux != "z" {
					t.Errorf("%s bind options %+v: want selinux z and no create_host_path", m.Target, m.Bind)
				}
			}
			if !data.ReadOnly {
				t.Errorf("/data is mounted read-write; the producer only reads the coupon files")
			}
			if want := filepath.Join(abs(t, repoRoot), "data", "coupons"); data.Source != want {
				t.Errorf("/data source = %q, want %q when COUPON_DATA_DIR is unset", data.Source, want)
			}

			if dep, ok := s.DependsOn["kafka"]; !ok || dep.Condition != types.ServiceConditionHealthy {
				t.Errorf("depends_on kafka = %+v, want condition service_healthy", dep)
			}

			if !s.ReadOnly {
				t.Errorf("read_only is false; the container root filesystem should be read-only")
			}
			if len(s.Tmpfs) != 0 {
				t.Errorf("tmpfs = %v; the producer writes nothing, not even to /tmp, as in the chart's pods", s.Tmpfs)
			}
			if !slices.ContainsFunc(s.CapDrop, func(c string) bool { return strings.EqualFold(c, "ALL") }) {
				t.Errorf("cap_drop = %v, want ALL", s.CapDrop)
			}
			if !slices.Contains(s.SecurityOpt, "no-new-privileges:true") {
				t.Errorf("security_opt = %v, want no-new-privileges:true", s.SecurityOpt)
			}
			if !nonRootUser(s.User) {
				t.Errorf("user = %q, want a numeric non-root uid:gid such as 65532:65532", s.User)
			}
		})
	}
}

// TestComposeConfigFile checks the shared config file: a YAML mapping of
// the producer's keys for the compose network, without secrets. (The
// producer's own tests check that it loads the file.)
func TestComposeConfigFile(t *testing.T) {
	b, err := os.ReadFile(configFile)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", configFile, err)
	}
	brokers, _ := m["brokers"].([]any)
	if len(brokers) != 1 || brokers[0] != "kafka:9092" {
		t.Errorf("brokers = %v, want [kafka:9092], the broker on the compose network", m["brokers"])
	}
	for k := range m {
		if secretName.MatchString(k) && k != "sasl-password-file" {
			t.Errorf("config file holds %s: secrets come from the environment or a mounted secret file", k)
		}
	}
	for _, k := range []string{"file", "schedule"} {
		if _, ok := m[k]; ok {
			t.Errorf("config file sets %s: it differs per service and belongs in the service's environment", k)
		}
	}
}

func mountAt(t *testing.T, s types.ServiceConfig, target string) types.ServiceVolumeConfig {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Target == target {
			return v
		}
	}
	t.Fatalf("%s has no volume at %s; volumes = %+v", s.Name, target, s.Volumes)
	return types.ServiceVolumeConfig{}
}

func dataMount(t *testing.T, s types.ServiceConfig) types.ServiceVolumeConfig {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Target == "/data" {
			return v
		}
	}
	t.Fatalf("%s has no volume at /data; volumes = %+v", s.Name, s.Volumes)
	return types.ServiceVolumeConfig{}
}

var numericUser = regexp.MustCompile(`^(\d+)(:\d+)?$`)

// nonRootUser reports whether u is "uid" or "uid:gid", numeric and not 0.
func nonRootUser(u string) bool {
	m := numericUser.FindStringSubmatch(u)
	return m != nil && strings.TrimLeft(m[1], "0") != ""
}

func TestComposeSchedules(t *testing.T) {
	p := loadCompose(t, nil)
	for _, name := range producers {
		s := service(t, p, name)
		if s.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("%s restart = %q, want unless-stopped", name, s.Restart)
		}
		if s.StopGracePeriod == nil || time.Duration(*s.StopGracePeriod) < 10*time.Second {
			t.Errorf("%s stop_grace_period = %v, want at least 10s to flush in-flight records", name, s.StopGracePeriod)
		}
		sched, _ := env(s, "SCHEDULE")
		if len(strings.Fields(sched)) != 5 {
			t.Errorf("%s default SCHEDULE = %q, want a 5-field cron expression", name, sched)
		}
		if _, err := cron.ParseStandard(sched); err != nil {
			t.Errorf("%s default SCHEDULE %q does not parse: %v", name, sched, err)
		}
		tz, _ := env(s, "SCHEDULE_TZ")
		if _, err := time.LoadLocation(tz); err != nil || tz == "" {
			t.Errorf("%s default SCHEDULE_TZ = %q, want a time zone name: %v", name, tz, err)
		}
	}
}

func TestComposeSchedulerEnvOverrides(t *testing.T) {
	tests := []struct {
		name         string
		env          map[string]string
		wantSchedule string
		wantTZ       string
	}{
		{"unset", nil, "0 2 * * *", "UTC"},
		// An empty SCHEDULE would make the binary run once and exit, and
		// restart: unless-stopped would loop it; the default must win.
		{"empty", map[string]string{"SCHEDULE": "", "SCHEDULE_TZ": ""}, "0 2 * * *", "UTC"},
		{"set", map[string]string{"SCHEDULE": "@every 1h", "SCHEDULE_TZ": "Europe/Berlin"}, "@every 1h", "Europe/Berlin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := loadCompose(t, tt.env)
			for _, name := range producers {
				s := service(t, p, name)
				if got, _ := env(s, "SCHEDULE"); got != tt.wantSchedule {
					t.Errorf("%s SCHEDULE = %q, want %q", name, got, tt.wantSchedule)
				}
				if got, _ := env(s, "SCHEDULE_TZ"); got != tt.wantTZ {
					t.Errorf("%s SCHEDULE_TZ = %q, want %q", name, got, tt.wantTZ)
				}
			}
		})
	}
}

func TestComposeCouponDataDir(t *testing.T) {
	p := loadCompose(t, map[string]string{"COUPON_DATA_DIR": "/srv/coupons"})
	for _, name := range producers {
		data := dataMount(t, service(t, p, name))
		if data.Source != "/srv/coupons" {
			t.Errorf("%s /data source = %q with COUPON_DATA_DIR=/srv/coupons", name, data.Source)
		}
		if !data.ReadOnly {
			t.Errorf("%s /data is read-write with COUPON_DATA_DIR set", name)
		}
	}
}
