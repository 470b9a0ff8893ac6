// Package preflight says, for the running host, which parts of kmodguard
// will work and why the others will not. Every answer comes from the kernel
// itself where it can: the sensor's own programs are loaded (and, for
// fentry, attached once) through the verifier exactly as `watch` and the
// plugin load them, and nothing is left behind.
package preflight

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/kmodguard/kmodguard/bpf"
	"github.com/kmodguard/kmodguard/internal/kfloor"
	"github.com/kmodguard/kmodguard/lsm"
)

// Status is a check's outcome.
type Status string

const (
	OK   Status = "ok"
	Warn Status = "warn" // works, with a limit worth knowing
	Fail Status = "fail"
	Info Status = "info" // a fact, no verdict
)

// Check is one line of the report.
type Check struct {
	Name   string `json:"name"`
	Status Status `json:"status"`
	Detail string `json:"detail"`
	// Needed says what a failure rules out: "detection", "enforcement",
	// "fentry" (the sensor's cheaper hook); empty for facts.
	Needed []string `json:"needed_for,omitempty"`
}

// Report is the whole preflight.
type Report struct {
	Kernel string  `json:"kernel"`
	Arch   string  `json:"arch"`
	Checks []Check `json:"checks"`
	// Detection: the sensor loads (so `watch` and the Falco plugin work).
	Detection bool `json:"detection"`
	// SensorHook is the hook the sensor would use by default, and
	// SensorResults where its results would come from (fexit, sys_exit).
	SensorHook    string `json:"sensor_hook,omitempty"`
	SensorResults string `json:"sensor_results,omitempty"`
	// Fentry: the sensor's fentry mode loads and attaches.
	Fentry bool `json:"fentry"`
	// Enforcement: the guard can run (BPF LSM active and loading).
	Enforcement bool `json:"enforcement"`
}

// Paths the checks read, variables so that tests can point them elsewhere.
var (
	lockdownFile   = "/sys/kernel/security/lockdown"
	sigEnforceFile = "/sys/module/module/parameters/sig_enforce"
	modulesFile    = "/proc/modules"
	btfFile        = "/sys/kernel/btf/vmlinux"
	preemptFile    = "/sys/kernel/debug/sched/preempt"
)

// Run probes the host. It needs root (or CAP_BPF, CAP_PERFMON and, for the
// guard's checks, CAP_SYS_ADMIN) to say more than "no privileges".
func Run() *Report {
	r := &Report{Kernel: kfloor.Release(), Arch: runtime.GOARCH}
	add := func(c Check) { r.Checks = append(r.Checks, c) }

	base := true
	if err := bpf.CheckPrivileges(); err != nil {
		base = false
		add(Check{Name: "privileges", Status: Fail, Detail: err.Error(), Needed: []string{"detection", "enforcement"}})
	} else {
		add(Check{Name: "privileges", Status: OK, Detail: "may load BPF programs"})
	}
	if _, err := os.Stat(btfFile); err != nil {
		base = false
		add(Check{Name: "kernel BTF", Status: Fail, Detail: fmt.Sprintf("%s: %v (needs CONFIG_DEBUG_INFO_BTF=y)", btfFile, err), Needed: []string{"detection", "enforcement"}})
	} else {
		add(Check{Name: "kernel BTF", Status: OK, Detail: btfFile})
	}
	if base {
		if err := kfloor.Check("kmodguard"); err != nil {
			base = false
			add(Check{Name: "kernel floor", Status: Fail, Detail: err.Error(), Needed: []string{"detection", "enforcement"}})
		} else {
			add(Check{Name: "kernel floor", Status: OK, Detail: "BPF ring buffer and bpf_loop (Linux " + kfloor.Min + "+)"})
		}
	}
	add(lockdown())

	if base {
		r.sensor(add)
		r.guard(add)
	}

	if _, err := os.Stat(modulesFile); err != nil {
		add(Check{Name: "module support", Status: Warn, Detail: "no " + modulesFile + ": this kernel is built without modules (CONFIG_MODULES unset); the module syscalls fail with ENOSYS, and there is nothing to guard"})
	} else {
		add(Check{Name: "module support", Status: OK, Detail: "the kernel loads modules"})
	}
	add(sigEnforce())
	if b, err := os.ReadFile(preemptFile); err == nil {
		add(Check{Name: "preemption model", Status: Info, Detail: strings.TrimSpace(string(b)) + " (the selected model is in brackets)"})
	}
	return r
}

