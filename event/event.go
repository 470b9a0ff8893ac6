// Package event defines the one module event that every consumer shares: the
// sensor produces it, `kmodguard watch` prints and records it, and the Falco
// plugin carries it as its event payload and extracts its fields.
//
// JSON keys are the plugin's field names without the "kmod." prefix.
//
// The binary form (codec.go) numbers every field: a field added to Event
// needs the next free number there too, or TestCodecCoversEveryField fails.
package event

// Syscall names the module syscall (or other origin) of an event.
type Syscall string

const (
	InitModule   Syscall = "init_module"
	FinitModule  Syscall = "finit_module"
	DeleteModule Syscall = "delete_module"
	// Guard marks an event that comes from a guard decision that no syscall
	// event was joined to (a load the sensor missed is itself a finding).
	Guard Syscall = "guard"
	// SensorLoss marks a synthetic event that reports module syscall
	// events the sensor lost (Lost, Throttled): it had no process and no
	// module, and nothing about it is judged.
	SensorLoss Syscall = "sensor_loss"
	// Present marks a module that was already loaded when the sensor
	// started (package inventory): no syscall, no caller; Path, the
	// digests and Inventory say which file it was tied to.
	Present Syscall = "present"
	// ModuleRequest marks an autoload request (request_module): the
	// kernel asked modprobe for Name (an alias such as net-pf-38) on
	// behalf of the process the event names. It has no result.
	ModuleRequest Syscall = "module_request"
	// ModuleLoad and ModuleFree come from the kernel's own
	// module:module_load and module:module_free tracepoints: a module
	// fully formed (signature checked, sysfs entries made) just before its
	// init runs, and a module freed (after delete_module, or when its
	// init failed). Name is struct module's, ModuleAddr its address, Taint
	// its taints, SigOK (module_load) the kernel's verdict on its
	// signature. They have no result; the load or unload syscall that
	// caused them has its own event.
	ModuleLoad Syscall = "module_load"
	ModuleFree Syscall = "module_free"
	// Hidden marks a module that the kernel's own structures show loaded
	// and live but that /proc/modules (or /sys/module) does not list: a
	// module that unlinked itself, as rootkits do (kmodguard scan, and
	// watch and the plugin when they re-check the set of modules). Name
	// and ModuleAddr name it, Hidden says where it was seen and where not.
	Hidden Syscall = "hidden"
)

// Verdicts of the guard, for Event.Verdict.
const (
	VerdictNone    = "none"
	VerdictAllowed = "allowed"
	VerdictBlocked = "blocked"
	VerdictAudit   = "audit"
)

