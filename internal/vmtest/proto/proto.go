// Package proto is the contract between the vmtest host side and the guest's
// /init: the plan file the host writes into the initramfs, the environment
// the guest tests see, and the marker lines /init writes to the result port.
package proto

import "time"

// Paths inside the guest.
const (
	// Root holds everything the host put into the initramfs for the run.
	Root = "/vmtest"
	// PlanPath is the JSON plan /init reads at boot.
	PlanPath = Root + "/plan.json"
	// FixtureDir holds the fixture modules: <name>.ko (the plain ELF image)
	// and, when the kernel ships it compressed, <name>.ko.xz (or .zst, .gz)
	// byte for byte as shipped.
	FixtureDir = Root + "/fixtures"
	// BinDir holds the binaries that ride along (on PATH in the guest).
	BinDir = Root + "/bin"
	// ResultPort is the second serial port: test output and markers only,
	// no kernel messages. Guests of another machine name theirs in
	// Plan.ResultPort.
	ResultPort = "/dev/ttyS1"
	// HeldTracepointsPath lists the links /init holds on the syscall
	// tracepoints, one "<tracepoint> <link id>" line each, when the plan
	// asks for it (Plan.HoldSyscallTracepoints).
	HeldTracepointsPath = "/run/vmtest/held-tracepoints"
)

// Environment variables set for every guest step.
const (
	EnvGuest    = "KMODGUARD_VMTEST_GUEST"    // "1" in the guest
	EnvRelease  = "KMODGUARD_VMTEST_RELEASE"  // uname -r the host booted
	EnvSeries   = "KMODGUARD_VMTEST_SERIES"   // debkernel series, e.g. "6.12"
	EnvFixtures = "KMODGUARD_VMTEST_FIXTURES" // FixtureDir
	EnvModules  = "KMODGUARD_VMTEST_MODULES"  // comma-separated fixture names
)

// Plan is what /init runs.
type Plan struct {
	Release string `json:"release"`
	Series  string `json:"series"`
	// HoldSyscallTracepoints makes /init attach no-op programs to the
	// sys_enter and sys_exit tracepoints before any step runs, and list
	// their links in HeldTracepointsPath; see
	// vmtest.Spec.LiveSyscallTracepoints.
	HoldSyscallTracepoints bool `json:"hold_syscall_tracepoints,omitempty"`
	// ResultPort, when set, is the result port's device instead of
	// ResultPort (arm64's virt machine: a PCI 16550 at /dev/ttyS0).
	ResultPort string `json:"result_port,omitempty"`
	// Steps run in order; a failing step does not stop the next one.
	Steps []Step `json:"steps"`
}

// Step is one program /init runs with its output on the result port.
type Step struct {
	Name    string        `json:"name"`
	Path    string        `json:"path"`
	Args    []string      `json:"args,omitempty"`
	Env     []string      `json:"env,omitempty"`
	Dir     string        `json:"dir,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"`
}

// Marker lines on the result port. Each sits on a line of its own.
const (
	// MarkerStart is followed by " uptime=<seconds>" (guest uptime when
	// /init began running steps: the boot time).
	MarkerStart = "@@vmtest-start"
	// MarkerStep is followed by " <name>" before a step's output.
	MarkerStep = "@@vmtest-step"
	// MarkerExit is followed by " <name> <code> <seconds>" after a step.
	// code is the exit status, or -1 when the step could not run or was killed.
	MarkerExit = "@@vmtest-exit"
	// MarkerDone ends the run; without it the guest died or hung.
	MarkerDone = "@@vmtest-done"
)

// HangBeforeStart on the kernel command line makes /init hang before it
// begins: the harness's test of its boot deadline (Spec.BootTimeout).
const HangBeforeStart = "vmtest.hang_before_start"
