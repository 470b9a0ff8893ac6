// Package systemd_test boots the shipped unit under Debian 12's systemd in
// QEMU (the systemd guest of internal/vmtest) and checks what it does at
// boot, beside the sensor and sealed (TestVMSystemd), with no allowlist
// (TestVMSystemdNoAllowlist), failing closed (TestVMSystemdFailClosed), and
// through a kernel upgrade with the kernel hook (TestVMSystemdUpgrade).
package systemd_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/internal/debkernel"
	"github.com/kmodguard/kmodguard/internal/vmtest"
)

// The systemd guest: Debian 12 with systemd and udev, booted on each
// Debian kernel, with kmodguard installed the way the operator guide says:
// the .deb that `make package` builds installed with dpkg, an allowlist
// built from the kernel's modules and signed (the key stays on the host),
// the packaged unit enabled. udev loads
// the drivers of the guest's devices at boot; /etc/modules-load.d names
// one listed module (veth) and one the allowlist leaves out (dummy).
const (
	guestAllowlist = "/etc/kmodguard/allowlist.yaml"
	enforcerUnit   = "kmodguard-enforcer.service"
	// unlisted is left out of the allowlist and named in modules-load.d.
	unlisted = "dummy"
	// bootListed is listed and named in modules-load.d.
	bootListed = "veth"
)

// TestVMSystemd boots the systemd guest on each kernel and runs the
// TestGuestSystemd tests in it once the boot is done.
func TestVMSystemd(t *testing.T) {
	deb := buildDeb(t)
	keys := t.TempDir()
	vmtest.Run(t, vmtest.Spec{
		Run:        "^TestGuestSystemd",
		FailOnSkip: true,
		Timeout:    10 * time.Minute,
		System: &vmtest.System{Install: func(k *debkernel.Kernel, root string) error {
			return install(k, root, deb, keys)
		}},
	})
}

// buildDeb builds the amd64 .deb with scripts/package.sh, as `make
// package` does, and returns its path; where no guest boots (vmtest.Run
// then skips and says why) it builds nothing and returns "".
func buildDeb(t *testing.T) string {
	t.Helper()
	if !vmtest.Enabled() || vmtest.InGuest() {
		return ""
	}
	dist := t.TempDir()
	cmd := exec.Command("scripts/package.sh", "amd64")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "DIST="+dist, "FORMATS=deb")
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/package.sh amd64: %v\n%s", err, out)
	}
	debs, err := filepath.Glob(filepath.Join(dist, "kmodguard_*_amd64.deb"))
	if err != nil || len(debs) != 1 {
		t.Fatalf("want one kmodguard .deb in %s, got %v (%v)", dist, debs, err)
	}
	t.Logf("built %s in %s", filepath.Base(debs[0]), time.Since(start).Round(100*time.Millisecond))
	return debs[0]
}

// TestVMSystemdNoAllowlist boots the systemd guest on 6.12 with the unit
// enabled but no allowlist installed, and modules-load made to require the
// guard (the operator guide's fail-closed drop-in, on the unit whose
// failure does not stop the boot); the TestGuestNoAllowlist tests check
// the boot policy.
func TestVMSystemdNoAllowlist(t *testing.T) {
	deb := buildDeb(t)
	keys := t.TempDir()
	vmtest.Run(t, vmtest.Spec{
		Kernels:    []debkernel.Series{debkernel.Series612},
		Run:        "^TestGuestNoAllowlist",
		FailOnSkip: true,
		Timeout:    8 * time.Minute,
		System: &vmtest.System{Install: func(k *debkernel.Kernel, root string) error {
			if err := install(k, root, deb, keys); err != nil {
				return err
			}
			for _, f := range []string{"allowlist.yaml", "allowlist.yaml.sig"} {
				if err := os.Remove(filepath.Join(root, "etc/kmodguard", f)); err != nil {
					return err
				}
			}
			dropIn := filepath.Join(root, "etc/systemd/system/systemd-modules-load.service.d")
			if err := os.MkdirAll(dropIn, 0o755); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dropIn, "kmodguard.conf"), []byte(failClosedDropIn), 0o644)
		}},
	})
}

// failClosedDropIn is the operator guide's drop-in that makes a unit need
// the guard.
const failClosedDropIn = `[Unit]
Requires=kmodguard-enforcer.service
After=kmodguard-enforcer.service
`

// install does what the operator guide says, on the guest's root file
// system: the package installed with dpkg (dpkg --root: the guest's dpkg
// database records it, and its postinst runs chrooted into the root,
// where no systemd runs), the allowlist of the kernel's modules in enforce
// mode without the unlisted module, built with the packaged CLI (static,
// and it runs here too) and signed with a key that never enters the
// guest, the packaged unit enabled with systemctl --root.
func install(k *debkernel.Kernel, root, deb, keys string) error {
	run := func(name string, args ...string) error {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
		}
		return nil
	}
	dpkg, err := exec.LookPath("dpkg")
	if err != nil {
		return fmt.Errorf("dpkg is not installed on the host: it installs the package into the guest's root: %w", err)
	}
	if err := run(dpkg, "--root="+root, "-i", deb); err != nil {
		return err
	}
	cli := filepath.Join(root, "usr/bin/kmodguard")
	etc := filepath.Join(root, "etc/kmodguard")
	list := filepath.Join(etc, "allowlist.yaml")
	key := filepath.Join(keys, "signing")
	if _, err := os.Stat(key + ".key"); err != nil {
		if err := run(cli, "allowlist", "keygen", "--prefix", key); err != nil {
			return err
		}
	}
	steps := [][]string{
		{"allowlist", "init", "--modules-dir", filepath.Join(root, "usr/lib/modules", k.Release), "--mode", "enforce", "--name", "vmtest", "--out-file", list},
		{"allowlist", "remove", "-a", list, unlisted},
		{"allowlist", "sign", "--key", key + ".key", list},
	}
	for _, s := range steps {
		if err := run(cli, s...); err != nil {
			return err
		}
	}
	if err := copyFile(key+".pub", filepath.Join(etc, "allowlist.pub"), 0o644); err != nil {
		return err
	}
	systemctl, err := exec.LookPath("systemctl")
	if err != nil {
		return fmt.Errorf("systemctl is not installed on the host (scripts/deps.sh vm): it enables the unit in the guest's root")
	}
	if err := run(systemctl, "--root="+root, "enable", enforcerUnit); err != nil {
		return err
	}
	seal, err := guideSealCommands()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(root, sealScript), []byte(seal), 0o700); err != nil {
		return err
	}
	conf := "# vmtest: one listed module and one the allowlist leaves out\n" + bootListed + "\n" + unlisted + "\n"
	return os.WriteFile(filepath.Join(root, "etc/modules-load.d/kmodguard-vmtest.conf"), []byte(conf), 0o644)
}

