//go:build linux

package enforcer

import (
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/lsm"
)

// preemptAdvice is what an operator can do about a kernel that skips a
// preempted guard.
const preemptAdvice = "boot with preempt=voluntary (or none) and keep it so, or run Linux 6.2 or later, where the kernel no longer skips a running LSM program"

// warnPreemption logs, at start, whether a module load can skip the guard
// on this kernel (lsm.Preemption): an error when it can now, a warning
// when root can make it so at run time. The enforcer starts either way,
// sealed or not: the guard still decides every load that does not
// preempt it, the seal still refuses every other way around it, and each
// skipped call is counted by the kernel and reported (checkSkipped).
// Refusing to start would leave such a host with no guard at all.
func (e *Enforcer) warnPreemption(seal bool) {
	p := lsm.DetectPreemption()
	fields := logrus.Fields{
		"kernel": e.cfg.Release, "preempt_model": p.Model, "preempt_model_from": p.ModelFrom,
		"skips_busy_lsm": p.SkipsBusy, "skips_busy_from": p.SkipsBusyFrom, "sealed": seal,
	}
	switch {
	case p.Exposed():
		e.log.WithFields(fields).Error("this kernel skips a guard program that is already running on a CPU, and lets it be preempted: " +
			"a module load that preempts the guard while it decides another (a large image) on the same CPU is admitted undecided. " +
			"Each skip is reported (recursion misses); to close it, " + preemptAdvice)
	case p.Switchable():
		e.log.WithFields(fields).Warn("this kernel skips a guard program that is already running on a CPU: it is not preemptible now, " +
			"but root can switch it to preempt=full at run time (/sys/kernel/debug/sched/preempt), and then a load that preempts the guard is admitted undecided; " +
			"each skip is reported (recursion misses)")
	}
}

// skipWatch is what checkSkipped saw last, and where it looks.
type skipWatch struct {
	misses  map[string]uint64
	exposed bool
	failed  bool
	checked bool // a check ran (the start logged the model)
	// read and detect are the guard's RecursionMisses and
	// lsm.DetectPreemption, replaced in tests.
	read   func() ([]lsm.ProgramMisses, error)
	detect func() lsm.Preemption
}

// checkSkipped reads the guard programs' recursion misses and logs, and
// reports (event.ReportSkipped), every call the kernel skipped since the
// last check; at the first check, every one since the guard was loaded.
// It also logs when the kernel becomes exposed (lsm.Preemption.Exposed):
// root switched the preemption model at run time.
func (e *Enforcer) checkSkipped(w *skipWatch) {
	if w.read == nil {
		w.read = e.guard.RecursionMisses
	}
	if w.detect == nil {
		w.detect = lsm.DetectPreemption
	}
	p := w.detect()
	if p.Exposed() != w.exposed {
		if p.Exposed() && w.checked {
			e.log.WithFields(logrus.Fields{"preempt_model": p.Model, "preempt_model_from": p.ModelFrom}).
				Error("the kernel's preemption model changed: a module load that preempts the guard is now admitted undecided; " + preemptAdvice)
		}
		w.exposed = p.Exposed()
	}
	w.checked = true
	ms, err := w.read()
	if err != nil {
		if !w.failed {
			// Only a kernel that skips makes the misses matter.
			log := e.log.WithError(err)
			if p.SkipsBusy {
				log.Warn("cannot read the guard programs' recursion misses: calls the kernel skips go unreported")
			} else {
				log.Info("cannot read the guard programs' recursion misses (this kernel does not skip a running guard program)")
			}
		}
		w.failed = true
		return
	}
	w.failed = false
	if w.misses == nil {
		w.misses = map[string]uint64{}
	}
	for _, m := range ms {
		n := m.Misses - w.misses[m.Hook]
		if m.Misses < w.misses[m.Hook] {
			n = m.Misses // another program now (re-attached)
		}
		w.misses[m.Hook] = m.Misses
		if n == 0 {
			continue
		}
		e.log.WithFields(logrus.Fields{"hook": m.Hook, "prog_id": m.ProgID, "recursion_misses": m.Misses, "new": n}).
			Error("the kernel skipped a guard program because it was already running on that CPU (preempted): " +
				"each skipped call of a module hook admitted a load undecided, of a seal hook a bpf, mount or unlink call unchecked; " + preemptAdvice)
		e.report(Report{
			Time: time.Now(), Kind: event.ReportSkipped, Count: n,
			Reason: fmt.Sprintf("skipped: the kernel skipped guard program %s (prog %d) %d more time(s), %d in all: "+
				"the calls it skipped were not decided", m.Hook, m.ProgID, n, m.Misses),
		})
	}
}
