package vmtest

import (
	"bufio"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kmodguard/kmodguard/internal/debkernel"
	"github.com/kmodguard/kmodguard/internal/vmtest/proto"
)

// Result is the outcome of one boot: one kernel, one test binary.
type Result struct {
	Kernel *debkernel.Kernel
	// Output is what the guest test binary printed (go test -test.v).
	Output string
	// Console is the guest's console: kernel messages and /init's own.
	Console string
	// ExitCode is the test binary's exit status in the guest; -1 when it
	// did not finish (killed, crashed guest, or never started).
	ExitCode int
	// Started and Done say how far /init got: the steps began, and the run
	// ended normally. A guest that panicked or hung has Done false.
	Started, Done bool
	// Attempts is 2 when the first boot died before /init began the tests
	// (an emulator hiccup), or of a soft lockup while testing, and the guest
	// was booted once more.
	Attempts int
	// TimedOut is set when the host killed QEMU at Spec.Timeout, or at
	// Spec.BootTimeout with the tests not begun (then BootHung is set too).
	TimedOut, BootHung bool
	// Timeout and BootTimeout are the limits the boot ran under.
	Timeout, BootTimeout time.Duration
	// Boot is the time from QEMU's start until /init began the tests;
	// Tests is how long the tests ran; Wall is QEMU's whole life. All are
	// taken on the host's clock (the guest's drifts under TCG).
	Boot, Tests, Wall time.Duration
	// Passed, Failed and Skipped list the tests (and subtests, as
	// "TestX/sub") by their go test -v verdict lines.
	Passed, Failed, Skipped []string

	failOnSkip bool
	script     bool
}

// Err returns nil when the guest ran its tests and they passed, and
// otherwise an error that names the kernel and the failed tests, or says how
// the guest died with the tail of its console.
func (r *Result) Err() error {
	rel := "?"
	if r.Kernel != nil {
		rel = r.Kernel.Release
	}
	switch {
	case r.BootHung:
		return fmt.Errorf("kernel %s: guest did not begin its tests within %s of boot (hung in boot?); console tail:\n%s", rel, r.BootTimeout, tail(r.Console, 40))
	case r.TimedOut:
		return fmt.Errorf("kernel %s: guest did not finish within %s (hang?); console tail:\n%s", rel, r.Timeout, tail(r.Console, 40))
	case !r.Started:
		return fmt.Errorf("kernel %s: guest never started the tests (%s); console tail:\n%s", rel, deathReason(r.Console), tail(r.Console, 40))
	case !r.Done:
		return fmt.Errorf("kernel %s: guest died while testing (%s); console:\n%s", rel, deathReason(r.Console), crashExcerpt(r.Console))
	case len(r.Failed) > 0:
		return fmt.Errorf("kernel %s: guest tests failed: %s", rel, strings.Join(r.Failed, ", "))
	case r.script && r.ExitCode != 0:
		return fmt.Errorf("kernel %s: guest script exited %d; output tail:\n%s", rel, r.ExitCode, tail(r.Output, 30))
	case r.ExitCode != 0:
		return fmt.Errorf("kernel %s: guest test binary exited %d with no failed test named; output tail:\n%s", rel, r.ExitCode, tail(r.Output, 30))
	case r.script:
		return nil
	case len(r.Passed)+len(r.Skipped) == 0:
		return fmt.Errorf("kernel %s: no guest test ran (does the package have TestGuest... tests matching Spec.Run?)", rel)
	case r.failOnSkip && len(r.Skipped) > 0:
		return fmt.Errorf("kernel %s: guest tests skipped (Spec.FailOnSkip): %s", rel, strings.Join(r.Skipped, ", "))
	}
	return nil
}

func deathReason(console string) string {
	switch {
	case softLockup(console):
		return "soft lockup: a CPU stuck in the kernel"
	case strings.Contains(console, "Kernel panic"):
		return "kernel panic"
	case strings.Contains(console, "vminit:"):
		return "/init failed"
	case console == "":
		return "no console output: did QEMU start the kernel?"
	}
	return "no exit marker"
}

// softLockup reports whether the kernel's watchdog saw a CPU stuck in the
// kernel (softlockup_panic=1 then ends the boot).
func softLockup(console string) bool {
	return strings.Contains(console, "watchdog: BUG: soft lockup")
}

var verdictRE = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+) \(`)

// parseResult reads the result port's bytes into r.
func (r *Result) parse(results string) {
	r.ExitCode = -1
	var out strings.Builder
	sc := bufio.NewScanner(strings.NewReader(strings.ReplaceAll(results, "\r\n", "\n")))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, proto.MarkerStart):
			r.Started = true
			if v, ok := strings.CutPrefix(line, proto.MarkerStart+" uptime="); ok {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					r.Boot = time.Duration(f * float64(time.Second))
				}
			}
			continue
		case strings.HasPrefix(line, proto.MarkerStep):
			continue
		case strings.HasPrefix(line, proto.MarkerExit):
			f := strings.Fields(line)
			if len(f) >= 4 {
				if c, err := strconv.Atoi(f[2]); err == nil {
					r.ExitCode = c
				}
				if s, err := strconv.ParseFloat(f[3], 64); err == nil {
					r.Tests = time.Duration(s * float64(time.Second))
				}
			}
			continue
		case strings.HasPrefix(line, proto.MarkerDone):
			r.Done = true
			continue
		}
		out.WriteString(line)
		out.WriteByte('\n')
		if m := verdictRE.FindStringSubmatch(line); m != nil {
			switch m[1] {
			case "PASS":
				r.Passed = append(r.Passed, m[2])
			case "FAIL":
				r.Failed = append(r.Failed, m[2])
			case "SKIP":
				r.Skipped = append(r.Skipped, m[2])
			}
		}
	}
	r.Output = strings.TrimSpace(out.String())
}

// tail returns the last n lines of s.
// oopsOpeners begin the kernel's own reports of a crash or a stuck CPU.
var oopsOpeners = []string{"BUG:", "Oops:", "------------[ cut here ]", "general protection fault", "int3: ", "watchdog: BUG:", "Kernel panic"}

// crashExcerpt returns the console from the kernel's first crash report
// (its opening line, registers and call trace) and the console's last
// lines, so that the cause is shown and not only the final panic line.
// Without a report it is the console's tail.
func crashExcerpt(console string) string {
	lines := strings.Split(strings.TrimRight(strings.ReplaceAll(console, "\r\n", "\n"), "\n"), "\n")
	first := -1
	for i, l := range lines {
		if slices.ContainsFunc(oopsOpeners, func(o string) bool { return strings.Contains(l, o) }) {
			first = i
			break
		}
	}
	const head, foot = 60, 15
	if first < 0 || len(lines)-first <= head+foot {
		if first < 0 {
			return tail(console, 40)
		}
		return strings.Join(lines[max(first-3, 0):], "\n")
	}
	out := slices.Clone(lines[max(first-3, 0) : first+head])
	out = append(out, fmt.Sprintf("        [... %d console lines ...]", len(lines)-foot-first-head))
	return strings.Join(append(out, lines[len(lines)-foot:]...), "\n")
}

func tail(s string, n int) string {
	s = strings.TrimRight(strings.ReplaceAll(s, "\r\n", "\n"), "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