func copyFile(from, to string, perm os.FileMode) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	return os.WriteFile(to, b, perm)
}

// requireSystemdGuest skips outside the systemd guest.
func requireSystemdGuest(t *testing.T) {
	t.Helper()
	vmtest.RequireGuest(t)
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		t.Skip("needs the systemd guest: systemd is not PID 1 here")
	}
}

// sh runs a command in the guest and returns its trimmed output and error.
func sh(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// prop returns a unit's property (systemctl show -P).
func prop(t *testing.T, unit, name string) string {
	t.Helper()
	out, err := sh("systemctl", "show", "-P", name, unit)
	if err != nil {
		t.Fatalf("systemctl show -P %s %s: %v: %s", name, unit, err, out)
	}
	return out
}

func failedUnits(t *testing.T) []string {
	t.Helper()
	out, err := sh("systemctl", "list-units", "--failed", "--plain", "--no-legend", "--no-pager")
	if err != nil {
		t.Fatalf("systemctl list-units --failed: %v: %s", err, out)
	}
	var units []string
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			units = append(units, f[0])
		}
	}
	return units
}

// logLine is one JSON line of the enforcer's log (--log-format json).
type logLine struct {
	Level   string   `json:"level"`
	Msg     string   `json:"msg"`
	Op      string   `json:"op"`
	Verdict string   `json:"verdict"`
	Module  string   `json:"module"`
	Comm    string   `json:"comm"`
	Pid     int      `json:"pid"`
	Modules []string `json:"modules"`
	Size    int64    `json:"size"`
	Comp    bool     `json:"compressed"`
}

// enforcerLog reads the enforcer's log lines of this boot from the journal.
func enforcerLog(t *testing.T) []logLine {
	t.Helper()
	out, err := exec.Command("journalctl", "-b", "-u", enforcerUnit, "-o", "json", "--output-fields=MESSAGE", "--no-pager").Output()
	if err != nil {
		t.Fatalf("journalctl: %v", err)
	}
	var lines []logLine
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	for sc.Scan() {
		var rec struct {
			Message json.RawMessage `json:"MESSAGE"`
		}
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("journal record: %v", err)
		}
		var msg string
		if json.Unmarshal(rec.Message, &msg) != nil {
			continue // systemd's own lines are strings; a byte array is no log line of ours
		}
		var l logLine
		if json.Unmarshal([]byte(msg), &l) == nil && l.Level != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// procModules lists the modules in /proc/modules.
func procModules(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile("/proc/modules")
	if err != nil {
		t.Fatal(err)
	}
	mods := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if name, _, _ := strings.Cut(line, " "); name != "" {
			mods[name] = true
		}
	}
	return mods
}

// TestGuestSystemdBoot: the boot reaches multi-user.target, the guard
// runs, and the only failed unit is systemd-modules-load, because the
// guard refused the unlisted module named in modules-load.d; once that is
// acknowledged (reset-failed) the system is "running".
func TestGuestSystemdBoot(t *testing.T) {
	requireSystemdGuest(t)
	state, _ := sh("systemctl", "is-system-running", "--wait")
	t.Logf("is-system-running: %s", state)
	if got := prop(t, "multi-user.target", "ActiveState"); got != "active" {
		t.Errorf("multi-user.target is %s", got)
	}
	if got := prop(t, enforcerUnit, "ActiveState") + "/" + prop(t, enforcerUnit, "SubState"); got != "active/running" {
		t.Errorf("%s is %s", enforcerUnit, got)
	}
	if n := prop(t, enforcerUnit, "NRestarts"); n != "0" {
		t.Errorf("%s restarted %s times", enforcerUnit, n)
	}
	failed := failedUnits(t)
	if !slices.Equal(failed, []string{"systemd-modules-load.service"}) {
		out, _ := sh("systemctl", "status", "--no-pager", "--lines=20", "--all")
		t.Fatalf("failed units %v, want only systemd-modules-load.service (the refused %s)\n%s", failed, unlisted, out)
	}
	out, _ := sh("journalctl", "-b", "-u", "systemd-modules-load.service", "--no-pager", "-o", "cat")
	if want := "Failed to insert module '" + unlisted + "': Operation not permitted"; !strings.Contains(out, want) {
		t.Errorf("systemd-modules-load's log lacks %q:\n%s", want, out)
	}
	if state != "degraded" {
		t.Errorf("is-system-running %q with a failed unit, want degraded", state)
	}
	if out, err := sh("systemctl", "reset-failed", "systemd-modules-load.service"); err != nil {
		t.Fatalf("reset-failed: %v: %s", err, out)
	}
	if state, _ := sh("systemctl", "is-system-running"); state != "running" {
		t.Errorf("is-system-running %q once modules-load's refusal is acknowledged, want running; failed: %v", state, failedUnits(t))
	}
}

// TestGuestSystemdOrdering: the guard was in force (READY=1) before
// systemd-modules-load and systemd-udevd started, and nothing orders it
// after local-fs.target.
func TestGuestSystemdOrdering(t *testing.T) {
	requireSystemdGuest(t)
	ready, err := strconv.ParseUint(prop(t, enforcerUnit, "ActiveEnterTimestampMonotonic"), 10, 64)
	if err != nil || ready == 0 {
		t.Fatalf("%s never became active: %q %v", enforcerUnit, prop(t, enforcerUnit, "ActiveEnterTimestampMonotonic"), err)
	}
	for _, u := range []string{"systemd-modules-load.service", "systemd-udevd.service", "systemd-udev-trigger.service"} {
		start, err := strconv.ParseUint(prop(t, u, "ExecMainStartTimestampMonotonic"), 10, 64)
		if err != nil || start == 0 {
			t.Errorf("%s: no start time (%v)", u, err)
			continue
		}
		if start <= ready {
			t.Errorf("%s started at %d µs, before the guard was ready at %d µs", u, start, ready)
		} else {
			t.Logf("%s started %.3f s after the guard was ready", u, float64(start-ready)/1e6)
		}
	}
	after := strings.Fields(prop(t, enforcerUnit, "After"))
	t.Logf("After=%s", strings.Join(after, " "))
	for _, bad := range []string{"local-fs.target", "systemd-tmpfiles-setup.service", "sysinit.target", "systemd-udevd.service", "systemd-modules-load.service"} {
		if slices.Contains(after, bad) {
			t.Errorf("%s is ordered after %s", enforcerUnit, bad)
		}
	}
}

