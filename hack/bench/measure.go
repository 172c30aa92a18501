package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/couponpipeline/coupon-producer/pkg/kafkatest"
)

// tick is USER_HZ, the unit of /proc/stat and /proc/<pid>/stat: 100 on
// every Linux architecture, whatever the kernel's own HZ.
const tick = 100

// broker is the bench broker: the private one, or KAFKA_BROKERS.
type broker struct {
	bootstrap string
	cluster   *kafkatest.Cluster // nil with KAFKA_BROKERS
	started   bool               // by this run (not one left running before)
	client    *kgo.Client
	adm       *kadm.Client
}

// startBroker starts the private broker (the local broker's launcher with
// the benchmark's own state and ports: the development broker is shared
// with tests that create topics and restart it, which would disturb the
// measurements) unless KAFKA_BROKERS names one.
func startBroker(ctx context.Context, s settings) (*broker, error) {
	br := &broker{bootstrap: s.brokers}
	if s.external {
		logf("using the brokers in KAFKA_BROKERS: %s", s.brokers)
	} else {
		d, err := kafkatest.FindDist()
		if err != nil {
			return nil, err
		}
		if err := d.Fetch(ctx, os.Stderr); err != nil {
			return nil, err
		}
		dir, err := filepath.Abs(filepath.Join(s.dir, "kafka"))
		if err != nil {
			return nil, err
		}
		br.started = len(kafkatest.RunningDir(dir)) == 0
		opts := []kafkatest.Opt{kafkatest.Dir(dir), kafkatest.Port(s.kafkaPort), kafkatest.Output(os.Stderr)}
		if s.keepBroker {
			opts = append(opts, kafkatest.Detach())
		}
		if br.cluster, err = kafkatest.Start(ctx, d, opts...); err != nil {
			return nil, err
		}
		br.bootstrap = br.cluster.Bootstrap()
	}
	var err error
	if br.client, err = kgo.NewClient(kgo.SeedBrokers(strings.Split(br.bootstrap, ",")...)); err != nil {
		return nil, err
	}
	br.adm = kadm.NewClient(br.client)
	return br, nil
}

func (br *broker) pid() int {
	if br == nil || br.cluster == nil {
		return 0
	}
	return br.cluster.PID(1)
}

func (br *broker) createTopic(ctx context.Context, topic string, partitions int) error {
	resp, err := br.adm.CreateTopic(ctx, int32(partitions), 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	return nil
}

// deleteTopics deletes the topics that exist, to keep the broker's disk
// small.
func (br *broker) deleteTopics(ctx context.Context, topics ...string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	resps, err := br.adm.DeleteTopics(ctx, topics...)
	for _, r := range resps {
		if r.Err != nil && !errors.Is(r.Err, kerr.UnknownTopicOrPartition) {
			err = errors.Join(err, fmt.Errorf("%s: %w", r.Topic, r.Err))
		}
	}
	if err != nil {
		logf("could not delete topics: %v", err)
	}
}

func (br *broker) count(ctx context.Context, topic string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return kafkatest.RecordCount(ctx, br.adm, topic)
}

// close stops the private broker if this run started it, unless keep.
func (br *broker) close(keep bool) {
	if br.client != nil {
		br.client.Close()
	}
	if br.cluster != nil && br.started && !keep {
		if err := br.cluster.Stop(1); err != nil {
			logf("stop the broker: %v", err)
		}
	}
}

// alive fails if the private broker has stopped: a run is comparable with
// the others only if the broker stayed up.
func (br *broker) alive() error {
	if br != nil && br.cluster != nil && br.cluster.PID(1) == 0 {
		return fmt.Errorf("the broker stopped during the benchmark; see %s", br.cluster.Log(1))
	}
	return nil
}

// machineBusy is the CPU time the whole machine has spent busy so far
// (user, nice, system, irq, softirq; idle, iowait and steal excluded), in
// ticks.
func machineBusy() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[:bytes.IndexByte(b, '\n')]))
	var n int64
	for _, i := range []int{1, 2, 3, 6, 7} {
		v, _ := strconv.ParseInt(f[i], 10, 64)
		n += v
	}
	return n
}

