// Command pause is the sandbox container of the test node's pods, what
// registry.k8s.io/pause is on a cluster: it holds the pod's namespaces open
// and waits for SIGTERM or SIGINT. The test code builds it statically
// (CGO_ENABLED=0) into an image of its own, containerd's sandbox_image, since
// no registry is reachable.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	// As PID 1 of a pod sharing its process namespace it also reaps
	// orphans: SIGCHLD wakes it up to wait for them.
	signal.Notify(sig, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
