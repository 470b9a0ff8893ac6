package vmtest

import (
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kmodguard/kmodguard/internal/debkernel"
	"github.com/kmodguard/kmodguard/internal/vmtest/proto"
)

// EnvEnable turns the QEMU runs on: without KMODGUARD_VMTEST=1 (which
// `make vmtest` sets), Run and Boot skip, so plain `go test ./...` stays
// quick and honest on any host.
const EnvEnable = "KMODGUARD_VMTEST"

// EnvAccel picks the QEMU accelerator: "tcg" (the default) or "kvm". Stock
// Debian kernels do not boot under KVM on the nested development VMs, so
// KVM is opt-in.
const EnvAccel = "KMODGUARD_VMTEST_ACCEL"

// Spec says what a guest run needs.
type Spec struct {
	// Arch is the guest's architecture: debkernel.AMD64 (the default,
	// qemu-system-x86_64) or debkernel.ARM64 (qemu-system-aarch64, virt
	// machine, always TCG). The guest binaries are built for it and its
	// Debian kernels and busybox-static are fetched for it.
	Arch string
	// Kernels to boot, one guest each; default debkernel.AllSeries.
	Kernels []debkernel.Series
	// Modules are fixture modules by base name ("dummy", "veth"), taken
	// from the booted kernel's own package. The guest finds each as a plain
	// ELF image (Fixture) and, when shipped compressed, as shipped
	// (CompressedFixture); they and their dependencies are also installed
	// under /lib/modules/<release> with a modules.dep, so busybox modprobe
	// finds them.
	Modules []string
	// Run selects the guest tests (-test.run); default "^TestGuest".
	Run string
	// Args are more flags for the guest test binary (e.g. "-test.count=2").
	Args []string
	// Env are more KEY=value variables for the guest test binary.
	Env []string
	// Binaries are Go packages (import paths) built statically and put in
	// the guest's /vmtest/bin, which is on PATH, under their last path
	// element: "github.com/kmodguard/kmodguard/cmd/kmodguard" → kmodguard.
	Binaries []string
	// Files maps guest paths, relative to /vmtest/files, to host files.
	Files map[string]string
	// Crafted are fixture modules patched on the host from real ones
	// (forged names, stripped signatures); their From modules are added to
	// Modules.
	Crafted []Crafted
	// Prepare, when set, runs on the host once per kernel after the
	// fixtures are staged (plain <name>.ko files are there to read). Files
	// it writes into fixtures end up in the guest's FixtureDir.
	Prepare func(k *debkernel.Kernel, fixtures string) error
	// Tags are build tags for the guest test binary.
	Tags []string
	// CGO builds the guest test binary with cgo, linked statically against
	// glibc (tags netgo and osusergo, external linker with -static), for
	// packages that need cgo such as a Falco plugin. It needs gcc and
	// libc6-dev on the host. Without it, binaries are built with
	// CGO_ENABLED=0.
	CGO bool
	// Timeout bounds one boot, from QEMU start to power-off; default 5m
	// (10m for arm64, whose emulation is slower).
	Timeout time.Duration
	// BootTimeout bounds the boot alone, from QEMU start until /init begins
	// the tests; default 3m for a busybox guest, none for a systemd guest
	// (System), at most Timeout. A busybox guest boots in 3 to
	// 12 s under TCG, so a guest that has not begun by then is hung in the
	// emulator, not testing: it is killed and booted once more, like a
	// guest that died before its tests (a systemd guest's result stands).
	BootTimeout time.Duration
	// MemoryMiB is the guest's memory; default 1024.
	MemoryMiB int
	// CPUs is the guest's CPU count; default 1 (TCG gains little from more).
	CPUs int
	// SingleThreadTCG runs every vCPU on one host thread (-accel
	// tcg,thread=single) instead of one thread per vCPU. The guest still
	// has CPUs CPUs and preempts between them, but no two execute at the
	// same instant.
	SingleThreadTCG bool
	// LiveSyscallTracepoints leaves the syscall path to be live-patched
	// while the tests run. By default, a guest with more than one CPU has
	// /init attach two no-op BPF programs to each of the sys_enter and
	// sys_exit tracepoints before the tests start (HeldTracepoints lists
	// them): one probe keeps a tracepoint's static branch patched in, two
	// keep its static call on the iterator, so a test that attaches or
	// detaches a sensor only edits the probe list and never makes the
	// kernel rewrite its own text on the syscall path. That rewriting,
	// done with an int3 breakpoint and IPIs, went wrong under
	// multi-threaded TCG while other vCPUs ran syscalls: both vCPUs
	// soft-locked in syscall_trace_enter (6.1), and a stray int3 at the
	// patched sites in syscall_exit_to_user_mode_prepare (the static
	// branch, then the static call) killed the kernel (6.12). Real CPUs
	// do not show this; the emulator's cross-modifying code does. A
	// benchmark of the bare syscall path sets this.
	LiveSyscallTracepoints bool
	// Cmdline is appended to the kernel command line.
	Cmdline string
	// FailOnSkip makes a skipped guest test fail the run: for tests that
	// must really run on every kernel.
	FailOnSkip bool

	// System, when set, boots a Debian 12 root file system with systemd
	// and udev from a disk, instead of the busybox initramfs (see System).
	System *System

	// Script, when set, is a busybox sh script the guest runs instead of a
	// test binary (Exec only; Run and Boot always run tests). Its exit
	// status is Result.ExitCode.
	Script string
	// Output, when set, receives the guest's output (test or script) live,
	// line by line, while the guest runs.
	Output io.Writer
}