// Event is one module syscall, joined with its result and enriched.
type Event struct {
	// TS is the enter time, in nanoseconds since the Unix epoch.
	TS      uint64  `json:"ts"`
	Syscall Syscall `json:"syscall"`
	// Res is the syscall's return value (0 or -errno), taken at sys_exit.
	Res int64 `json:"res"`

	// Module identity. For delete_module only Name is set.
	Name           string `json:"name,omitempty"`
	ThisModuleName string `json:"this_module_name,omitempty"`
	NameMismatch   bool   `json:"name_mismatch"`
	SHA256         string `json:"sha256,omitempty"`
	ELFSHA256      string `json:"elf_sha256,omitempty"`
	// Size is the init_module length argument, or the finit_module file size.
	Size uint64 `json:"size"`

	// Load arguments.
	Params string   `json:"params,omitempty"`
	Path   string   `json:"path,omitempty"`
	Flags  []string `json:"flags,omitempty"`
	// RawFlags is the flags argument as passed (finit_module, delete_module).
	RawFlags uint32 `json:"raw_flags"`
	FD       int32  `json:"fd,omitempty"`
	// What the kernel saw of the finit_module file. Mtime and Ctime are
	// nanoseconds since the Unix epoch; unlike mtime, ctime cannot be set
	// from user space (only moved by a write or a metadata change, or by
	// root changing the clock).
	Inode uint64 `json:"inode,omitempty"`
	Dev   uint64 `json:"dev,omitempty"`
	Mtime int64  `json:"mtime,omitempty"`
	Ctime int64  `json:"ctime,omitempty"`

	// Module metadata, from kmod.Inspect.
	Vermagic   string   `json:"vermagic,omitempty"`
	Srcversion string   `json:"srcversion,omitempty"`
	Depends    []string `json:"depends,omitempty"`
	Signed     bool     `json:"signed"`
	Signer     string   `json:"signer,omitempty"`
	// Taint is the kernel's taint letters for a loaded module (present
	// events: /sys/module/NAME/taint; E is an unsigned or unverified
	// module, O out of tree, P proprietary).
	Taint string `json:"taint,omitempty"`
	// SigOK is, on a module_load event, the kernel's own verdict on the
	// module's signature (struct module.sig_ok): true when it verified a
	// signature by a trusted key. Nil where the kernel has no module
	// signing (CONFIG_MODULE_SIG) and on other events. Signed, by
	// contrast, only says that an image carries a signature.
	SigOK *bool `json:"sig_ok,omitempty"`
	// ModuleAddr is, on module_load, module_free and hidden events, the
	// address of the kernel's struct module: the key that ties a free to
	// its load.
	ModuleAddr uint64 `json:"module_addr,omitempty"`
	// Hidden says, on a hidden event, which of the kernel's structures
	// show the module and which lists leave it out ("mod_tree, not in
	// /proc/modules, not in /sys/module").
	Hidden string `json:"hidden,omitempty"`
	// ParentKthread is set when the caller's parent is a kernel thread:
	// the kernel started the caller (a user-mode helper, such as the
	// modprobe of an autoload request). The sensor joins such loads to
	// their requests (Request*).
	ParentKthread bool `json:"parent_kthread,omitempty"`
	// RequestName, RequestPid and RequestComm name, on a load by the
	// kernel's modprobe, the autoload request that caused it: the alias
	// asked for and the process that asked (a module_request event).
	RequestName string `json:"request_name,omitempty"`
	RequestPid  uint32 `json:"request_pid,omitempty"`
	RequestComm string `json:"request_comm,omitempty"`
	// Inventory says, on a present event, how the loaded module was tied
	// to its file: "file:srcversion", "file:name", or "no file: why".
	Inventory string `json:"inventory,omitempty"`

	// Capture flags.
	Truncated   bool `json:"truncated"`
	Unreadable  bool `json:"unreadable"`
	FileChanged bool `json:"file_changed"`
	// ImageAtExit is set when an init_module image could not be read when
	// the syscall began (its pages were not resident) and was read once
	// the kernel had copied it: what the buffer held then, which another
	// thread could have rewritten since the kernel's copy.
	ImageAtExit bool `json:"image_at_exit,omitempty"`
	// ParamsAtExit is set when the params of an init_module or
	// finit_module could not be read when the syscall began (their page was
	// not resident) and were read once the kernel had copied them: what the
	// buffer held then, which another thread could have rewritten since.
	ParamsAtExit bool `json:"params_at_exit,omitempty"`

	// Policy. Allowed is nil when no allowlist is configured.
	Allowed        *bool  `json:"allowed,omitempty"`
	AllowlistEntry string `json:"allowlist_entry,omitempty"`
	// Verdict is the guard's decision when one was joined, else "none".
	Verdict string `json:"verdict,omitempty"`
	// GuardSHA256 is the guard's digest of the kernel's own copy.
	GuardSHA256 string `json:"guard_sha256,omitempty"`
	// TOCTOU is set when GuardSHA256 and the sensor's digest of the user
	// buffer differ.
	TOCTOU bool `json:"toctou"`
	// GuardReason is the guard's reason for its verdict, or, on a guard
	// event that reports the loss of the enforcer companion, why it was lost.
	GuardReason string `json:"guard_reason,omitempty"`

	// Process context.
	Pid      uint32 `json:"pid"`
	Tid      uint32 `json:"tid"`
	Ppid     uint32 `json:"ppid"`
	Comm     string `json:"comm"`
	Exe      string `json:"exe,omitempty"`
	Cmdline  string `json:"cmdline,omitempty"`
	UID      uint32 `json:"uid"`
	GID      uint32 `json:"gid"`
	LoginUID uint32 `json:"loginuid"`

	// Containment. PidNS, MntNS and UserNS are the inode numbers of the
	// caller's namespaces (as /proc/PID/ns/* shows them).
	CgroupID    uint64 `json:"cgroup_id,omitempty"`
	Cgroup      string `json:"cgroup,omitempty"`
	ContainerID string `json:"container_id,omitempty"`
	PidNS       uint32 `json:"pidns,omitempty"`
	MntNS       uint32 `json:"mntns,omitempty"`
	UserNS      uint32 `json:"userns,omitempty"`
	// HostNS is set when the caller runs in the initial PID namespace and
	// the initial user namespace: not in a container as far as namespaces
	// tell (ContainerID tells by cgroup). The mount namespace does not
	// count: systemd gives services a private one (udev's PrivateMounts=,
	// and PrivateTmp=, ProtectSystem=...) in the host's PID namespace.
	HostNS bool `json:"host_ns"`
	// HostMntNS says whether the caller runs in the initial mount
	// namespace (false: a private one, such as a sandboxed service's or a
	// container's). It is nil when the initial mount namespace is unknown.
	HostMntNS    *bool  `json:"host_mntns,omitempty"`
	CapEffective uint64 `json:"cap_effective"`

	// Loss report, on SensorLoss events only. Lost is the syscall events
	// the sensor's ring buffer refused since the previous report; Throttled
	// is the unprivileged calls over the rate limit since then, not
	// reported one by one.
	Lost      uint64 `json:"lost,omitempty"`
	Throttled uint64 `json:"throttled,omitempty"`

	// Coalesced, on an init_module event, is the calls of the same thread
	// with images the kernel cannot load (they fail its ELF header
	// checks) that the sensor folded instead of sending, since that
	// thread's previous event: a flood, which cannot crowd out the loads
	// that can succeed.
	Coalesced uint32 `json:"coalesced,omitempty"`
}