// TestGuestSystemdDecisions: every module in /proc/modules was either
// loaded before the guard (the stage-1 initramfs, PID 1 itself: the
// enforcer lists them at start) or allowed by it; every driver udev loaded
// was allowed and is loaded; modules-load's listed module was allowed and
// its unlisted one refused, and nothing else was refused.
func TestGuestSystemdDecisions(t *testing.T) {
	requireSystemdGuest(t)
	// The boot is done when its jobs are, but udev may still be probing
	// (a SATA disk under emulation takes seconds), and the decisions reach
	// the journal a moment after the loads: wait for both.
	if out, err := sh("udevadm", "settle", "--timeout=60"); err != nil {
		t.Logf("udevadm settle: %v: %s", err, out)
	}
	var lines []logLine
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
		lines = enforcerLog(t)
		if len(undecided(lines, procModules(t))) == 0 || time.Now().After(deadline) {
			break
		}
	}
	var before []string
	found := false
	allowed := map[string]bool{}
	var udev, blocked []string
	byComm := map[string][]string{}
	for _, l := range lines {
		if strings.Contains(l.Msg, "loaded before the guard: it did not decide them") {
			before, found = l.Modules, true
		}
		if l.Op != "init_module" && l.Op != "finit_module" {
			continue
		}
		switch l.Verdict {
		case "allowed":
			allowed[l.Module] = true
		case "blocked":
			blocked = append(blocked, l.Module+" by "+l.Comm)
		}
		byComm[l.Comm] = append(byComm[l.Comm], l.Module+"="+l.Verdict)
		if strings.Contains(l.Comm, "udev") {
			if !slices.Contains(udev, l.Module) {
				udev = append(udev, l.Module)
			}
			if l.Verdict != "allowed" {
				t.Errorf("udev's load of %s: %s: %s (%d bytes, compressed %v)", l.Module, l.Verdict, l.Msg, l.Size, l.Comp)
			}
		}
		if l.Module == bootListed && l.Verdict != "allowed" {
			t.Errorf("%s from modules-load.d: %s by %s", bootListed, l.Verdict, l.Comm)
		}
	}
	if !found {
		t.Fatalf("the enforcer did not list the modules loaded before it; its log:\n%+v", lines)
	}
	t.Logf("loaded before the guard (%d): %s", len(before), strings.Join(before, " "))
	sort.Strings(udev)
	t.Logf("udev loaded %d drivers, each allowed by the guard: %s", len(udev), strings.Join(udev, " "))
	for comm, ds := range byComm {
		t.Logf("decisions for %s (%d): %s", comm, len(ds), strings.Join(ds, " "))
	}
	if len(udev) < 5 {
		t.Errorf("udev loaded only %d drivers: the guest's devices should give more", len(udev))
	}
	loaded := procModules(t)
	// A driver the guard allowed may still refuse the machine in its own
	// init (a CPU frequency driver for another CPU): it is then not in
	// /proc/modules, and loading it by hand must fail for that reason, not
	// with the guard's EPERM.
	var noDevice []string
	for _, m := range udev {
		if loaded[m] {
			continue
		}
		out, err := sh("modprobe", m)
		if err == nil || strings.Contains(out, "Operation not permitted") || procModules(t)[m] {
			t.Errorf("udev loaded %s with the guard's consent, it is not in /proc/modules, and modprobe %s says: %v: %s", m, m, err, out)
			continue
		}
		noDevice = append(noDevice, m)
		t.Logf("%s: allowed, but its init refused this machine (modprobe: %s)", m, out)
	}
	t.Logf("udev: %d drivers allowed and in /proc/modules, %d allowed whose init found no device", len(udev)-len(noDevice), len(noDevice))
	if u := undecided(lines, loaded); len(u) > 0 {
		t.Errorf("in /proc/modules with no allowing decision and not loaded before the guard: %v", u)
	}
	if !loaded[bootListed] {
		t.Errorf("%s (modules-load.d, listed) is not loaded", bootListed)
	}
	if loaded[unlisted] {
		t.Errorf("%s (modules-load.d, unlisted) is loaded", unlisted)
	}
	if want := unlisted + " by systemd-modules"; !slices.Equal(blocked, []string{want}) {
		t.Errorf("refusals %v, want only %q", blocked, want)
	}
	out, err := sh("kmodguard", "enforcer", "status", "-o", "json")
	if err != nil {
		t.Fatalf("enforcer status: %v: %s", err, out)
	}
	var st struct {
		Mode             string `json:"mode"`
		Blocked          uint64 `json:"blocked"`
		LostEvents       uint64 `json:"lost_events"`
		MissingDecisions uint64 `json:"missing_decisions"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("enforcer status: %v: %s", err, out)
	}
	if st.Mode != "enforce" || st.Blocked < 1 || st.LostEvents != 0 || st.MissingDecisions != 0 {
		t.Errorf("enforcer status: %s", out)
	}
}

// undecided returns the loaded modules that the enforcer's log neither
// lists as loaded before the guard nor shows allowed.
func undecided(lines []logLine, loaded map[string]bool) []string {
	known := map[string]bool{}
	for _, l := range lines {
		if strings.Contains(l.Msg, "loaded before the guard: it did not decide them") {
			for _, m := range l.Modules {
				known[m] = true
			}
		}
		if (l.Op == "init_module" || l.Op == "finit_module") && l.Verdict == "allowed" {
			known[l.Module] = true
		}
	}
	var out []string
	for m := range loaded {
		if !known[m] {
			out = append(out, m)
		}
	}
	sort.Strings(out)
	return out
}

// TestGuestSystemdPackage: kmodguard is installed as dpkg knows it, with
// no file changed since; the unit that ran at boot is the packaged one,
// enabled; the kmodguard on PATH is the package's.
func TestGuestSystemdPackage(t *testing.T) {
	requireSystemdGuest(t)
	st, err := sh("dpkg-query", "-W", "-f", "${Status} ${Version}", "kmodguard")
	t.Logf("dpkg-query kmodguard: %s", st)
	if err != nil || !strings.HasPrefix(st, "install ok installed ") {
		t.Errorf("dpkg-query -W kmodguard: %v: %q, want install ok installed", err, st)
	}
	if out, err := sh("dpkg", "--verify", "kmodguard"); err != nil || out != "" {
		t.Errorf("dpkg --verify kmodguard: %v: %s", err, out)
	}
	// Debian 12's systemd names /lib/systemd/system, the same folder as
	// /usr/lib/systemd/system on a merged /usr.
	frag := prop(t, enforcerUnit, "FragmentPath")
	if got, err := filepath.EvalSymlinks(frag); err != nil || got != "/usr/lib/systemd/system/"+enforcerUnit {
		t.Errorf("%s is loaded from %s (%s, %v), want the package's /usr/lib/systemd/system/%s", enforcerUnit, frag, got, err, enforcerUnit)
	}
	if got := prop(t, enforcerUnit, "UnitFileState"); got != "enabled" {
		t.Errorf("%s is %s, want enabled", enforcerUnit, got)
	}
	if p, err := exec.LookPath("kmodguard"); err != nil || p != "/usr/bin/kmodguard" {
		t.Errorf("kmodguard on PATH is %q (%v), want the package's /usr/bin/kmodguard", p, err)
	}
}

// TestGuestSystemdSandbox: inside the unit's mount namespace the root,
// /sys and /proc/sys are read-only and the bpffs is writable.
func TestGuestSystemdSandbox(t *testing.T) {
	requireSystemdGuest(t)
	pid := prop(t, enforcerUnit, "MainPID")
	b, err := os.ReadFile("/proc/" + pid + "/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"/": "ro", "/sys": "ro", "/proc/sys": "ro", "/sys/fs/bpf": "rw", "/run/kmodguard": "rw", "/home": "ro", "/tmp": "ro"}
	got := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		// The last mount on a path is the one in force.
		got[f[4]] = strings.Split(f[5], ",")[0]
	}
	for p, w := range want {
		g := got[p]
		if p == "/tmp" && g == "" {
			g = got["/"] // no mount of its own: the root's
		}
		if p == "/home" && g == "" {
			continue // ProtectHome=yes hides it; nothing to write to
		}
		if g != w {
			t.Errorf("%s is %q in the enforcer's namespace, want %s", p, g, w)
		}
	}
}

// TestGuestSystemdModprobe: later, by hand, the unlisted module is refused
// and a listed one loads.
func TestGuestSystemdModprobe(t *testing.T) {
	requireSystemdGuest(t)
	out, err := sh("modprobe", unlisted)
	if err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Errorf("modprobe %s: %v: %s; want Operation not permitted", unlisted, err, out)
	}
	if procModules(t)[unlisted] {
		t.Errorf("%s loaded", unlisted)
	}
	if out, err := sh("modprobe", "nlmon"); err != nil {
		t.Errorf("modprobe nlmon (listed): %v: %s", err, out)
	}
}

// TestGuestSystemdContainer: the sensor, run from the package beside the
// guard, says that udev's loads are not from a container although udev's
// workers run in a mount namespace of their own (systemd-udevd's
// PrivateMounts=), and that a load from a new PID namespace (unshare -p
// -f) and one from a container's cgroup are. The rules' container macro
// (kmodguard_in_container) reads exactly these two fields: host_ns false,
// or a container id.
func TestGuestSystemdContainer(t *testing.T) {
	requireSystemdGuest(t)
	w := startWatch(t)

	mod := udevReload(t)
	if mod == "" {
		t.Fatal("no driver loaded by udev at boot could be unloaded and loaded again by udev")
	}
	e := w.loadEvent(t, mod)
	t.Logf("udev's load: %s", e)
	if !strings.Contains(e.Comm, "udev") {
		t.Errorf("the load of %s was made by %q, not by udev", mod, e.Comm)
	}
	if e.Res != 0 || !e.HostNS || e.ContainerID != "" {
		t.Errorf("udev's load of %s: %s; want allowed (res 0), host_ns true and no container id", mod, e)
	}
	if e.HostMntNS == nil || *e.HostMntNS {
		t.Errorf("udev's load of %s: host_mntns %v, want false: systemd-udevd runs with PrivateMounts=", mod, e.HostMntNS)
	}

	// A new PID namespace.
	const pidnsMod, cgroupMod = "ifb", "macvlan"
	for _, m := range []string{pidnsMod, cgroupMod} {
		sh("modprobe", "-r", m)
	}
	if out, err := sh("unshare", "-p", "-f", "--mount-proc", "modprobe", pidnsMod); err != nil {
		t.Fatalf("unshare -p -f modprobe %s: %v: %s", pidnsMod, err, out)
	}
	e = w.loadEvent(t, pidnsMod)
	t.Logf("load from a new PID namespace: %s", e)
	if e.HostNS {
		t.Errorf("load of %s from unshare -p -f: host_ns true, want false", pidnsMod)
	}
	if e.Res != 0 {
		t.Errorf("load of %s (listed) from unshare -p -f: res %d", pidnsMod, e.Res)
	}

	// A container's cgroup, named the way docker's systemd driver names
	// its scopes.
	id := randHex(32)
	cg := filepath.Join("/sys/fs/cgroup/kmodguard-test", "docker-"+id+".scope")
	if err := os.MkdirAll(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	defer func() {
		os.Remove(cg)
		os.Remove(filepath.Dir(cg))
	}()
	if out, err := sh("sh", "-c", "echo $$ > "+cg+"/cgroup.procs && exec modprobe "+cgroupMod); err != nil {
		t.Fatalf("modprobe %s in %s: %v: %s", cgroupMod, cg, err, out)
	}
	e = w.loadEvent(t, cgroupMod)
	t.Logf("load from a container's cgroup: %s", e)
	if e.ContainerID != id {
		t.Errorf("load of %s from %s: container id %q, want %s", cgroupMod, cg, e.ContainerID, id)
	}
	if !e.HostNS {
		t.Errorf("load of %s from a cgroup in the host's namespaces: host_ns false", cgroupMod)
	}
	if e.HostMntNS == nil || !*e.HostMntNS {
		t.Errorf("load of %s from vmtest.service (no sandbox): host_mntns %v, want true", cgroupMod, e.HostMntNS)
	}
}

// waitFailed waits for unit to end in the failed state.
func waitFailed(t *testing.T, unit string) {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		if prop(t, unit, "ActiveState") == "failed" {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	out, _ := sh("systemctl", "status", "--no-pager", unit)
	t.Fatalf("%s did not fail: %s", unit, out)
}

// TestGuestSystemdBrokenAllowlist: a corrupted or a missing allowlist
// makes the restarted unit fail for good after its bounded restarts, with
// the reason in the journal, and both show in systemctl --failed and
// is-system-running. The pinned guard outlives the unit, still enforcing.
// The allowlist is put back at the end, the unit left failed.
func TestGuestSystemdBrokenAllowlist(t *testing.T) {
	requireSystemdGuest(t)
	orig, err := os.ReadFile(guestAllowlist)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(guestAllowlist, orig, 0o644); err != nil {
			t.Error(err)
		}
	})
	if err := os.WriteFile(guestAllowlist, append(orig, []byte("\nnot: [valid\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	sh("systemctl", "restart", enforcerUnit)
	waitFailed(t, enforcerUnit)
	t.Logf("corrupted allowlist: %s failed after %s, Result=%s, NRestarts=%s", enforcerUnit,
		time.Since(start).Round(100*time.Millisecond), prop(t, enforcerUnit, "Result"), prop(t, enforcerUnit, "NRestarts"))
	if !slices.Contains(failedUnits(t), enforcerUnit) {
		t.Errorf("systemctl --failed does not list %s", enforcerUnit)
	}
	if state, _ := sh("systemctl", "is-system-running"); state != "degraded" {
		t.Errorf("is-system-running %q, want degraded", state)
	}
	if out, err := sh("modprobe", unlisted); err == nil {
		t.Errorf("modprobe %s with the unit failed: loaded; the pinned guard should still refuse it: %s", unlisted, out)
	}

	if err := os.Remove(guestAllowlist); err != nil {
		t.Fatal(err)
	}
	sh("systemctl", "reset-failed", enforcerUnit)
	start = time.Now()
	out, err := sh("systemctl", "start", enforcerUnit)
	if err == nil {
		t.Errorf("systemctl start with no allowlist succeeded: %s", out)
	}
	waitFailed(t, enforcerUnit)
	t.Logf("missing allowlist: %s failed after %s, Result=%s, NRestarts=%s", enforcerUnit,
		time.Since(start).Round(100*time.Millisecond), prop(t, enforcerUnit, "Result"), prop(t, enforcerUnit, "NRestarts"))
	log, _ := sh("journalctl", "-b", "-u", enforcerUnit, "-o", "cat", "--no-pager", "-n", "30")
	if want := "guard not loaded: read allowlist: open " + guestAllowlist + ": no such file or directory"; !strings.Contains(log, want) {
		t.Errorf("the journal does not say %q:\n%s", want, log)
	}
	if !slices.Contains(failedUnits(t), enforcerUnit) {
		t.Errorf("systemctl --failed does not list %s", enforcerUnit)
	}
	if state, _ := sh("systemctl", "is-system-running"); state != "degraded" {
		t.Errorf("is-system-running %q, want degraded", state)
	}
}

// sealScript is where install puts the operator guide's seal commands in
// the guest, taken from the guide itself, so that the guide is what runs.
const sealScript = "/root/seal-from-operator-guide.sh"

// guideSealCommands returns the shell block of the operator guide's
// "Seal" section.
func guideSealCommands() (string, error) {
	b, err := os.ReadFile("../../docs/operator-guide.md")
	if err != nil {
		return "", err
	}
	_, sec, ok := strings.Cut(string(b), "\n## 6. Seal\n")
	if !ok {
		return "", errors.New(`docs/operator-guide.md has no "## 6. Seal" section`)
	}
	sec, _, _ = strings.Cut(sec, "\n## ")
	_, block, ok := strings.Cut(sec, "\n```sh\n")
	if !ok {
		return "", errors.New(`docs/operator-guide.md: no sh block in "## 6. Seal"`)
	}
	block, _, ok = strings.Cut(block, "\n```")
	if !ok {
		return "", errors.New(`docs/operator-guide.md: the sh block of "## 6. Seal" does not end`)
	}
	return block + "\n", nil
}

