package kubelet

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// initEnv names the environment variable that turns a process started from
// the kubelet's own binary into a container init: its value is the path of
// the container's initSpec.
const initEnv = "COUPON_E2E_CONTAINER_INIT"

// Init turns the process into a container init when the kubelet started it
// so, and never returns then; otherwise it returns at once. Call it first
// thing in main or TestMain of any binary that runs a Kubelet.
//
// Why a Go init rather than `unshare --mount` + `mount --bind` + `setpriv`
// from util-linux: the process must see the pod's absolute paths (/data,
// /etc/coupon-producer) without those folders existing on the host, so the
// init also chroots into an empty root folder, and setpriv would then have to
// exist inside that root. One small Go function does the mounts, chroot,
// chdir to workingDir, the capability bounding set, no_new_privs and the uid
// switch, in the order a container runtime does, and reports a failure
// before exec to the kubelet through a pipe, as runc does.
func Init() {
	path := os.Getenv(initEnv)
	if path == "" {
		return
	}
	// Per-thread state (no_new_privs, the capability bounding set, the
	// parent-death signal) must be set on the thread that calls execve.
	runtime.LockOSThread()
	status := os.NewFile(3, "init-status")
	syscall.CloseOnExec(3)
	if err := containerInit(path); err != nil {
		fmt.Fprintf(status, "%v", err)
		os.Exit(initFailedExit)
	}
	panic("unreachable: exec returned without an error")
}

// initFailedExit is the init's exit status when it fails before exec; the
// kubelet reports it as the container's exit code with reason StartError,
// as containerd does with 128.
const initFailedExit = 128

// initSpec is what the kubelet hands a container init: everything already
// resolved to host paths and numbers.
type initSpec struct {
	Root         string      // empty folder that becomes the container's /
	Hostname     string      // the pod's hostname, in a UTS namespace of its own
	Mounts       []initMount // in order; parents before children
	ReadOnlyRoot bool
	WorkingDir   string
	Argv         []string
	Env          []string
	UID          uint32
	GID          uint32
	Groups       []uint32
	NoNewPrivs   bool
	DropCaps     []int // capability numbers removed from the bounding set
}

type initMount struct {
	Source   string // host path; "proc" with Proc
	Target   string // absolute path inside the container
	ReadOnly bool
	File     bool // Source is a file: the mount point is a file too
	Proc     bool
}

func containerInit(specPath string) error {
	b, err := os.ReadFile(specPath)
	if err != nil {
		return fmt.Errorf("read spec: %w", err)
	}
	var s initSpec
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("decode spec %s: %w", specPath, err)
	}
	if len(s.Argv) == 0 {
		return errors.New("no command: neither the container nor its image names one")
	}
	if s.Hostname != "" {
		if err := unix.Sethostname([]byte(s.Hostname)); err != nil {
			return fmt.Errorf("sethostname %s: %w", s.Hostname, err)
		}
	}
	// The kubelet started this process in a mount namespace of its own whose
	// mounts do not propagate back (Go makes / rprivate for Unshareflags
	// CLONE_NEWNS): everything mounted here disappears when it exits.
	if err := unix.Mount(s.Root, s.Root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind root %s: %w", s.Root, err)
	}
	for _, m := range s.Mounts {
		if err := mountInto(s.Root, m); err != nil {
			return err
		}
	}
	if s.ReadOnlyRoot {
		if err := unix.Mount("", s.Root, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("read-only root: %w", err)
		}
	}
	lastCap, err := lastCapability()
	if err != nil {
		return err
	}
	if err := unix.Chroot(s.Root); err != nil {
		return fmt.Errorf("chroot %s: %w", s.Root, err)
	}
	wd := s.WorkingDir
	if wd == "" {
		wd = "/"
	}
	if err := unix.Chdir(wd); err != nil {
		return fmt.Errorf("working dir %s: %w", wd, err)
	}
	for _, c := range s.DropCaps {
		if c > lastCap {
			continue // unknown to this kernel: nothing to drop
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("drop capability %d: %w", c, err)
		}
	}
	groups := make([]int, len(s.Groups))
	for i, g := range s.Groups {
		groups[i] = int(g)
	}
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("setgroups %v: %w", groups, err)
	}
	if err := syscall.Setgid(int(s.GID)); err != nil {
		return fmt.Errorf("setgid %d: %w", s.GID, err)
	}
	if err := syscall.Setuid(int(s.UID)); err != nil {
		return fmt.Errorf("setuid %d: %w", s.UID, err)
	}
	if s.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("no_new_privs: %w", err)
		}
	}
	// A change of uid clears the parent-death signal: set it again so the
	// container dies with the kubelet.
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(syscall.SIGKILL), 0, 0, 0); err != nil {
		return fmt.Errorf("parent-death signal: %w", err)
	}
	bin, err := lookPath(s.Argv[0], s.Env)
	if err != nil {
		return err
	}
	if err := syscall.Exec(bin, s.Argv, s.Env); err != nil {
		return fmt.Errorf("exec %s: %w", bin, err)
	}
	return nil
}

func mountInto(root string, m initMount) error {
	target := filepath.Join(root, m.Target)
	if m.File {
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return fmt.Errorf("mount point %s: %w", m.Target, err)
		}
		f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o644)
		if err != nil {
			return fmt.Errorf("mount point %s: %w", m.Target, err)
		}
		f.Close()
	} else if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("mount point %s: %w", m.Target, err)
	}
	if m.Proc {
		if err := unix.Mount("proc", target, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("mount proc at %s: %w", m.Target, err)
		}
		return nil
	}
	if err := unix.Mount(m.Source, target, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s at %s: %w", m.Source, m.Target, err)
	}
	if m.ReadOnly {
		// A bind mount takes the read-only flag only on a remount.
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("read-only %s: %w", m.Target, err)
		}
	}
	return nil
}

func lastCapability() (int, error) {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return 0, fmt.Errorf("capabilities: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, fmt.Errorf("cap_last_cap %q: %w", b, err)
	}
	return n, nil
}

// lookPath resolves a command inside the container's root as a runtime
// does: a name with a slash as is, otherwise through the container's PATH.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("executable %q not found in $PATH (%s)", name, path)
}
