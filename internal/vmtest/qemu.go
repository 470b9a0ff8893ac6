package vmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kmodguard/kmodguard/internal/debkernel"
	"github.com/kmodguard/kmodguard/internal/vmtest/proto"
)

// machine is how one architecture's guest is emulated.
type machine struct {
	qemu string // the QEMU system emulator
	deps string // the scripts/deps.sh group that installs it
	// console goes first on the kernel command line.
	console string
	// resultPort is the guest's device for the result port.
	resultPort string
	// cpu is the -cpu model under TCG.
	cpu string
	// args are the machine's own QEMU arguments, which write the console
	// and the result port to the two files.
	args func(console, results string) []string
}

var machines = map[string]machine{
	// Two 16550 UARTs: ttyS0 the console, ttyS1 the result port.
	// no_timer_check: on a busy host, TCG can miss the kernel's IO-APIC
	// timer check, which then panics ("IO-APIC + timer doesn't work").
	debkernel.AMD64: {
		qemu: "qemu-system-x86_64", deps: "vm",
		console: "console=ttyS0,115200", resultPort: proto.ResultPort, cpu: "max",
		args: func(console, results string) []string {
			return []string{"-serial", "file:" + console, "-serial", "file:" + results}
		},
	},
	// The virt machine has a single PL011 (ttyAMA0), the console; the
	// result port is a 16550 on its PCI bus (pci-serial), which the 8250
	// PCI driver, built into Debian's arm64 kernels, names ttyS0 as the
	// only 8250 port there is. A virtio console would need virtio_pci and
	// virtio_console, modules on 6.1. pauth-impdef: Debian's kernels sign
	// their return addresses, and QEMU's own pointer authentication hash
	// is much cheaper to emulate than the architected QARMA5.
	debkernel.ARM64: {
		qemu: "qemu-system-aarch64", deps: "vm-arm64",
		console: "console=ttyAMA0", resultPort: "/dev/ttyS0", cpu: "max,pauth-impdef=on",
		args: func(console, results string) []string {
			return []string{"-machine", "virt", "-serial", "file:" + console,
				"-chardev", "file,id=results,path=" + results, "-device", "pci-serial,chardev=results"}
		},
	},
}