// EnvKernels, when set (e.g. "6.12"), limits Run to those of the Spec's
// kernels that it lists, comma-separated: for a quicker round while
// developing.
const EnvKernels = "KMODGUARD_VMTEST_KERNELS"

func (s *Spec) defaults() {
	if s.Arch == "" {
		s.Arch = debkernel.AMD64
	}
	if len(s.Kernels) == 0 {
		s.Kernels = debkernel.AllSeries
	}
	if only := os.Getenv(EnvKernels); only != "" {
		var keep []debkernel.Series
		for _, k := range s.Kernels {
			if slices.Contains(strings.Split(only, ","), string(k)) {
				keep = append(keep, k)
			}
		}
		s.Kernels = keep
	}
	if s.Run == "" {
		s.Run = "^TestGuest"
	}
	if s.Timeout <= 0 {
		s.Timeout = 5 * time.Minute
		if s.Arch == debkernel.ARM64 {
			s.Timeout = 10 * time.Minute
		}
	}
	if s.BootTimeout <= 0 && s.System == nil {
		s.BootTimeout = 3 * time.Minute
	}
	if s.MemoryMiB <= 0 {
		s.MemoryMiB = 1024
	}
	if s.CPUs <= 0 {
		s.CPUs = 1
	}
	for _, c := range s.Crafted {
		if !slices.Contains(s.Modules, c.From) {
			s.Modules = append(slices.Clone(s.Modules), c.From)
		}
	}
}

// Enabled reports whether QEMU runs are turned on (KMODGUARD_VMTEST=1).
func Enabled() bool { return os.Getenv(EnvEnable) == "1" }

// skipUnlessEnabled skips on the host when runs are off, and inside a guest
// (where a host-side test has nothing to do).
func skipUnlessEnabled(t testing.TB) {
	t.Helper()
	if InGuest() {
		t.Skip("host-side vmtest test: nothing to do inside the guest")
	}
	if !Enabled() {
		t.Skip("boots Debian kernels in QEMU: set " + EnvEnable + "=1 (make vmtest)")
	}
}

// LogLines logs, per kernel, each line of the guests' output that the
// regular expression matches in whole (benchmark results, for example),
// its fields joined by single spaces.
func LogLines(t *testing.T, results []*Result, pattern string) {
	t.Helper()
	line := regexp.MustCompile(`(?m)^` + pattern + `$`)
	for _, r := range results {
		if r == nil || r.Kernel == nil {
			continue
		}
		for _, l := range line.FindAllString(r.Output, -1) {
			t.Logf("%s: %s", r.Kernel.Release, strings.Join(strings.Fields(l), " "))
		}
	}
}

