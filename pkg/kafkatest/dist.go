package kafkatest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// HomeDir is where the pom and the logging configuration of the brokers
// live, relative to the repository root.
const HomeDir = "hack/kafka-local"

// Dist is the Apache Kafka release the project runs: the version named in
// the pom of its home folder and the jars of that version, fetched with
// Maven into a cache. NewDist fills it; the fields may be changed before
// use.
type Dist struct {
	Home    string   // folder of pom.xml and simplelogger.properties (first on the classpath)
	Version string   // <kafka.version> of pom.xml, or KAFKA_LOCAL_VERSION
	Cache   string   // folder of this version's jars (lib/) and fetch stamp
	Java    string   // the java command
	Mvn     string   // the mvn command
	MvnArgs []string // extra Maven arguments (a settings file, a mirror)
	// ToolJVM are the JVM options of the short-lived Kafka tools (storage
	// format, topic command): a small heap and a fast start.
	ToolJVM []string
	// LogLevel, when set, overrides simplelogger.properties' WARN for the
	// brokers and tools (info, debug, ...).
	LogLevel string
}

// FindDist looks for HomeDir in the working directory and its parents, so
// that the tests of any package and the commands under hack/ find the one
// pom of the repository, and returns NewDist of it.
func FindDist() (*Dist, error) {
	dir, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	for {
		home := filepath.Join(dir, HomeDir)
		if _, err := os.Stat(filepath.Join(home, "pom.xml")); err == nil {
			return NewDist(home)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return nil, fmt.Errorf("no %s/pom.xml in the working directory or its parents", HomeDir)
		}
		dir = parent
	}
}

// NewDist reads the Kafka version from home's pom.xml and sets the other
// fields from the environment:
//
//	KAFKA_LOCAL_VERSION        the version instead of the pom's
//	KAFKA_LOCAL_CACHE          the jar cache (default $HOME/.cache/coupon-producer/kafka-<version>)
//	KAFKA_LOCAL_MVN_ARGS       extra Maven arguments, split on white space
//	KAFKA_LOCAL_TOOL_JVM_OPTS  JVM options of the Kafka tools
//	KAFKA_LOCAL_LOG_LEVEL      slf4j level instead of WARN
//	JAVA_HOME, MVN             the java and mvn to use (default: from PATH)
func NewDist(home string) (*Dist, error) {
	home, err := filepath.Abs(home)
	if err != nil {
		return nil, err
	}
	d := &Dist{Home: home, Java: "java", Mvn: "mvn", LogLevel: os.Getenv("KAFKA_LOCAL_LOG_LEVEL")}
	if d.Version = os.Getenv("KAFKA_LOCAL_VERSION"); d.Version == "" {
		if d.Version, err = PomVersion(filepath.Join(home, "pom.xml")); err != nil {
			return nil, err
		}
	}
	if d.Cache = os.Getenv("KAFKA_LOCAL_CACHE"); d.Cache == "" {
		base, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("no cache folder for the Kafka jars (set KAFKA_LOCAL_CACHE): %w", err)
		}
		d.Cache = filepath.Join(base, ".cache", "coupon-producer", "kafka-"+d.Version)
	}
	if j := os.Getenv("JAVA_HOME"); j != "" {
		d.Java = filepath.Join(j, "bin", "java")
	}
	if m := os.Getenv("MVN"); m != "" {
		d.Mvn = m
	}
	d.MvnArgs = strings.Fields(os.Getenv("KAFKA_LOCAL_MVN_ARGS"))
	d.ToolJVM = fieldsOr(os.Getenv("KAFKA_LOCAL_TOOL_JVM_OPTS"),
		"-Xms64m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true")
	return d, nil
}

func fieldsOr(s, def string) []string {
	if strings.TrimSpace(s) == "" {
		s = def
	}
	return strings.Fields(s)
}

// PomVersion returns the kafka.version property of a pom.
func PomVersion(pom string) (string, error) {
	b, err := os.ReadFile(pom)
	if err != nil {
		return "", err
	}
	var p struct {
		Version string `xml:"properties>kafka.version"`
	}
	if err := xml.Unmarshal(b, &p); err != nil {
		return "", fmt.Errorf("read %s: %w", pom, err)
	}
	if v := strings.TrimSpace(p.Version); v != "" {
		return v, nil
	}
	return "", fmt.Errorf("no <kafka.version> property in %s", pom)
}

// Lib is the folder of the jars.
func (d *Dist) Lib() string { return filepath.Join(d.Cache, "lib") }

// ErrNotFetched is returned by Start and Tool when the jars of the version
// are not in the cache: Fetch them first.
var ErrNotFetched = errors.New("kafka jars not fetched")

// Fetched reports whether the cache holds the jars of the version and of
// the pom as it is now.
func (d *Dist) Fetched() bool {
	want, err := d.stamp()
	if err != nil {
		return false
	}
	got, err := os.ReadFile(filepath.Join(d.Cache, ".fetch-complete"))
	return err == nil && strings.TrimSpace(string(got)) == want
}