// sensor loads the sensor in each mode, as watch and the plugin would.
func (r *Report) sensor(add func(Check)) {
	for _, h := range []bpf.Hook{bpf.HookBTF, bpf.HookRaw} {
		exit, err := loadSensor(h, nil)
		if err == nil {
			r.Detection = true
			if r.SensorHook == "" {
				r.SensorHook, r.SensorResults = string(h), string(exit)
			}
			add(Check{Name: "sensor " + string(h), Status: OK, Detail: "the sensor's programs load; results from " + string(exit)})
			continue
		}
		add(Check{Name: "sensor " + string(h), Status: Fail, Detail: err.Error(), Needed: []string{"detection"}})
	}
	var why error
	_, err := loadSensor(bpf.HookFentry, &why)
	switch {
	case err == nil && why == nil:
		r.Fentry = true
		add(Check{Name: "sensor fentry", Status: OK, Detail: "fentry/fexit load and attach on the syscall functions: unrelated syscalls pay nothing"})
	case why != nil:
		add(Check{Name: "sensor fentry", Status: Warn, Detail: fmt.Sprintf("refused, the sensor falls back to the tracepoints: %v", why), Needed: []string{"fentry"}})
	default:
		add(Check{Name: "sensor fentry", Status: Fail, Detail: err.Error(), Needed: []string{"fentry"}})
	}
}

// loadSensor loads and closes a sensor on hook h. For HookFentry, which
// falls back to the tracepoints by itself, *fellBack receives why fentry
// was refused.
func loadSensor(h bpf.Hook, fellBack *error) (bpf.ExitSide, error) {
	log := logrus.New()
	log.SetOutput(discard{})
	var refused []error
	log.AddHook(refusals{&refused})
	s, err := bpf.NewSensor(bpf.Config{Hook: h, RingBufferSize: 1 << 20, ImageCap: 1 << 19, Logger: log})
	if err != nil {
		return "", err
	}
	defer s.Close()
	if fellBack != nil && s.Hook() != h {
		*fellBack = errors.Join(refused...)
		if *fellBack == nil {
			*fellBack = fmt.Errorf("fell back to %s", s.Hook())
		}
	}
	return s.ExitSide(), nil
}

// guard checks what the BPF LSM guard needs.
func (r *Report) guard(add func(Check)) {
	err := lsm.Supported()
	if err != nil {
		add(Check{Name: "BPF LSM", Status: Fail, Detail: err.Error(), Needed: []string{"enforcement"}})
		return
	}
	add(Check{Name: "BPF LSM", Status: OK, Detail: "bpf is an active LSM and LSM programs load"})
	r.Enforcement = true
	if runtime.GOARCH == "arm64" && !r.Fentry {
		// The guard's hooks attach through the same BPF trampolines as
		// fentry: where fentry cannot attach, neither can they.
		r.Enforcement = false
		add(Check{Name: "BPF trampolines", Status: Fail, Detail: "fentry does not attach here, so LSM programs cannot either (arm64 needs CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS)", Needed: []string{"enforcement"}})
	}
}

func lockdown() Check {
	b, err := os.ReadFile(lockdownFile)
	if err != nil {
		return Check{Name: "lockdown", Status: Info, Detail: "no " + lockdownFile + " (lockdown LSM absent, or securityfs not mounted)"}
	}
	mode := bracketed(string(b))
	switch mode {
	case "none", "":
		return Check{Name: "lockdown", Status: OK, Detail: "none"}
	case "integrity":
		return Check{Name: "lockdown", Status: OK, Detail: "integrity: BPF reads of kernel memory still allowed"}
	default:
		return Check{Name: "lockdown", Status: Fail, Detail: mode + ": the kernel refuses BPF reads of kernel memory, which the sensor and the guard need", Needed: []string{"detection", "enforcement"}}
	}
}

func sigEnforce() Check {
	b, err := os.ReadFile(sigEnforceFile)
	if err != nil {
		return Check{Name: "module signatures", Status: Info, Detail: "no " + sigEnforceFile + " (CONFIG_MODULE_SIG unset): the kernel does not check signatures"}
	}
	if strings.TrimSpace(string(b)) == "Y" {
		return Check{Name: "module signatures", Status: Info, Detail: "enforced by the kernel (module.sig_enforce): unsigned modules are refused before the guard"}
	}
	return Check{Name: "module signatures", Status: Info, Detail: "not enforced: the kernel loads unsigned modules (tainting); the allowlist is what refuses them"}
}

// bracketed returns the [selected] word of a sysfs choice list.
func bracketed(s string) string {
	if _, after, ok := strings.Cut(s, "["); ok {
		if sel, _, ok := strings.Cut(after, "]"); ok {
			return sel
		}
	}
	return strings.TrimSpace(s)
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// refusals collects the errors the sensor logs while it falls back.
type refusals struct{ errs *[]error }

func (refusals) Levels() []logrus.Level { return []logrus.Level{logrus.WarnLevel, logrus.DebugLevel} }
func (h refusals) Fire(e *logrus.Entry) error {
	if err, ok := e.Data[logrus.ErrorKey].(error); ok {
		*h.errs = append(*h.errs, err)
	}
	return nil
}