// Run builds the calling package's test binary, boots each kernel of the
// spec under QEMU with it, runs the guest tests there, and reports each
// kernel as a subtest named after its release, with the guest's output.
// It skips unless KMODGUARD_VMTEST=1.
//
// Call it from a host-side test in the package under test:
//
//	func TestVM(t *testing.T) {
//		vmtest.Run(t, vmtest.Spec{Modules: []string{"dummy"}})
//	}
func Run(t *testing.T, spec Spec) []*Result {
	t.Helper()
	skipUnlessEnabled(t)
	skipUnlessSystem(t, spec)
	spec.defaults()
	if len(spec.Kernels) == 0 {
		t.Skipf("no kernel of the spec is in %s=%s", EnvKernels, os.Getenv(EnvKernels))
	}
	ctx := context.Background()
	kernels := make([]*debkernel.Kernel, 0, len(spec.Kernels))
	for _, s := range spec.Kernels {
		k, err := debkernel.GetArch(ctx, s, spec.Arch)
		if err != nil {
			t.Fatalf("vmtest: kernel %s (%s): %v", s, spec.Arch, err)
		}
		kernels = append(kernels, k)
	}
	spec.Script = ""
	b, err := build(t.TempDir(), spec)
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	var results []*Result
	name := t.Name()
	for _, k := range kernels {
		t.Run(k.Release, func(t *testing.T) {
			// Debian moves its kernels without a commit here: say exactly
			// which build this run booted.
			t.Logf("kernel %s: package %s", k.Release, k)
			kb := b.withTimeout(t)
			// With -v the guest's lines are logged as they arrive, which
			// shows where a slow guest is; otherwise all at once at the end.
			live := testing.Verbose() && kb.spec.Output == nil
			if live {
				c := *kb
				c.spec.Output = logWriter{t}
				kb = &c
			}
			r, err := kb.boot(ctx, t.TempDir(), k)
			if err != nil {
				t.Fatalf("vmtest: %v", err)
			}
			results = append(results, r)
			if err := record(name, r, kb.spec); err != nil {
				t.Logf("vmtest: results not recorded: %v", err)
			}
			t.Logf("kernel %s (%s): boot %s, tests %s, wall %s (timeout %s, boot attempts %d)", k.Release, k,
				r.Boot.Round(10*time.Millisecond), r.Tests.Round(10*time.Millisecond), r.Wall.Round(10*time.Millisecond), r.Timeout, r.Attempts)
			if !live {
				t.Logf("guest output:\n%s", indent(r.Output))
			}
			if err := r.Err(); err != nil {
				t.Error(err)
				if r.Done {
					// The kernel may have said why (a WARN, a BPF message).
					t.Logf("guest console (tail):\n%s", indent(tail(r.Console, 25)))
				}
			}
		})
	}
	return results
}

// Boot is Run for one kernel without the verdict: it returns the Result
// for the caller to judge, and fails t only when the harness itself cannot
// work (build, fetch, QEMU). Tests of the harness use it to check that a
// failing guest is reported. It skips unless KMODGUARD_VMTEST=1.
func Boot(t *testing.T, spec Spec, series debkernel.Series) *Result {
	t.Helper()
	skipUnlessEnabled(t)
	skipUnlessSystem(t, spec)
	spec.defaults()
	spec.Kernels = []debkernel.Series{series}
	ctx := context.Background()
	k, err := debkernel.GetArch(ctx, series, spec.Arch)
	if err != nil {
		t.Fatalf("vmtest: kernel %s (%s): %v", series, spec.Arch, err)
	}
	spec.Script = ""
	b, err := build(t.TempDir(), spec)
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	t.Logf("kernel %s: package %s", k.Release, k)
	r, err := b.withTimeout(t).boot(ctx, t.TempDir(), k)
	if err != nil {
		t.Fatalf("vmtest: %v", err)
	}
	return r
}

// withTimeout shortens the boot's timeout to what go test's -timeout
// leaves, so that a slow guest is reported by the harness, with its
// console, rather than by go test's panic.
func (b *built) withTimeout(t *testing.T) *built {
	t.Helper()
	dl, ok := t.Deadline()
	if !ok {
		return b
	}
	left := time.Until(dl) - 20*time.Second
	if left >= b.spec.Timeout {
		return b
	}
	if left < time.Minute {
		t.Fatalf("vmtest: only %s left before go test's -timeout; run with -timeout 60m (make vmtest does)", time.Until(dl).Round(time.Second))
	}
	c := *b
	c.spec.Timeout = left
	return &c
}

// Exec boots one kernel for a program rather than a test: it runs
// spec.Script in the guest (or, without a script, the test binary of the
// package in the working folder), with dir as its scratch folder, and
// returns the Result. It does not look at KMODGUARD_VMTEST. `make demo`
// is built on it.
func Exec(ctx context.Context, spec Spec, series debkernel.Series, dir string) (*Result, error) {
	spec.defaults()
	spec.Kernels = []debkernel.Series{series}
	k, err := debkernel.GetArch(ctx, series, spec.Arch)
	if err != nil {
		return nil, fmt.Errorf("vmtest: kernel %s (%s): %w", series, spec.Arch, err)
	}
	b, err := build(filepath.Join(dir, "build"), spec)
	if err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	logf(spec, "kernel %s: package %s", k.Release, k)
	r, err := b.boot(ctx, filepath.Join(dir, "boot"), k)
	if err != nil {
		return nil, fmt.Errorf("vmtest: %w", err)
	}
	return r, nil
}

