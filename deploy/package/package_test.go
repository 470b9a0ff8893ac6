// Package packaging_test builds the .deb and .rpm of each architecture with
// scripts/package.sh (what `make package` runs) and checks what they hold:
// the files and their modes, the control fields, the conffiles, the
// maintainer scripts, a static and version-stamped CLI, and the Falco
// plugin's entry points.
package packaging_test

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/kmodguard/kmodguard/internal/version"
)

const (
	stamp   = "1.2.3"
	pkgVers = "1.2.3+gtest"
)

// files are the package's files and their modes.
var files = map[string]string{
	"/usr/bin/kmodguard":                                 "-rwxr-xr-x",
	"/usr/share/falco/plugins/libkmodguard.so":           "-rw-r--r--",
	"/usr/lib/systemd/system/kmodguard-enforcer.service": "-rw-r--r--",
	"/etc/kernel/postinst.d/kmodguard":                   "-rwxr-xr-x",
	"/etc/falco/kmodguard_rules.yaml":                    "-rw-r--r--",
	"/etc/kmodguard/README":                              "-rw-r--r--",
	"/usr/share/doc/kmodguard/operator-guide.md":         "-rw-r--r--",
	"/usr/share/doc/kmodguard/LICENSE":                   "-rw-r--r--",
	"/usr/share/doc/kmodguard/LICENSES/MIT.txt":          "-rw-r--r--",
	"/usr/share/doc/kmodguard/LICENSES/GPL-2.0-only.txt": "-rw-r--r--",
}

// conffiles are the files an upgrade leaves alone once the operator has
// changed them.
var conffiles = []string{
	"/etc/falco/kmodguard_rules.yaml",
	"/etc/kernel/postinst.d/kmodguard",
	"/etc/kmodguard/README",
}

// arch is one architecture's names and the C compiler of its plugin.
type arch struct {
	deb, rpm string
	machine  elf.Machine
	cc       string
}

var arches = []arch{
	{"amd64", "x86_64", elf.EM_X86_64, "gcc"},
	{"arm64", "aarch64", elf.EM_AARCH64, "aarch64-linux-gnu-gcc"},
}

// build runs scripts/package.sh for a into a temporary folder and returns
// the path of the package of each format.
func build(t *testing.T, a arch) map[string]string {
	t.Helper()
	if _, err := exec.LookPath(a.cc); err != nil {
		t.Skipf("needs %s for the %s plugin's cgo build (scripts/deps.sh package)", a.cc, a.deb)
	}
	dist := t.TempDir()
	cmd := exec.Command("scripts/package.sh", a.deb)
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "DIST="+dist, "PKG_VERSION="+pkgVers,
		"LDFLAGS=-s -w -X github.com/kmodguard/kmodguard/internal/version.version="+stamp)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/package.sh %s: %v\n%s", a.deb, err, out)
	}
	got := map[string]string{}
	for _, f := range []string{"deb", "rpm"} {
		m, err := filepath.Glob(filepath.Join(dist, "*."+f))
		if err != nil || len(m) != 1 {
			t.Fatalf("want one .%s in %s, got %v (%v)", f, dist, m, err)
		}
		got[f] = m[0]
	}
	return got
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, ee.Stderr)
		}
		t.Fatalf("%s %s: %v", name, strings.Join(args, " "), err)
	}
	return string(out)
}

func TestPackages(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds the CLI, the plugin and the packages")
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("needs dpkg-deb to read the .deb")
	}
	for _, a := range arches {
		t.Run(a.deb, func(t *testing.T) {
			pkgs := build(t, a)
			t.Run("deb", func(t *testing.T) { checkDeb(t, a, pkgs["deb"]) })
			t.Run("rpm", func(t *testing.T) { checkRPM(t, a, pkgs["rpm"]) })
		})
	}
}

