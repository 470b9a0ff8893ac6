package debkernel

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestGet(t *testing.T) {
	for _, s := range AllSeries {
		t.Run(string(s), func(t *testing.T) {
			k, err := Get(context.Background(), s)
			if errors.Is(err, ErrNoApt) {
				t.Skip("needs apt-get and dpkg: not a Debian host")
			}
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(k.Vmlinuz()); err != nil {
				t.Fatalf("no vmlinuz: %v", err)
			}
			p, err := k.Module("dummy")
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %s (%s), dummy at %s", s, k.Release, k, p)
			if k.Version == "" || len(k.Parts) == 0 {
				t.Errorf("%s: no package version (%q) or parts (%q)", k.Release, k.Version, k.Parts)
			}
			if s == SeriesSid && (!strings.Contains(p, "/usr/lib/modules/") || !strings.HasSuffix(k.Vmlinuz(), "/vmlinuz")) {
				t.Errorf("sid's kernel is not in the merged-/usr layout: vmlinuz %s, dummy %s", k.Vmlinuz(), p)
			}
			// A second call must come from the cache.
			k2, err := Get(context.Background(), s)
			if err != nil || k2.Root != k.Root {
				t.Fatalf("second Get: %v, %v", k2, err)
			}
		})
	}
}

func TestModulesDep(t *testing.T) {
	for _, s := range AllSeries {
		t.Run(string(s), func(t *testing.T) {
			k, err := Get(context.Background(), s)
			if errors.Is(err, ErrNoApt) {
				t.Skip("needs apt-get and dpkg: not a Debian host")
			}
			if err != nil {
				t.Fatal(err)
			}
			deps, err := k.ModulesDep()
			if err != nil {
				t.Fatal(err)
			}
			if len(deps) < 1000 {
				t.Fatalf("only %d modules in modules.dep", len(deps))
			}
			withDeps := 0
			for mod, ds := range deps {
				if _, err := os.Stat(filepath.Join(k.ModulesDir(), mod)); err != nil {
					t.Errorf("modules.dep lists a missing file: %v", err)
				}
				for _, d := range ds {
					if _, ok := deps[d]; !ok {
						t.Errorf("%s depends on %s, which modules.dep does not list", mod, d)
					}
				}
				if len(ds) > 0 {
					withDeps++
				}
			}
			if withDeps == 0 {
				t.Error("no module has a dependency: modules.dep is not what depmod writes")
			}
			dummy, err := k.Module("dummy")
			if err != nil {
				t.Fatal(err)
			}
			rel, _ := filepath.Rel(k.ModulesDir(), dummy)
			if ds, ok := deps[rel]; !ok || len(ds) != 0 {
				t.Errorf("dummy: %v, %v; want listed without dependencies", ds, ok)
			}
		})
	}
}

