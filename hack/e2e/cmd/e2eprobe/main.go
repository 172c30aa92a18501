// Command e2eprobe is the container of the harness tests, which check the
// Kubernetes behaviour the chart relies on with plain manifests: it exits
// or waits as told.
//
//	e2eprobe exit N             exit with status N
//	e2eprobe sleep              wait; on SIGTERM print "SIGTERM", write it to
//	                            the termination log and exit 143
//	e2eprobe sleep-ignore-term  wait, ignoring SIGTERM
//
// The tests link it statically (CGO_ENABLED=0) into an image that holds
// nothing but the binary.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// terminationLog is the kubelet's default terminationMessagePath: what the
// container writes there becomes its terminated state's message.
const terminationLog = "/dev/termination-log"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: e2eprobe exit N | sleep | sleep-ignore-term")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "exit":
		if len(os.Args) != 3 {
			fmt.Fprintln(os.Stderr, "usage: e2eprobe exit N")
			os.Exit(2)
		}
		n, err := strconv.Atoi(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Printf("exiting %d\n", n)
		os.Exit(n)
	case "sleep":
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		fmt.Println("sleeping")
		<-sig
		fmt.Println("SIGTERM")
		if err := os.WriteFile(terminationLog, []byte("SIGTERM"), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
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
