package event

import "time"

// GuardMessage is one item of the guard's stream, as the enforcer serves
// it: a Decision of the guard, or a Report about the guard. Consumers
// switch on the type.
type GuardMessage interface {
	// Event is the module event that carries the message to Falco on its
	// own (kmod.syscall "guard").
	Event() *Event
	guardMessage()
}

// Op says what a guard decision is about: a module load, or what a sealed
// guard refused.
type Op string

// Ops of Decision.Op.
const (
	OpInitModule  Op = "init_module"
	OpFinitModule Op = "finit_module"
	OpBPF         Op = "bpf"
	OpUnlink      Op = "unlink"
	OpRename      Op = "rename"
	OpUmount      Op = "umount"
	OpKexec       Op = "kexec"
	// OpMount is a mount (MS_MOVE, move_mount) refused by the seal.
	OpMount Op = "mount"
	// OpModuleRequest is an autoload request (request_module) whose alias
	// matches the allowlist's spec.autoload.deny: Name is the alias,
	// Entry the pattern.
	OpModuleRequest Op = "module_request"
)

// Verdict is the guard's answer: VerdictAllowed, VerdictBlocked or
// VerdictAudit (a load that enforce mode would have blocked).
type Verdict string

// Decision is one decision of the guard: the one type from the kernel's
// ring buffer (package lsm) through the companion to the Falco plugin.
type Decision struct {
	Time    time.Time `json:"time"`
	Op      Op        `json:"op"`
	Verdict Verdict   `json:"verdict"`
	Reason  string    `json:"reason"`
	// Ret is what the hook returned: 0 or -EPERM.
	Ret int32 `json:"ret"`

	// Module loads. SHA256 is the digest of the kernel's own copy of the
	// image (init_module) or of the file as read (finit_module; compressed
	// when the kernel decompresses); Entry names the allowlist entry that
	// admitted the module.
	SHA256         string `json:"sha256,omitempty"`
	Name           string `json:"name,omitempty"`
	ThisModuleName string `json:"this_module_name,omitempty"`
	NameMismatch   bool   `json:"name_mismatch,omitempty"`
	Compressed     bool   `json:"compressed,omitempty"`
	Entry          string `json:"entry,omitempty"`
	Size           uint64 `json:"size,omitempty"`
	Generation     uint64 `json:"generation"`

	// Seal refusals: the map or link id (with the bpf command in the high
	// 32 bits), the inode, the bpffs device or the kexec id.
	Object uint64 `json:"object,omitempty"`
	Sealed bool   `json:"sealed"`

	Pid  uint32 `json:"pid"`
	Tid  uint32 `json:"tid"`
	UID  uint32 `json:"uid"`
	Comm string `json:"comm"`
}

func (Decision) guardMessage() {}

// IsLoad reports whether d decides a module load (rather than a seal
// refusal).
func (d *Decision) IsLoad() bool { return d.Op == OpInitModule || d.Op == OpFinitModule }

// Syscall is the module syscall d decides, "" for a seal refusal.
func (d *Decision) Syscall() Syscall {
	switch d.Op {
	case OpInitModule:
		return InitModule
	case OpFinitModule:
		return FinitModule
	}
	return ""
}

// Join sets the guard's view on the sensor's event e of the same load.
// TOCTOU is set when the guard's digest of the kernel's copy differs from
// the sensor's digest of what user space passed (init_module) or what the
// file held when the sensor read it (finit_module). The sensor sets its
// digest only from a whole image, so a missing digest is never taken for a
// swap.
func (d *Decision) Join(e *Event) {
	e.Verdict = verdictOf(d.Verdict)
	e.GuardSHA256 = d.SHA256
	e.GuardReason = d.Reason
	e.TOCTOU = d.SHA256 != "" && e.SHA256 != "" && d.SHA256 != e.SHA256 && d.SHA256 != e.ELFSHA256
}

// Event is the event of a decision that no sensor event was joined to: a
// load the sensor missed, or a seal refusal.
func (d Decision) Event() *Event {
	e := &Event{
		Syscall:        Guard,
		Res:            int64(d.Ret),
		Name:           d.Name,
		ThisModuleName: d.ThisModuleName,
		NameMismatch:   d.NameMismatch,
		GuardSHA256:    d.SHA256,
		// The kernel's copy is the only image there is: its digest also
		// stands as the event's, so that kmod.allowed judges it.
		SHA256:         d.SHA256,
		Size:           d.Size,
		AllowlistEntry: d.Entry,
		Verdict:        verdictOf(d.Verdict),
		GuardReason:    d.Reason,
		Pid:            d.Pid,
		Tid:            d.Tid,
		UID:            d.UID,
		Comm:           d.Comm,
	}
	if !d.Time.IsZero() {
		e.TS = uint64(d.Time.UnixNano())
	}
	if d.IsLoad() {
		allowed := d.Verdict == VerdictAllowed
		e.Allowed = &allowed
	}
	if d.Op == OpModuleRequest {
		// The alias asked for, as the sensor's module_request names it
		// (Event.IsRequest); the guard reports only requests it denies
		// (or would, in audit mode), so never allowed. Entry is the
		// pattern, not an allowlist entry.
		no := false
		e.RequestName, e.Allowed, e.AllowlistEntry = d.Name, &no, ""
	}
	return e
}

func verdictOf(v Verdict) string {
	switch v {
	case VerdictAllowed, VerdictBlocked, VerdictAudit:
		return string(v)
	}
	return VerdictNone
}

// ReportKind says what a Report is about.
type ReportKind string

const (
	// ReportMissing: decisions another process consumed from the guard's
	// ring buffer before the enforcer read them (Count of them).
	ReportMissing ReportKind = "decisions_missing"
	// ReportOverride: a BPF program that can decide the guard's hooks
	// before it, and admit what it refuses (LinkID is its link). Reason
	// starts with "override: ".
	ReportOverride ReportKind = "guard_overridden"
	// ReportSkipped: calls to the guard's programs that the kernel skipped
	// because the program was already running on that CPU (Count more of
	// them, its recursion_misses). Before Linux 6.2 a skipped module hook
	// admits the load undecided.
	ReportSkipped ReportKind = "guard_skipped"
)

// Report is what the enforcer reports about the guard that is not one of
// its decisions: the guard's view is incomplete, or it can be bypassed.
type Report struct {
	Time   time.Time  `json:"time"`
	Kind   ReportKind `json:"kind"`
	Reason string     `json:"reason"`
	// Count is how many decisions were found missing (ReportMissing), or
	// how many more calls were skipped (ReportSkipped).
	Count uint64 `json:"count,omitempty"`
	// LinkID is the overriding program's link (ReportOverride).
	LinkID uint32 `json:"link_id,omitempty"`
	// The process that found it (the enforcer), when it says.
	Pid  uint32 `json:"pid,omitempty"`
	UID  uint32 `json:"uid,omitempty"`
	Comm string `json:"comm,omitempty"`
}

func (Report) guardMessage() {}

// Event is the event that carries r to Falco: kmod.syscall "guard",
// kmod.verdict "none", and r's reason.
func (r Report) Event() *Event {
	// As a decision on no module, with no verdict, would be.
	return Decision{Time: r.Time, Reason: r.Reason, Pid: r.Pid, Tid: r.Pid, UID: r.UID, Comm: r.Comm}.Event()
}
