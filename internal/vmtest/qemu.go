package vmtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/kmodguard/kmodguard/internal/debkernel"
)

// qemu boots k with initrd and waits for it to power off, or kills it at
// spec.Timeout. The console (ttyS0) and the result port (ttyS1) go to files
// in dir.
func qemu(ctx context.Context, dir string, k *debkernel.Kernel, initrd string, spec Spec) (*Result, error) {
	console := filepath.Join(dir, "console.log")
	results := filepath.Join(dir, "results.log")
	cmdline := "console=ttyS0,115200 panic=-1 oops=panic quiet random.trust_cpu=on mitigations=off rdinit=/init"
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
		"-serial", "file:" + console,
		"-serial", "file:" + results,
	}
	if os.Getenv(EnvAccel) == "kvm" {
		args = append(args, "-accel", "kvm", "-cpu", "host")
	} else {
		args = append(args, "-accel", "tcg", "-cpu", "max")
	}
	ctx, cancel := context.WithTimeout(ctx, spec.Timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	start := time.Now()
	err := cmd.Run()
	r := &Result{Kernel: k, Timeout: spec.Timeout, Wall: time.Since(start), failOnSkip: spec.FailOnSkip}
	c, _ := os.ReadFile(console)
	r.Console = string(c)
	out, _ := os.ReadFile(results)
	r.parse(string(out))
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