// TestGuestSystemdZSeal runs after every other test of the boot, because
// a seal lasts until reboot. It seals the guard the way the operator guide
// says (its own commands: a drop-in with ExecStartPost=+ and a restart of
// the shipped unit), then, from the host's mount namespace, tries what a
// seal recorded in the sandboxed daemon's namespace let through: make /sys
// private, lazily unmount the bpffs and /sys, stop the unit. The unmounts
// are refused, and the guard, left alone, still refuses the unlisted
// module and lets a listed one load.
func TestGuestSystemdZSeal(t *testing.T) {
	requireSystemdGuest(t)
	self, err1 := os.Readlink("/proc/self/ns/mnt")
	hostNS, err2 := os.Readlink("/proc/1/ns/mnt")
	if err1 != nil || err2 != nil || self != hostNS {
		t.Fatalf("the test must run in the host's mount namespace: %s (%v) vs PID 1's %s (%v)", self, err1, hostNS, err2)
	}
	sh("systemctl", "reset-failed", enforcerUnit)
	start := time.Now()
	if out, err := sh("sh", "-e", sealScript); err != nil {
		log, _ := sh("journalctl", "-b", "-u", enforcerUnit, "-o", "cat", "--no-pager", "-n", "30")
		t.Fatalf("the operator guide's seal commands: %v: %s\n%s", err, out, log)
	}
	t.Logf("the guide's seal commands (drop-in, daemon-reload, restart) took %s", time.Since(start).Round(100*time.Millisecond))
	if got := prop(t, enforcerUnit, "ActiveState"); got != "active" {
		t.Fatalf("%s is %s after the restart", enforcerUnit, got)
	}
	out, err := sh("kmodguard", "enforcer", "status", "-o", "json")
	var st struct {
		Sealed bool   `json:"sealed"`
		Mode   string `json:"mode"`
	}
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || !st.Sealed || st.Mode != "enforce" {
		t.Fatalf("enforcer status after the seal: %v: %s; want sealed, enforce", err, out)
	}
	mainPID := prop(t, enforcerUnit, "MainPID")
	daemonNS, _ := os.Readlink("/proc/" + mainPID + "/ns/mnt")
	t.Logf("sealed by ExecStartPost=+; the daemon (pid %s) runs in mount namespace %s, the host's is %s", mainPID, daemonNS, hostNS)
	if daemonNS == hostNS {
		t.Errorf("the daemon runs in the host's mount namespace: the shipped unit's sandbox should give it its own")
	}

	if err := unix.Mount("", "/sys", "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
		t.Fatalf("mount --make-rprivate /sys: %v", err)
	}
	for _, target := range []string{"/sys/fs/bpf", "/sys"} {
		if err := unix.Unmount(target, unix.MNT_DETACH); !errors.Is(err, unix.EPERM) {
			t.Errorf("umount -l %s in the host's namespace under the unit's seal = %v, want EPERM", target, err)
		} else {
			t.Logf("umount -l %s: refused", target)
		}
	}
	if out, err := sh("kmodguard", "enforcer", "stop"); err == nil {
		t.Errorf("enforcer stop of a sealed guard succeeded: %s", out)
	}
	if out, err := sh("systemctl", "stop", enforcerUnit); err != nil {
		t.Fatalf("systemctl stop %s: %v: %s", enforcerUnit, err, out)
	}
	if got := prop(t, enforcerUnit, "ActiveState"); got != "inactive" {
		t.Errorf("%s is %s after stop", enforcerUnit, got)
	}
	if out, err := sh("modprobe", unlisted); err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Errorf("modprobe %s with the unit stopped after the attack: %v: %s; want Operation not permitted", unlisted, err, out)
	}
	if procModules(t)[unlisted] {
		t.Fatalf("%s is loaded: the guard is gone", unlisted)
	}
	if out, err := sh("modprobe", "netconsole"); err != nil {
		t.Errorf("modprobe netconsole (listed) under the seal: %v: %s", err, out)
	}
	out, err = sh("kmodguard", "enforcer", "status", "-o", "json")
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || !st.Sealed {
		t.Errorf("enforcer status after the attack: %v: %s; want a whole, sealed guard", err, out)
	}
	t.Logf("after make-rprivate, umount -l and stop: %s refused, netconsole loaded, the guard sealed and whole", unlisted)
}

