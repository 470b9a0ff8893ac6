package plugin

import (
	"strconv"
	"strings"

	"github.com/falcosecurity/plugin-sdk-go/pkg/sdk"
)

// Field IDs are indexes into fieldList: Falco passes the index back with
// every extraction request, so extraction is a switch on a small integer.
const (
	fieldSyscall = iota
	fieldRes
	fieldOK
	fieldName
	fieldThisModuleName
	fieldNameMismatch
	fieldSHA256
	fieldELFSHA256
	fieldSize
	fieldParams
	fieldPath
	fieldFlags
	fieldVermagic
	fieldSrcversion
	fieldDepends
	fieldSigned
	fieldSigner
	fieldTruncated
	fieldUnreadable
	fieldImageAtExit
	fieldParamsAtExit
	fieldFileChanged
	fieldAllowed
	fieldAllowlistEntry
	fieldVerdict
	fieldGuardSHA256
	fieldTOCTOU
	fieldPid
	fieldTid
	fieldPpid
	fieldComm
	fieldExe
	fieldCmdline
	fieldUID
	fieldGID
	fieldLoginUID
	fieldCgroup
	fieldContainerID
	fieldHostNS
	fieldHostMntNS
	fieldPidNS
	fieldMntNS
	fieldUserNS
	fieldCapEffective
	fieldGuardReason
	fieldLost
	fieldThrottled
	fieldCoalesced
	fieldTaint
	fieldInventory
	fieldRequestName
	fieldRequestPid
	fieldRequestComm
	fieldSigOK
	fieldModuleAddr
	fieldHidden
	numFields
)

const (
	typeString = "string"
	typeUint64 = "uint64"
	typeBool   = "bool"
)