// qemu boots k with initrd and waits for it to power off, or kills it at
// spec.Timeout. The console and the result port go to files in dir. extra
// are more QEMU arguments (the systemd guest's disks and devices).
func qemu(ctx context.Context, dir string, k *debkernel.Kernel, initrd string, spec Spec, extra ...string) (*Result, error) {
	console := filepath.Join(dir, "console.log")
	results := filepath.Join(dir, "results.log")
	m := machines[spec.Arch]
	// softlockup_panic=1: a CPU stuck in the kernel ends the boot within
	// about half a minute, with the lockup on the console, instead of
	// hanging until Spec.Timeout.
	cmdline := m.console + " panic=-1 oops=panic softlockup_panic=1 quiet random.trust_cpu=on mitigations=off rdinit=/init"
	if spec.Arch == debkernel.AMD64 {
		cmdline = m.console + " panic=-1 oops=panic softlockup_panic=1 quiet no_timer_check random.trust_cpu=on mitigations=off rdinit=/init"
	}
	if spec.Cmdline != "" {
		cmdline += " " + spec.Cmdline
	}
	args := []string{
		"-nodefaults", "-display", "none", "-no-reboot",
		"-m", strconv.Itoa(spec.MemoryMiB),
		"-smp", strconv.Itoa(spec.CPUs),
		"-kernel", k.Vmlinuz(),
		"-initrd", initrd,
		"-append", cmdline,
	}
	args = append(args, m.args(console, results)...)
	args = append(args, extra...)
	if os.Getenv(EnvAccel) == "kvm" && spec.Arch == debkernel.AMD64 {
		args = append(args, "-accel", "kvm", "-cpu", "host")
	} else {
		accel := "tcg"
		if spec.SingleThreadTCG {
			accel = "tcg,thread=single"
		}
		args = append(args, "-accel", accel, "-cpu", m.cpu)
	}
	ctx, cancel := context.WithTimeout(ctx, spec.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, m.qemu, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	// QEMU must not outlive a test binary that go test kills at its timeout.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	stop := make(chan struct{})
	var started, exited time.Time
	tailed := make(chan struct{})
	// A guest that has not begun its tests by spec.BootTimeout is killed:
	// bootHung says so, once cmd.Wait has returned. The start marker stops
	// the timer.
	var bootHung atomic.Bool
	boot := time.AfterFunc(math.MaxInt64, func() { bootHung.Store(true); cancel() })
	if spec.BootTimeout > 0 && spec.BootTimeout < spec.Timeout {
		boot.Reset(spec.BootTimeout)
	}
	defer boot.Stop()
	go func() {
		defer close(tailed)
		follow(results, stop, func(line []byte) {
			switch {
			case bytes.HasPrefix(line, []byte(proto.MarkerStart)):
				boot.Stop()
				started = time.Now()
			case bytes.HasPrefix(line, []byte(proto.MarkerExit)):
				exited = time.Now()
			case bytes.HasPrefix(line, []byte("@@vmtest")):
			case spec.Output != nil:
				spec.Output.Write(append(line, '\n'))
			}
		})
	}()
	err := cmd.Wait()
	close(stop)
	<-tailed
	r := &Result{Kernel: k, Attempts: 1, Timeout: spec.Timeout, BootTimeout: spec.BootTimeout, Wall: time.Since(start), failOnSkip: spec.FailOnSkip, script: spec.Script != ""}
	c, _ := readTail(console, maxLog)
	r.Console = string(c)
	out, _ := readTail(results, maxLog)
	r.parse(string(out))
	// The guest's clock is not to be trusted under TCG on a busy host: the
	// durations are the host's, to within the 100 ms the tail polls at.
	if !started.IsZero() {
		r.Boot = started.Sub(start)
		if !exited.IsZero() {
			r.Tests = exited.Sub(started)
		}
	}
	if bootHung.Load() && !r.Started {
		r.TimedOut, r.BootHung = true, true
		return r, nil
	}
	if ctx.Err() == context.DeadlineExceeded {
		r.TimedOut = true
		return r, nil
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return nil, fmt.Errorf("run qemu: %w", err)
	}
	if err != nil && !r.Started && len(c) == 0 {
		// QEMU itself refused (bad option, no accelerator): that is the
		// harness's failure, not the guest's.
		return nil, fmt.Errorf("qemu: %w\n%s", err, stderr.Bytes())
	}
	return r, nil
}

// follow calls line for each line QEMU writes to the result file p while
// the guest runs, until stop is closed and the file is read to its end.
func follow(p string, stop <-chan struct{}, line func([]byte)) {
	var f *os.File
	var pending []byte
	buf := make([]byte, 32<<10)
	flush := func(final bool) {
		for {
			i := bytes.IndexByte(pending, '\n')
			if i < 0 {
				break
			}
			line(bytes.TrimRight(pending[:i], "\r"))
			pending = pending[i+1:]
		}
		// A guest that writes without newlines must not grow this forever.
		if final && len(pending) > 0 || len(pending) > 1<<20 {
			line(pending)
			pending = nil
		}
	}
	for done := false; ; {
		select {
		case <-stop:
			done = true
		case <-time.After(100 * time.Millisecond):
		}
		if f == nil {
			f, _ = os.Open(p)
		}
		for f != nil {
			n, err := f.Read(buf)
			pending = append(pending, buf[:n]...)
			if n == 0 || err != nil {
				break
			}
		}
		flush(done)
		if done {
			if f != nil {
				f.Close()
			}
			return
		}
	}
}

// maxLog bounds what is read of the console and the result port: a guest
// that floods them is still reported, by its last 16 MiB.
const maxLog = 16 << 20

// readTail reads the file at p, or its last max bytes when it is longer.
func readTail(p string, max int64) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := st.Size() - max
	if off < 0 {
		off = 0
	}
	b := make([]byte, st.Size()-off)
	n, err := f.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b[:n], nil
}