// TestGuestNoAllowlistBoot: with no allowlist the unit ends failed after
// its bounded restarts, where systemctl --failed and is-system-running
// show it; the journal says why; the boot goes on without the guard (udev
// loads drivers), except for the unit made to require it (modules-load:
// nothing of modules-load.d is loaded).
func TestGuestNoAllowlistBoot(t *testing.T) {
	requireSystemdGuest(t)
	sh("systemctl", "is-system-running", "--wait")
	if got := prop(t, "multi-user.target", "ActiveState"); got != "active" {
		t.Errorf("multi-user.target is %s", got)
	}
	// The boot's jobs end with the unit's first failed start; its restarts
	// go on in the background until the start limit.
	waitFailed(t, enforcerUnit)
	state, _ := sh("systemctl", "is-system-running")
	if state != "degraded" {
		t.Errorf("is-system-running %q, want degraded", state)
	}
	failed := failedUnits(t)
	t.Logf("is-system-running: %s; failed units: %v", state, failed)
	if !slices.Equal(failed, []string{enforcerUnit}) {
		t.Errorf("failed units %v, want only %s", failed, enforcerUnit)
	}
	gaveUp, _ := strconv.ParseUint(prop(t, enforcerUnit, "InactiveEnterTimestampMonotonic"), 10, 64)
	t.Logf("%s: %s, Result=%s, NRestarts=%s, failed for good at %.3f s (uptime)", enforcerUnit, prop(t, enforcerUnit, "ActiveState"),
		prop(t, enforcerUnit, "Result"), prop(t, enforcerUnit, "NRestarts"), float64(gaveUp)/1e6)
	if n := prop(t, enforcerUnit, "NRestarts"); n != "4" && n != "5" {
		t.Errorf("NRestarts=%s: StartLimitBurst=5 allows 5 starts", n)
	}
	log, _ := sh("journalctl", "-b", "-u", enforcerUnit, "-o", "short-monotonic", "--no-pager")
	want := "guard not loaded: read allowlist: open " + guestAllowlist + ": no such file or directory"
	if !strings.Contains(log, want) {
		t.Fatalf("the journal does not say %q:\n%s", want, log)
	}
	if out, err := sh("kmodguard", "enforcer", "status"); err == nil {
		t.Errorf("enforcer status succeeded with no guard: %s", out)
	}

	// The boot did not wait for the restarts: udev started once the first
	// start had failed.
	var firstFail float64
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, want) {
			if _, err := fmt.Sscanf(strings.TrimLeft(line, "[ "), "%f]", &firstFail); err != nil {
				t.Fatalf("journal line %q: %v", line, err)
			}
			break
		}
	}
	udevd, _ := strconv.ParseUint(prop(t, "systemd-udevd.service", "ExecMainStartTimestampMonotonic"), 10, 64)
	t.Logf("first failed start at %.3f s; systemd-udevd started at %.3f s; the unit gave up at %.3f s", firstFail, float64(udevd)/1e6, float64(gaveUp)/1e6)
	if float64(udevd)/1e6 < firstFail {
		t.Errorf("systemd-udevd started before the unit's first start failed")
	}

	loaded := procModules(t)
	if !loaded["virtio_net"] {
		t.Error("udev did not load virtio_net: the boot should go on without the guard")
	}
	if start := prop(t, "systemd-modules-load.service", "ExecMainStartTimestampMonotonic"); start != "0" {
		t.Errorf("systemd-modules-load ran (at %s µs) though it requires the guard", start)
	}
	for _, m := range []string{bootListed, unlisted} {
		if loaded[m] {
			t.Errorf("%s (modules-load.d) is loaded: modules-load requires the guard, which did not start", m)
		}
	}
}