var fieldList = [numFields]sdk.FieldEntry{
	fieldSyscall: {Type: typeString, Name: "kmod.syscall", Display: "Syscall",
		Desc: "The module syscall: init_module, finit_module or delete_module (guard for a guard decision that no syscall was joined to, sensor_loss for a report of events the sensor lost, present for a module already loaded when the live sensor started, module_request for an autoload request: the kernel asked modprobe for kmod.name on behalf of the process the event names, module_load and module_free for the kernel's own record of a module formed or freed, hidden for a live module that /proc/modules or /sys/module leaves out)."},
	fieldRes: {Type: typeString, Name: "kmod.res", Display: "Result",
		Desc: "The syscall's result like Falco's evt.res: SUCCESS, or the errno name (ENOSYS, EPERM, EEXIST...)."},
	fieldOK: {Type: typeBool, Name: "kmod.ok", Display: "Succeeded",
		Desc: "True when the syscall returned 0."},
	fieldName: {Type: typeString, Name: "kmod.name", Display: "Module name",
		Desc: "The .modinfo name= of the module (the name module_blacklist= checks); for delete_module, the name asked for."},
	fieldThisModuleName: {Type: typeString, Name: "kmod.this_module_name", Display: "Registered name",
		Desc: "struct module.name from .gnu.linkonce.this_module: the name the module actually registers under."},
	fieldNameMismatch: {Type: typeBool, Name: "kmod.name_mismatch", Display: "Name mismatch",
		Desc: "True when kmod.name and kmod.this_module_name differ: a forged module (kbuild writes the same name into both)."},
	fieldSHA256: {Type: typeString, Name: "kmod.sha256", Display: "SHA-256",
		Desc: "Hex SHA-256 of the image as passed to the kernel (the init_module buffer, or the finit_module file, compressed or not)."},
	fieldELFSHA256: {Type: typeString, Name: "kmod.elf_sha256", Display: "ELF SHA-256",
		Desc: "Hex SHA-256 of the ELF image after decompression (equals kmod.sha256 for an uncompressed module)."},
	fieldSize: {Type: typeUint64, Name: "kmod.size", Display: "Image size",
		Desc: "init_module's length argument, or the size of the finit_module file, in bytes."},
	fieldParams: {Type: typeString, Name: "kmod.params", Display: "Parameters",
		Desc: "The module parameter string passed to the load (\"numdummies=3\")."},
	fieldPath: {Type: typeString, Name: "kmod.path", Display: "File path",
		Desc: "Path of the file behind finit_module's descriptor."},
	fieldFlags: {Type: typeString, IsList: true, Name: "kmod.flags", Display: "Flags",
		Desc: "Names of the flags argument: MODULE_INIT_* for finit_module, O_NONBLOCK and O_TRUNC (forced unload) for delete_module."},
	fieldVermagic: {Type: typeString, Name: "kmod.vermagic", Display: "Vermagic",
		Desc: "The module's vermagic= string (kernel release and build options it was built for)."},
	fieldSrcversion: {Type: typeString, Name: "kmod.srcversion", Display: "Source version",
		Desc: "The module's srcversion= (a digest of its source)."},
	fieldDepends: {Type: typeString, IsList: true, Name: "kmod.depends", Display: "Dependencies",
		Desc: "Modules this module depends on (.modinfo depends=)."},
	fieldSigned: {Type: typeBool, Name: "kmod.signed", Display: "Signed",
		Desc: "True when the image carries an appended module signature (not verified against the kernel keyring)."},
	fieldSigner: {Type: typeString, Name: "kmod.signer", Display: "Signer",
		Desc: "Signer named in the module signature, when it can be parsed."},
	fieldTruncated: {Type: typeBool, Name: "kmod.truncated", Display: "Capture truncated",
		Desc: "True when the image was larger than the capture cap, so digests and metadata are missing."},
	fieldUnreadable: {Type: typeBool, Name: "kmod.unreadable", Display: "Image unreadable",
		Desc: "True when the sensor could read no complete image, neither at syscall entry nor at exit (bad pointer, huge length, unreadable file), or could not read the params string, neither at entry nor at exit."},
	fieldImageAtExit: {Type: typeBool, Name: "kmod.image_at_exit", Display: "Image read at exit",
		Desc: "True when the init_module image was not resident at syscall entry and was read at syscall exit, after the kernel's copy: it is what the buffer held then, not necessarily what the kernel copied, so kmod.allowed is false."},
	fieldParamsAtExit: {Type: typeBool, Name: "kmod.params_at_exit", Display: "Params read at exit",
		Desc: "True when the params string of init_module or finit_module was not resident at syscall entry and was read at syscall exit, after the kernel's copy: it is what the buffer held then, which another thread could have rewritten since the kernel copied it."},
	fieldFileChanged: {Type: typeBool, Name: "kmod.file_changed", Display: "File changed",
		Desc: "True when the finit_module file changed between the syscall and the sensor's read of it: its inode, device, size, mtime or ctime differ from what the kernel saw. The ctime catches an owner who rewrites the file in place and sets the mtime back; root can still set the clock, and only the guard's digest of the kernel's own copy (kmod.toctou) holds against that."},
	fieldAllowed: {Type: typeBool, Name: "kmod.allowed", Display: "Allowlisted",
		Desc: "True when the module is on the plugin's allowlist (both names and, for pinned entries, a digest) and the load meets the list's requirements (requireHostNamespaces: kmod.host_ns; requireModuleSignature: kmod.signed). On an autoload request (module_request, or the guard's refusal of one): false when the alias matches the list's autoload.deny, true when not, no value when the list has none. No value when no allowlist is configured."},
	fieldAllowlistEntry: {Type: typeString, Name: "kmod.allowlist_entry", Display: "Allowlist entry",
		Desc: "Name of the allowlist entry that admitted the module."},
	fieldVerdict: {Type: typeString, Name: "kmod.verdict", Display: "Guard verdict",
		Desc: "The BPF LSM guard's decision: allowed, blocked, audit, or none when no guard decision was joined."},
	fieldGuardSHA256: {Type: typeString, Name: "kmod.guard_sha256", Display: "Guard SHA-256",
		Desc: "Hex SHA-256 that the guard computed over the kernel's own copy of the image."},
	fieldTOCTOU: {Type: typeBool, Name: "kmod.toctou", Display: "Image swapped",
		Desc: "True when the guard's digest of the kernel's copy differs from the sensor's digest of the user buffer: the image changed during the load."},
	fieldPid: {Type: typeUint64, Name: "kmod.pid", Display: "Process ID",
		Desc: "Thread group ID of the caller."},
	fieldTid: {Type: typeUint64, Name: "kmod.tid", Display: "Thread ID",
		Desc: "Thread ID of the caller."},
	fieldPpid: {Type: typeUint64, Name: "kmod.ppid", Display: "Parent process ID",
		Desc: "Thread group ID of the caller's parent."},
	fieldComm: {Type: typeString, Name: "kmod.comm", Display: "Command",
		Desc: "The caller's comm (task name, at most 15 characters)."},
	fieldExe: {Type: typeString, Name: "kmod.exe", Display: "Executable",
		Desc: "Path of the caller's executable."},
	fieldCmdline: {Type: typeString, Name: "kmod.cmdline", Display: "Command line",
		Desc: "The caller's command line, arguments separated by spaces."},
	fieldUID: {Type: typeUint64, Name: "kmod.uid", Display: "User ID",
		Desc: "The caller's real user ID."},
	fieldGID: {Type: typeUint64, Name: "kmod.gid", Display: "Group ID",
		Desc: "The caller's real group ID."},
	fieldLoginUID: {Type: typeUint64, Name: "kmod.loginuid", Display: "Login user ID",
		Desc: "The audit login user ID of the caller (4294967295 when unset)."},
	fieldCgroup: {Type: typeString, Name: "kmod.cgroup", Display: "Cgroup",
		Desc: "The caller's cgroup v2 path."},
	fieldContainerID: {Type: typeString, Name: "kmod.container_id", Display: "Container ID",
		Desc: "Container ID taken from the cgroup path (12 hex characters), when the caller runs in a container."},
	fieldHostNS: {Type: typeBool, Name: "kmod.host_ns", Display: "Host namespaces",
		Desc: "True when the caller runs in the initial PID namespace and the initial user namespace; false in a container's (unshare -p, a user namespace). The mount namespace does not count: udev (PrivateMounts=yes) and services with PrivateTmp= or ProtectSystem= have private ones on the host (see kmod.host_mntns). A container's cgroup is kmod.container_id."},
	fieldHostMntNS: {Type: typeBool, Name: "kmod.host_mntns", Display: "Host mount namespace",
		Desc: "True when the caller runs in the initial mount namespace, false in a private one (a sandboxed service's, udev's, a container's), where kmod.path is the caller's view. No value when the initial mount namespace is unknown (before Linux 6.18, with /proc/1/ns/mnt unreadable)."},
	fieldPidNS: {Type: typeUint64, Name: "kmod.pidns", Display: "PID namespace",
		Desc: "Inode number of the caller's PID namespace, as /proc/PID/ns/pid shows it (4026531836 is the initial one)."},
	fieldMntNS: {Type: typeUint64, Name: "kmod.mntns", Display: "Mount namespace",
		Desc: "Inode number of the caller's mount namespace, as /proc/PID/ns/mnt shows it."},
	fieldUserNS: {Type: typeUint64, Name: "kmod.userns", Display: "User namespace",
		Desc: "Inode number of the caller's user namespace, as /proc/PID/ns/user shows it (4026531837 is the initial one)."},
	fieldCapEffective: {Type: typeString, Name: "kmod.cap_effective", Display: "Effective capabilities",
		Desc: "The caller's effective capabilities as names separated by spaces, like Falco's thread.cap_effective (\"CAP_SYS_MODULE CAP_SYS_ADMIN\")."},
	fieldGuardReason: {Type: typeString, Name: "kmod.guard_reason", Display: "Guard reason",
		Desc: "Why the guard decided as it did (\"not on the allowlist\", \"digest listed under another module name\", ...); on a guard event with kmod.verdict none, why the enforcer companion was lost."},
	fieldLost: {Type: typeUint64, Name: "kmod.lost", Display: "Events lost",
		Desc: "On a sensor_loss event, the module syscall events the sensor's ring buffer refused since the previous report: the sensor was blind to them. No value on other events."},
	fieldThrottled: {Type: typeUint64, Name: "kmod.throttled", Display: "Calls throttled",
		Desc: "On a sensor_loss event, the module syscalls of unprivileged callers over the sensor's rate limit since the previous report, not reported one by one. No value on other events."},
	fieldCoalesced: {Type: typeUint64, Name: "kmod.coalesced", Display: "Junk calls coalesced",
		Desc: "On an init_module event, the calls of the same thread with images the kernel cannot load (they fail its ELF header checks) that the sensor folded into this event since the thread's previous one: a flood of junk, sent at most once a second per thread so that it cannot crowd out real loads. 0 when none; no value on other syscalls."},
	fieldTaint: {Type: typeString, Name: "kmod.taint", Display: "Module taint",
		Desc: "On present, module_load and module_free events, the kernel's taint letters for the module (/sys/module/NAME/taint, or struct module.taints): E unsigned or not verified, O out of tree, P proprietary, F forced. Empty when untainted; no value on other syscalls."},
	fieldRequestName: {Type: typeString, Name: "kmod.request_name", Display: "Autoload alias",
		Desc: "On a load by the kernel's modprobe (request_module), the alias asked for (net-pf-38, fs-cramfs), joined from the module_request event that caused it within 30 s."},
	fieldRequestPid: {Type: typeUint64, Name: "kmod.request_pid", Display: "Autoload requester pid",
		Desc: "On a load by the kernel's modprobe, the pid of the process whose request caused it (see kmod.request_name)."},
	fieldRequestComm: {Type: typeString, Name: "kmod.request_comm", Display: "Autoload requester",
		Desc: "On a load by the kernel's modprobe, the comm of the process whose request caused it (see kmod.request_name)."},
	fieldSigOK: {Type: typeBool, Name: "kmod.sig_ok", Display: "Signature verified by the kernel",
		Desc: "On a module_load event, the kernel's own verdict on the module's signature (struct module.sig_ok): true when it verified a signature by a trusted key, false when the module is unsigned or its signature did not verify (the kernel then taints it E unless it refused the load). No value where the kernel has no module signing, and on other events. kmod.signed, by contrast, only says that the image carries a signature."},
	fieldModuleAddr: {Type: typeUint64, Name: "kmod.module_addr", Display: "struct module address",
		Desc: "On module_load, module_free and hidden events, the address of the kernel's struct module for the module: the key that ties a module_free to its module_load."},
	fieldHidden: {Type: typeString, Name: "kmod.hidden", Display: "Hidden from",
		Desc: "On a hidden event, where the kernel's own structures showed the live module and which lists leave it out, e.g. 'in mod_tree; not in /proc/modules, not in /sys/module'."},
	fieldInventory: {Type: typeString, Name: "kmod.inventory", Display: "Tied to file",
		Desc: "On a present event, how the loaded module was tied to a module file of the running release: file:build-id (the GNU build ID the kernel shows for it equals the file's), file:srcversion (no build ID on one side, the same srcversion), file:name (neither), or 'no file: ' and why (no such file, another build); without a file there are no digests and kmod.allowed is false."},
}

// Fields lists the fields the plugin extracts, in field ID order.
func (p *Plugin) Fields() []sdk.FieldEntry { return fieldList[:] }

// capNames are the Linux capabilities by number (include/uapi/linux/capability.h).
var capNames = [...]string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
	"CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
	"CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
	"CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
	"CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// CapNames formats a capability mask as Falco's thread.cap_effective does:
// names separated by spaces, lowest bit first. Unknown bits are shown as
// CAP_<n>.
func CapNames(mask uint64) string {
	var b strings.Builder
	for i := 0; i < 64; i++ {
		if mask&(1<<i) == 0 {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		if i < len(capNames) {
			b.WriteString(capNames[i])
		} else {
			b.WriteString("CAP_")
			b.WriteString(strconv.Itoa(i))
		}
	}
	return b.String()
}
