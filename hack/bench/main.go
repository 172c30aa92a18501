// Command bench is the end-to-end benchmark of the coupon producer against
// a real Kafka broker, side by side with a peer pipeline built from
// standard tools:
//
//	A  bin/coupon-producer --brokers B --topic bench-producer-N FILE
//	B  igzip -dc FILE | kcat -P -b B -t bench-kcat-N ...
//
// and of the producer's read path alone (--dry-run) against zcat. Runs of A
// and B (and of dry-run and zcat) alternate on the same file and broker, so
// that drift in the machine's load hits both alike; the report gives
// medians. With BENCH_BASE, the producer of a base commit runs before A in
// every round, and every producer run writes its run ledger to a topic of
// its own, so that the report also gives the ledger records a run wrote:
// what a change costs against the base, the ledger's checkpoints among it.
//
// Run it from the repository: `make bench` or `go run ./hack/bench`.
// Settings come from the environment (`go run ./hack/bench -h`, or
// docs/performance.md). The report is printed and written to
// .bench/report.md; logs and raw figures of the last run are kept in
// .bench/last-run/.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const usageText = `Usage: go run ./hack/bench        (or: make bench)

Environment:
  BENCH_ROUNDS=3          rounds; each round runs every selected part once
  BENCH_ONLY=LIST         comma-separated parts to run: producer, kcat, dryrun
                          (dryrun means --dry-run and zcat); default: all
  BENCH_FULL=1            bench the 100M-line file instead of the 10M-line one
  BENCH_LONGLINE=1        bench a file holding one 40 MB line of codes
                          separated by spaces (kcat is skipped: it would make
                          the whole line one 40 MB record)
  BENCH_FILE=PATH         bench this gzip file instead of a generated one
  BENCH_WARMUP=1          untimed producer and kcat runs on a 1M-line file
                          first, so that round 1 does not meet a cold broker;
                          0 to skip
  BENCH_QUIET_WAIT=30     before each run, wait up to this many seconds for
                          the machine (broker aside) to be idle; 0: never wait
  BENCH_PARTITIONS=6      partitions of every bench topic (the producer's
                          default); passed to the producer as --partitions
  PRODUCER_FLAGS=...      extra producer flags, e.g. "--linger 50ms"
  KCAT_FLAGS=...          replaces kcat's tuning flags (default:
                          -z lz4 -X linger.ms=50 -X batch.num.messages=10000
                          -X queue.buffering.max.messages=1000000)
  KAFKA_BROKERS=HOST:PORT use this broker instead of starting a private one;
                          it must allow topic creation and deletion
  BENCH_KAFKA_PORT=19192  port of the private broker (controller: the next
                          port); its state lives in .bench/kafka
  BENCH_KEEP_BROKER=1     leave the private broker running at the end
  BENCH_REV=COMMIT        bench the producer of this commit (built from
                          git archive into .bench/bin) instead of the
                          working tree; figures stay reproducible while the
                          code is being edited
  BENCH_BASE=COMMIT       also bench the producer of this commit, run just
                          before A in every round; every producer run then
                          writes its run ledger to a topic of its own
                          (--ledger-topic), and the report gives the ledger
                          records of each run (needs the producer part)
  BENCH_DIR=.bench        where generated files, logs and the report go