// failClosedEnforcerDropIn is the operator guide's drop-in that makes the guard
// fail closed at boot.
const failClosedEnforcerDropIn = `[Service]
Environment=KMODGUARD_ENFORCER_ARGS=--fail-closed
`

// goodListDir keeps, in the fail-closed guest, the allowlist that install
// built, for the test to put back.
const goodListDir = "/root/kmodguard-allowlist"

// TestVMSystemdFailClosed boots the systemd guest on 6.12 with the unit
// enabled with --fail-closed (the operator guide's drop-in) and no
// allowlist; the TestGuestFailClosed tests check that the boot failed
// closed, and what fixing the file does.
func TestVMSystemdFailClosed(t *testing.T) {
	deb := buildDeb(t)
	keys := t.TempDir()
	vmtest.Run(t, vmtest.Spec{
		Kernels:    []debkernel.Series{debkernel.Series612},
		Run:        "^TestGuestFailClosed",
		FailOnSkip: true,
		Timeout:    8 * time.Minute,
		System: &vmtest.System{Install: func(k *debkernel.Kernel, root string) error {
			if err := install(k, root, deb, keys); err != nil {
				return err
			}
			for _, f := range []string{"allowlist.yaml", "allowlist.yaml.sig"} {
				if err := os.MkdirAll(filepath.Join(root, goodListDir), 0o700); err != nil {
					return err
				}
				if err := os.Rename(filepath.Join(root, "etc/kmodguard", f), filepath.Join(root, goodListDir, f)); err != nil {
					return err
				}
			}
			dropIn := filepath.Join(root, "etc/systemd/system", enforcerUnit+".d")
			if err := os.MkdirAll(dropIn, 0o755); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dropIn, "fail-closed.conf"), []byte(failClosedEnforcerDropIn), 0o644)
		}},
	})
}

