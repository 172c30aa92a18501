package main

import (
	"bufio"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/couponpipeline/coupon-producer/pkg/kafkatest"
)

// fileCounts are what the checks and the per-code figures divide by.
type fileCounts struct {
	lines, codes, bytes, gzBytes int64
}

// countFile counts the lines of the decompressed file as the producer
// does (a last line without '\n' counts), its codes by the extractor's
// definition (maximal runs of [A-Za-z0-9] of 8 to 10 bytes), counted here
// independently of the extractor, and its bytes. The counts are cached in
// cacheDir.
func countFile(path, cacheDir string) (fileCounts, error) {
	var c fileCounts
	st, err := os.Stat(path)
	if err != nil {
		return c, err
	}
	c.gzBytes = st.Size()
	abs, _ := filepath.Abs(path)
	cache := filepath.Join(cacheDir, fmt.Sprintf("%s.%08x", filepath.Base(path), crc32.ChecksumIEEE([]byte(abs))))
	if cst, err := os.Stat(cache); err == nil && cst.ModTime().After(st.ModTime()) {
		if b, err := os.ReadFile(cache); err == nil {
			if _, err := fmt.Sscan(string(b), &c.lines, &c.codes, &c.bytes); err == nil {
				return c, nil
			}
		}
	}
	logf("counting lines and codes of %s (once)", path)
	f, err := os.Open(path)
	if err != nil {
		return c, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return c, fmt.Errorf("%s: %w", path, err)
	}
	buf := make([]byte, 1<<20)
	run := 0
	last := byte('\n')
	for {
		n, err := zr.Read(buf)
		for _, ch := range buf[:n] {
			if ch == '\n' {
				c.lines++
			}
			if ch >= '0' && ch <= '9' || ch >= 'A' && ch <= 'Z' || ch >= 'a' && ch <= 'z' {
				run++
				continue
			}
			if run >= 8 && run <= 10 {
				c.codes++
			}
			run = 0
		}
		if n > 0 {
			last = buf[n-1]
			c.bytes += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return c, fmt.Errorf("%s: %w", path, err)
		}
	}
	if run >= 8 && run <= 10 {
		c.codes++
	}
	if last != '\n' {
		c.lines++
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return c, err
	}
	return c, os.WriteFile(cache, fmt.Appendf(nil, "%d %d %d\n", c.lines, c.codes, c.bytes), 0o644)
}

// machine describes where the figures come from.
type machine struct {
	cpu, mem, kernel, goVersion, kafka, kcat, igzip, producer, head, loadavg string
	nproc                                                                    int
}

