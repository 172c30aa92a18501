// Command e2eprobe is the container the harness tests run through the test
// kubelet: it reports what it sees (identity, environment, files, which
// paths it can write) and exits or waits as told, so that the tests can
// check that the kubelet ran the pod exactly as its spec says.
//
//	e2eprobe exit N             exit with status N
//	e2eprobe report PATH...     print a JSON report about itself and PATHs
//	e2eprobe sleep              wait; on SIGTERM print "SIGTERM" and exit 143
//	e2eprobe sleep-ignore-term  wait, ignoring SIGTERM
//
// It must be linked statically (CGO_ENABLED=0): the container's root holds
// nothing but the binary.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Report is what `report` prints, one JSON line.
type Report struct {
	Args     []string          `json:"args"`
	UID      int               `json:"uid"`
	GID      int               `json:"gid"`
	Groups   []int             `json:"groups"`
	Hostname string            `json:"hostname"`
	Cwd      string            `json:"cwd"`
	Env      map[string]string `json:"env"`
	// Files maps each regular file under the PATHs to its content.
	Files map[string]string `json:"files"`
	// Writable maps each PATH (a folder) and / to "" if a file could be
	// created in it, else the error.
	Writable   map[string]string `json:"writable"`
	NoNewPrivs string            `json:"noNewPrivs"`
	CapBnd     string            `json:"capBnd"`
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: e2eprobe exit N | report PATH... | sleep | sleep-ignore-term")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "exit":
		n, err := strconv.Atoi(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Printf("exiting %d\n", n)
		os.Exit(n)
	case "report":
		if err := report(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "sleep":
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		fmt.Println("sleeping")
		<-sig
		fmt.Println("SIGTERM")
		os.Exit(143)
	case "sleep-ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("sleeping, SIGTERM ignored")
		for {
			time.Sleep(time.Hour)
		}
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q\n", os.Args[1])
		os.Exit(2)
	}
}

func report(paths []string) error {
	r := Report{
		Args:     os.Args,
		UID:      os.Getuid(),
		GID:      os.Getgid(),
		Env:      map[string]string{},
		Files:    map[string]string{},
		Writable: map[string]string{},
	}
	var err error
	if r.Groups, err = os.Getgroups(); err != nil {
		return err
	}
	sort.Ints(r.Groups)
	if r.Hostname, err = os.Hostname(); err != nil {
		return err
	}
	if r.Cwd, err = os.Getwd(); err != nil {
		return err
	}
	for _, kv := range os.Environ() {
		name, value, _ := strings.Cut(kv, "=")
		r.Env[name] = value
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return err
	}
	r.NoNewPrivs = field(status, "NoNewPrivs:")
	r.CapBnd = field(status, "CapBnd:")
	for _, p := range append([]string{"/"}, paths...) {
		fi, err := os.Stat(p)
		if err != nil {
			r.Writable[p] = err.Error()
			continue
		}
		if !fi.IsDir() {
			continue
		}
		probe := filepath.Join(p, ".e2eprobe-write")
		if err := os.WriteFile(probe, []byte("x"), 0o644); err != nil {
			r.Writable[p] = err.Error()
		} else {
			r.Writable[p] = ""
			os.Remove(probe)
		}
		if p == "/" {
			continue
		}
		err = filepath.WalkDir(p, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type().IsRegular() {
				b, err := os.ReadFile(path)
				if err != nil {
					r.Files[path] = "error: " + err.Error()
				} else {
					r.Files[path] = string(b)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return json.NewEncoder(os.Stdout).Encode(r)
}

func field(status []byte, name string) string {
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, name); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