// procTicks is the CPU time (user + system) of process pid so far, in
// ticks, or -1.
func procTicks(pid int) int64 {
	if pid == 0 {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return -1
	}
	// The fields after "(comm)": utime and stime are the 12th and 13th.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// waitQuiet waits, up to BENCH_QUIET_WAIT, for a second in which the
// machine (the broker aside) is nearly idle, so that a run does not start
// in the middle of someone else's build or test. Runs that are disturbed
// anyway show it in their Other CPU.
func (b *bench) waitQuiet(ctx context.Context) {
	if b.quietWait == 0 {
		return
	}
	for deadline := time.Now().Add(b.quietWait); time.Now().Before(deadline) && ctx.Err() == nil; {
		b0, k0 := machineBusy(), procTicks(b.broker.pid())
		time.Sleep(time.Second)
		b1, k1 := machineBusy(), procTicks(b.broker.pid())
		if (b1-b0)-max(0, k1-k0) <= tick/10 {
			return
		}
	}
	logf("  the machine is still busy after %s; running anyway", b.quietWait)
}

// pipeline is commands whose stdout feeds the next one's stdin; the last
// one's stdout goes to out.
type pipeline struct {
	argv [][]string
	env  []string  // nil: this process's
	out  io.Writer // nil: discarded
}

// producerRun is a run of the producer bin to topic, its run ledger in the
// default topic or, if ledger is not "", in that one.
func (b *bench) producerRun(bin, topic, ledger, file string) pipeline {
	args := []string{bin, "--brokers", b.brokers, "--topic", topic, "--progress-interval", "0",
		"--partitions", strconv.Itoa(b.partitions), "--log-format", "json"}
	if ledger != "" {
		args = append(args, "--ledger-topic", ledger)
	}
	return pipeline{argv: [][]string{append(append(args, b.producerFlags...), file)}, env: b.env}
}

// producerKinds are the producer runs of a round, in order: BENCH_BASE's
// ("base") and the producer under test.
func (b *bench) producerKinds() []string {
	var kinds []string
	if b.base != "" {
		kinds = append(kinds, "base")
	}
	if b.parts["producer"] {
		kinds = append(kinds, "producer")
	}
	return kinds
}

// producerTopics names the data topic of a producer run (kind "producer" or
// "base") and, with BENCH_BASE, its ledger topic; round "N" gives the
// pattern the report prints.
func (b *bench) producerTopics(kind string, round any) (data, ledger string) {
	data = fmt.Sprintf("bench-%s-%s-%v", kind, b.runID, round)
	if b.base != "" {
		ledger = fmt.Sprintf("bench-ledger-%s-%s-%v", kind, b.runID, round)
	}
	return data, ledger
}

func (b *bench) kcatRun(topic, file string) pipeline {
	kcat := append([]string{"kcat", "-P", "-b", b.brokers, "-t", topic}, b.kcatFlags...)
	return pipeline{argv: [][]string{{"igzip", "-dc", file}, kcat}}
}

// usage is what one run used: the last command's and, in a pipe, the first
// one's peak RSS, the CPU of all.
type usage struct {
	rc         int
	wall       time.Duration
	cpu        time.Duration
	rss, rss2  int64 // KiB; rss2 -1 unless a pipe
	stderrPath string
}

// exec runs p with its stderr in the run folder's <name>.log and returns
// what it used; an exit status other than 0 is also returned as an error.
func (b *bench) exec(ctx context.Context, name string, p pipeline) (usage, error) {
	u := usage{rss2: -1, stderrPath: filepath.Join(b.runDir, name+".log")}
	logFile, err := os.Create(u.stderrPath)
	if err != nil {
		return u, err
	}
	defer logFile.Close()
	// The peak RSS comes from /usr/bin/time, which forks: a process this
	// one starts directly inherits, at its exec, this process's peak RSS
	// as its own (Go starts children with CLONE_VM).
	cmds := make([]*exec.Cmd, len(p.argv))
	rssFiles := make([]string, len(p.argv))
	for i, argv := range p.argv {
		rssFiles[i] = filepath.Join(b.runDir, fmt.Sprintf("%s.rss%d", name, i))
		argv = append([]string{"-f", "%M", "-o", rssFiles[i]}, argv...)
		c := exec.CommandContext(ctx, "/usr/bin/time", argv...)
		c.Env, c.Stderr = p.env, logFile
		// Interrupted, the command goes too, not only the time around it.
		c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
		cmds[i] = c
	}
	cmds[len(cmds)-1].Stdout = p.out
	var closeAfterStart []io.Closer
	for i := 0; i+1 < len(cmds); i++ {
		r, w, err := os.Pipe()
		if err != nil {
			return u, err
		}
		cmds[i].Stdout, cmds[i+1].Stdin = w, r
		closeAfterStart = append(closeAfterStart, r, w)
	}
	t0 := time.Now()
	for _, c := range cmds {
		if err := c.Start(); err != nil {
			return u, err
		}
	}
	for _, c := range closeAfterStart {
		c.Close()
	}
	for i := len(cmds) - 1; i >= 0; i-- {
		cmds[i].Wait()
	}
	u.wall = time.Since(t0)
	for i, c := range cmds {
		ru := c.ProcessState.SysUsage().(*syscall.Rusage)
		// time's rusage holds the command's, which it waited for.
		u.cpu += time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime))
		if code := c.ProcessState.ExitCode(); code > 0 {
			u.rc = code // as pipefail: the last command that failed
		} else if ws := c.ProcessState.Sys().(syscall.WaitStatus); ws.Signaled() {
			u.rc = 128 + int(ws.Signal())
		}
		rss := readRSS(rssFiles[i])
		switch {
		case i == len(cmds)-1:
			u.rss = rss
		case i == 0:
			u.rss2 = rss
		}
	}
	if u.rc != 0 {
		return u, fmt.Errorf("exit %d", u.rc)
	}
	return u, nil
}

