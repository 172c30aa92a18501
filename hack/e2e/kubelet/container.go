package kubelet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Image is what the test kubelet runs for an image reference: the parts of
// an OCI image config that matter to a container, and the image's files
// taken from the host.
type Image struct {
	Entrypoint []string
	Cmd        []string
	// Env holds KEY=value pairs; the pod's variables override them.
	Env []string
	// User is the image's USER, numeric: "uid" or "uid:gid"; empty is root.
	User       string
	WorkingDir string
	// Files maps a path inside the image to a host file or folder that is
	// mounted there read-only, e.g. "/usr/local/bin/coupon-producer" to
	// the binary built for the test. Nothing else of the host is visible.
	Files map[string]string
}

// waitError is a reason the container cannot start yet; Reason is the
// waiting reason the status shows (ContainerCreating,
// CreateContainerConfigError, ErrImagePull). The pod worker retries.
type waitError struct {
	Reason string
	Err    error
}

func (e *waitError) Error() string { return e.Reason + ": " + e.Err.Error() }
func (e *waitError) Unwrap() error { return e.Err }

// containerSpec builds the init spec of one container: the pod's view of
// the world resolved to host paths and numbers.
func (k *Kubelet) containerSpec(ctx context.Context, pod *corev1.Pod, c *corev1.Container, vols map[string]volume, podDir string) (*initSpec, error) {
	img, ok := k.cfg.Images[c.Image]
	if !ok {
		return nil, &waitError{"ErrImagePull", fmt.Errorf("image %q is not known to the test kubelet", c.Image)}
	}
	podEnv, err := k.environment(ctx, pod, c)
	if err != nil {
		return nil, &waitError{"CreateContainerConfigError", err}
	}
	uid, gid, groups, err := identity(pod, c, img)
	if err != nil {
		return nil, &waitError{"CreateContainerConfigError", err}
	}
	lookup := func(name string) (string, bool) {
		for i := len(podEnv) - 1; i >= 0; i-- {
			if podEnv[i].Name == name {
				return podEnv[i].Value, true
			}
		}
		return "", false
	}
	var argv []string
	switch {
	case len(c.Command) > 0:
		argv = append(expandAll(c.Command, lookup), expandAll(c.Args, lookup)...)
	case len(c.Args) > 0:
		argv = append(append(argv, img.Entrypoint...), expandAll(c.Args, lookup)...)
	default:
		argv = append(append(argv, img.Entrypoint...), img.Cmd...)
	}

	// The runtime's environment: the image's, then the pod's over it.
	env := envMap{}
	env.set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	env.set("HOSTNAME", hostname(pod))
	for _, kv := range img.Env {
		name, value, _ := strings.Cut(kv, "=")
		env.set(name, value)
	}
	for _, e := range podEnv {
		env.set(e.Name, e.Value)
	}

	root := filepath.Join(podDir, c.Name, "rootfs")
	if err := os.RemoveAll(root); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	mounts, err := k.mounts(pod, c, img, vols, podDir, lookup)
	if err != nil {
		return nil, &waitError{"CreateContainerConfigError", err}
	}
	s := &initSpec{
		Root:       root,
		Hostname:   hostname(pod),
		Mounts:     mounts,
		WorkingDir: img.WorkingDir,
		Argv:       argv,
		Env:        env.list(),
		UID:        uid,
		GID:        gid,
		Groups:     groups,
	}
	if c.WorkingDir != "" {
		s.WorkingDir = c.WorkingDir
	}
	if sc := c.SecurityContext; sc != nil {
		s.ReadOnlyRoot = isTrue(sc.ReadOnlyRootFilesystem)
		s.NoNewPrivs = sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation
		if sc.Capabilities != nil && !isTrue(sc.Privileged) {
			s.DropCaps, err = capabilityNumbers(sc.Capabilities.Drop)
			if err != nil {
				return nil, &waitError{"CreateContainerConfigError", err}
			}
		}
	}
	return s, nil
}