func machineInfo(bin string) machine {
	ctx := context.Background()
	m := machine{nproc: runtime.NumCPU(), cpu: runtime.GOARCH}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		if s := regexp.MustCompile(`(?m)^model name\s*:\s*(.*)$`).FindSubmatch(b); s != nil {
			m.cpu = string(s[1])
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kib float64
		if s := regexp.MustCompile(`(?m)^MemTotal:\s*(\d+)`).FindSubmatch(b); s != nil {
			kib, _ = strconv.ParseFloat(string(s[1]), 64)
		}
		m.mem = fmt.Sprintf("%.1f", kib/1048576)
	}
	rel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	m.kernel = "Linux " + strings.TrimSpace(string(rel))
	if v, err := output(ctx, "go", "env", "GOVERSION"); err == nil {
		m.goVersion = strings.TrimPrefix(v, "go")
	}
	if d, err := kafkatest.FindDist(); err == nil {
		m.kafka = d.Version
	}
	m.kcat = "n/a"
	if v, err := output(ctx, "kcat", "-V"); err == nil {
		if s := regexp.MustCompile(`Version (\S+).*(librdkafka \S+)`).FindStringSubmatch(v); s != nil {
			m.kcat = s[1] + " (" + s[2] + ")"
		}
	}
	m.igzip = "n/a"
	if v, err := output(ctx, "igzip", "--version"); err == nil {
		if f := strings.Fields(strings.SplitN(v, "\n", 2)[0]); len(f) > 0 {
			m.igzip = f[len(f)-1]
		}
	}
	m.producer = producerVersion(bin)
	if m.head, _ = output(ctx, "git", "rev-parse", "--short", "HEAD"); m.head == "" {
		m.head = "unknown"
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.loadavg = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return m
}

// producerVersion is the version the producer bin prints, or "".
func producerVersion(bin string) string {
	if v, _ := output(context.Background(), bin, "--version"); len(strings.Fields(v)) > 1 {
		return strings.Fields(v)[1]
	}
	return ""
}

func mib(b int64) string { return fmt.Sprintf("%.1f", float64(b)/1048576) }

// thousands writes n with commas: 10,000,000.
func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	for i := len(s) - 3; i > 0 && s[i-1] != '-'; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// side is the summary of one kind of run over the rounds that passed.
type side struct {
	total, good              int
	wall, cpu, broker, other float64
	rss, rss2                int64
	measuredBroker           bool
}

var names = map[string]string{"base": "base producer", "producer": "A producer", "kcat": `B igzip \| kcat`, "dryrun": "producer --dry-run", "zcat": "zcat"}

func (b *bench) sides() map[string]*side {
	ss := map[string]*side{}
	lists := map[string][4][]float64{}
	for _, r := range b.runs {
		s := ss[r.kind]
		if s == nil {
			s = &side{}
			ss[r.kind] = s
		}
		s.total++
		if b.status[runKey{r.kind, r.round}] != "ok" {
			continue
		}
		s.good++
		l := lists[r.kind]
		l[0], l[1], l[3] = append(l[0], r.usage.wall.Seconds()), append(l[1], r.usage.cpu.Seconds()), append(l[3], r.other)
		if r.broker >= 0 {
			l[2] = append(l[2], r.broker)
		}
		lists[r.kind] = l
		s.rss, s.rss2 = max(s.rss, r.usage.rss), max(s.rss2, r.usage.rss2)
	}
	for k, l := range lists {
		s := ss[k]
		s.wall, s.cpu, s.broker, s.other = median(l[0]), median(l[1]), median(l[2]), median(l[3])
		s.measuredBroker = len(l[2]) > 0
	}
	return ss
}

// summary is the table of medians over the runs that passed, peak RSS
// over them, and the ratios A / B and dry-run / zcat.
func (b *bench) summary(w io.Writer) {
	ss := b.sides()
	codes, lines := float64(b.counts.codes), float64(b.counts.lines)
	per := func(k string) float64 {
		if k == "kcat" {
			return lines
		}
		return codes
	}
	fmt.Fprintln(w, "| Run | OK | Wall s | CPU s | CPU µs/code | Mcodes/s | Peak RSS MiB | Broker CPU s | Other CPU s |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, k := range []string{"base", "producer", "kcat", "dryrun", "zcat"} {
		s := ss[k]
		if s == nil {
			continue
		}
		if s.good == 0 {
			fmt.Fprintf(w, "| %s | 0/%d | | | | | | | |\n", names[k], s.total)
			continue
		}
		rss := mib(s.rss * 1024)
		if k == "kcat" {
			rss = fmt.Sprintf("kcat %s, igzip %s", mib(s.rss*1024), mib(s.rss2*1024))
		}
		fmt.Fprintf(w, "| %s | %d/%d | %.2f | %.2f | %.3f | %.2f | %s | %s | %.2f |\n", names[k], s.good, s.total,
			s.wall, s.cpu, s.cpu/per(k)*1e6, per(k)/s.wall/1e6, rss, dash(s.measuredBroker, fmt.Sprintf("%.2f", s.broker)), s.other)
	}
	ratio := func(x, y, label string, broker bool) {
		sx, sy := ss[x], ss[y]
		if sx == nil || sy == nil || sx.good == 0 || sy.good == 0 {
			return
		}
		br := dash(broker && sx.measuredBroker && sy.broker > 0, fmt.Sprintf("%.2f", sx.broker/sy.broker))
		fmt.Fprintf(w, "| **ratio %s** | | **%.2f** | **%.2f** | **%.2f** | %.2f | %.2f | %s | |\n", label,
			sx.wall/sy.wall, sx.cpu/sy.cpu, (sx.cpu/codes)/(sy.cpu/per(y)), (codes/sx.wall)/(per(y)/sy.wall),
			float64(sx.rss)/float64(sy.rss), br)
	}
	ratio("producer", "base", "A / base", true)
	ratio("producer", "kcat", "A / B", true)
	ratio("dryrun", "zcat", "dry-run / zcat", false)
}

// ledgerTable gives, per producer, the median, least and most ledger
// records a run wrote, over the runs that passed.
func (b *bench) ledgerTable(w io.Writer) {
	fmt.Fprintln(w, "| Run | Runs | Median | Min | Max |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
	for _, kind := range []string{"base", "producer"} {
		var ns []float64
		for _, r := range b.runs {
			if n, ok := b.ledger[runKey{r.kind, r.round}]; ok && r.kind == kind && b.status[runKey{r.kind, r.round}] == "ok" {
				ns = append(ns, float64(n))
			}
		}
		if len(ns) > 0 {
			fmt.Fprintf(w, "| %s | %d | %g | %g | %g |\n", names[kind], len(ns), median(ns), slices.Min(ns), slices.Max(ns))
		}
	}
}

// runsTable lists every timed run in the order it ran.
func (b *bench) runsTable(w io.Writer) {
	fmt.Fprintln(w, "| Order | Run | Round | Verdict | Wall s | CPU s | RSS MiB | Broker CPU s | Other CPU s |")
	fmt.Fprintln(w, "|---:|---|---:|---|---:|---:|---:|---:|---:|")
	for i, r := range b.runs {
		rss := mib(r.usage.rss * 1024)
		if r.usage.rss2 >= 0 {
			rss += " (igzip " + mib(r.usage.rss2*1024) + ")"
		}
		fmt.Fprintf(w, "| %d | %s | %d | %s | %.2f | %.2f | %s | %s | %.2f |\n", i+1, r.kind, r.round,
			b.status[runKey{r.kind, r.round}], r.usage.wall.Seconds(), r.usage.cpu.Seconds(), rss,
			dash(r.broker >= 0, fmt.Sprintf("%.2f", r.broker)), r.other)
	}
}

func (b *bench) report(m machine, date time.Time) string {
	var w strings.Builder
	brokers := b.brokers
	if brokers == "" {
		brokers = "B"
	}
	brokerText := fmt.Sprintf("KAFKA_BROKERS=%s (not started by the benchmark; broker CPU not measured)", b.brokers)
	if !b.external {
		brokerText = fmt.Sprintf("a private single-node Apache Kafka %s (pkg/kafkatest, state in %s) on %s, on the same machine",
			m.kafka, filepath.Join(b.dir, "kafka"), brokers)
	}
	warm := "no"
	if b.warmup && b.needKafka {
		warm = "yes (1M-line file, untimed)"
	}
	fmt.Fprintf(&w, "# Coupon producer benchmark\n\n")
	fmt.Fprintf(&w, "- Date: %s\n", date.Format("2006-01-02T15:04:05Z"))
	fmt.Fprintf(&w, "- Producer: %s, built as %s (`go build -trimpath`, CGO off); repository HEAD %s\n", b.source, m.producer, m.head)
	if b.base != "" {
		fmt.Fprintf(&w, "- Base: %s, built as %s, run just before A in every round; each producer run writes its run ledger to a topic of its own\n",
			b.baseSource, producerVersion(b.baseBin))
	}
	fmt.Fprintf(&w, "- Machine: %d CPUs (nproc), %s, %s GiB RAM, %s\n", m.nproc, m.cpu, m.mem, m.kernel)
	fmt.Fprintf(&w, "- Tools: Go %s, Kafka %s (pom), kcat %s, igzip %s\n", m.goVersion, m.kafka, m.kcat, m.igzip)
	fmt.Fprintf(&w, "- Broker: %s\n", brokerText)
	fmt.Fprintf(&w, "- File: `%s` (%s): %s MiB gzip, %s MiB decompressed, %s lines, %s codes\n", b.file, b.fileKind,
		mib(b.counts.gzBytes), mib(b.counts.bytes), thousands(b.counts.lines), thousands(b.counts.codes))
	fmt.Fprintf(&w, "- Rounds: %d; topics of %d partitions, replication factor 1, deleted after each round; warm-up: %s\n", b.rounds, b.partitions, warm)
	flagsText := b.producerText
	if flagsText == "" {
		flagsText = "(none)"
	}
	fmt.Fprintf(&w, "- PRODUCER_FLAGS: %s\n", flagsText)
	fmt.Fprintf(&w, "- Load average before the runs: %s\n\n", m.loadavg)
	fmt.Fprintf(&w, "Commands (N is the round):\n\n```sh\n")
	for _, kind := range b.producerKinds() {
		bin, flags := b.bin, ""
		if kind == "base" {
			bin = b.baseBin
		}
		data, ledger := b.producerTopics(kind, "N")
		if ledger != "" {
			flags = "--ledger-topic " + ledger + " "
		}
		if b.producerText != "" {
			flags += b.producerText + " "
		}
		fmt.Fprintf(&w, "%s --brokers %s --topic %s --progress-interval 0 --partitions %d --log-format json %s%s\n",
			bin, brokers, data, b.partitions, flags, b.file)
	}
	if b.parts["kcat"] {
		fmt.Fprintf(&w, "igzip -dc %s | kcat -P -b %s -t bench-kcat-%s-N %s\n", b.file, brokers, b.runID, b.kcatText)
	}
	if b.parts["dryrun"] {
		fmt.Fprintf(&w, "%s --dry-run --log-format json %s > /dev/null\nzcat %s > /dev/null\n", b.bin, b.file, b.file)
	}
	fmt.Fprintf(&w, "```\n\n## Summary\n\n")
	b.summary(&w)
	fmt.Fprint(&w, `
Medians over the runs that passed. CPU is user + system of the measured
command (for B: igzip and kcat together). µs/code and Mcodes/s
divide by the codes (for B: the lines, one record each). Peak RSS is the
highest over the runs (for B: each process of the pipe on its own; the
ratio uses kcat's). Broker CPU: the broker JVM during the run. Other CPU:
everything else busy on the machine during the run (should be near 0).
`)
	if b.base != "" {
		fmt.Fprintf(&w, "\n## Ledger records per run\n\nThe records each producer run wrote to its ledger topic (started, checkpoints, final), over the runs that passed.\n\n")
		b.ledgerTable(&w)
	}
	fmt.Fprintf(&w, "\n## All runs, in the order they ran\n\n")
	b.runsTable(&w)
	if len(b.notes) > 0 {
		fmt.Fprintf(&w, "\n## Notes\n\n")
		for _, n := range b.notes {
			fmt.Fprintf(&w, "- %s\n", n)
		}
	}
	return w.String()
}
