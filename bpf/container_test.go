package bpf

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/event"
)

// containerChild is the child side of TestFinitModuleInContainer: in its
// own mount namespace, it mounts a tmpfs that only it sees, copies the
// module there, loads it with finit_module, prints its tid and waits.
func containerChild() {
	dir, src := os.Getenv("KG_CHILD_DIR"), os.Getenv("KG_CHILD_MODULE")
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(3)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		fail(err)
	}
	if err := unix.Mount("kg-test", dir, "tmpfs", 0, ""); err != nil {
		fail(err)
	}
	img, err := os.ReadFile(src)
	if err != nil {
		fail(err)
	}
	path := filepath.Join(dir, "dummy.ko")
	if err := os.WriteFile(path, img, 0o600); err != nil {
		fail(err)
	}
	f, err := os.Open(path)
	if err != nil {
		fail(err)
	}
	runtime.LockOSThread()
	unix.FinitModule(int(f.Fd()), "", 0)
	fmt.Println(unix.Gettid())
	// Stay until the parent has read the file through /proc/PID/root.
	io.Copy(io.Discard, os.Stdin)
}

// TestFinitModuleInContainer loads a module from a file that exists only in
// another mount namespace, from a process in a docker-like cgroup: the path
// is the one the caller sees, the enricher reads it through /proc/PID/root,
// and the container id comes from the cgroup.
func TestFinitModuleInContainer(t *testing.T) {
	if os.Getenv("KG_CHILD_DIR") != "" {
		containerChild()
		os.Exit(0)
	}
	module := dummyModule(t)
	_, c := newTestSensor(t, Config{})

	dir := t.TempDir() // empty here: the child mounts a tmpfs over it
	id := strings.Repeat("0123456789abcdef", 4)
	cmd := exec.Command(os.Args[0], "-test.run=^TestFinitModuleInContainer$")
	cmd.Env = append(os.Environ(), "KG_CHILD_DIR="+dir, "KG_CHILD_MODULE="+module)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS}
	cgroup := ""
	if cg, err := os.Open("/sys/fs/cgroup/unified"); err == nil {
		// A cgroup named the way docker names its scopes.
		rel := filepath.Join("/kmodguard-test", "docker-"+id+".scope")
		full := filepath.Join("/sys/fs/cgroup/unified", rel)
		if err := os.MkdirAll(full, 0o755); err == nil {
			fd, err := os.Open(full)
			if err == nil {
				defer fd.Close()
				cmd.SysProcAttr.UseCgroupFD = true
				cmd.SysProcAttr.CgroupFD = int(fd.Fd())
				cgroup = rel
				t.Cleanup(func() {
					os.Remove(full)
					os.Remove(filepath.Dir(full))
				})
			}
		}
		cg.Close()
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start a child in a new mount namespace: %v", err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	tid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("child said %q", line)
	}
	ev := c.wait(t, mine(tid, event.FinitModule))

	want := filepath.Join(dir, "dummy.ko")
	if ev.Path != want {
		t.Errorf("path = %q, want %q", ev.Path, want)
	}
	if _, err := os.Stat(want); err == nil {
		t.Fatalf("%s is visible outside the child's mount namespace", want)
	}
	// Its own mount namespace, but the host's PID and user namespaces: the
	// cgroup alone says container.
	if ev.MntNS == uint32(inode(t, "/proc/self/ns/mnt")) || (ev.HostMntNS != nil && *ev.HostMntNS) {
		t.Errorf("mntns %d host_mntns %v: want the child's own mount namespace", ev.MntNS, fmtBool(ev.HostMntNS))
	}
	if ev.HostNS != inHostNS(t) {
		t.Errorf("host_ns %v: a private mount namespace alone is no container", ev.HostNS)
	}
	if ev.Name != "dummy" || ev.SHA256 == "" || ev.FileChanged {
		t.Errorf("name %q sha256 %q file_changed %v: the file was not read through /proc/%d/root", ev.Name, ev.SHA256, ev.FileChanged, ev.Pid)
	}
	if cgroup != "" {
		if ev.Cgroup != cgroup || ev.ContainerID != id {
			t.Errorf("cgroup %q container %q, want %q %q", ev.Cgroup, ev.ContainerID, cgroup, id)
		}
	}
	t.Logf("path %s, mntns %d, cgroup %q, container %.12s", ev.Path, ev.MntNS, ev.Cgroup, ev.ContainerID)
}

// inHostNS says whether this process runs in the initial PID and user
// namespaces, where the namespace tests' children start.
func inHostNS(t *testing.T) bool {
	t.Helper()
	return inode(t, "/proc/self/ns/pid") == event.InitPidNS && inode(t, "/proc/self/ns/user") == event.InitUserNS
}

// hostMntNSKnown says whether the enricher knows the initial mount
// namespace here: pid 1's can be read, or this process runs in the fixed
// one of 6.18 on.
func hostMntNSKnown(t *testing.T) bool {
	t.Helper()
	return inode(t, "/proc/1/ns/mnt") != 0 || inode(t, "/proc/self/ns/mnt") == event.InitMntNS
}

func fmtBool(b *bool) string {
	if b == nil {
		return "nil"
	}
	return strconv.FormatBool(*b)
}