// built holds what one Run builds once for all kernels.
type built struct {
	spec     Spec
	testName string // base name of the package's test binary
	testBin  string
	pkgDir   string // the package under test, for its testdata
	initBin  string
	bins     map[string]string // guest name -> host path
}

// build compiles, into dir, the guest's /init, the Spec's binaries and,
// unless the Spec has a script, the test binary of the package in the
// working folder (a test's working folder is its package's).
func build(dir string, spec Spec) (*built, error) {
	m, ok := machines[spec.Arch]
	if !ok {
		return nil, fmt.Errorf("Spec.Arch %q: must be %q or %q", spec.Arch, debkernel.AMD64, debkernel.ARM64)
	}
	if _, err := exec.LookPath(m.qemu); err != nil {
		return nil, fmt.Errorf("%s is not installed (scripts/deps.sh %s)", m.qemu, m.deps)
	}
	if spec.CGO && spec.Arch != debkernel.AMD64 {
		return nil, fmt.Errorf("Spec.CGO builds for amd64 guests only, not %s", spec.Arch)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	pkgDir, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	b := &built{spec: spec, pkgDir: pkgDir, bins: map[string]string{}}
	if spec.Script == "" {
		b.testName = filepath.Base(pkgDir) + ".test"
		b.testBin = filepath.Join(dir, b.testName)
		args := []string{"test", "-c", "-o", b.testBin}
		tags := spec.Tags
		if spec.CGO {
			tags = append(slices.Clone(tags), "netgo", "osusergo")
			args = append(args, "-ldflags", "-linkmode external -extldflags -static")
		}
		if len(tags) > 0 {
			args = append(args, "-tags", strings.Join(tags, ","))
		}
		if err := goCmd(pkgDir, spec.Arch, spec.CGO, append(args, ".")...); err != nil {
			return nil, fmt.Errorf("build guest test binary of %s: %w", pkgDir, err)
		}
		if err := checkStatic(b.testBin); err != nil {
			return nil, err
		}
	}
	b.initBin = filepath.Join(dir, "init")
	if err := goCmd(pkgDir, spec.Arch, false, "build", "-o", b.initBin, "github.com/kmodguard/kmodguard/internal/vmtest/vminit"); err != nil {
		return nil, fmt.Errorf("build guest init: %w", err)
	}
	for _, pkg := range spec.Binaries {
		name := path.Base(pkg)
		out := filepath.Join(dir, "bin", name)
		if err := goCmd(pkgDir, spec.Arch, false, "build", "-o", out, pkg); err != nil {
			return nil, fmt.Errorf("build %s for the guest: %w", pkg, err)
		}
		b.bins[name] = out
	}
	return b, nil
}

// goCmd runs the go tool for a static linux/<goarch> guest binary; with
// cgo, the caller asks the linker for a static binary.
func goCmd(dir, goarch string, cgo bool, args ...string) error {
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	cmd := exec.Command(gobin, args...)
	cmd.Dir = dir
	cgoEnabled := "CGO_ENABLED=0"
	if cgo {
		cgoEnabled = "CGO_ENABLED=1"
	}
	cmd.Env = append(os.Environ(), cgoEnabled, "GOOS=linux", "GOARCH="+goarch, "GOFLAGS=-trimpath")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// boot assembles the initramfs for k in dir, boots it and collects the
// result. Errors are the harness's own; guest failures are in the Result.
func (b *built) boot(ctx context.Context, dir string, k *debkernel.Kernel) (*Result, error) {
	spec := b.spec
	rfs := newInitramfs()
	// modRFS receives the fixtures' /lib/modules tree: the initramfs's own,
	// or, for a systemd guest, which has the kernel's whole tree, nowhere.
	modRFS := rfs
	if spec.System != nil {
		rfs.addFile(systemInit, b.initBin, 0o755)
		modRFS = newInitramfs()
	} else {
		rfs.addFile("init", b.initBin, 0o755)
		if spec.Arch == debkernel.AMD64 {
			if err := addBusybox(rfs); err != nil {
				return nil, err
			}
		} else if err := addForeignBusybox(ctx, rfs, spec.Arch); err != nil {
			return nil, err
		}
		rfs.mkdirAll("root")
		rfs.mkdirAll("etc")
		rfs.addData("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
		rfs.addData("etc/group", []byte("root:x:0:\n"), 0o644)
	}
	if cfg := k.ConfigPath(); fileExists(cfg) {
		rfs.addFile("boot/config-"+k.Release, cfg, 0o644)
	}

	fixtures := filepath.Join(dir, "fixtures")
	if err := os.RemoveAll(fixtures); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(fixtures, 0o755); err != nil {
		return nil, err
	}
	if err := stageModules(modRFS, k, spec.Modules, fixtures); err != nil {
		return nil, fmt.Errorf("kernel %s: %w", k.Release, err)
	}
	if err := writeCrafted(fixtures, spec.Crafted); err != nil {
		return nil, fmt.Errorf("kernel %s: %w", k.Release, err)
	}
	if spec.Prepare != nil {
		if err := spec.Prepare(k, fixtures); err != nil {
			return nil, fmt.Errorf("kernel %s: Spec.Prepare: %w", k.Release, err)
		}
	}
	ents, err := os.ReadDir(fixtures)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if e.Type().IsRegular() {
			rfs.addFile(path.Join(proto.FixtureDir, e.Name()), filepath.Join(fixtures, e.Name()), 0o644)
		}
	}
	for name, p := range b.bins {
		rfs.addFile(path.Join(proto.BinDir, name), p, 0o755)
	}
	for rel, host := range spec.Files {
		st, err := os.Stat(host)
		if err != nil {
			return nil, fmt.Errorf("Spec.Files[%q]: %w", rel, err)
		}
		rfs.addFile(path.Join(proto.Root, "files", rel), host, st.Mode().Perm())
	}
	stepTimeout := spec.Timeout - 30*time.Second
	if stepTimeout < 20*time.Second {
		stepTimeout = spec.Timeout * 3 / 4
	}
	step := proto.Step{
		Env:     append([]string{proto.EnvModules + "=" + strings.Join(spec.Modules, ",")}, spec.Env...),
		Dir:     proto.Root,
		Timeout: stepTimeout,
	}
	if spec.Script != "" {
		step.Name = "script"
		step.Path = "/bin/sh"
		step.Args = []string{path.Join(proto.Root, "script.sh")}
		rfs.addData(step.Args[0], []byte(spec.Script), 0o755)
	} else {
		step.Name = b.testName
		step.Path = path.Join(proto.Root, b.testName)
		rfs.addFile(step.Path, b.testBin, 0o755)
		// The guest test runs in /vmtest as go test runs it in the package
		// folder, so relative testdata/ paths work in both.
		if err := addTree(rfs, filepath.Join(b.pkgDir, "testdata"), path.Join(proto.Root, "testdata"), maxTestdata); err != nil {
			return nil, err
		}
		step.Args = append([]string{"-test.v", "-test.run", spec.Run, "-test.timeout", (stepTimeout - 5*time.Second).String()}, spec.Args...)
	}
	plan := proto.Plan{Release: k.Release, Series: string(k.Series), Steps: []proto.Step{step},
		HoldSyscallTracepoints: spec.CPUs > 1 && !spec.LiveSyscallTracepoints}
	if port := machines[spec.Arch].resultPort; port != proto.ResultPort {
		plan.ResultPort = port
	}
	pj, err := json.MarshalIndent(plan, "", "  ")
	if err != nil {
		return nil, err
	}
	rfs.addData(proto.PlanPath, pj, 0o644)

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var run func() (*Result, error)
	if spec.System != nil {
		sys, err := prepareSystem(ctx, dir, k, rfs, spec)
		if err != nil {
			return nil, fmt.Errorf("kernel %s: systemd guest: %w", k.Release, err)
		}
		run = sys.run
	} else {
		initrd := filepath.Join(dir, "initramfs.cpio.gz")
		f, err := os.Create(initrd)
		if err != nil {
			return nil, err
		}
		if err := rfs.writeTo(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("write initramfs: %w", err)
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
		run = func() (*Result, error) { return qemu(ctx, dir, k, initrd, spec) }
	}
	r, err := run()
	if err == nil && !r.Started && (!r.TimedOut || r.BootHung) && ctx.Err() == nil && spec.System == nil {
		// The guest died, or hung, before /init ran anything: nothing under
		// test ran yet, so this is the emulator's trouble (a starved TCG
		// timer, say). One more try, and the second result stands. (A
		// systemd guest that never reached its tests may have failed to
		// boot for real: its result stands.)
		why := "died: " + deathReason(r.Console)
		if r.BootHung {
			why = fmt.Sprintf("hung: no start within %s; console tail:\n%s", spec.BootTimeout, tail(r.Console, 20))
			if strings.TrimSpace(r.Console) == "" {
				why = fmt.Sprintf("hung: no start within %s, and nothing on the console", spec.BootTimeout)
			}
		}
		logf(spec, "kernel %s stopped before the tests began (%s); booting once more", k.Release, why)
		r, err = run()
		if r != nil {
			r.Attempts = 2
		}
	} else if err == nil && r.Started && !r.Done && !r.TimedOut && ctx.Err() == nil && softLockup(r.Console) {
		// Seen under multi-threaded TCG with both vCPUs of the guest stuck in
		// syscall_trace_enter while a sensor attached (6.1, plugin/falcovm;
		// Spec.LiveSyscallTracepoints says how that is now avoided), and
		// not on the next boot. The tests run again from the start on a
		// fresh boot, whose result stands; the first boot's console is
		// kept in the log so that a real kernel bug stays visible.
		logf(spec, "kernel %s: SOFT LOCKUP while testing; booting once more. First boot's console:\n%s",
			k.Release, crashExcerpt(r.Console))
		r, err = run()
		if r != nil {
			r.Attempts = 2
		}
	}
	return r, err
}

// logf reports harness notes on the Spec's live output, or on stderr.
func logf(spec Spec, format string, args ...any) {
	w := spec.Output
	if w == nil {
		w = os.Stderr
	}
	fmt.Fprintf(w, "vmtest: "+format+"\n", args...)
}

// addForeignBusybox puts Debian's busybox-static for arch at /bin/busybox,
// fetched and unpacked in the kernel cache. The host cannot run it to list
// its applets: /init links them itself (busybox --install -s) when it finds
// no /bin/sh.
func addForeignBusybox(ctx context.Context, rfs *initramfs, arch string) error {
	root, err := debkernel.Package(ctx, "busybox-static", arch)
	if err != nil {
		return fmt.Errorf("busybox-static for %s: %w", arch, err)
	}
	bb := filepath.Join(root, "bin", "busybox")
	if err := checkStatic(bb); err != nil {
		return err
	}
	rfs.addFile("bin/busybox", bb, 0o755)
	for _, d := range []string{"sbin", "usr/bin", "usr/sbin"} {
		rfs.mkdirAll(d)
	}
	return nil
}

// addBusybox puts the host's static busybox at /bin/busybox with a link for
// each of its applets (sh, insmod, rmmod, lsmod, modprobe, ip, ...).
func addBusybox(rfs *initramfs) error {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		return errors.New("busybox is not installed (scripts/deps.sh vm installs busybox-static)")
	}
	if bb, err = filepath.EvalSymlinks(bb); err != nil {
		return err
	}
	out, err := exec.Command(bb, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("busybox --list-full: %w (is it busybox-static?)", err)
	}
	if err := checkStatic(bb); err != nil {
		return fmt.Errorf("%w (install busybox-static)", err)
	}
	rfs.addFile("bin/busybox", bb, 0o755)
	for _, a := range strings.Fields(string(out)) {
		if a == "bin/busybox" || strings.Contains(a, "..") {
			continue
		}
		rfs.addSymlink(a, "/bin/busybox")
	}
	return nil
}

func indent(s string) string {
	if s == "" {
		return "    (none)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// maxTestdata bounds the testdata folder copied into the guest's memory.
const maxTestdata = 64 << 20

// addTree copies the regular files and symlinks under the host folder src
// to dst in the initramfs; a missing src is no error.
func addTree(rfs *initramfs, src, dst string, limit int64) error {
	var total int64
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if p == src && errors.Is(err, fs.ErrNotExist) {
				return filepath.SkipAll
			}
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		to := path.Join(dst, filepath.ToSlash(rel))
		switch {
		case d.IsDir():
			rfs.mkdirAll(to)
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			rfs.addSymlink(to, target)
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			if total += info.Size(); total > limit {
				return fmt.Errorf("%s holds more than %d MiB: too much for the guest's memory", src, limit>>20)
			}
			rfs.addFile(to, p, info.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("testdata: %w", err)
	}
	return nil
}

// checkStatic fails for a dynamically linked binary: the guest has no
// loader and no libc, and would only say "no such file or directory".
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; the guest runs static binaries only", p)
		}
	}
	return nil
}

// logWriter logs each line written to it (the harness writes whole lines)
// as guest output.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log("guest: " + strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
