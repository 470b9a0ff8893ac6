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
	if ev.MntNS == uint32(inode(t, "/proc/self/ns/mnt")) || ev.HostNS {
		t.Errorf("mntns %d host_ns %v: want the child's own mount namespace", ev.MntNS, ev.HostNS)
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