func checkDeb(t *testing.T, a arch, deb string) {
	fields := map[string]string{
		"Package":      "kmodguard",
		"Version":      pkgVers + "-1",
		"Architecture": a.deb,
		"Section":      "admin",
		"Depends":      "",
	}
	for k, want := range fields {
		if got := strings.TrimSpace(run(t, "dpkg-deb", "-f", deb, k)); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	desc := run(t, "dpkg-deb", "-f", deb, "Description")
	if !strings.Contains(desc, "not enabled on installation") {
		t.Errorf("the description does not say the guard is not enabled:\n%s", desc)
	}

	// dpkg-deb -c: "-rwxr-xr-x root/root 123 2026-12-06 02:34 ./usr/bin/kmodguard"
	modes := map[string]string{}
	for _, line := range strings.Split(run(t, "dpkg-deb", "-c", deb), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || strings.HasPrefix(f[0], "d") {
			continue
		}
		if f[1] != "root/root" {
			t.Errorf("%s is owned by %s", f[5], f[1])
		}
		modes[strings.TrimPrefix(f[5], ".")] = f[0]
	}
	for p, want := range files {
		if got := modes[p]; got != want {
			t.Errorf("%s: mode %q, want %q", p, got, want)
		}
	}
	for p := range modes {
		if _, ok := files[p]; !ok {
			t.Errorf("unexpected file %s (an allowlist would refuse modules before the operator built one)", p)
		}
	}

	gotConf := strings.Fields(run(t, "dpkg-deb", "-I", deb, "conffiles"))
	if !slices.Equal(gotConf, conffiles) {
		t.Errorf("conffiles %v, want %v", gotConf, conffiles)
	}
	postinst := run(t, "dpkg-deb", "-I", deb, "postinst")
	checkScript(t, "postinst", postinst)
	checkScript(t, "postrm", run(t, "dpkg-deb", "-I", deb, "postrm"))

	root := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, root)
	checkCLI(t, filepath.Join(root, "usr/bin/kmodguard"), a.machine)
	checkPlugin(t, filepath.Join(root, "usr/share/falco/plugins/libkmodguard.so"), a.machine)
	for _, f := range []string{"usr/lib/systemd/system/kmodguard-enforcer.service", "etc/kernel/postinst.d/kmodguard", "etc/falco/kmodguard_rules.yaml"} {
		src := map[string]string{
			"usr/lib/systemd/system/kmodguard-enforcer.service": "deploy/systemd/kmodguard-enforcer.service",
			"etc/kernel/postinst.d/kmodguard":                   "deploy/kernel/postinst.d/kmodguard",
			"etc/falco/kmodguard_rules.yaml":                    "rules/kmodguard_rules.yaml",
		}[f]
		want, err := os.ReadFile(filepath.Join("../..", src))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := os.ReadFile(filepath.Join(root, f)); err != nil || string(got) != string(want) {
			t.Errorf("/%s differs from %s (%v)", f, src, err)
		}
	}
}

// checkScript: a maintainer script reloads systemd's units where systemd
// runs, and neither enables nor starts the guard.
func checkScript(t *testing.T, name, text string) {
	t.Helper()
	if !strings.HasPrefix(text, "#!/bin/sh\n") || !strings.Contains(text, "systemctl daemon-reload") {
		t.Errorf("%s does not reload systemd:\n%s", name, text)
	}
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, verb := range []string{"enable", "start", "restart"} {
			if strings.Contains(line, "systemctl "+verb) || strings.Contains(line, "deb-systemd-invoke") {
				t.Errorf("%s runs %q: the operator enables the guard once the allowlist is built", name, strings.TrimSpace(line))
			}
		}
	}
}

// checkCLI: for the architecture, static (no interpreter), and stamped.
func checkCLI(t *testing.T, path string, machine elf.Machine) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != machine {
		t.Errorf("%s is for %s, want %s", path, f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has an ELF interpreter: not static", path)
		}
	}
	info, err := version.OfExecutable(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Version != stamp || info.Source != "ldflags" {
		t.Errorf("the packaged CLI's version is %q from %s, want %s stamped with -ldflags", info.Version, info.Source, stamp)
	}
}

// checkPlugin: a shared object for the architecture with the plugin API's
// entry points.
func checkPlugin(t *testing.T, path string, machine elf.Machine) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Type != elf.ET_DYN || f.Machine != machine {
		t.Errorf("%s: %s for %s, want a shared object for %s", path, f.Type, f.Machine, machine)
	}
	syms, err := f.DynamicSymbols()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, s := range syms {
		have[s.Name] = true
	}
	for _, s := range []string{"plugin_get_required_api_version", "plugin_init", "plugin_open", "plugin_next_batch", "plugin_extract_fields"} {
		if !have[s] {
			t.Errorf("%s does not export %s", path, s)
		}
	}
}

func checkRPM(t *testing.T, a arch, rpm string) {
	if _, err := exec.LookPath("rpm"); err != nil {
		t.Skip("needs rpm to read the .rpm (scripts/deps.sh package)")
	}
	q := run(t, "rpm", "-qp", "--queryformat", "%{NAME} %{VERSION} %{RELEASE} %{ARCH} %{OS}", rpm)
	if want := "kmodguard " + pkgVers + " 1 " + a.rpm + " linux"; q != want {
		t.Errorf("rpm -qp: %q, want %q", q, want)
	}
	want := []string{"/etc/kmodguard", "/usr/share/doc/kmodguard", "/usr/share/doc/kmodguard/LICENSES"}
	for p := range files {
		want = append(want, p)
	}
	slices.Sort(want)
	if got := strings.Fields(run(t, "rpm", "-qlp", rpm)); !slices.Equal(got, want) {
		t.Errorf("rpm -qlp: %v, want %v", got, want)
	}
	if got := strings.Fields(run(t, "rpm", "-qp", "--configfiles", rpm)); !slices.Equal(got, conffiles) {
		t.Errorf("config files %v, want %v", got, conffiles)
	}
	// rpm --scripts: "postinstall scriptlet (using /bin/sh):\n#!/bin/sh\n..."
	scripts := run(t, "rpm", "-qp", "--scripts", rpm)
	for _, s := range []string{"postinstall", "postuninstall"} {
		_, body, ok := strings.Cut(scripts, s+" scriptlet (using /bin/sh):\n")
		if !ok {
			t.Errorf("no %s scriptlet:\n%s", s, scripts)
			continue
		}
		body, _, _ = strings.Cut(body, "\n\n")
		checkScript(t, s, body+"\n")
	}
}
