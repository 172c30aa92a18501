package main

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/couponpipeline/coupon-producer/pkg/kafkatest"
)

// startKafka starts a KRaft cluster of n real Apache Kafka nodes owned by
// the test (pkg/kafkatest): node i listens on port+2(i-1) and its
// controller on the port after it; opts add listeners, properties or an
// advertised port. The nodes are killed when the test ends. Tests use ports
// below 32768, outside Linux's ephemeral range: a port there can be the
// local end of any client connection on the machine, and a node restarted
// after a kill could not bind it again.
func startKafka(t *testing.T, n, port int, opts ...kafkatest.Opt) *kafkatest.Cluster {
	t.Helper()
	// A small heap and the serial collector: up to three nodes share the
	// machine with the producer under test.
	jvm := kafkatest.JVM("-Xms128m", "-Xmx384m", "-XX:+UseSerialGC", "-Djava.awt.headless=true")
	return kafkatest.StartTest(t, append([]kafkatest.Opt{kafkatest.Nodes(n), kafkatest.Port(port), jvm}, opts...)...)
}

// must fails t on err: for the launcher's Kill, Stop and Restart.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// blackhole is a TCP proxy that can stop forwarding without closing its
// connections, as a network that silently drops packets does.
type blackhole struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cond   *sync.Cond
	held   bool
	conns  []net.Conn
}

func newBlackhole(t *testing.T, port int, target string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, target: target}
	b.cond = sync.NewCond(&b.mu)
	t.Cleanup(b.close)
	go b.serve()
	return b
}

func (b *blackhole) serve() {
	for {
		in, err := b.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", b.target)
		if err != nil {
			in.Close()
			continue
		}
		b.mu.Lock()
		b.conns = append(b.conns, in, out)
		b.mu.Unlock()
		go b.pipe(in, out)
		go b.pipe(out, in)
	}
}

// pipe copies src to dst, holding each chunk while the hole is closed.
func (b *blackhole) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		b.mu.Lock()
		for b.held {
			b.cond.Wait()
		}
		b.mu.Unlock()
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF {
				return
			}
			return
		}
	}
}

// Hold stops forwarding; Heal resumes it.
func (b *blackhole) Hold() { b.mu.Lock(); b.held = true; b.mu.Unlock() }
func (b *blackhole) Heal() { b.mu.Lock(); b.held = false; b.cond.Broadcast(); b.mu.Unlock() }

func (b *blackhole) close() {
	b.ln.Close()
	b.Heal()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.conns {
		c.Close()
	}
}