// mounts lists what the container sees besides its empty root: the image's
// files, the devices and /proc a runtime provides, the kubelet's /etc/hosts
// and the volume mounts, parents before children.
func (k *Kubelet) mounts(pod *corev1.Pod, c *corev1.Container, img Image, vols map[string]volume, podDir string, lookup func(string) (string, bool)) ([]initMount, error) {
	var ms []initMount
	taken := map[string]bool{}
	for _, vm := range c.VolumeMounts {
		taken[filepath.Clean(vm.MountPath)] = true
	}
	for target, src := range img.Files {
		fi, err := os.Stat(src)
		if err != nil {
			return nil, fmt.Errorf("image file %s: %w", target, err)
		}
		ms = append(ms, initMount{Source: src, Target: target, ReadOnly: true, File: !fi.IsDir()})
	}
	for _, d := range []string{"null", "zero", "full", "random", "urandom"} {
		ms = append(ms, initMount{Source: "/dev/" + d, Target: "/dev/" + d, File: true})
	}
	ms = append(ms, initMount{Source: "proc", Target: "/proc", Proc: true})
	if !taken["/etc/hosts"] {
		hosts := filepath.Join(podDir, "etc-hosts")
		content := fmt.Sprintf("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n", hostIP, hostname(pod))
		if err := os.WriteFile(hosts, []byte(content), 0o644); err != nil {
			return nil, err
		}
		ms = append(ms, initMount{Source: hosts, Target: "/etc/hosts", File: true})
	}
	for _, vm := range c.VolumeMounts {
		v, ok := vols[vm.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %q: no volume of that name", vm.Name)
		}
		if !filepath.IsAbs(vm.MountPath) {
			return nil, fmt.Errorf("volumeMount %q: mountPath %q is not absolute", vm.Name, vm.MountPath)
		}
		src := v.path
		sub := vm.SubPath
		if vm.SubPathExpr != "" {
			sub = expand(vm.SubPathExpr, lookup)
		}
		if sub != "" {
			if filepath.IsAbs(sub) || strings.HasPrefix(filepath.Clean(sub), "..") {
				return nil, fmt.Errorf("volumeMount %q: subPath %q leaves the volume", vm.Name, sub)
			}
			src = filepath.Join(src, sub)
			// The kubelet creates a missing subPath as a folder.
			if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
				if err := os.MkdirAll(src, 0o755); err != nil {
					return nil, fmt.Errorf("volumeMount %q: %w", vm.Name, err)
				}
			}
		}
		fi, err := os.Stat(src)
		if err != nil {
			return nil, fmt.Errorf("volumeMount %q: %w", vm.Name, err)
		}
		ms = append(ms, initMount{
			Source:   src,
			Target:   filepath.Clean(vm.MountPath),
			ReadOnly: vm.ReadOnly || v.readOnly,
			File:     !fi.IsDir(),
		})
	}
	sort.SliceStable(ms, func(i, j int) bool {
		return strings.Count(ms[i].Target, "/") < strings.Count(ms[j].Target, "/")
	})
	return ms, nil
}

// identity returns the uid, gid and supplementary groups the container runs
// with: the container's securityContext over the pod's over the image's
// USER, plus fsGroup and supplementalGroups, and refuses root under
// runAsNonRoot as the kubelet does.
func identity(pod *corev1.Pod, c *corev1.Container, img Image) (uid, gid uint32, groups []uint32, err error) {
	imgUID, imgGID, err := parseUser(img.User)
	if err != nil {
		return 0, 0, nil, err
	}
	uid, gid = imgUID, imgGID
	var nonRoot *bool
	var extra []int64
	if psc := pod.Spec.SecurityContext; psc != nil {
		if psc.RunAsUser != nil {
			uid = uint32(*psc.RunAsUser)
		}
		if psc.RunAsGroup != nil {
			gid = uint32(*psc.RunAsGroup)
		}
		nonRoot = psc.RunAsNonRoot
		if psc.FSGroup != nil {
			extra = append(extra, *psc.FSGroup)
		}
		extra = append(extra, psc.SupplementalGroups...)
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = uint32(*sc.RunAsUser)
		}
		if sc.RunAsGroup != nil {
			gid = uint32(*sc.RunAsGroup)
		}
		if sc.RunAsNonRoot != nil {
			nonRoot = sc.RunAsNonRoot
		}
	}
	if isTrue(nonRoot) && uid == 0 {
		return 0, 0, nil, errors.New("container has runAsNonRoot and image will run as root")
	}
	groups = []uint32{gid}
	for _, g := range extra {
		if uint32(g) != gid {
			groups = append(groups, uint32(g))
		}
	}
	return uid, gid, groups, nil
}