// TestKernelsFitTheHarness checks what the QEMU harness and the guard need
// from each chosen kernel: a serial console built in, BTF, BPF LSM enabled
// by default, module unloading, and the fixture modules.
func TestKernelsFitTheHarness(t *testing.T) {
	for _, s := range AllSeries {
		t.Run(string(s), func(t *testing.T) {
			k, err := Get(context.Background(), s)
			if errors.Is(err, ErrNoApt) {
				t.Skip("needs apt-get and dpkg: not a Debian host")
			}
			if err != nil {
				t.Fatal(err)
			}
			for option, want := range map[string]string{
				"CONFIG_SERIAL_8250_CONSOLE": "y", "CONFIG_DEVTMPFS": "y", "CONFIG_BLK_DEV_INITRD": "y",
				"CONFIG_DEBUG_INFO_BTF": "y", "CONFIG_BPF_LSM": "y", "CONFIG_BPF_SYSCALL": "y",
				"CONFIG_SECURITYFS": "y", "CONFIG_MODULE_UNLOAD": "y", "CONFIG_MAGIC_SYSRQ": "y",
			} {
				if got, err := k.Config(option); err != nil || got != want {
					t.Errorf("%s: %s=%q, %v; want %q", k.Release, option, got, err, want)
				}
			}
			lsm, err := k.Config("CONFIG_LSM")
			if err != nil || !strings.Contains(","+lsm+",", ",bpf,") {
				t.Errorf("%s: bpf is not in CONFIG_LSM=%q (%v)", k.Release, lsm, err)
			}
			if force, _ := k.Config("CONFIG_MODULE_SIG_FORCE"); force == "y" {
				t.Errorf("%s enforces module signatures: crafted fixtures would not load", k.Release)
			}
			for _, m := range []string{"dummy", "veth"} {
				if _, err := k.Module(m); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// TestArm64KernelsFitTheHarness checks what the arm64 guests need: the
// PL011 console and the 8250 PCI result port built in, BTF, BPF and dummy.
func TestArm64KernelsFitTheHarness(t *testing.T) {
	if !foreignArch(ARM64) {
		t.Skip("needs arm64 known to dpkg: dpkg --add-architecture arm64 && apt-get update (scripts/deps.sh vm-arm64)")
	}
	for _, s := range AllSeries {
		t.Run(string(s), func(t *testing.T) {
			k, err := GetArch(context.Background(), s, ARM64)
			if errors.Is(err, ErrNoApt) {
				t.Skip("needs apt-get and dpkg: not a Debian host")
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasSuffix(k.Release, "-arm64") || k.Arch != ARM64 {
				t.Fatalf("GetArch(%s, arm64) gave %s (%s)", s, k.Release, k.Arch)
			}
			for option, want := range map[string]string{
				"CONFIG_SERIAL_AMBA_PL011_CONSOLE": "y", "CONFIG_SERIAL_8250_PCI": "y", "CONFIG_PCI_HOST_GENERIC": "y",
				"CONFIG_DEVTMPFS": "y", "CONFIG_BLK_DEV_INITRD": "y", "CONFIG_DEBUG_INFO_BTF": "y",
				"CONFIG_BPF_SYSCALL": "y", "CONFIG_BPF_LSM": "y", "CONFIG_MODULE_UNLOAD": "y",
			} {
				if got, err := k.Config(option); err != nil || got != want {
					t.Errorf("%s: %s=%q, %v; want %q", k.Release, option, got, err, want)
				}
			}
			if _, err := k.Module("dummy"); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestCached(t *testing.T) {
	t.Setenv("KMODGUARD_CACHE", t.TempDir())
	for _, rel := range []string{"6.1.0-9-amd64", "6.1.0-56-amd64", "6.1.0-60-amd64", "6.12.40+deb12-cloud-amd64", "6.12.117+deb12-amd64", "5.10.0-1-amd64",
		"6.1.0-70-arm64", "6.12.100+deb12-cloud-arm64", "6.12.200+deb12-arm64-16k"} {
		boot := filepath.Join(CacheDir(), "kernels", rel, "boot")
		os.MkdirAll(boot, 0o755)
		if rel != "6.1.0-60-amd64" { // unpacked without a vmlinuz: not usable
			os.WriteFile(filepath.Join(boot, "vmlinuz-"+rel), nil, 0o644)
		}
	}
	if k := cached(Series61, AMD64); k == nil || k.Release != "6.1.0-56-amd64" || k.Arch != AMD64 {
		t.Errorf("cached(6.1) = %+v", k)
	}
	if k := cached(Series612, AMD64); k == nil || k.Release != "6.12.117+deb12-amd64" {
		t.Errorf("cached(6.12) = %+v", k)
	}
	if k := cached("4.19", AMD64); k != nil {
		t.Errorf("an unknown series found %+v", k)
	}
	// arm64 kernels sit beside them; the 16k-page flavour is never taken.
	if k := cached(Series61, ARM64); k == nil || k.Release != "6.1.0-70-arm64" || k.Arch != ARM64 {
		t.Errorf("cached(6.1, arm64) = %+v", k)
	}
	if k := cached(Series612, ARM64); k == nil || k.Release != "6.12.100+deb12-cloud-arm64" {
		t.Errorf("cached(6.12, arm64) = %+v", k)
	}
}

// TestLayouts: a bookworm package keeps its kernel and config in /boot and
// its modules in /lib/modules; sid's split packages keep all of them under
// /usr/lib/modules/<release>. Both must be found, and the cache must find
// the newest sid kernel by its metadata.
func TestLayouts(t *testing.T) {
	t.Setenv("KMODGUARD_CACHE", t.TempDir())
	write := func(p, data string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	kernels := filepath.Join(CacheDir(), "kernels")
	old := &Kernel{Release: "6.1.0-57-amd64", Root: filepath.Join(kernels, "6.1.0-57-amd64")}
	write(filepath.Join(old.Root, "boot", "vmlinuz-"+old.Release), "")
	write(filepath.Join(old.Root, "boot", "config-"+old.Release), "CONFIG_X=y\n")
	write(filepath.Join(old.Root, "lib", "modules", old.Release, "kernel", "dummy.ko"), "")
	for _, rel := range []string{"7.2.13+deb14-cloud-amd64", "7.10.1+deb14-cloud-amd64", "7.3.1+deb14-cloud-arm64"} {
		k := &Kernel{Series: SeriesSid, Arch: AMD64, Package: "linux-image-" + rel, Version: "v-" + rel, Release: rel, Root: filepath.Join(kernels, rel)}
		if strings.HasSuffix(rel, "arm64") {
			k.Arch = ARM64
		}
		mods := filepath.Join(k.Root, "usr", "lib", "modules", rel)
		write(filepath.Join(mods, "vmlinuz"), "")
		write(filepath.Join(mods, "config"), "CONFIG_X=\"sid\"\n")
		write(filepath.Join(mods, "System.map"), "")
		write(filepath.Join(mods, "kernel", "dummy.ko.xz"), "")
		if err := k.writeMeta(k.Root); err != nil {
			t.Fatal(err)
		}
	}

	if got := old.Vmlinuz(); got != filepath.Join(old.Root, "boot", "vmlinuz-6.1.0-57-amd64") {
		t.Errorf("bookworm vmlinuz %s", got)
	}
	if got := old.ModulesDir(); got != filepath.Join(old.Root, "lib", "modules", old.Release) {
		t.Errorf("bookworm modules %s", got)
	}
	if v, err := old.Config("CONFIG_X"); v != "y" || err != nil {
		t.Errorf("bookworm config: %q, %v", v, err)
	}

	k := cached(SeriesSid, AMD64)
	if k == nil || k.Release != "7.10.1+deb14-cloud-amd64" || k.Version != "v-7.10.1+deb14-cloud-amd64" {
		t.Fatalf("cached(sid) = %+v, want 7.10.1 with its version", k)
	}
	mods := filepath.Join(k.Root, "usr", "lib", "modules", k.Release)
	if k.Vmlinuz() != filepath.Join(mods, "vmlinuz") || k.ModulesDir() != mods || k.ConfigPath() != filepath.Join(mods, "config") ||
		k.SystemMap() != filepath.Join(mods, "System.map") {
		t.Errorf("sid layout: vmlinuz %s, modules %s, config %s, System.map %s", k.Vmlinuz(), k.ModulesDir(), k.ConfigPath(), k.SystemMap())
	}
	if v, err := k.Config("CONFIG_X"); v != "sid" || err != nil {
		t.Errorf("sid config: %q, %v", v, err)
	}
	if p, err := k.Module("dummy"); err != nil || p != filepath.Join(mods, "kernel", "dummy.ko.xz") {
		t.Errorf("sid dummy: %s, %v", p, err)
	}
	if k := cached(SeriesSid, ARM64); k == nil || k.Release != "7.3.1+deb14-cloud-arm64" {
		t.Errorf("cached(sid, arm64) = %+v", k)
	}
	// The sid kernels carry metadata: no bookworm series takes them.
	if k := cached(Series612, AMD64); k != nil {
		t.Errorf("cached(6.12) = %+v, want none", k)
	}
	if k := cached(Series61, AMD64); k == nil || k.Release != old.Release {
		t.Errorf("cached(6.1) = %+v", k)
	}
}

func TestHostMirror(t *testing.T) {
	oneLine := parseOneLine(`# a comment
deb-src http://deb.debian.org/debian bookworm main
deb [arch=amd64 signed-by=/etc/k.gpg] http://mirror.example/debian/ bookworm main contrib
deb http://security.debian.org/debian-security bookworm-security main
`)
	if len(oneLine) != 3 || oneLine[0].debianArchive() || !oneLine[1].debianArchive() || oneLine[2].debianArchive() ||
		oneLine[1].uri != "http://mirror.example/debian/" || oneLine[1].signedBy != "/etc/k.gpg" {
		t.Errorf("one-line entries: %+v", oneLine)
	}
	deb822 := parseDeb822(`Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main

Types: deb deb-src
# a comment
URIs: http://deb.example/debian
Suites: bookworm-updates bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
Enabled: no
URIs: http://off.example/debian
Suites: trixie
`)
	if len(deb822) != 3 || deb822[0].debianArchive() || !deb822[1].debianArchive() || deb822[2].debianArchive() ||
		deb822[1].uri != "http://deb.example/debian" || deb822[1].signedBy != "/usr/share/keyrings/debian-archive-keyring.gpg" {
		t.Errorf("deb822 entries: %+v", deb822)
	}
	m, k := hostMirror()
	t.Logf("this host's Debian mirror: %s, keyring %s", m, k)
	if !strings.HasSuffix(m, "/debian") || !strings.HasPrefix(k, "/") {
		t.Errorf("hostMirror() = %q, %q", m, k)
	}
}