// readRSS is the KiB on the last line of a file /usr/bin/time -f %M wrote
// (before it, a line saying the command failed), or 0.
func readRSS(path string) int64 {
	n, _ := strconv.ParseInt(tailLines(path, 1), 10, 64)
	return n
}

// result is one timed run, a line of runs.tsv.
type result struct {
	kind          string
	round         int
	usage         usage
	broker, other float64 // CPU seconds; broker -1 when not measured
}

// timed runs p as run kind of round after waitQuiet, with the CPU the
// broker and the rest of the machine spent meanwhile, and appends it to
// the results and to runs.tsv.
func (b *bench) timed(ctx context.Context, kind string, round int, p pipeline) (result, error) {
	b.waitQuiet(ctx)
	pid := b.broker.pid()
	b0, k0 := machineBusy(), procTicks(pid)
	u, _ := b.exec(ctx, fmt.Sprintf("%s-%d", kind, round), p)
	b1, k1 := machineBusy(), procTicks(pid)
	if err := b.broker.alive(); err != nil {
		return result{}, err
	}
	r := result{kind: kind, round: round, usage: u, broker: -1}
	r.other = float64(b1-b0)/tick - u.cpu.Seconds()
	if k0 >= 0 && k1 >= 0 {
		r.broker = float64(k1-k0) / tick
		r.other -= r.broker
	}
	b.runs = append(b.runs, r)
	f, err := os.OpenFile(filepath.Join(b.runDir, "runs.tsv"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return r, err
	}
	defer f.Close()
	fmt.Fprintf(f, "%s\t%d\t%d\t%.2f\t%.2f\t%d\t%s\t%s\t%.2f\n", kind, round, u.rc, u.wall.Seconds(), u.cpu.Seconds(),
		u.rss, dash(u.rss2 >= 0, fmt.Sprint(u.rss2)), dash(r.broker >= 0, fmt.Sprintf("%.2f", r.broker)), r.other)
	logf("  %s #%d: exit %d, %.2f s wall, %.2f s CPU, %d KiB RSS, broker %s s CPU", kind, round, u.rc,
		u.wall.Seconds(), u.cpu.Seconds(), u.rss, dash(r.broker >= 0, fmt.Sprintf("%.2f", r.broker)))
	return r, nil
}

func dash(ok bool, s string) string {
	if ok {
		return s
	}
	return "-"
}

// verdict records whether run kind of round passed: exit 0 and, when want
// is not -1, a topic holding want records.
func (b *bench) verdict(ctx context.Context, r result, topic string, want int64) {
	st := "ok"
	if r.usage.rc != 0 {
		st = fmt.Sprintf("exit %d", r.usage.rc)
	} else if topic != "" {
		if got, err := b.broker.count(ctx, topic); err != nil {
			st = "unknown records, want " + strconv.FormatInt(want, 10)
		} else if got != want {
			st = fmt.Sprintf("%d records, want %d", got, want)
		}
	}
	b.status[runKey{r.kind, r.round}] = st
	if st != "ok" {
		logf("  %s #%d FAILED: %s (log: %s)", r.kind, r.round, st, r.usage.stderrPath)
		if t := tailLines(r.usage.stderrPath, 5); t != "" {
			fmt.Fprintln(os.Stderr, t)
		}
	}
}

func tailLines(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// runProducer makes run kind ("producer", or "base" for BENCH_BASE's) of
// round, and with a ledger topic counts the ledger records it wrote.
func (b *bench) runProducer(ctx context.Context, kind string, round int, topic, ledger string) error {
	bin := b.bin
	if kind == "base" {
		bin = b.baseBin
	}
	r, err := b.timed(ctx, kind, round, b.producerRun(bin, topic, ledger, b.file))
	if err != nil {
		return err
	}
	b.verdict(ctx, r, topic, b.counts.codes)
	if ledger == "" || b.status[runKey{kind, round}] != "ok" {
		return nil
	}
	k := runKey{kind, round}
	if n, err := b.broker.count(ctx, ledger); err != nil {
		b.status[k] = "ledger records unknown"
		logf("  %s #%d FAILED: count the records of %s: %v", kind, round, ledger, err)
	} else {
		b.ledger[k] = n
		logf("  %s #%d: %d ledger records", kind, round, n)
	}
	return nil
}

func (b *bench) runKcat(ctx context.Context, round int, topic string) error {
	if err := b.broker.createTopic(ctx, topic, b.partitions); err != nil {
		return err
	}
	r, err := b.timed(ctx, "kcat", round, b.kcatRun(topic, b.file))
	if err != nil {
		return err
	}
	b.verdict(ctx, r, topic, b.counts.lines)
	return nil
}

func (b *bench) runDryRun(ctx context.Context, round int) error {
	dry := pipeline{argv: [][]string{{b.bin, "--dry-run", "--log-format", "json", b.file}}, env: b.env}
	for _, run := range []struct {
		kind string
		p    pipeline
	}{{"dryrun", dry}, {"zcat", pipeline{argv: [][]string{{"zcat", "--", b.file}}}}} {
		r, err := b.timed(ctx, run.kind, round, run.p)
		if err != nil {
			return err
		}
		b.verdict(ctx, r, "", -1)
	}
	return nil
}

// checkDryRun runs the dry run once, untimed, and checks that it prints
// every code, one a line.
func (b *bench) checkDryRun(ctx context.Context) {
	var n newlines
	_, err := b.exec(ctx, "dryrun-check", pipeline{argv: [][]string{{b.bin, "--dry-run", "--log-format", "json", b.file}}, env: b.env, out: &n})
	switch {
	case err != nil:
		b.notes = append(b.notes, fmt.Sprintf("Dry-run check FAILED: %v (see %s) after %d codes.", err, filepath.Join(b.runDir, "dryrun-check.log"), n))
	case int64(n) != b.counts.codes:
		b.notes = append(b.notes, fmt.Sprintf("Dry-run check FAILED: it printed %d codes, want %d.", n, b.counts.codes))
	}
}

// newlines counts the lines written to it.
type newlines int64

func (n *newlines) Write(p []byte) (int, error) {
	*n += newlines(bytes.Count(p, []byte{'\n'}))
	return len(p), nil
}

// noteBusy flags the runs during which something else kept the machine
// busy: more than half a CPU second, and more than a tenth of the run's.
func (b *bench) noteBusy() {
	var busy []string
	for _, r := range b.runs {
		if r.other > 0.5 && r.other > 0.1*r.usage.cpu.Seconds() {
			busy = append(busy, fmt.Sprintf("%s#%d (%.1f s)", r.kind, r.round, r.other))
		}
	}
	if len(busy) > 0 {
		b.notes = append(b.notes, fmt.Sprintf("Other work used the CPUs during %d run(s): %s. Their figures are less reliable; compare runs with little Other CPU, or run again.",
			len(busy), strings.Join(busy, ", ")))
	}
}
