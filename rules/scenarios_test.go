package rules

import (
	"testing"

	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/plugin"
)

const digest = "3b1f5e0c2d4a6b8c9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f"

func yes() *bool { v := true; return &v }
func no() *bool  { v := false; return &v }

// base is a clean, allowlisted, signed load by modprobe on the host.
func base() *event.Event {
	return &event.Event{
		Syscall: event.FinitModule, Res: 0, Name: "veth", ThisModuleName: "veth",
		SHA256: digest, ELFSHA256: digest, Size: 20000, Path: "/lib/modules/6.1.0-56-amd64/kernel/drivers/net/veth.ko",
		Signed: true, Signer: "Debian Secure Boot CA", Allowed: yes(), AllowlistEntry: "veth",
		Pid: 100, Tid: 100, Ppid: 1, Comm: "modprobe", Exe: "/usr/bin/kmod", Cmdline: "modprobe veth",
		LoginUID: 4294967295, Cgroup: "/system.slice/systemd-udevd.service", HostNS: true, CapEffective: 1<<41 - 1,
	}
}

func with(f func(e *event.Event)) *event.Event {
	e := base()
	f(e)
	return e
}

const (
	ruleNotAllowed     = "Kernel Module Not Allowlisted Loaded"
	ruleNotAllowedTry  = "Kernel Module Not Allowlisted Load Attempt"
	ruleBlocked        = "Kernel Module Blocked by Guard"
	ruleFromMemory     = "Kernel Module Load from Memory by Unexpected Program"
	ruleUnsigned       = "Unsigned Kernel Module Loaded"
	ruleForgery        = "Kernel Module Name Forgery"
	ruleChanged        = "Kernel Module Image Changed During Load"
	ruleForceUnload    = "Kernel Module Force Unloaded"
	ruleFromContainer  = "Kernel Module Load from Container"
	ruleWithParameters = "Kernel Module Loaded with Parameters"
	ruleMissed         = "Kernel Module Load Missed by Sensor"
	ruleTampering      = "Kernel Module Guard Tampering Refused"
	ruleVerdictsLost   = "Kernel Module Guard Verdicts Lost"
	ruleOverridden     = "Kernel Module Guard Overridden"
	ruleEventsLost     = "Kmodguard Sensor Events Lost"
	ruleFlood          = "Kernel Module Syscall Flood"
	rulePresent        = "Kernel Module Present Not Allowlisted"
	rulePresentUnsign  = "Kernel Module Present Unsigned"
	ruleAutoload       = "Kernel Module Autoload Requested from Container"
	ruleAutoloadDenied = "Kernel Module Autoload Denied by Guard"
	ruleHidden         = "Kernel Module Hidden"
	ruleSigNotOK       = "Kernel Module Loaded Without Verified Signature"
)

// deniedRequest is the guard's refusal of an autoload request whose alias
// matches the allowlist's autoload.deny, as it reaches Falco (a decision
// no sensor event joins: Decision.Event).
func deniedRequest(verdict event.Verdict) *event.Event {
	d := event.Decision{Op: event.OpModuleRequest, Verdict: verdict, Name: "net-pf-21", Entry: "net_pf_*",
		Reason: "autoload request denied: the alias matches a pattern of the allowlist's autoload.deny",
		Ret:    -1, Pid: 300, Tid: 300, UID: 1000, Comm: "python3", Generation: 4}
	if verdict != event.VerdictBlocked {
		d.Ret = 0
	}
	return d.Event()
}

// kernelLoad is the kernel's own module_load record of a signed module
// that modprobe loads.
func kernelLoad(f func(e *event.Event)) *event.Event {
	e := &event.Event{
		Syscall: event.ModuleLoad, Name: "veth", ModuleAddr: 0xffffffffc0a50040, SigOK: yes(),
		Pid: 300, Tid: 300, Ppid: 1, Comm: "modprobe", Exe: "/usr/bin/kmod", Cmdline: "modprobe veth", HostNS: true,
	}
	f(e)
	return e
}

// request is an autoload request by a process on the host: ip asking for
// the netlink family's module.
func request(f func(e *event.Event)) *event.Event {
	e := &event.Event{
		Syscall: event.ModuleRequest, Name: "net-pf-16-proto-16-family-nl80211", RawFlags: 1,
		Pid: 200, Tid: 200, Ppid: 1, Comm: "ip", Exe: "/usr/bin/ip", Cmdline: "ip link",
		LoginUID: 1000, Cgroup: "/user.slice/user-1000.slice/session-2.scope", HostNS: true,
	}
	f(e)
	return e
}