func parseUser(u string) (uid, gid uint32, err error) {
	if u == "" {
		return 0, 0, nil
	}
	us, gs, hasGroup := strings.Cut(u, ":")
	n, err := strconv.ParseUint(us, 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("image user %q is not numeric", u)
	}
	uid = uint32(n)
	if hasGroup {
		n, err := strconv.ParseUint(gs, 10, 32)
		if err != nil {
			return 0, 0, fmt.Errorf("image group %q is not numeric", u)
		}
		gid = uint32(n)
	}
	return uid, gid, nil
}

// capabilities lists Linux capability names by number (linux/capability.h).
var capabilities = []string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
	"SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
	"IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
	"SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
	"LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
	"WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
}

func capabilityNumbers(drop []corev1.Capability) ([]int, error) {
	var out []int
	for _, d := range drop {
		name := strings.TrimPrefix(strings.ToUpper(string(d)), "CAP_")
		if name == "ALL" {
			out = out[:0]
			for i := range capabilities {
				out = append(out, i)
			}
			return out, nil
		}
		i := indexOf(capabilities, name)
		if i < 0 {
			return nil, fmt.Errorf("unknown capability %q", d)
		}
		out = append(out, i)
	}
	return out, nil
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

func expandAll(in []string, lookup func(string) (string, bool)) []string {
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = expand(s, lookup)
	}
	return out
}

func hostname(pod *corev1.Pod) string {
	h := pod.Name
	if pod.Spec.Hostname != "" {
		h = pod.Spec.Hostname
	}
	if len(h) > 63 {
		h = strings.TrimRight(h[:63], "-.")
	}
	return h
}

// envMap keeps variables in first-definition order, later values winning.
type envMap struct {
	names  []string
	values map[string]string
}

func (e *envMap) set(name, value string) {
	if e.values == nil {
		e.values = map[string]string{}
	}
	if _, ok := e.values[name]; !ok {
		e.names = append(e.names, name)
	}
	e.values[name] = value
}

func (e *envMap) list() []string {
	out := make([]string, len(e.names))
	for i, n := range e.names {
		out[i] = n + "=" + e.values[n]
	}
	return out
}

// process is one run of a container.
type process struct {
	cmd      *exec.Cmd
	started  time.Time
	done     chan struct{}
	exitCode int32
	finished time.Time
}

// startContainer writes the spec and starts the init, which execs the
// container's command in its own mount and UTS namespaces. It returns once
// the exec happened, or with the init's error message if it did not.
func (k *Kubelet) startContainer(s *initSpec, specPath string, log io.Writer) (*process, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(specPath, b, 0o600); err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	cmd := &exec.Cmd{
		Path:       k.initBin,
		Args:       []string{k.initBin},
		Env:        []string{initEnv + "=" + specPath},
		Stdout:     log,
		Stderr:     log,
		ExtraFiles: []*os.File{w},
		SysProcAttr: &syscall.SysProcAttr{
			Unshareflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWUTS,
			Setpgid:      true,
			Pdeathsig:    syscall.SIGKILL,
		},
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return nil, fmt.Errorf("start container init: %w", err)
	}
	p := &process{cmd: cmd, started: time.Now(), done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		p.finished = time.Now()
		p.exitCode = exitCode(cmd.ProcessState)
		close(p.done)
	}()
	msg, _ := io.ReadAll(r)
	if len(msg) > 0 {
		<-p.done
		return p, errors.New(string(msg))
	}
	return p, nil
}

// exitCode maps a wait status to the code a container runtime reports:
// the exit status, or 128 + the signal number.
func exitCode(ps *os.ProcessState) int32 {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int32(ws.Signal())
	}
	return int32(ps.ExitCode())
}

// signal sends sig to the container's process group.
func (p *process) signal(sig syscall.Signal) {
	select {
	case <-p.done:
	default:
		_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	}
}
