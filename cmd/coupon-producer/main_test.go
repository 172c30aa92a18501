package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// binary is the producer built once for the tests that run it as users do.
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "coupon-producer-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "coupon-producer")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	code           int
	stdout, stderr string
}

// runBinary runs the producer with args and exactly the environment env
// (plus PATH), so that no variable of the test's own environment leaks in.
func runBinary(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run %v: %v", args, err)
	}
	return result{cmd.ProcessState.ExitCode(), out.String(), errb.String()}
}

// TestGoldenDryRun runs the binary in --dry-run over each fixture and
// compares stdout with its golden file (go test -run Golden -update rewrites
// them). The fixtures hold CRLF, tabs, NUL, non-ASCII bytes, runs longer
// than a code, a 18 kB line and several gzip members, one of them empty.
func TestGoldenDryRun(t *testing.T) {
	fixtures, err := filepath.Glob("testdata/e2e/*.gz")
	if err != nil || len(fixtures) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, f := range fixtures {
		t.Run(filepath.Base(f), func(t *testing.T) {
			r := runBinary(t, nil, "--dry-run", "--log-format", "json", f)
			if r.code != 0 {
				t.Fatalf("exit %d, stderr:\n%s", r.code, r.stderr)
			}
			golden := strings.TrimSuffix(f, ".gz") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(r.stdout), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if r.stdout != string(want) {
				t.Fatalf("stdout differs from %s:\n got: %q\nwant: %q", golden, r.stdout, want)
			}
			if !strings.Contains(r.stderr, `"msg":"file done"`) {
				t.Fatalf("no summary line on stderr:\n%s", r.stderr)
			}
		})
	}
}

func TestDryRunSeveralFilesInOrder(t *testing.T) {
	a := writeGzip(t, "a.gz", "AAAAAAAA\nAAAAAAA2\n")
	b := writeGzip(t, "b.gz", "BBBBBBBB\n")
	r := runBinary(t, nil, "--dry-run", a, b, a)
	if r.code != 0 || r.stdout != "AAAAAAAA\nAAAAAAA2\nBBBBBBBB\nAAAAAAAA\nAAAAAAA2\n" {
		t.Fatalf("exit %d, stdout %q", r.code, r.stdout)
	}
}

func writeGzip(t *testing.T, name, content string) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(content))
	zw.Close()
	return writeRaw(t, name, buf.Bytes())
}