`

func main() {
	if len(os.Args) > 1 {
		if a := os.Args[1]; a == "-h" || a == "--help" || a == "help" {
			fmt.Print(usageText)
			return
		}
		fmt.Fprint(os.Stderr, usageText)
		fatal(fmt.Errorf("unexpected argument: %s (settings come from the environment)", os.Args[1]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := readSettings()
	if err != nil {
		fatal(err)
	}
	b := &bench{settings: s, status: map[runKey]string{}, ledger: map[runKey]int64{}}
	err = b.run(ctx)
	b.cleanup()
	if ctx.Err() != nil {
		os.Exit(130)
	}
	if err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench: error:", err)
	os.Exit(1)
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...) }

// settings are the environment knobs, checked.
type settings struct {
	dir, dataDir, runDir     string
	rounds, partitions       int
	warmup                   bool
	quietWait                time.Duration
	producerFlags, kcatFlags []string
	producerText, kcatText   string
	file, fileKind           string
	parts                    map[string]bool
	needKafka                bool
	brokers                  string // KAFKA_BROKERS, or the private broker's
	external                 bool
	kafkaPort                int
	keepBroker               bool
	rev, base                string // BENCH_REV, BENCH_BASE
	notes                    []string
}

func readSettings() (settings, error) {
	s := settings{dir: envOr("BENCH_DIR", ".bench")}
	s.dataDir, s.runDir = filepath.Join(s.dir, "data"), filepath.Join(s.dir, "last-run")
	var err error
	positive := func(key, def string) int {
		v := envOr(key, def)
		n, e := strconv.Atoi(v)
		if e != nil || n < 1 {
			err = errors.Join(err, fmt.Errorf("%s must be a positive integer (got '%s')", key, v))
		}
		return n
	}
	s.rounds = positive("BENCH_ROUNDS", "3")
	s.partitions = positive("BENCH_PARTITIONS", "6")
	s.kafkaPort = positive("BENCH_KAFKA_PORT", "19192")
	switch w := envOr("BENCH_WARMUP", "1"); w {
	case "0", "1":
		s.warmup = w == "1"
	default:
		err = errors.Join(err, fmt.Errorf("BENCH_WARMUP must be 0 or 1 (got '%s')", w))
	}
	q, e := strconv.Atoi(envOr("BENCH_QUIET_WAIT", "30"))
	if e != nil || q < 0 {
		err = errors.Join(err, fmt.Errorf("BENCH_QUIET_WAIT must be a number of seconds (got '%s')", os.Getenv("BENCH_QUIET_WAIT")))
	}
	s.quietWait = time.Duration(q) * time.Second
	s.producerText = os.Getenv("PRODUCER_FLAGS")
	s.producerFlags = strings.Fields(s.producerText)
	s.kcatText = envOr("KCAT_FLAGS", "-z lz4 -X linger.ms=50 -X batch.num.messages=10000 -X queue.buffering.max.messages=1000000")
	s.kcatFlags = strings.Fields(s.kcatText)
	s.keepBroker = os.Getenv("BENCH_KEEP_BROKER") == "1"
	s.rev, s.base = os.Getenv("BENCH_REV"), os.Getenv("BENCH_BASE")
	s.brokers = os.Getenv("KAFKA_BROKERS")
	s.external = s.brokers != ""

	longline := os.Getenv("BENCH_LONGLINE") == "1"
	switch {
	case os.Getenv("BENCH_FILE") != "":
		s.file, s.fileKind = os.Getenv("BENCH_FILE"), "given file"
		if st, e := os.Stat(s.file); e != nil || !st.Mode().IsRegular() {
			err = errors.Join(err, fmt.Errorf("BENCH_FILE %s is not a file", s.file))
		}
		longline = false
	case longline:
		s.file, s.fileKind = filepath.Join(s.dataDir, "longline", "couponbase-longline.gz"), "one 40 MB line of codes separated by spaces, no newline"
	case os.Getenv("BENCH_FULL") == "1":
		s.file, s.fileKind = filepath.Join(s.dataDir, "100m", "couponbase1.gz"), "coupongen -lines 100000000 -seed 1"
	default:
		s.file, s.fileKind = filepath.Join(s.dataDir, "10m", "couponbase1.gz"), "coupongen -lines 10000000 -seed 1"
	}

	s.parts = map[string]bool{"producer": true, "kcat": true, "dryrun": true}
	if only := os.Getenv("BENCH_ONLY"); only != "" {
		s.parts = map[string]bool{}
		for _, p := range strings.Split(only, ",") {
			if p != "producer" && p != "kcat" && p != "dryrun" {
				return s, fmt.Errorf("BENCH_ONLY: unknown part '%s' (want producer, kcat and/or dryrun)", p)
			}
			s.parts[p] = true
		}
	}
	if longline && s.parts["kcat"] {
		s.parts["kcat"] = false
		s.notes = append(s.notes, "kcat skipped: it sends one record per line, and the file's one 40 MB line exceeds any record size limit.")
	}
	if s.base != "" && !s.parts["producer"] {
		err = errors.Join(err, errors.New("BENCH_BASE compares a base with the producer: BENCH_ONLY must include producer"))
	}
	s.needKafka = s.parts["producer"] || s.parts["kcat"]
	if !s.needKafka && !s.parts["dryrun"] {
		err = errors.Join(err, errors.New("BENCH_ONLY selects nothing"))
	}
	return s, err
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// runKey names one timed run.
type runKey struct {
	kind  string
	round int
}

// bench is one benchmark run.
type bench struct {
	settings
	bin, source         string   // the producer binary and what it was built from
	baseBin, baseSource string   // the same for BENCH_BASE
	env                 []string // the producers' environment: their own variables cleared
	counts              fileCounts
	broker              *broker
	runs                []result
	status              map[runKey]string
	ledger              map[runKey]int64 // with BENCH_BASE: the ledger records of each producer run
	runID               string
}

func (b *bench) run(ctx context.Context) error {
	if err := b.ensureTools(); err != nil {
		return err
	}
	if err := os.RemoveAll(b.runDir); err != nil {
		return err
	}
	if err := os.MkdirAll(b.runDir, 0o755); err != nil {
		return err
	}
	var err error
	if b.bin, b.source, err = b.buildProducer(ctx, "BENCH_REV", b.rev); err != nil {
		return err
	}
	if b.base != "" {
		if b.baseBin, b.baseSource, err = b.buildProducer(ctx, "BENCH_BASE", b.base); err != nil {
			return err
		}
	}
	if err := b.producerEnv(); err != nil {
		return err
	}
	if err := b.generate(ctx); err != nil {
		return err
	}
	if b.counts, err = countFile(b.file, filepath.Join(b.dir, "counts")); err != nil {
		return err
	}
	if b.parts["kcat"] && b.counts.lines != b.counts.codes {
		b.notes = append(b.notes, fmt.Sprintf("The file has %d lines but %d codes: kcat sends lines, the producer codes, so A and B do not send the same records.", b.counts.lines, b.counts.codes))
	}
	m := machineInfo(b.bin)
	started := time.Now().UTC()
	b.runID = started.Format("20060102150405")
	// Read the file once so that round 1 does not pay for a cold page cache.
	if _, err := readAll(b.file); err != nil {
		return err
	}

	if b.needKafka {
		if b.broker, err = startBroker(ctx, b.settings); err != nil {
			return err
		}
		b.brokers = b.broker.bootstrap
		if b.external {
			b.notes = append(b.notes, "Broker CPU is not measured with KAFKA_BROKERS; Other CPU includes the broker if it runs on this machine.")
		}
		if b.warmup {
			if err := b.warmUp(ctx); err != nil {
				return err
			}
		}
		for i := 1; i <= b.rounds && ctx.Err() == nil; i++ {
			logf("round %d/%d: Kafka", i, b.rounds)
			var topics []string
			for _, kind := range b.producerKinds() {
				data, ledger := b.producerTopics(kind, i)
				topics = append(topics, data, ledger)
				if err := b.runProducer(ctx, kind, i, data, ledger); err != nil {
					return err
				}
			}
			if b.parts["kcat"] {
				tk := fmt.Sprintf("bench-kcat-%s-%d", b.runID, i)
				topics = append(topics, tk)
				if err := b.runKcat(ctx, i, tk); err != nil {
					return err
				}
			}
			b.broker.deleteTopics(ctx, slices.DeleteFunc(topics, func(t string) bool { return t == "" })...)
		}
	}
	if b.parts["dryrun"] {
		b.checkDryRun(ctx)
		for i := 1; i <= b.rounds && ctx.Err() == nil; i++ {
			logf("round %d/%d: dry-run and zcat", i, b.rounds)
			if err := b.runDryRun(ctx, i); err != nil {
				return err
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	b.noteBusy()
	report := b.report(m, started)
	if err := os.WriteFile(filepath.Join(b.dir, "report.md"), []byte(report), 0o644); err != nil {
		return err
	}
	fmt.Printf("\n%s", report)
	logf("report written to %s", filepath.Join(b.dir, "report.md"))
	failed := 0
	for _, st := range b.status {
		if st != "ok" {
			failed++
		}
	}
	if slices.ContainsFunc(b.notes, func(n string) bool { return strings.HasPrefix(n, "Dry-run check FAILED") }) {
		failed++
	}
	if failed > 0 {
		return fmt.Errorf("%d run(s) failed; see the report", failed)
	}
	return nil
}

func (b *bench) cleanup() {
	if b.broker != nil {
		b.broker.close(b.keepBroker)
	}
}

// ensureTools installs the packages the runs need with apt-get when
// running as root, or says which to install.
func (b *bench) ensureTools() error {
	if _, err := exec.LookPath("go"); err != nil {
		return errors.New("go not found: install Go (see go.mod for the version)")
	}
	var pkgs []string
	if _, err := os.Stat("/usr/bin/time"); err != nil {
		pkgs = append(pkgs, "time")
	}
	for tool, pkg := range map[string]string{"igzip": "isal", "zcat": "gzip", "kcat": "kcat"} {
		if tool == "kcat" && !b.parts["kcat"] {
			continue
		}
		if _, err := exec.LookPath(tool); err != nil {
			pkgs = append(pkgs, pkg)
		}
	}
	if len(pkgs) == 0 {
		return nil
	}
	slices.Sort(pkgs)
	if _, err := exec.LookPath("apt-get"); err != nil || os.Getuid() != 0 {
		return fmt.Errorf("missing tools; install them with: sudo apt-get install -y %s", strings.Join(pkgs, " "))
	}
	logf("installing %s", strings.Join(pkgs, " "))
	for _, args := range [][]string{{"update", "-qq"}, append([]string{"install", "-y", "-qq"}, pkgs...)} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("apt-get %s: %w", args[0], err)
		}
	}
	return nil
}

// buildProducer builds the producer of the working tree into bin/, or that
// of commit rev (the value of setting key) into .bench/bin/, with the flags
// of the container image (Dockerfile), and says what it was built from.
func (b *bench) buildProducer(ctx context.Context, key, rev string) (bin, source string, err error) {
	src := "."
	head, err := output(ctx, "git", "rev-parse", "--short", "HEAD")
	if err != nil {
		head = "unknown"
	}
	bin = filepath.Join("bin", "coupon-producer")
	source = "working tree at " + head
	version := "bench-" + head
	if rev != "" {
		commit, err := output(ctx, "git", "rev-parse", "--short", rev+"^{commit}")
		if err != nil {
			return "", "", fmt.Errorf("%s %s is not a commit", key, rev)
		}
		src = filepath.Join(b.dir, "src", commit)
		if _, err := os.Stat(filepath.Join(src, "go.mod")); err != nil {
			os.RemoveAll(src)
			if err := os.MkdirAll(src, 0o755); err != nil {
				return "", "", err
			}
			if err := sh(ctx, "git archive "+quote(commit)+" | tar -x -C "+quote(src)); err != nil {
				return "", "", err
			}
		}
		version = "bench-" + commit
		bin = filepath.Join(b.dir, "bin", "coupon-producer-"+commit)
		source = fmt.Sprintf("commit %s (%s=%s)", commit, key, rev)
	} else if st, _ := output(ctx, "git", "status", "--porcelain", "--", "go.mod", "go.sum", "cmd", "pkg"); st != "" {
		version += "-dirty"
		source += " with uncommitted changes in cmd/ or pkg/"
	}
	logf("building %s (%s)", bin, version)
	abs, err := filepath.Abs(bin)
	if err != nil {
		return "", "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -X main.version="+version, "-o", abs, "./cmd/coupon-producer")
	cmd.Dir, cmd.Env = src, append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return bin, source, cmd.Run()
}

// producerEnv clears the environment variables the producers read (those
// their --help names), so that their settings come from their command line
// only.
func (b *bench) producerEnv() error {
	clear := map[string]bool{"COUPON_FILES": true}
	for _, bin := range []string{b.bin, b.baseBin} {
		if bin == "" {
			continue
		}
		help, _ := exec.Command(bin, "--help").CombinedOutput()
		named := regexp.MustCompile(`env ([A-Z][A-Z0-9_]*)`).FindAllSubmatch(help, -1)
		if len(named) < 4 {
			return fmt.Errorf("%s --help names %d environment variables: not the producer's help", bin, len(named))
		}
		for _, m := range named {
			clear[string(m[1])] = true
		}
	}
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !clear[k] {
			b.env = append(b.env, kv)
		}
	}
	return nil
}

// output runs a command and returns its trimmed stdout.
func output(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	return strings.TrimSpace(string(out)), err
}

// sh runs a shell pipeline, its output to stderr.
func sh(ctx context.Context, script string) error {
	cmd := exec.CommandContext(ctx, "bash", "-c", "set -o pipefail; "+script)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// readAll reads the file at path, for the page cache.
func readAll(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return io.Copy(io.Discard, f)
}

// generate writes the bench file (and the warm-up file) with the project's
// generator, once; later runs reuse them.
func (b *bench) generate(ctx context.Context) error {
	switch b.file {
	case filepath.Join(b.dataDir, "10m", "couponbase1.gz"):
		return b.gen(ctx, "10m", 10_000_000, 1)
	case filepath.Join(b.dataDir, "100m", "couponbase1.gz"):
		return b.gen(ctx, "100m", 100_000_000, 1)
	case filepath.Join(b.dataDir, "longline", "couponbase-longline.gz"):
		if st, err := os.Stat(b.file); err == nil && st.Size() > 0 {
			return nil
		}
		if err := b.gen(ctx, "10m", 10_000_000, 1); err != nil {
			return err
		}
		logf("generating %s (one 40 MB line; cached for later runs)", b.file)
		if err := os.MkdirAll(filepath.Dir(b.file), 0o755); err != nil {
			return err
		}
		// The codes of the 10M-line file joined by spaces, no newline.
		tmp := b.file + ".tmp"
		err := sh(ctx, "igzip -dc "+quote(filepath.Join(b.dataDir, "10m", "couponbase1.gz"))+
			` | LC_ALL=C awk -v max=40000000 'n < max { printf "%s ", $0; n += length($0) + 1 }' | gzip -6 >`+quote(tmp))
		if err != nil {
			return err
		}
		return os.Rename(tmp, b.file)
	}
	return nil
}

func (b *bench) gen(ctx context.Context, name string, lines int64, seed int) error {
	dir := filepath.Join(b.dataDir, name)
	if st, err := os.Stat(filepath.Join(dir, "couponbase1.gz")); err == nil && st.Size() > 0 {
		return nil
	}
	logf("generating %s/couponbase1.gz (%d lines; cached for later runs)", dir, lines)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "run", "./cmd/coupongen", "-dir", dir,
		"-lines", strconv.FormatInt(lines, 10), "-files", "1", "-seed", strconv.Itoa(seed))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

// warmUp runs the producer and kcat once, untimed, on a 1M-line file.
func (b *bench) warmUp(ctx context.Context) error {
	if err := b.gen(ctx, "1m", 1_000_000, 2); err != nil {
		return err
	}
	file := filepath.Join(b.dataDir, "1m", "couponbase1.gz")
	logf("warm-up (untimed) on %s", file)
	wp, wk := "bench-warmup-producer-"+b.runID, "bench-warmup-kcat-"+b.runID
	defer b.broker.deleteTopics(ctx, wp, wk)
	if _, err := b.exec(ctx, "warmup-producer", b.producerRun(b.bin, wp, "", file)); err != nil {
		return fmt.Errorf("warm-up producer run failed (%w); see %s", err, filepath.Join(b.runDir, "warmup-producer.log"))
	}
	if b.parts["kcat"] {
		if err := b.broker.createTopic(ctx, wk, b.partitions); err != nil {
			return err
		}
		if _, err := b.exec(ctx, "warmup-kcat", b.kcatRun(wk, file)); err != nil {
			return fmt.Errorf("warm-up kcat run failed (%w); see %s", err, filepath.Join(b.runDir, "warmup-kcat.log"))
		}
	}
	return nil
}
