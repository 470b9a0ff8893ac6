//go:build linux

package enforcer

import (
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/lsm"
)

// Event turns a decision into the shared module event, for consumers (the
// Falco plugin, logs) that join it to sensor events by tid and time. Seal
// refusals and decisions on a module load without a joined syscall event
// carry event.Guard as their syscall.
func Event(d Decision) *event.Event {
	ev := &event.Event{
		TS:             uint64(d.Time.UnixNano()),
		Syscall:        event.Guard,
		Res:            int64(d.Ret),
		Name:           d.Name,
		ThisModuleName: d.ThisModuleName,
		NameMismatch:   d.NameMismatch,
		GuardSHA256:    d.SHA256,
		GuardReason:    d.Reason,
		Size:           d.Size,
		AllowlistEntry: d.Entry,
		Pid:            d.Pid,
		Tid:            d.Tid,
		UID:            d.UID,
		Comm:           d.Comm,
	}
	switch d.Op {
	case lsm.OpInitModule:
		ev.Syscall = event.InitModule
	case lsm.OpFinitModule:
		ev.Syscall = event.FinitModule
	}
	switch d.Verdict {
	case lsm.Allowed:
		ev.Verdict = event.VerdictAllowed
	case lsm.Blocked:
		ev.Verdict = event.VerdictBlocked
	case lsm.Audit:
		ev.Verdict = event.VerdictAudit
	default:
		// Not a decision (lsm.OpMissing, lsm.OpOverride): the guard's
		// view is incomplete, or the guard can be bypassed.
		ev.Verdict = event.VerdictNone
	}
	if d.Op == lsm.OpInitModule || d.Op == lsm.OpFinitModule {
		allowed := d.Verdict == lsm.Allowed
		ev.Allowed = &allowed
	}
	return ev
}