func (d *Dist) needJars() error {
	if !d.Fetched() {
		return fmt.Errorf("%w: no complete Kafka %s in %s (go run ./hack/kafkactl fetch)", ErrNotFetched, d.Version, d.Lib())
	}
	return nil
}

// stamp names what a complete cache was fetched from: the version and the
// pom's digest, so that a changed pom (another slf4j) fetches again.
func (d *Dist) stamp() (string, error) {
	b, err := os.ReadFile(filepath.Join(d.Home, "pom.xml"))
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return "kafka=" + d.Version + " pom=" + hex.EncodeToString(sum[:8]), nil
}

// Fetch resolves the pom's dependencies with Maven into the cache, unless
// the cache already holds them, writing Maven's output to log. Concurrent
// fetches of one cache wait for each other.
func (d *Dist) Fetch(ctx context.Context, log io.Writer) error {
	if d.Fetched() {
		return nil
	}
	if err := os.MkdirAll(d.Cache, 0o755); err != nil {
		return err
	}
	unlock, err := lockFile(filepath.Join(d.Cache, ".lock"))
	if err != nil {
		return err
	}
	defer unlock()
	if d.Fetched() { // another process fetched while we waited
		return nil
	}
	want, err := d.stamp()
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "kafkatest: fetching Kafka %s jars into %s\n", d.Version, d.Lib())
	tmp, err := os.MkdirTemp(d.Cache, "lib.tmp.")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	args := append([]string{"-B", "-q", "-Dstyle.color=never"}, d.MvnArgs...)
	args = append(args, "-f", filepath.Join(d.Home, "pom.xml"), "-Dkafka.version="+d.Version,
		"dependency:copy-dependencies", "-DincludeScope=runtime", "-DoutputDirectory="+tmp)
	cmd := exec.CommandContext(ctx, d.Mvn, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		// Some Maven 3.8 builds print bare ANSI resets even with -B -q.
		log.Write(ansi.ReplaceAll(out.Bytes(), nil))
		return fmt.Errorf("maven could not resolve the Kafka %s jars: %w", d.Version, err)
	}
	for _, jar := range []string{"kafka_2.13-*.jar", "kafka-tools-*.jar"} {
		if m, _ := filepath.Glob(filepath.Join(tmp, jar)); len(m) == 0 {
			return fmt.Errorf("no %s after the fetch", jar)
		}
	}
	if err := os.RemoveAll(d.Lib()); err != nil {
		return err
	}
	// MkdirTemp made it 0700: a node run as another user reads it too.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if err := os.Rename(tmp, d.Lib()); err != nil {
		return err
	}
	jars, _ := filepath.Glob(filepath.Join(d.Lib(), "*.jar"))
	fmt.Fprintf(log, "kafkatest: fetched %d jars\n", len(jars))
	return os.WriteFile(filepath.Join(d.Cache, ".fetch-complete"), []byte(want+"\n"), 0o644)
}

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

// lockFile takes an exclusive flock on path, waiting for it, and returns
// its release.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// CheckJava fails unless the java command runs and is Java 17 or later,
// which Kafka 4 needs.
func (d *Dist) CheckJava() error {
	out, err := exec.Command(d.Java, "-version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("java (%s) does not run: %w (Kafka %s needs Java 17+; set JAVA_HOME or PATH)", d.Java, err, d.Version)
	}
	m := regexp.MustCompile(`version "(\d+)`).FindSubmatch(out)
	if m == nil {
		return nil // an unknown format: let the broker say what is wrong
	}
	if major, _ := strconv.Atoi(string(m[1])); major < 17 {
		return fmt.Errorf("java %s is version %s, and Kafka %s needs 17 or later", d.Java, m[1], d.Version)
	}
	return nil
}

// Classpath is the home folder (for simplelogger.properties) and the jars.
func (d *Dist) Classpath() string {
	return d.Home + string(os.PathListSeparator) + filepath.Join(d.Lib(), "*")
}

// javaArgs are the arguments of java running class with the JVM options
// jvm.
func (d *Dist) javaArgs(jvm []string, class string, args ...string) []string {
	a := append([]string(nil), jvm...)
	if d.LogLevel != "" {
		a = append(a, "-Dorg.slf4j.simpleLogger.defaultLogLevel="+d.LogLevel)
	}
	a = append(a, "-cp", d.Classpath(), class)
	return append(a, args...)
}

// Tool returns the command running a class of the Kafka jars in the
// foreground (kafka.tools.StorageTool, org.apache.kafka.tools.TopicCommand,
// ...) with the tools' JVM options.
func (d *Dist) Tool(ctx context.Context, class string, args ...string) (*exec.Cmd, error) {
	if err := d.needJars(); err != nil {
		return nil, err
	}
	return exec.CommandContext(ctx, d.Java, d.javaArgs(d.ToolJVM, class, args...)...), nil
}