// Inode numbers of the kernel's initial namespaces, the same on every
// kernel kmodguard supports (include/linux/proc_ns.h): the initial PID and
// user namespaces have had them since Linux 3.8, the initial mount
// namespace since 6.18 (before, its number is dynamic).
const (
	InitPidNS  = 0xEFFFFFFC
	InitUserNS = 0xEFFFFFFD
	InitMntNS  = 0xEFFFFFF8
)

// OK reports whether the syscall succeeded.
func (e *Event) OK() bool { return e.Res == 0 }

// IsRequest reports whether e is about an autoload request: the sensor's
// module_request, or the guard's decision on one (Decision.Event: the
// alias in both Name and RequestName).
func (e *Event) IsRequest() bool {
	return e.Syscall == ModuleRequest || (e.Syscall == Guard && e.RequestName != "" && e.RequestName == e.Name)
}

// taintLetters are the kernel's taint flags by bit (kernel/panic.c
// taint_flags, include/linux/panic.h), as /sys/module/NAME/taint and
// /proc/sys/kernel/tainted name them.
var taintLetters = [...]byte{
	'P', 'F', 'S', 'R', 'M', 'B', 'U', 'D', 'A', 'W', 'C', 'I', 'O', 'E', 'L', 'K', 'X', 'T', 'N', 'J',
}

// TaintLetters turns a module's taint bits (struct module.taints) into the
// letters /sys/module/NAME/taint shows, in bit order; a bit with no known
// letter is shown as ?.
func TaintLetters(bits uint64) string {
	var b []byte
	for i := 0; i < 64; i++ {
		if bits&(1<<i) == 0 {
			continue
		}
		if i < len(taintLetters) {
			b = append(b, taintLetters[i])
		} else {
			b = append(b, '?')
		}
	}
	return string(b)
}