// present is a module loaded before the sensor started, tied to its file
// by srcversion and allowlisted: no caller at all.
func present(f func(e *event.Event)) *event.Event {
	e := &event.Event{
		Syscall: event.Present, Name: "veth", ThisModuleName: "veth", SHA256: digest, ELFSHA256: digest,
		Path: "/lib/modules/6.1.0-56-amd64/kernel/drivers/net/veth.ko", Srcversion: "A1B2C3",
		Signed: true, Allowed: yes(), AllowlistEntry: "veth", Inventory: "file:srcversion", HostNS: true,
	}
	f(e)
	return e
}

var scenarios = []struct {
	name  string
	event *event.Event
	want  []string
}{
	{"allowlisted signed load by modprobe", base(), nil},
	{"autoload from the host", request(func(*event.Event) {}), nil},
	{"autoload from a container's socket of an unloaded family", request(func(e *event.Event) {
		e.Name, e.Comm, e.Exe, e.Cmdline = "net-pf-38", "python3", "/usr/bin/python3", "python3 exploit.py"
		e.HostNS, e.PidNS, e.Cgroup = false, 4026532300, "/kubepods/besteffort/pod1/"+digest
		e.ContainerID = digest
	}), []string{ruleAutoload}},
	{"autoload from a privileged container (host namespaces, container cgroup)", request(func(e *event.Event) {
		e.Name, e.Comm, e.Exe, e.Cmdline = "fs-cramfs", "mount", "/usr/bin/mount", "mount -t cramfs /dev/loop0 /mnt"
		e.ContainerID, e.Cgroup = digest, "/system.slice/docker-"+digest+".scope"
	}), []string{ruleAutoload}},
	{"autoload request denied by the guard", deniedRequest(event.VerdictBlocked), []string{ruleAutoloadDenied}},
	{"autoload request denied by the guard in audit mode", deniedRequest(event.VerdictAudit), []string{ruleAutoloadDenied}},
	{"present: allowlisted, tied by srcversion, untainted", present(func(*event.Event) {}), nil},
	{"module_load: signature verified by the kernel", kernelLoad(func(*event.Event) {}), nil},
	{"module_load: signature not verified, tainted E", kernelLoad(func(e *event.Event) { e.SigOK, e.Taint = no(), "E" }), []string{ruleSigNotOK}},
	{"module_load on a kernel without module signing", kernelLoad(func(e *event.Event) { e.SigOK = nil }), nil},
	{"module_free", kernelLoad(func(e *event.Event) { e.Syscall, e.SigOK = event.ModuleFree, nil }), nil},
	{"hidden: in mod_tree, not in /proc/modules or /sys/module", &event.Event{Syscall: event.Hidden, Name: "hideme", ModuleAddr: 0xffffffffc05c1000,
		Hidden: "in mod_tree; not in /proc/modules, /sys/module"}, []string{ruleHidden}},
	{"present: no allowlist configured", present(func(e *event.Event) { e.Allowed = nil }), nil},
	{"present: tied to no file (another build is loaded)", present(func(e *event.Event) {
		e.Allowed, e.AllowlistEntry, e.Path, e.SHA256, e.ELFSHA256 = no(), "", "", "", ""
		e.Inventory = `no file: /lib/modules/6.1.0-56-amd64/kernel/drivers/net/veth.ko has srcversion "A1B2C3", the loaded module "FFFF"`
	}), []string{rulePresent}},
	{"present: a hidden rootkit's leftover, out of tree and unsigned", present(func(e *event.Event) {
		e.Name, e.ThisModuleName, e.Allowed, e.AllowlistEntry, e.Path, e.SHA256, e.ELFSHA256 = "rk", "", no(), "", "", "", ""
		e.Taint, e.Inventory = "OE", "no file: no rk.ko* in modules.dep of 6.1.0-56-amd64"
	}), []string{rulePresent, rulePresentUnsign}},
	{"present: allowlisted but loaded without a verified signature", present(func(e *event.Event) { e.Taint = "E" }), []string{rulePresentUnsign}},
	{"present: allowlisted out-of-tree signed module", present(func(e *event.Event) { e.Taint = "O" }), nil},
	{"no allowlist configured", with(func(e *event.Event) { e.Allowed, e.AllowlistEntry = nil, "" }), nil},
	{"udev worker loads from memory", with(func(e *event.Event) {
		e.Syscall, e.Comm, e.Exe = event.InitModule, "(udev-worker)", "/usr/lib/systemd/systemd-udevd"
	}), nil},
	{"not allowlisted and unsigned, by insmod", with(func(e *event.Event) {
		e.Syscall, e.Comm, e.Allowed, e.AllowlistEntry, e.Signed, e.Signer = event.InitModule, "insmod", no(), "", false, ""
	}), []string{ruleNotAllowed, ruleUnsigned}},
	{"not allowlisted, load failed", with(func(e *event.Event) { e.Res, e.Allowed = -1, no() }), []string{ruleNotAllowedTry}},
	{"python loads from memory", with(func(e *event.Event) {
		e.Syscall, e.Res, e.Comm, e.Exe = event.InitModule, -38, "python3", "/usr/bin/python3.11"
	}), []string{ruleFromMemory}},
	{"forged names, blocked by the guard", with(func(e *event.Event) {
		e.Syscall, e.Comm, e.Res, e.Verdict = event.InitModule, "insmod", -1, event.VerdictBlocked
		e.Name, e.ThisModuleName, e.NameMismatch, e.Allowed, e.Signed = "dumbo", "dummy", true, no(), false
	}), []string{ruleForgery, ruleBlocked}},
	{"file changed under finit_module", with(func(e *event.Event) { e.FileChanged = true }), []string{ruleChanged}},
	{"guard digest differs", with(func(e *event.Event) { e.TOCTOU, e.Verdict = true, event.VerdictAllowed }), []string{ruleChanged}},
	{"rmmod -f", &event.Event{Syscall: event.DeleteModule, Name: "kmodguard_lsm", Flags: []string{"O_NONBLOCK", "O_TRUNC"},
		Pid: 9, Tid: 9, Comm: "rmmod", HostNS: true}, []string{ruleForceUnload}},
	{"plain rmmod", &event.Event{Syscall: event.DeleteModule, Name: "dummy", Flags: []string{"O_NONBLOCK"},
		Pid: 9, Tid: 9, Comm: "rmmod", HostNS: true}, nil},
	{"load from a container", with(func(e *event.Event) {
		e.Res, e.HostNS, e.ContainerID, e.Cgroup = -1, false, "0123456789ab", "/kubepods/pod1/0123456789abcdef"
	}), []string{ruleFromContainer}},
	// Namespaces: a container is another PID namespace, another user
	// namespace, or a container's cgroup; a private mount namespace alone
	// (udev's PrivateMounts=yes, a service's PrivateTmp=) is not.
	{"udev worker in its private mount namespace", with(func(e *event.Event) {
		e.Syscall, e.Comm, e.Exe = event.InitModule, "(udev-worker)", "/usr/lib/systemd/systemd-udevd"
		e.PidNS, e.UserNS, e.MntNS, e.HostMntNS = event.InitPidNS, event.InitUserNS, 4026532174, no()
	}), nil},
	{"modprobe from a service with PrivateTmp=", with(func(e *event.Event) {
		e.Cgroup, e.PidNS, e.UserNS, e.MntNS, e.HostMntNS = "/system.slice/vendor-agent.service", event.InitPidNS, event.InitUserNS, 4026532190, no()
	}), nil},
	// A recording from before the user namespace was recorded: its writer
	// said host_ns false for a udev worker; read today, it is on the host.
	{"udev worker, recorded by an older sensor", with(func(e *event.Event) {
		e.Syscall, e.Comm, e.Exe = event.InitModule, "(udev-worker)", "/usr/lib/systemd/systemd-udevd"
		e.HostNS, e.PidNS, e.MntNS = false, event.InitPidNS, 4026532174
	}), nil},
	{"load from unshare -p -f", with(func(e *event.Event) {
		e.Res, e.Comm, e.Exe, e.Cgroup = -1, "insmod", "/usr/bin/kmod", "/user.slice/user-1000.slice/session-3.scope"
		e.HostNS, e.PidNS, e.UserNS, e.MntNS, e.HostMntNS = false, 4026532300, event.InitUserNS, 4026532301, no()
	}), []string{ruleFromContainer}},
	{"load from a user namespace", with(func(e *event.Event) {
		e.Res, e.Comm, e.Exe, e.Cgroup = -1, "insmod", "/usr/bin/kmod", "/user.slice/user-1000.slice/session-3.scope"
		e.HostNS, e.PidNS, e.UserNS, e.MntNS, e.HostMntNS = false, event.InitPidNS, 4026532400, event.InitMntNS, yes()
	}), []string{ruleFromContainer}},
	{"load from a container sharing the host's namespaces", with(func(e *event.Event) {
		e.Res, e.ContainerID, e.Cgroup = -1, "0123456789ab", "/system.slice/docker-0123456789abcdef.scope"
		e.PidNS, e.UserNS, e.MntNS, e.HostMntNS = event.InitPidNS, event.InitUserNS, event.InitMntNS, yes()
	}), []string{ruleFromContainer}},
	{"load with parameters", with(func(e *event.Event) { e.Params = "debug=1" }), []string{ruleWithParameters}},
	{"failed load with parameters", with(func(e *event.Event) { e.Params, e.Res = "debug=1", -17 }), nil},
	// The guard's own events (plugin/join.go).
	{"guard allowed a load the sensor missed", &event.Event{Syscall: event.Guard, Verdict: event.VerdictAllowed,
		Name: "veth", ThisModuleName: "veth", SHA256: digest, GuardSHA256: digest, Allowed: yes(), AllowlistEntry: "veth",
		GuardReason: "digest listed and both names match the entry", Pid: 7, Tid: 7, Comm: "modprobe"}, []string{ruleMissed}},
	{"guard blocked a load the sensor missed", &event.Event{Syscall: event.Guard, Verdict: event.VerdictBlocked, Res: -1,
		Name: "dummy", ThisModuleName: "dummy", SHA256: digest, GuardSHA256: digest, Allowed: no(),
		GuardReason: "not on the allowlist", Pid: 7, Tid: 7, Comm: "insmod"}, []string{ruleMissed, ruleBlocked}},
	{"sealed guard refused an unpin", &event.Event{Syscall: event.Guard, Verdict: event.VerdictBlocked, Res: -1,
		GuardReason: "refused: the guard is sealed", Pid: 8, Tid: 8, Comm: "rm"}, []string{ruleTampering, ruleBlocked}},
	{"enforcer companion lost", &event.Event{Syscall: event.Guard, Verdict: event.VerdictNone, Comm: "kmodguard",
		GuardReason: "enforcer companion lost: companion apply: enforcer unavailable: BPF LSM is not active"}, []string{ruleVerdictsLost}},
	// What the plugin makes of the enforcer's report of decisions another
	// process consumed from the guard's ring buffer (event.ReportMissing).
	{"guard decisions missing", &event.Event{Syscall: event.Guard, Verdict: event.VerdictNone, Pid: 3, Tid: 3, Comm: "kmodguard",
		GuardReason: "3 guard decisions never reached the enforcer: another process consumed them from the decision ring buffer (3 since the enforcer started reading)"},
		[]string{ruleVerdictsLost}},
	// The enforcer's report of a program that can decide before the guard
	// (event.ReportOverride).
	{"guard overridden", &event.Event{Syscall: event.Guard, Verdict: event.VerdictNone,
		GuardReason: `override: fmod_ret program 42 ("evil", link 38) on security_kernel_post_read_file can decide module loads before the guard and admit what it refuses`},
		[]string{ruleOverridden}},
	// The live source's loss reports (plugin/source.go): only the loss rule
	// reads them, and only when syscall events were lost.
	{"sensor lost events", &event.Event{Syscall: event.SensorLoss, Lost: 17, Throttled: 3}, []string{ruleEventsLost}},
	{"sensor throttled calls, lost none", &event.Event{Syscall: event.SensorLoss, Throttled: 40}, nil},
	// The sensor folds junk init_module calls (bpf/sensor.bpf.c, kg_junk):
	// the event that carries a count is a flood.
	{"junk init_module flood", &event.Event{Syscall: event.InitModule, Res: -8, Size: 4096, Coalesced: 812345,
		Pid: 4242, Tid: 4243, Comm: "flood", Exe: "/tmp/flood", HostNS: true, Allowed: no()}, []string{ruleFlood, ruleNotAllowedTry, ruleFromMemory}},
	{"one junk init_module", &event.Event{Syscall: event.InitModule, Res: -8, Size: 4096,
		Pid: 4242, Tid: 4243, Comm: "flood", Exe: "/tmp/flood", HostNS: true, Allowed: no()}, []string{ruleNotAllowedTry, ruleFromMemory}},
}

func extract(t *testing.T, e *event.Event) map[string]any {
	t.Helper()
	// Through the binary form, as the plugin carries it.
	b, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var d event.Event
	if err := d.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	return plugin.FieldValues(&d)
}
