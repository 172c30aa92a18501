package cluster

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Network is the test node's pod network: a Linux bridge on the host whose
// own address is in the pod subnet (so the test process reaches pods and
// the broker directly, on the link), the CNI bridge config that puts every
// pod on it with an address from host-local IPAM, and network namespaces
// joined to it by veth pairs for the test's servers (the broker). Pods get
// no gateway and nothing is masqueraded or forwarded: their traffic stays
// on the bridge.
type Network struct {
	// Bridge is the bridge's name.
	Bridge string
	// Subnet is the pod subnet; HostIP, its first address, is the bridge's.
	Subnet *net.IPNet
	HostIP net.IP

	namespaces []string
	next       int // the last host number handed out to a namespace
}

// podRangeStart is the first host number host-local IPAM gives a pod; the
// ones below it are the bridge's and the test namespaces'.
const podRangeStart = 16

// run runs one command of the network set-up and quotes its output on
// failure.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newNetwork creates the bridge with its host address, removing first a
// bridge of the same name that an earlier run left behind.
func newNetwork(bridge, cidr string) (*Network, error) {
	_, subnet, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, fmt.Errorf("pod subnet %q: %w", cidr, err)
	}
	if ones, bits := subnet.Mask.Size(); bits != 32 || ones > 24 {
		return nil, fmt.Errorf("pod subnet %q: want an IPv4 /24 or larger", cidr)
	}
	if len(bridge) > 15 {
		return nil, fmt.Errorf("bridge name %q is longer than the kernel's 15 characters", bridge)
	}
	n := &Network{Bridge: bridge, Subnet: subnet, HostIP: hostAddr(subnet, 1), next: 1}
	_ = run("ip", "link", "del", bridge)
	if err := run("ip", "link", "add", bridge, "type", "bridge"); err != nil {
		return nil, err
	}
	ones, _ := subnet.Mask.Size()
	if err := run("ip", "addr", "add", fmt.Sprintf("%s/%d", n.HostIP, ones), "dev", bridge); err != nil {
		n.Close()
		return nil, err
	}
	if err := run("ip", "link", "set", bridge, "up"); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// hostAddr is the i-th address of subnet.
func hostAddr(subnet *net.IPNet, i int) net.IP {
	ip := make(net.IP, 4)
	copy(ip, subnet.IP.To4())
	v := uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
	v += uint32(i)
	return net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

// AddNamespace creates the network namespace name (removing one an earlier
// run left), joins it to the bridge by a veth pair (name-h on the bridge,
// name-n inside) and gives it the next free address of the subnet, which
// it returns. Run a program in it with `ip netns exec name`.
func (n *Network) AddNamespace(name string) (net.IP, error) {
	if len(name)+2 > 15 {
		return nil, fmt.Errorf("namespace name %q: its veth names would pass the kernel's 15 characters", name)
	}
	if n.next+1 >= podRangeStart {
		return nil, fmt.Errorf("namespace %s: only %d test namespaces fit before the pods' range", name, podRangeStart-2)
	}
	n.next++
	ip := hostAddr(n.Subnet, n.next)
	_ = run("ip", "netns", "del", name)
	_ = run("ip", "link", "del", name+"-h")
	if err := run("ip", "netns", "add", name); err != nil {
		return nil, err
	}
	n.namespaces = append(n.namespaces, name)
	ones, _ := n.Subnet.Mask.Size()
	for _, args := range [][]string{
		{"link", "add", name + "-h", "type", "veth", "peer", "name", name + "-n"},
		{"link", "set", name + "-n", "netns", name},
		{"link", "set", name + "-h", "master", n.Bridge, "up"},
		{"-n", name, "addr", "add", fmt.Sprintf("%s/%d", ip, ones), "dev", name + "-n"},
		{"-n", name, "link", "set", name + "-n", "up"},
		{"-n", name, "link", "set", "lo", "up"},
	} {
		if err := run("ip", args...); err != nil {
			return nil, fmt.Errorf("namespace %s: %w", name, err)
		}
	}
	return ip, nil
}

// CNIConfig is the CNI network config of the pods: the bridge plugin on
// Bridge, no gateway, no masquerade, host-local addresses from
// podRangeStart up, their leases kept under dataDir.
func (n *Network) CNIConfig(dataDir string) string {
	ones, _ := n.Subnet.Mask.Size()
	last := hostAddr(n.Subnet, (1<<(32-ones))-2)
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "e2e",
  "plugins": [
    {
      "type": "bridge",
      "bridge": %q,
      "isGateway": false,
      "isDefaultGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": %q,
        "ranges": [[{"subnet": %q, "rangeStart": %q, "rangeEnd": %q}]]
      }
    }
  ]
}
`, n.Bridge, dataDir, n.Subnet.String(), hostAddr(n.Subnet, podRangeStart).String(), last.String())
}

// Close removes the namespaces and the bridge (the veths go with them).
func (n *Network) Close() error {
	var errs []error
	for _, ns := range n.namespaces {
		if err := run("ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	n.namespaces = nil
	if err := run("ip", "link", "del", n.Bridge); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// sysctls are the kernel settings the kubelet changes when it starts
// (setupKernelTunables): the test node puts them back when it stops.
var sysctls = []string{
	"vm/overcommit_memory",
	"vm/panic_on_oom",
	"kernel/panic",
	"kernel/panic_on_oops",
	"kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes",
}

// saveSysctls returns the current value of each of sysctls.
func saveSysctls() (map[string]string, error) {
	saved := map[string]string{}
	for _, k := range sysctls {
		b, err := os.ReadFile(filepath.Join("/proc/sys", k))
		if err != nil {
			return nil, fmt.Errorf("sysctl %s: %w", k, err)
		}
		saved[k] = strings.TrimSpace(string(b))
	}
	return saved, nil
}

// restoreSysctls writes back what saveSysctls read, where it changed.
func restoreSysctls(saved map[string]string) error {
	var errs []error
	for k, v := range saved {
		p := filepath.Join("/proc/sys", k)
		if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == v {
			continue
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", k, v, err))
		}
	}
	return errors.Join(errs...)
}