// nsChildEnv, in a re-executed test binary, makes TestHostNamespaces the
// child: it calls init_module (ENOSYS here, a real load attempt all the
// same), says so, and waits for its parent to close stdin.
const nsChildEnv = "KG_NS_CHILD"

// TestHostNamespaces makes a real init_module call from children in new
// namespaces, as systemd and container runtimes make them: kmod.host_ns is
// the initial PID and user namespaces, so a child in a private mount
// namespace only (a udev worker under PrivateMounts=yes, a service with
// PrivateTmp=) is on the host, with host_mntns false, and one in a new PID
// namespace (unshare -p -f) or a new user namespace is not.
func TestHostNamespaces(t *testing.T) {
	if os.Getenv(nsChildEnv) != "" {
		runtime.LockOSThread()
		unix.InitModule([]byte("kmodguard namespace test"), "")
		fmt.Println("called")
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	if !inHostNS(t) {
		t.Skip("needs to run in the initial PID and user namespaces, where the children start")
	}
	_, c := newTestSensor(t, Config{})
	for _, tc := range []struct {
		name    string
		flags   uintptr
		host    bool
		hostMnt bool
		userns  bool // a user namespace of its own
	}{
		{name: "private mounts (udev, PrivateTmp=)", flags: syscall.CLONE_NEWNS, host: true},
		{name: "pid namespace (unshare -p -f)", flags: syscall.CLONE_NEWPID, hostMnt: true},
		{name: "pid and mount namespaces", flags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS},
		{name: "user namespace", flags: syscall.CLONE_NEWUSER, hostMnt: true, userns: true},
		{name: "user and mount namespaces", flags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS, userns: true},
		{name: "no new namespace", host: true, hostMnt: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHostNamespaces$")
			cmd.Env = append(os.Environ(), nsChildEnv+"=1")
			cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: tc.flags}
			if tc.userns {
				// Root in the child's user namespace is root outside.
				cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
				cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
			}
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				t.Skipf("cannot start a child with clone flags %#x (needs root and namespaces): %v", tc.flags, err)
			}
			defer cmd.Wait()
			defer stdin.Close()
			if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "called\n" {
				t.Fatalf("child said %q: %v", line, err)
			}
			// The child's namespaces, while it lives. Its pid is the one
			// seen from here (in its own PID namespace it is 1).
			pid := cmd.Process.Pid
			ns := func(kind string) uint32 { return uint32(inode(t, fmt.Sprintf("/proc/%d/ns/%s", pid, kind))) }
			ev := c.wait(t, func(ev *event.Event) bool { return int(ev.Pid) == pid && ev.Syscall == event.InitModule })

			if ev.PidNS != ns("pid") || ev.MntNS != ns("mnt") || ev.UserNS != ns("user") {
				t.Errorf("pidns %d mntns %d userns %d, want the child's %d %d %d",
					ev.PidNS, ev.MntNS, ev.UserNS, ns("pid"), ns("mnt"), ns("user"))
			}
			if tc.userns == (ev.UserNS == event.InitUserNS) {
				t.Errorf("userns %d: a user namespace of its own is %v", ev.UserNS, tc.userns)
			}
			if ev.HostNS != tc.host {
				t.Errorf("host_ns %v, want %v", ev.HostNS, tc.host)
			}
			switch {
			case ev.HostMntNS != nil && *ev.HostMntNS != tc.hostMnt:
				t.Errorf("host_mntns %v, want %v", *ev.HostMntNS, tc.hostMnt)
			case ev.HostMntNS == nil && hostMntNSKnown(t):
				t.Errorf("host_mntns unknown, though the initial mount namespace is known here")
			}
			t.Logf("pid %d: pidns %d mntns %d userns %d: host_ns %v host_mntns %s",
				pid, ev.PidNS, ev.MntNS, ev.UserNS, ev.HostNS, fmtBool(ev.HostMntNS))
		})
	}
}

// TestDeletedExecutable runs a copy of this test binary, unlinks it, and
// lets it call delete_module: its exe reads " (deleted)", as /proc says.
func TestDeletedExecutable(t *testing.T) {
	if os.Getenv("KG_CHILD_DELETE_MODULE") != "" {
		io.Copy(io.Discard, io.LimitReader(os.Stdin, 1)) // wait for the unlink
		runtime.LockOSThread()
		unix.DeleteModule("kmodguard_deleted_exe", 0)
		fmt.Println(unix.Gettid())
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}
	_, c := newTestSensor(t, Config{})
	self, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	copyPath := filepath.Join(t.TempDir(), "kmodguard-deleted.test")
	if err := os.WriteFile(copyPath, self, 0o700); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(copyPath, "-test.run=^TestDeletedExecutable$")
	cmd.Env = append(os.Environ(), "KG_CHILD_DELETE_MODULE=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	if err := os.Remove(copyPath); err != nil {
		t.Fatal(err)
	}
	stdin.Write([]byte{1})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("child: %v", err)
	}
	tid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("child said %q", line)
	}
	ev := c.wait(t, mine(tid, event.DeleteModule))
	if want := copyPath + " (deleted)"; ev.Exe != want {
		t.Errorf("exe = %q, want %q", ev.Exe, want)
	}
}
