//go:build linux

// Command vminit is /init of the vmtest initramfs. The host builds it
// statically and boots it as PID 1 in a QEMU guest; in a systemd guest,
// systemd runs it as a service once the boot is done (and it then mounts
// nothing). It mounts the pseudo
// filesystems the tests need, runs the steps of /vmtest/plan.json with their
// output on the result port (the second serial port, /dev/ttyS1, unless the
// plan names another: /dev/ttyS0 on arm64), writes marker lines the host
// parses, and powers the machine off.
//
// Anything that goes wrong here is printed on the console (ttyS0, ttyAMA0 on
// arm64), whose tail the host reports when the run fails.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/internal/vmtest/proto"
)

func main() {
	err := run()
	if err != nil {
		fmt.Fprintf(os.Stderr, "vminit: %v\n", err)
	}
	unix.Sync()
	// Give the serial ports a moment: tcdrain covers the result port, this
	// covers the console.
	time.Sleep(100 * time.Millisecond)
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
		fmt.Fprintf(os.Stderr, "vminit: power off: %v\n", err)
	}
	select {}
}

type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
	optional               bool
}

var mounts = []mount{
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", false},
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", false},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", false},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", false},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755", false},
	{"securityfs", "/sys/kernel/security", "securityfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", true},
	{"bpf", "/sys/fs/bpf", "bpf", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=0700", true},
	{"tracefs", "/sys/kernel/tracing", "tracefs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", true},
	{"debugfs", "/sys/kernel/debug", "debugfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", true},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", true},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "gid=5,mode=0620", true},
}

func setup() error {
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil && !m.optional {
			return fmt.Errorf("mkdir %s: %w", m.target, err)
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil {
			if m.optional {
				fmt.Fprintf(os.Stderr, "vminit: mount %s on %s: %v (continuing)\n", m.fstype, m.target, err)
				continue
			}
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	// A foreign busybox comes without its applet links, which the host
	// could not list: it makes them itself, with /proc mounted.
	if _, err := os.Lstat("/bin/sh"); err != nil {
		if out, err := exec.Command("/bin/busybox", "--install", "-s").CombinedOutput(); err != nil {
			return fmt.Errorf("busybox --install -s: %w: %s", err, out)
		}
	}
	// /lib/modules/<release> is in the initramfs already; a /dev/fd link
	// and a loopback interface are what shell-style tests expect.
	_ = os.Symlink("/proc/self/fd", "/dev/fd")
	if _, err := os.Stat("/bin/ip"); err == nil {
		_ = exec.Command("/bin/ip", "link", "set", "lo", "up").Run()
	}
	return nil
}

func run() error {
	os.Setenv("PATH", proto.BinDir+":/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
	os.Setenv("HOME", "/root")
	// As PID 1 (the busybox guest) it sets up the system itself; run by
	// systemd (the systemd guest's vmtest.service), it finds it set up.
	if os.Getpid() == 1 {
		if err := setup(); err != nil {
			return err
		}
	}
	// The harness's own test of its boot deadline: a guest that hangs
	// before it begins (TestVMBootHangRetried).
	if cmdline, _ := os.ReadFile("/proc/cmdline"); bytes.Contains(cmdline, []byte(proto.HangBeforeStart)) {
		for {
			time.Sleep(time.Hour)
		}
	}
	plan, err := readPlan()
	if err != nil {
		return err
	}
	if plan.HoldSyscallTracepoints {
		if err := holdSyscallTracepoints(); err != nil {
			fmt.Fprintf(os.Stderr, "vminit: hold the syscall tracepoints: %v (continuing)\n", err)
		}
	}
	portPath := proto.ResultPort
	if plan.ResultPort != "" {
		portPath = plan.ResultPort
	}
	port, err := openResultPort(portPath)
	if err != nil {
		return err
	}
	out := &lineWriter{w: port, last: '\n'}
	defer func() {
		fmt.Fprintf(out, "%s%s\n", out.newline(), proto.MarkerDone)
		drain(port)
		port.Close()
	}()

	fmt.Fprintf(out, "%s uptime=%s\n", proto.MarkerStart, uptime())
	env := append(os.Environ(),
		proto.EnvGuest+"=1",
		proto.EnvRelease+"="+plan.Release,
		proto.EnvSeries+"="+plan.Series,
		proto.EnvFixtures+"="+proto.FixtureDir,
	)
	for _, s := range plan.Steps {
		fmt.Fprintf(out, "%s %s\n", proto.MarkerStep, s.Name)
		fmt.Fprintf(os.Stderr, "vminit: running %s\n", s.Name)
		start := time.Now()
		code := runStep(s, env, out)
		fmt.Fprintf(out, "%s%s %s %d %.3f\n", out.newline(), proto.MarkerExit, s.Name, code, time.Since(start).Seconds())
		fmt.Fprintf(os.Stderr, "vminit: %s exited %d\n", s.Name, code)
	}
	return nil
}

// held keeps the no-op programs' links referenced for the whole boot.
var held []link.Link

// holdSyscallTracepoints attaches two no-op raw tracepoint programs to each
// of sys_enter and sys_exit, written down in proto.HeldTracepointsPath.
// With a probe on it, a tracepoint's static branch stays patched in; with
// two or more, its static call stays on the iterator. A test that then
// attaches a BPF program to the syscall tracepoints only adds a probe to a
// list, and the kernel never live-patches the syscall path while the tests
// run: multi-threaded TCG mishandles that patching (see
// vmtest.Spec.LiveSyscallTracepoints).
func holdSyscallTracepoints() error {
	// The attachments below are themselves live patches of the syscall
	// path: made while another vCPU runs syscalls, they met the same stray
	// int3 (6.12, /init's own Go threads in syscall_trace_enter). So the
	// other CPUs are taken offline for them, and brought back after.
	offline, err := offlineOtherCPUs()
	defer func() {
		for _, cpu := range offline {
			if err := os.WriteFile(cpu, []byte("1\n"), 0); err != nil {
				fmt.Fprintf(os.Stderr, "vminit: bring %s back online: %v\n", cpu, err)
			}
		}
	}()
	if err != nil {
		return err
	}
	var ids strings.Builder
	for _, tp := range []string{"sys_enter", "sys_exit"} {
		for range 2 {
			prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
				Name:         "vmtest_hold",
				Type:         ebpf.RawTracepoint,
				License:      "Dual MIT/GPL",
				Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
			})
			if err != nil {
				return fmt.Errorf("load a no-op raw tracepoint program: %w", err)
			}
			l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: tp, Program: prog})
			prog.Close() // the link holds the program
			if err != nil {
				return fmt.Errorf("attach to %s: %w", tp, err)
			}
			held = append(held, l)
			info, err := l.Info()
			if err != nil {
				return fmt.Errorf("link info: %w", err)
			}
			fmt.Fprintf(&ids, "%s %d\n", tp, info.ID)
		}
	}
	if err := os.MkdirAll(filepath.Dir(proto.HeldTracepointsPath), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(proto.HeldTracepointsPath, []byte(ids.String()), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "vminit: two no-op programs on sys_enter and on sys_exit: the syscall path is not live-patched while the tests run\n")
	return nil
}