func writeRaw(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBadInputExits3(t *testing.T) {
	good, err := os.ReadFile("testdata/e2e/plain.gz")
	if err != nil {
		t.Fatal(err)
	}
	badCRC := bytes.Clone(good)
	badCRC[len(badCRC)-6] ^= 0x55
	for name, path := range map[string]string{
		"truncated":  writeRaw(t, "truncated.gz", good[:len(good)-20]),
		"bad crc":    writeRaw(t, "badcrc.gz", badCRC),
		"not gzip":   writeRaw(t, "plain.gz", []byte("AAAAAAAA\n")),
		"zero bytes": writeRaw(t, "zero.gz", nil),
		"missing":    filepath.Join(t.TempDir(), "missing.gz"),
		"directory":  t.TempDir(),
	} {
		t.Run(name, func(t *testing.T) {
			r := runBinary(t, nil, "--dry-run", path)
			if r.code != 3 {
				t.Fatalf("exit %d, want 3; stderr:\n%s", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, path) {
				t.Fatalf("stderr does not name %s:\n%s", path, r.stderr)
			}
		})
	}
}

func TestHighestExitCodeWins(t *testing.T) {
	good := writeGzip(t, "good.gz", "GOODCODE\n")
	missing := filepath.Join(t.TempDir(), "missing.gz")
	r := runBinary(t, nil, "--dry-run", missing, good)
	if r.code != 3 {
		t.Fatalf("exit %d, want 3", r.code)
	}
	// The good file after the bad one is still published.
	if r.stdout != "GOODCODE\n" {
		t.Fatalf("stdout %q: the good file was not processed", r.stdout)
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	f := writeGzip(t, "f.gz", "AAAAAAAA\n")
	badName := writeGzip(t, "bad name.gz", "AAAAAAAA\n")
	for name, tc := range map[string]struct {
		env  []string
		args []string
		want string
	}{
		"no file":               {nil, []string{"--dry-run"}, "no file given"},
		"unknown flag":          {nil, []string{"--nope", f}, "nope"},
		"illegal topic":         {nil, []string{"--topic", "a/b", f}, `"a/b"`},
		"dot topic":             {nil, []string{"--topic", "..", f}, `".."`},
		"topic too long":        {nil, []string{"--topic", strings.Repeat("x", 250), f}, "249"},
		"file name not topic":   {nil, []string{badName}, "bad name.gz"},
		"topic with two files":  {nil, []string{"--topic", "t", f, f}, "exactly one file"},
		"bad env value":         {[]string{"KAFKA_PARTITIONS=many"}, []string{f}, "KAFKA_PARTITIONS"},
		"bad compression":       {nil, []string{"--compression", "brotli", f}, "brotli"},
		"bad schedule":          {nil, []string{"--schedule", "every day", "--dry-run", f}, "every day"},
		"bad broker":            {[]string{"KAFKA_BROKERS=kafka"}, []string{f}, `"kafka"`},
		"missing config file":   {[]string{"COUPON_PRODUCER_CONFIG=/nonexistent/config.yaml"}, []string{f}, "/nonexistent/config.yaml"},
		"unknown config key":    {[]string{"COUPON_PRODUCER_CONFIG=" + writeConfig(t, "brokers: k:9092\nretries: 3\n")}, []string{f}, `unknown key "retries"`},
		"zero delivery timeout": {nil, []string{"--delivery-timeout", "0s", f}, "delivery-timeout 0s"},
		"password flag":         {nil, []string{"--sasl-password", "x", f}, "unknown flag: --sasl-password"},
	} {
		t.Run(name, func(t *testing.T) {
			r := runBinary(t, tc.env, tc.args...)
			if r.code != 2 {
				t.Fatalf("exit %d, want 2; stderr:\n%s", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("stderr does not quote %s:\n%s", tc.want, r.stderr)
			}
			if r.stdout != "" {
				t.Fatalf("stdout %q, want nothing", r.stdout)
			}
		})
	}
}

func TestHelpNamesEveryEnvVar(t *testing.T) {
	r := runBinary(t, nil, "--help")
	if r.code != 0 {
		t.Fatalf("exit %d", r.code)
	}
	for _, want := range []string{"--brokers", "KAFKA_BROKERS", `default "localhost:9092"`, "--dry-run", "DRY_RUN",
		"--schedule", "SCHEDULE", "--partitions", "KAFKA_PARTITIONS", `default "6"`, "COUPON_FILES", "Exit codes"} {
		if !strings.Contains(r.stderr+r.stdout, want) {
			t.Errorf("--help does not mention %s", want)
		}
	}
	if v := runBinary(t, nil, "--version"); v.code != 0 || !strings.HasPrefix(v.stdout, "coupon-producer ") {
		t.Fatalf("--version: exit %d, %q", v.code, v.stdout)
	}
}

// TestEnvOnlyAsContainer runs the binary the way the container does: config
// from the environment only, a read-only data directory, and, when the tests
// run as root, as the unprivileged user 65532 through setpriv.
func TestEnvOnlyAsContainer(t *testing.T) {
	dir := t.TempDir()
	for i, content := range []string{"FILEONE1\n", "FILETWO2\n"} {
		name := filepath.Join(dir, fmt.Sprintf("couponbase%d.gz", i+1))
		data, _ := os.ReadFile(writeGzip(t, "x.gz", content))
		if err := os.WriteFile(name, data, 0o444); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o755) })
	env := []string{
		"COUPON_FILES=" + filepath.Join(dir, "couponbase1.gz") + "," + filepath.Join(dir, "couponbase2.gz"),
		"DRY_RUN=true", "LOG_FORMAT=json",
	}
	args := []string{}
	bin := binary
	if os.Geteuid() == 0 {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Skip("setpriv not found: cannot drop root as the container does")
		}
		// The binary must be reachable by the unprivileged user.
		for d := filepath.Dir(binary); d != "/"; d = filepath.Dir(d) {
			os.Chmod(d, 0o755)
		}
		for d := dir; d != "/"; d = filepath.Dir(d) {
			if st, err := os.Stat(d); err == nil && st.Mode().Perm()&0o005 != 0o005 {
				os.Chmod(d, st.Mode().Perm()|0o005)
			}
		}
		bin = setpriv
		args = []string{"--reuid=65532", "--regid=65532", "--clear-groups", binary}
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		t.Fatalf("%v; stderr:\n%s", err, errb.String())
	}
	if out.String() != "FILEONE1\nFILETWO2\n" {
		t.Fatalf("stdout %q", out.String())
	}
	if !strings.Contains(errb.String(), `"topic":"couponbase2.gz"`) {
		t.Fatalf("want JSON logs naming the topic, got:\n%s", errb.String())
	}
}

// TestScheduleDryRun runs the scheduler with a short @every: each run prints
// the file's codes again, and SIGTERM while idle ends it with exit 0.
func TestScheduleDryRun(t *testing.T) {
	f := writeGzip(t, "couponbase1.gz", "SCHEDULE1\nSCHEDULE2\n")
	cmd := exec.Command(binary, "--schedule", "@every 1s", "--dry-run", "--log-format", "json",
		"--metrics-addr", "127.0.0.1:0", f)
	cmd.Env = []string{}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb syncBuffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(30 * time.Second)
	var got []string
	for len(got) < 4 {
		select {
		case l := <-lines:
			got = append(got, l)
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("after 30s only %q; stderr:\n%s", got, errb.String())
		}
	}
	if strings.Join(got, ",") != "SCHEDULE1,SCHEDULE2,SCHEDULE1,SCHEDULE2" {
		t.Fatalf("two runs printed %q", got)
	}
	checkMetrics(t, errb.String())
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	for range lines {
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v; stderr:\n%s", err, errb.String())
	}
	if !strings.Contains(errb.String(), `"msg":"next run"`) {
		t.Fatalf("the next run time is not logged:\n%s", errb.String())
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// checkMetrics reads the metrics address from the log and checks that
// /metrics counts the codes of the runs so far and /healthz answers.
func checkMetrics(t *testing.T, log string) {
	t.Helper()
	addr := ""
	for _, line := range strings.Split(log, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "serving metrics" {
			addr, _ = m["addr"].(string)
		}
	}
	if addr == "" {
		t.Fatalf("no metrics address logged:\n%s", log)
	}
	body := httpGet(t, "http://"+addr+"/metrics")
	if !strings.Contains(body, `coupon_producer_files_total{result="ok",topic="couponbase1.gz"}`) ||
		!strings.Contains(body, `coupon_producer_codes_delivered_total{topic="couponbase1.gz"}`) {
		t.Fatalf("/metrics lacks the producer's counters:\n%s", body)
	}
	if got := httpGet(t, "http://"+addr+"/healthz"); got != "ok\n" {
		t.Fatalf("/healthz = %q", got)
	}
}

func httpGet(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(content), 0o444); err != nil {
		t.Fatal(err)
	}
	return p
}

const testPassword = "Pa55-never-printed"

// TestPasswordNeverPrinted runs the binary every way that prints the
// configuration or fails on it, with the password in the environment or
// in a file: it appears in no output.
func TestPasswordNeverPrinted(t *testing.T) {
	f := writeGzip(t, "couponbase1.gz", "AAAAAAAA\n")
	pwFile := writeConfig(t, testPassword+"\n")
	sasl := []string{"KAFKA_SASL_MECHANISM=SCRAM-SHA-512", "KAFKA_SASL_USERNAME=user"}
	for name, tc := range map[string]struct {
		env  []string
		args []string
		code int
	}{
		"print-config env":  {append(sasl, "KAFKA_SASL_PASSWORD="+testPassword), []string{"--print-config", f}, 0},
		"print-config file": {sasl, []string{"--print-config", "--sasl-password-file", pwFile, f}, 0},
		"help":              {append(sasl, "KAFKA_SASL_PASSWORD="+testPassword), []string{"--help"}, 0},
		"both sources":      {append(sasl, "KAFKA_SASL_PASSWORD="+testPassword), []string{"--sasl-password-file", pwFile, f}, 2},
		"in config file": {[]string{"COUPON_PRODUCER_CONFIG=" + writeConfig(t, "sasl-password: "+testPassword+"\n")},
			[]string{f}, 2},
		"debug logs, unreachable broker": {append(sasl, "KAFKA_SASL_PASSWORD="+testPassword, "KAFKA_BROKERS=127.0.0.1:1", "LOG_LEVEL=debug"),
			[]string{"--connect-timeout", "1s", f}, 1},
	} {
		t.Run(name, func(t *testing.T) {
			r := runBinary(t, tc.env, tc.args...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d; stderr:\n%s", r.code, tc.code, r.stderr)
			}
			if strings.Contains(r.stdout+r.stderr, testPassword) {
				t.Fatalf("the password appears in the output:\nstdout:\n%s\nstderr:\n%s", r.stdout, r.stderr)
			}
		})
	}
	r := runBinary(t, append(sasl, "KAFKA_SASL_PASSWORD="+testPassword), "--print-config", f)
	if !strings.Contains(r.stdout, `sasl-password: "<redacted>" # from env KAFKA_SASL_PASSWORD`) {
		t.Fatalf("--print-config does not show the password as redacted:\n%s", r.stdout)
	}
}

// TestConfigFileAsMounted runs the binary as the chart and compose do: a
// read-only config file named by COUPON_PRODUCER_CONFIG, the file in
// COUPON_FILE, a flag over both.
func TestConfigFileAsMounted(t *testing.T) {
	f := writeGzip(t, "couponbase3.gz", "MOUNTED1\nMOUNTED2\n")
	cfg := writeConfig(t, "dry-run: true\nlog-format: json\nprogress-interval: 0s\nclient-id: on\ntopic-config:\n  retention.ms: 1000\n")
	env := []string{"COUPON_PRODUCER_CONFIG=" + cfg, "COUPON_FILE=" + f}
	r := runBinary(t, env)
	if r.code != 0 || r.stdout != "MOUNTED1\nMOUNTED2\n" {
		t.Fatalf("exit %d, stdout %q; stderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if !strings.Contains(r.stderr, `"topic":"couponbase3.gz"`) || !strings.Contains(r.stderr, `"level":"info"`) {
		t.Fatalf("want zap JSON logs naming the topic, got:\n%s", r.stderr)
	}
	s := summaryLine(t, r.stderr)
	for _, k := range []string{"file", "topic", "compressed_bytes", "lines", "codes", "delivered", "failed", "duration", "codes_per_sec"} {
		if _, ok := s[k]; !ok {
			t.Errorf("summary lacks %s: %v", k, s)
		}
	}
	if _, ok := s["duration"].(float64); !ok {
		t.Errorf("duration %v is not a number of seconds", s["duration"])
	}

	p := runBinary(t, env, "--print-config", "--client-id", "flagged")
	for _, want := range []string{`dry-run: true # from file ` + cfg, `file: "` + f + `" # from env COUPON_FILE`,
		`client-id: "flagged" # from flag --client-id`, `retention.ms: "1000"`} {
		if !strings.Contains(p.stdout, want) {
			t.Errorf("--print-config lacks %q:\n%s", want, p.stdout)
		}
	}
	if p.code != 0 {
		t.Fatalf("--print-config exit %d", p.code)
	}
}

// summaryLine finds the JSON summary line of a file in stderr.
func summaryLine(t *testing.T, stderr string) map[string]any {
	t.Helper()
	for _, line := range strings.Split(stderr, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && (m["msg"] == "file done" || m["msg"] == "file failed") {
			return m
		}
	}
	t.Fatalf("no summary line in:\n%s", stderr)
	return nil
}

// TestComposeConfigFileLoads loads the example config file that compose
// mounts (and whose format the chart's ConfigMap follows) as compose does.
func TestComposeConfigFileLoads(t *testing.T) {
	cfg, err := filepath.Abs("../../hack/compose/coupon-producer.yaml")
	if err != nil {
		t.Fatal(err)
	}
	r := runBinary(t, []string{"COUPON_PRODUCER_CONFIG=" + cfg, "COUPON_FILE=/data/couponbase1.gz"}, "--print-config")
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
	}
	for _, want := range []string{`brokers: ["kafka:9092"] # from file ` + cfg, `file: "/data/couponbase1.gz" # from env COUPON_FILE`,
		`log-format: "json" # from file ` + cfg} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--print-config lacks %q:\n%s", want, r.stdout)
		}
	}
}

// TestChartConfigFileLoads: the config file the Helm chart renders into its
// ConfigMap (the default render, kept as a golden file by the chart tests)
// is read by the binary without an unknown key or a wrong type, with the
// file and topic coming from the CronJob's env as the chart sets them.
func TestChartConfigFileLoads(t *testing.T) {
	golden, err := os.ReadFile("../../hack/deploytest/testdata/chart/default.golden.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var config string
	dec := yaml.NewDecoder(bytes.NewReader(golden))
	for {
		var obj struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		if err := dec.Decode(&obj); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatal(err)
		}
		if obj.Kind == "ConfigMap" {
			config = obj.Data["config.yaml"]
		}
	}
	if config == "" {
		t.Fatal("the chart's default render has no ConfigMap with config.yaml")
	}
	path := writeConfig(t, config)
	r := runBinary(t, []string{"COUPON_PRODUCER_CONFIG=" + path, "COUPON_FILE=/data/couponbase1.gz"}, "--print-config")
	if r.code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", r.code, r.stderr)
	}
	for _, want := range []string{`brokers: ["kafka:9092"] # from file ` + path, `progress-interval: "30s" # from file ` + path} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("--print-config lacks %q:\n%s", want, r.stdout)
		}
	}
}