// TestGuestFailClosedBoot: with no allowlist and --fail-closed, the unit
// fails where systemctl --failed shows it, after pinning a guard with an
// empty policy in enforce mode, which refused udev's drivers and
// modules-load's, listed or not. Then the fix: the allowlist put back and
// the unit started again, the pinned guard takes it, and udev's drivers
// load. A broken list after that leaves the good policy in force.
func TestGuestFailClosedBoot(t *testing.T) {
	requireSystemdGuest(t)
	sh("systemctl", "is-system-running", "--wait")
	waitFailed(t, enforcerUnit)
	state, _ := sh("systemctl", "is-system-running")
	failed := failedUnits(t)
	t.Logf("is-system-running: %s; failed units: %v; %s NRestarts=%s", state, failed, enforcerUnit, prop(t, enforcerUnit, "NRestarts"))
	if state != "degraded" || !slices.Contains(failed, enforcerUnit) {
		t.Errorf("is-system-running %q, failed %v: want degraded with %s failed", state, failed, enforcerUnit)
	}
	log, _ := sh("journalctl", "-b", "-u", enforcerUnit, "-o", "cat", "--no-pager")
	for _, want := range []string{
		"a deny-all guard is pinned: every module load is refused",
		"open " + guestAllowlist + ": no such file or directory",
		"the guard already pinned keeps its policy", // the restarts
	} {
		if !strings.Contains(log, want) {
			t.Errorf("the journal does not say %q:\n%s", want, log)
		}
	}
	st := enforcerStatus(t)
	t.Logf("the guard at boot: %+v", st)
	if st.Mode != "enforce" || st.Entries != 0 || st.Sealed || st.Blocked == 0 {
		t.Errorf("guard %+v: want enforce, 0 entries, not sealed, loads refused", st)
	}
	loaded := procModules(t)
	for _, m := range []string{"virtio_net", bootListed, unlisted} {
		if loaded[m] {
			t.Errorf("%s is loaded: the deny-all guard should have refused it", m)
		}
	}
	if out, err := sh("modprobe", "ifb"); err == nil || !strings.Contains(out, "Operation not permitted") {
		t.Errorf("modprobe ifb under the deny-all guard: %v: %s; want Operation not permitted", err, out)
	}
	t.Logf("at boot the deny-all guard refused %d loads; virtio_net, %s and %s are not loaded", st.Blocked, bootListed, unlisted)

	// The fix.
	for _, f := range []string{"allowlist.yaml", "allowlist.yaml.sig"} {
		if err := copyFile(filepath.Join(goodListDir, f), filepath.Join("/etc/kmodguard", f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sh("systemctl", "reset-failed", enforcerUnit)
	if out, err := sh("systemctl", "start", enforcerUnit); err != nil {
		t.Fatalf("systemctl start with the allowlist back: %v: %s", err, out)
	}
	fixed := enforcerStatus(t)
	if fixed.Entries == 0 || fixed.Generation <= st.Generation {
		t.Fatalf("guard after the fix: %+v; want the allowlist's entries in a later generation", fixed)
	}
	if out, err := sh("udevadm", "trigger", "--action=add"); err != nil {
		t.Fatalf("udevadm trigger: %v: %s", err, out)
	}
	sh("udevadm", "settle", "--timeout=60")
	for deadline := time.Now().Add(30 * time.Second); !procModules(t)["virtio_net"] && time.Now().Before(deadline); {
		time.Sleep(200 * time.Millisecond)
	}
	if !procModules(t)["virtio_net"] {
		t.Errorf("virtio_net not loaded by udev once the allowlist is in force")
	}
	if out, err := sh("modprobe", bootListed); err != nil {
		t.Errorf("modprobe %s (listed) after the fix: %v: %s", bootListed, err, out)
	}
	if out, err := sh("modprobe", unlisted); err == nil {
		t.Errorf("modprobe %s (unlisted) after the fix loaded: %s", unlisted, out)
	}
	t.Logf("fixed: generation %d, %d entries; udev loaded virtio_net, %s loads, %s is refused", fixed.Generation, fixed.Entries, bootListed, unlisted)

	// A broken list now: the pinned guard keeps the good policy.
	if err := os.WriteFile(guestAllowlist, []byte("not: [valid\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sh("systemctl", "restart", enforcerUnit)
	waitFailed(t, enforcerUnit)
	after := enforcerStatus(t)
	if after.Entries != fixed.Entries || after.Generation != fixed.Generation {
		t.Errorf("guard after a broken list with --fail-closed: %+v; want the good policy (%+v) kept", after, fixed)
	}
	if out, err := sh("modprobe", "ifb"); err != nil {
		t.Errorf("modprobe ifb (listed) with the good policy kept: %v: %s", err, out)
	}
	t.Logf("a broken list with a guard pinned: the unit failed, the good policy (generation %d) stays", after.Generation)
}

// EnvUpgradeRelease names, in the guest, the kernel the upgrade test
// installs.
const EnvUpgradeRelease = "KMODGUARD_VMTEST_UPGRADE_RELEASE"

// TestVMSystemdUpgrade upgrades the kernel of a host with a local
// (unsigned) allowlist: booted on 6.1 with the kernel hook installed, the
// guest installs Debian's 6.12 image package with dpkg (whose postinst
// runs the hook), then the same disk boots 6.12, where every driver udev
// loads must be allowed.
func TestVMSystemdUpgrade(t *testing.T) {
	if !vmtest.Enabled() || vmtest.InGuest() {
		// Run skips here and says why; the next kernel's package is
		// fetched only for a run that boots it.
		vmtest.Run(t, vmtest.Spec{System: &vmtest.System{}})
		return
	}
	ctx := context.Background()
	next, err := debkernel.Get(ctx, debkernel.Series612)
	if err != nil {
		t.Fatalf("the 6.12 kernel: %v", err)
	}
	deb, err := next.Deb()
	if err != nil {
		t.Fatal(err)
	}
	pkg := buildDeb(t)
	keys := t.TempDir()
	disk := filepath.Join(t.TempDir(), "root.img")
	vmtest.Run(t, vmtest.Spec{
		Kernels:    []debkernel.Series{debkernel.Series61},
		Run:        "^TestGuestUpgradeInstall$",
		Files:      map[string]string{"linux-image.deb": deb},
		Env:        []string{EnvUpgradeRelease + "=" + next.Release},
		FailOnSkip: true,
		Timeout:    10 * time.Minute,
		System: &vmtest.System{Disk: disk, Install: func(k *debkernel.Kernel, root string) error {
			return installLocal(k, root, pkg, keys)
		}},
	})
	if t.Failed() {
		return
	}
	vmtest.Run(t, vmtest.Spec{
		Kernels:    []debkernel.Series{debkernel.Series612},
		Run:        "^TestGuestUpgradeBoot$",
		FailOnSkip: true,
		Timeout:    8 * time.Minute,
		System:     &vmtest.System{Disk: disk},
	})
}

// installLocal installs kmodguard with a local allowlist: unsigned, the
// unit told so with a drop-in, nothing in modules-load.d; the package put
// the kernel hook in /etc/kernel/postinst.d.
func installLocal(k *debkernel.Kernel, root, deb, keys string) error {
	if err := install(k, root, deb, keys); err != nil {
		return err
	}
	for _, f := range []string{"etc/kmodguard/allowlist.yaml.sig", "etc/kmodguard/allowlist.pub", "etc/modules-load.d/kmodguard-vmtest.conf"} {
		if err := os.Remove(filepath.Join(root, f)); err != nil {
			return err
		}
	}
	dropIn := `[Service]
ExecStart=
ExecStart=/usr/bin/kmodguard enforcer run --allowlist /etc/kmodguard/allowlist.yaml --log-format json --companion-socket /run/kmodguard/companion.sock
`
	dir := filepath.Join(root, "etc/systemd/system", enforcerUnit+".d")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "local-allowlist.conf"), []byte(dropIn), 0o644)
}

// status is the part of `kmodguard enforcer status -o json` these tests
// read.
type status struct {
	Mode       string `json:"mode"`
	Generation uint64 `json:"generation"`
	Entries    uint64 `json:"entries"`
	Sealed     bool   `json:"sealed"`
	Blocked    uint64 `json:"blocked"`
}

func enforcerStatus(t *testing.T) status {
	t.Helper()
	out, err := sh("kmodguard", "enforcer", "status", "-o", "json")
	if err != nil {
		t.Fatalf("enforcer status: %v: %s", err, out)
	}
	var st status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("enforcer status: %v: %s", err, out)
	}
	return st
}

// TestGuestUpgradeInstall: dpkg -i of the next kernel runs the hook, which
// adds the release's modules to the local allowlist, which the running
// guard applies.
func TestGuestUpgradeInstall(t *testing.T) {
	requireSystemdGuest(t)
	release := os.Getenv(EnvUpgradeRelease)
	if release == "" {
		t.Skip("needs " + EnvUpgradeRelease + ": TestVMSystemdUpgrade sets it")
	}
	if state, _ := sh("systemctl", "is-system-running", "--wait"); state != "running" {
		t.Errorf("is-system-running %q before the upgrade, failed: %v", state, failedUnits(t))
	}
	before := enforcerStatus(t)
	start := time.Now()
	out, err := sh("dpkg", "-i", "--force-depends", vmtest.File(t, "linux-image.deb"))
	t.Logf("dpkg -i (%s):\n%s", time.Since(start).Round(100*time.Millisecond), out)
	if err != nil {
		t.Fatalf("dpkg -i: %v", err)
	}
	if !strings.Contains(out, "modules added") {
		t.Errorf("dpkg's output does not show the hook adding modules")
	}
	veth, err := filepath.Glob("/usr/lib/modules/" + release + "/kernel/drivers/net/veth.ko*")
	if err != nil || len(veth) != 1 {
		t.Fatalf("no veth in the installed kernel: %v %v", veth, err)
	}
	if out, err := sh("kmodguard", "allowlist", "check", "-a", guestAllowlist, veth[0]); err != nil {
		t.Errorf("the new kernel's veth is not allowed after the hook: %v: %s", err, out)
	}
	var after status
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		if after = enforcerStatus(t); after.Generation > before.Generation {
			break
		}
	}
	t.Logf("guard: generation %d -> %d, entries %d -> %d", before.Generation, after.Generation, before.Entries, after.Entries)
	if after.Generation <= before.Generation || after.Entries <= before.Entries {
		t.Errorf("the daemon did not apply the extended allowlist")
	}
	sh("sync")
}

// TestGuestUpgradeBoot: the disk booted on the new kernel, with the list
// the hook extended: a clean boot, every driver udev loaded allowed, every
// module decided or loaded before the guard.
func TestGuestUpgradeBoot(t *testing.T) {
	requireSystemdGuest(t)
	rel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	t.Logf("booted %s", strings.TrimSpace(string(rel)))
	state, _ := sh("systemctl", "is-system-running", "--wait")
	if state != "running" {
		t.Errorf("is-system-running %q, failed units %v", state, failedUnits(t))
	}
	if got := prop(t, enforcerUnit, "ActiveState"); got != "active" {
		t.Fatalf("%s is %s", enforcerUnit, got)
	}
	sh("udevadm", "settle", "--timeout=60")
	var lines []logLine
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Second) {
		lines = enforcerLog(t)
		if len(undecided(lines, procModules(t))) == 0 || time.Now().After(deadline) {
			break
		}
	}
	var udev []string
	for _, l := range lines {
		if l.Op != "init_module" && l.Op != "finit_module" {
			continue
		}
		if l.Verdict != "allowed" {
			t.Errorf("%s by %s: %s", l.Module, l.Comm, l.Verdict)
		}
		if strings.Contains(l.Comm, "udev") && !slices.Contains(udev, l.Module) {
			udev = append(udev, l.Module)
		}
	}
	sort.Strings(udev)
	t.Logf("udev loaded %d drivers on the new kernel, each allowed: %s", len(udev), strings.Join(udev, " "))
	if len(udev) < 5 {
		t.Errorf("udev loaded only %d drivers", len(udev))
	}
	if u := undecided(lines, procModules(t)); len(u) > 0 {
		t.Errorf("in /proc/modules with no allowing decision and not loaded before the guard: %v", u)
	}
}