// offlineOtherCPUs takes every CPU but the boot CPU offline and returns
// the online files it wrote, to be written back.
func offlineOtherCPUs() ([]string, error) {
	files, err := filepath.Glob("/sys/devices/system/cpu/cpu[0-9]*/online")
	if err != nil {
		return nil, err
	}
	var done []string
	for _, f := range files {
		if filepath.Base(filepath.Dir(f)) == "cpu0" {
			continue // the boot CPU stays
		}
		b, err := os.ReadFile(f)
		if err != nil || strings.TrimSpace(string(b)) != "1" {
			continue // an offline CPU stays so
		}
		if err := os.WriteFile(f, []byte("0\n"), 0); err != nil {
			return done, fmt.Errorf("take %s offline: %w", filepath.Dir(f), err)
		}
		done = append(done, f)
	}
	return done, nil
}

func readPlan() (*proto.Plan, error) {
	b, err := os.ReadFile(proto.PlanPath)
	if err != nil {
		return nil, fmt.Errorf("read plan: %w", err)
	}
	var p proto.Plan
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("decode %s: %w", proto.PlanPath, err)
	}
	return &p, nil
}

// openResultPort opens the second serial port in raw mode, so that output
// reaches the host byte for byte (no \n to \r\n translation, no echo).
func openResultPort(p string) (*os.File, error) {
	f, err := os.OpenFile(p, os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open result port: %w", err)
	}
	fd := int(f.Fd())
	if t, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
		t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Cflag &^= unix.CSIZE | unix.PARENB
		t.Cflag |= unix.CS8
		t.Cflag = t.Cflag&^unix.CBAUD | unix.B115200
		_ = unix.IoctlSetTermios(fd, unix.TCSETS, t)
	}
	return f, nil
}

// drain waits until the serial driver has sent everything (tcdrain).
func drain(f *os.File) {
	_ = unix.IoctlSetInt(int(f.Fd()), unix.TCSBRK, 1)
}

func runStep(s proto.Step, env []string, out io.Writer) int {
	ctx := context.Background()
	if s.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.Timeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, s.Path, s.Args...)
	cmd.Env = append(append([]string(nil), env...), s.Env...)
	cmd.Dir = s.Dir
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		// Kill the whole process group: tests start helpers (insmod, the CLI).
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	// A helper the test left running in the background must not hold the
	// output pipe open for ever once the test itself has exited.
	cmd.WaitDelay = 5 * time.Second
	err := cmd.Run()
	if cmd.Process != nil {
		// Whatever the step left behind dies with it.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if ctx.Err() == context.DeadlineExceeded {
		fmt.Fprintf(out, "\nvminit: %s killed after %s\n", s.Name, s.Timeout)
		return -1
	}
	if errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil {
		fmt.Fprintf(out, "\nvminit: %s exited but left a process holding its output; killed it\n", s.Name)
		return cmd.ProcessState.ExitCode()
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return ee.ExitCode()
	default:
		fmt.Fprintf(out, "\nvminit: %s: %v\n", s.Name, err)
		return -1
	}
}

func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// lineWriter remembers the last byte written, so that a marker goes on a
// line of its own without adding blank lines to the output.
type lineWriter struct {
	w    io.Writer
	last byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	if n > 0 {
		l.last = p[n-1]
	}
	return n, err
}

// newline returns "\n" when the output does not end a line.
func (l *lineWriter) newline() string {
	if l.last == '\n' {
		return ""
	}
	return "\n"
}
