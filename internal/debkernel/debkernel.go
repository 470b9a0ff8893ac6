// Package debkernel fetches Debian kernel packages and unpacks them into a
// cache, without installing anything on the host. Tests use the result in two
// ways: the vmlinuz boots under QEMU (internal/vmtest), and the thousands of
// real .ko files under lib/modules are fixtures for module inspection.
//
// Versions are resolved at run time through apt-cache, because Debian moves
// them: "6.1" is whatever linux-image-amd64 depends on, "6.12" is the
// newest linux-image-6.12.*+deb12-cloud-amd64 (or its non-cloud twin), and
// "sid" is whatever Debian unstable's linux-image-cloud-amd64 depends on
// (7.2.13+deb14-cloud-amd64 in December 2026): it follows sid to its next
// kernel without a change here. Without a reachable mirror, the newest
// kernel of the series already in the cache is used. Kernel.Version is the
// exact Debian version of the package unpacked (say, 6.1.192-3), which the
// tests print beside the package's name.
//
// The sid kernels come through a private apt configuration used only for
// fetching (see sidApt): its own sources.list with one sid line for the
// host's Debian mirror, its own package lists and cache under CacheDir; the
// host's apt sources are never changed. Sid splits a kernel into packages:
// linux-image-<release> is a meta package that depends on
// linux-binary-<release> (the kernel, at /usr/lib/modules/<release>/vmlinuz;
// there is no /boot), linux-modules-<release> (the .ko.xz files under
// /usr/lib/modules/<release>) and linux-base-<release> (config and
// System.map beside them). Get unpacks the three into one root, and
// Vmlinuz, ModulesDir and Config find their files in either layout.
//
// The cloud flavour of 6.12 is enough for the tests: it boots on the serial
// console, has BTF, bpf in CONFIG_LSM and CONFIG_MODULE_DECOMPRESS, and ships
// dummy and veth (TestKernelsFitTheHarness checks this on every run).
//
// Get fetches amd64 kernels; GetArch fetches them for another architecture
// (ARM64: "6.1" is what linux-image-arm64 depends on, "6.12" the newest
// linux-image-6.12.*+deb12-cloud-arm64, never the 16k-page flavour), which
// needs that architecture added to dpkg (dpkg --add-architecture arm64 and
// apt-get update: scripts/deps.sh vm-arm64). Package fetches any other
// package of an architecture, such as busybox-static for an arm64 guest.
package debkernel

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Series names a kernel line that the project tests on.
type Series string

const (
	// Series61 is the kernel that bookworm's linux-image-amd64 depends on.
	Series61 Series = "6.1"
	// Series612 is the newest 6.12 kernel built for bookworm.
	Series612 Series = "6.12"
	// SeriesSid is the kernel that Debian unstable's linux-image-cloud-<arch>
	// depends on: the newest kernel Debian builds.
	SeriesSid Series = "sid"
	// Series510 is the kernel that bullseye's linux-image-<arch> depends
	// on. It is below the project's kernel floor: not in AllSeries, only
	// booted to check that the guard and the sensor refuse it plainly.
	Series510 Series = "5.10"
)

// AllSeries lists the series the test matrix covers, oldest first.
var AllSeries = []Series{Series61, Series612, SeriesSid}

// Architectures, as Debian names them.
const (
	AMD64 = "amd64" // the default, and the host's
	ARM64 = "arm64"
)

// Arches lists the architectures GetArch knows.
var Arches = []string{AMD64, ARM64}

// Kernel is an unpacked kernel package.
type Kernel struct {
	Series  Series
	Arch    string // Debian architecture: AMD64 or ARM64
	Package string // e.g. linux-image-6.1.0-56-amd64
	// Version is the Debian version of Package, e.g. 6.1.192-3; empty
	// only for a kernel unpacked by an older cache whose .deb is gone.
	Version string
	// Parts are the packages unpacked into Root with their versions
	// ("linux-binary-7.2.13+deb14-cloud-amd64 7.2.13-1"): Package itself,
	// or the packages a split sid kernel's meta package depends on.
	Parts   []string
	Release string // uname -r, e.g. 6.1.0-56-amd64
	Root    string // where the packages were unpacked (dpkg -x)
}

// String names the kernel by its package and exact version, as the tests
// print it: "linux-image-6.1.0-57-amd64 6.1.192-3".
func (k *Kernel) String() string {
	if k.Version == "" {
		return k.Package + " (version unknown)"
	}
	return k.Package + " " + k.Version
}

// Deb returns the kernel's package file, as downloaded into the cache.
func (k *Kernel) Deb() (string, error) {
	return findDeb(filepath.Join(CacheDir(), "debs"), k.Package, k.Arch)
}

// Vmlinuz is the bootable kernel image: boot/vmlinuz-<release> in a
// bookworm package, usr/lib/modules/<release>/vmlinuz in sid's
// linux-binary-<release>. Debian's arm64 packages ship it as a plain,
// uncompressed Image, which QEMU's -kernel boots as it is.
func (k *Kernel) Vmlinuz() string {
	return k.firstOf(filepath.Join("boot", "vmlinuz-"+k.Release), "vmlinuz")
}

// ModulesDir is lib/modules/<release> inside the unpacked package, or
// usr/lib/modules/<release> for a package of a merged /usr (sid).
func (k *Kernel) ModulesDir() string {
	legacy := filepath.Join(k.Root, "lib", "modules", k.Release)
	merged := filepath.Join(k.Root, "usr", "lib", "modules", k.Release)
	if !fileExists(legacy) && fileExists(merged) {
		return merged
	}
	return legacy
}

// ConfigPath is the kernel's build configuration: boot/config-<release>,
// or config beside the modules (sid's linux-base-<release>).
func (k *Kernel) ConfigPath() string {
	return k.firstOf(filepath.Join("boot", "config-"+k.Release), "config")
}

// SystemMap is the kernel's System.map: boot/System.map-<release>, or
// System.map beside the modules.
func (k *Kernel) SystemMap() string {
	return k.firstOf(filepath.Join("boot", "System.map-"+k.Release), "System.map")
}

// firstOf returns bootRel under Root when it exists, else name in the
// merged-/usr modules folder when that exists, else bootRel under Root.
func (k *Kernel) firstOf(bootRel, name string) string {
	boot := filepath.Join(k.Root, bootRel)
	if fileExists(boot) {
		return boot
	}
	if p := filepath.Join(k.Root, "usr", "lib", "modules", k.Release, name); fileExists(p) {
		return p
	}
	return boot
}

// Module returns the path of a module by its base name ("dummy" gives
// .../drivers/net/dummy.ko), searching the modules tree.
func (k *Kernel) Module(name string) (string, error) {
	var found string
	want := []string{name + ".ko", name + ".ko.xz", name + ".ko.zst", name + ".ko.gz"}
	err := filepath.WalkDir(k.ModulesDir(), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || found != "" {
			return err
		}
		for _, w := range want {
			if d.Name() == w {
				found = p
				return filepath.SkipAll
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	if found == "" {
		return "", fmt.Errorf("module %q not found under %s", name, k.ModulesDir())
	}
	return found, nil
}

// CacheDir is where packages are unpacked: $KMODGUARD_CACHE, or
// $XDG_CACHE_HOME/kmodguard, or ~/.cache/kmodguard.
func CacheDir() string {
	if d := os.Getenv("KMODGUARD_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "kmodguard")
	}
	return filepath.Join(os.TempDir(), "kmodguard-cache")
}

// ErrNoApt is returned on hosts without apt-get and dpkg.
var ErrNoApt = errors.New("debkernel: apt-get, apt-cache and dpkg are needed to fetch Debian kernels")

var mu sync.Mutex

// Get resolves, downloads (once) and unpacks (once) the newest amd64 kernel
// of a series. It is safe to call from parallel tests and processes: a lock
// file in the cache serialises the download and the unpack, which goes to a
// temporary folder that is renamed into place.
func Get(ctx context.Context, s Series) (*Kernel, error) { return GetArch(ctx, s, AMD64) }

// GetArch is Get for the kernels of an architecture (AMD64 or ARM64). A
// foreign architecture must be known to dpkg (dpkg --add-architecture).
func GetArch(ctx context.Context, s Series, arch string) (*Kernel, error) {
	mu.Lock()
	defer mu.Unlock()
	if !slices.Contains(Arches, arch) {
		return nil, fmt.Errorf("debkernel: unknown architecture %q", arch)
	}
	for _, tool := range []string{"apt-get", "apt-cache", "dpkg"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, ErrNoApt
		}
	}
	apt, err := aptFor(ctx, s)
	var pkg string
	if err == nil {
		pkg, err = resolve(ctx, apt, s, arch)
		if err != nil && os.Geteuid() == 0 {
			// A fresh machine may have no package lists, or lists too old to
			// name the current kernels: refresh them once and try again.
			if uerr := apt.update(ctx); uerr != nil {
				err = uerr
			} else {
				pkg, err = resolve(ctx, apt, s, arch)
			}
		}
	}
	if err != nil {
		// Offline, or the mirror is unreachable: a kernel of the series
		// unpacked earlier still serves.
		if k := cached(s, arch); k != nil {
			return k, nil
		}
		if arch != AMD64 && !foreignArch(arch) {
			err = fmt.Errorf("%w (dpkg does not know %s: dpkg --add-architecture %s && apt-get update, or scripts/deps.sh vm-%s)", err, arch, arch, arch)
		}
		return nil, err
	}
	k := &Kernel{Series: s, Arch: arch, Package: pkg, Release: strings.TrimPrefix(strings.TrimSuffix(pkg, "-unsigned"), "linux-image-")}
	k.Root = filepath.Join(CacheDir(), "kernels", k.Release)
	if fileExists(k.Vmlinuz()) {
		k.loadMeta()
		return k, nil
	}
	unlock, err := lockCache()
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Another process may have unpacked it while this one waited.
	if fileExists(k.Vmlinuz()) {
		k.loadMeta()
		return k, nil
	}
	if err := fetch(ctx, apt, k); err != nil {
		return nil, err
	}
	if !fileExists(k.Vmlinuz()) {
		return nil, fmt.Errorf("debkernel: %s unpacked but has no vmlinuz (looked for %s)", pkg, k.Vmlinuz())
	}
	return k, nil
}

// resolved caches resolve's answers, by arch/series.
var resolved = map[string]string{}

// qualified names a package of arch for apt: amd64 packages by their bare
// name, as before foreign architectures were known, the others as
// name:arch.
func qualified(pkg, arch string) string {
	if arch == AMD64 {
		return pkg
	}
	return pkg + ":" + arch
}

func resolve(ctx context.Context, apt aptConfig, s Series, arch string) (string, error) {
	if p, ok := resolved[arch+"/"+string(s)]; ok {
		return p, nil
	}
	reDep61 := regexp.MustCompile(`Depends: (linux-image-6\.1\.0-\d+-` + arch + `)\b`)
	reDep510 := regexp.MustCompile(`Depends: (linux-image-5\.10\.0-\d+-` + arch + `)\b`)
	// The trailing space leaves out the -16k and -rt flavours.
	re612 := regexp.MustCompile(`^linux-image-(6\.12\.(\d+)\+deb12-(cloud-)?` + arch + `)(-unsigned)? `)
	var pkg string
	switch s {
	case Series61:
		meta := qualified("linux-image-"+arch, arch)
		out, err := apt.command(ctx, "apt-cache", "depends", meta).Output()
		if err != nil {
			return "", fmt.Errorf("debkernel: apt-cache depends %s: %w (run apt-get update?)", meta, err)
		}
		m := reDep61.FindSubmatch(out)
		if m == nil {
			return "", fmt.Errorf("debkernel: %s does not depend on a 6.1 kernel here:\n%s", meta, out)
		}
		pkg = string(m[1])
	case Series510:
		meta := qualified("linux-image-"+arch, arch)
		out, err := apt.command(ctx, "apt-cache", "depends", meta).Output()
		if err != nil {
			return "", fmt.Errorf("debkernel: apt-cache depends %s (bullseye): %w", meta, err)
		}
		m := reDep510.FindSubmatch(out)
		if m == nil {
			return "", fmt.Errorf("debkernel: bullseye's %s does not depend on a 5.10 kernel:\n%s", meta, out)
		}
		pkg = string(m[1])
	case SeriesSid:
		// The cloud flavour: a third of the generic one's modules, and all
		// the harness needs (TestKernelsFitTheHarness).
		meta := qualified("linux-image-cloud-"+arch, arch)
		out, err := apt.command(ctx, "apt-cache", "depends", meta).Output()
		if err != nil {
			return "", fmt.Errorf("debkernel: apt-cache depends %s (sid): %w", meta, err)
		}
		m := regexp.MustCompile(`Depends: (linux-image-\S+-cloud-` + arch + `)(:` + arch + `)?\s`).FindSubmatch(out)
		if m == nil {
			return "", fmt.Errorf("debkernel: sid's %s depends on no cloud kernel:\n%s", meta, out)
		}
		pkg = string(m[1])
	case Series612:
		out, err := apt.command(ctx, "apt-cache", "search", "--names-only", `^linux-image-6\.12\..*`+arch).Output()
		if err != nil {
			return "", fmt.Errorf("debkernel: apt-cache search: %w", err)
		}
		type cand struct {
			name  string
			patch int
			cloud bool
		}
		var cs []cand
		for _, line := range strings.Split(string(out), "\n") {
			m := re612.FindStringSubmatch(line)
			if m == nil || strings.Contains(line, "-dbg") {
				continue
			}
			var patch int
			fmt.Sscanf(m[2], "%d", &patch)
			cs = append(cs, cand{name: strings.Fields(line)[0], patch: patch, cloud: m[3] != ""})
		}
		if len(cs) == 0 {
			return "", fmt.Errorf("debkernel: no linux-image-6.12.*+deb12 package found by apt-cache (run apt-get update?)")
		}
		// Newest patch level first; at equal level prefer the cloud flavour,
		// which is smaller, and the unsigned package, whose name is stable.
		sort.Slice(cs, func(i, j int) bool {
			if cs[i].patch != cs[j].patch {
				return cs[i].patch > cs[j].patch
			}
			if cs[i].cloud != cs[j].cloud {
				return cs[i].cloud
			}
			return strings.HasSuffix(cs[i].name, "-unsigned")
		})
		pkg = cs[0].name
	default:
		return "", fmt.Errorf("debkernel: unknown series %q", s)
	}
	resolved[arch+"/"+string(s)] = pkg
	return pkg, nil
}

// foreignArch reports whether dpkg knows arch as a foreign architecture.
func foreignArch(arch string) bool {
	out, err := exec.Command("dpkg", "--print-foreign-architectures").Output()
	return err == nil && slices.Contains(strings.Fields(string(out)), arch)
}

// download puts the .deb of pkg for arch in the download folder, once, and
// returns its path. Offline, a .deb downloaded earlier serves.
func download(ctx context.Context, apt aptConfig, pkg, arch string) (string, error) {
	dl := filepath.Join(CacheDir(), "debs")
	if err := os.MkdirAll(dl, 0o755); err != nil {
		return "", fmt.Errorf("debkernel: %w", err)
	}
	deb, err := findDeb(dl, pkg, arch)
	if err != nil {
		cmd := apt.command(ctx, "apt-get", "download", "-q", qualified(pkg, arch))
		cmd.Dir = dl
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("debkernel: apt-get download %s: %w\n%s", qualified(pkg, arch), err, out)
		}
		if deb, err = findDeb(dl, pkg, arch); err != nil {
			return "", err
		}
	}
	return deb, nil
}

// parts returns the packages that hold a kernel whose image package is
// pkg: pkg itself (bookworm), or, when pkg is a meta package that depends
// on linux-binary-<release> (sid), the linux-binary, linux-modules and
// linux-base packages of the release.
func parts(ctx context.Context, apt aptConfig, pkg, release, arch string) ([]string, error) {
	out, err := apt.command(ctx, "apt-cache", "depends", qualified(pkg, arch)).Output()
	if err != nil {
		return nil, fmt.Errorf("debkernel: apt-cache depends %s: %w", qualified(pkg, arch), err)
	}
	var split []string
	for _, line := range strings.Split(string(out), "\n") {
		dep, ok := strings.CutPrefix(strings.TrimSpace(line), "Depends: ")
		if !ok {
			continue
		}
		dep, _, _ = strings.Cut(dep, ":")
		for _, kind := range []string{"binary", "modules", "base"} {
			if dep == "linux-"+kind+"-"+release {
				split = append(split, dep)
			}
		}
	}
	if !slices.Contains(split, "linux-binary-"+release) {
		return []string{pkg}, nil
	}
	return split, nil
}

// fetch downloads the packages of k and unpacks them together into k.Root,
// with the metadata that names them.
func fetch(ctx context.Context, apt aptConfig, k *Kernel) error {
	names, err := parts(ctx, apt, k.Package, k.Release, k.Arch)
	if err != nil {
		return err
	}
	debs := make([]string, 0, len(names))
	for _, n := range names {
		deb, err := download(ctx, apt, n, k.Arch)
		if err != nil {
			return err
		}
		debs = append(debs, deb)
		v, err := debVersion(ctx, deb)
		if err != nil {
			return err
		}
		k.Parts = append(k.Parts, n+" "+v)
	}
	// The image package's own version: a split kernel's meta package has
	// the same version as its parts, and is not needed for anything else.
	if len(names) == 1 {
		_, k.Version, _ = strings.Cut(k.Parts[0], " ")
	} else if deb, err := download(ctx, apt, k.Package, k.Arch); err != nil {
		return err
	} else if k.Version, err = debVersion(ctx, deb); err != nil {
		return err
	}
	return unpack(ctx, debs, k.Root, k.writeMeta)
}

// debVersion reads the Version field of a .deb.
func debVersion(ctx context.Context, deb string) (string, error) {
	out, err := exec.CommandContext(ctx, "dpkg-deb", "-f", deb, "Version").Output()
	if err != nil {
		return "", fmt.Errorf("debkernel: dpkg-deb -f %s Version: %w", deb, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// unpack extracts the debs into root through a temporary folder renamed
// into place; before the rename, fill (when set) may add to the folder.
func unpack(ctx context.Context, debs []string, root string, fill func(dir string) error) error {
	tmp, err := os.MkdirTemp(filepath.Dir(root), ".unpack-")
	if err != nil {
		if err := os.MkdirAll(filepath.Dir(root), 0o755); err != nil {
			return fmt.Errorf("debkernel: %w", err)
		}
		if tmp, err = os.MkdirTemp(filepath.Dir(root), ".unpack-"); err != nil {
			return fmt.Errorf("debkernel: %w", err)
		}
	}
	defer os.RemoveAll(tmp)
	for _, deb := range debs {
		if out, err := exec.CommandContext(ctx, "dpkg", "-x", deb, tmp).CombinedOutput(); err != nil {
			return fmt.Errorf("debkernel: dpkg -x %s: %w\n%s", deb, err, out)
		}
	}
	if fill != nil {
		if err := fill(tmp); err != nil {
			return err
		}
	}
	os.RemoveAll(root)
	if err := os.Rename(tmp, root); err != nil {
		return fmt.Errorf("debkernel: %w", err)
	}
	return nil
}

// metaFile, in a kernel's root, records what was unpacked there.
const metaFile = ".debkernel.json"

type meta struct {
	Series  Series   `json:"series"`
	Arch    string   `json:"arch"`
	Package string   `json:"package"`
	Version string   `json:"version"`
	Parts   []string `json:"parts"`
}

func (k *Kernel) writeMeta(dir string) error {
	b, err := json.MarshalIndent(meta{Series: k.Series, Arch: k.Arch, Package: k.Package, Version: k.Version, Parts: k.Parts}, "", "  ")
	if err != nil {
		return fmt.Errorf("debkernel: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, metaFile), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("debkernel: %w", err)
	}
	return nil
}

// loadMeta fills Version and Parts of a kernel found unpacked: from its
// metadata, or, for a root unpacked before there was any, from the .deb it
// came from when that is still in the download folder.
func (k *Kernel) loadMeta() {
	if b, err := os.ReadFile(filepath.Join(k.Root, metaFile)); err == nil {
		var m meta
		if json.Unmarshal(b, &m) == nil && m.Package == k.Package {
			k.Version, k.Parts = m.Version, m.Parts
			return
		}
	}
	if deb, err := findDeb(filepath.Join(CacheDir(), "debs"), k.Package, k.Arch); err == nil {
		if v, err := debVersion(context.Background(), deb); err == nil {
			k.Version, k.Parts = v, []string{k.Package + " " + v}
		}
	}
}

// Package downloads (once) and unpacks (once) a Debian package for arch,
// such as busybox-static for an arm64 guest, and returns the folder it was
// unpacked into (the package's files under it, as dpkg -x lays them out).
// The first call takes the candidate version apt knows then; later calls
// reuse that .deb, also offline.
func Package(ctx context.Context, name, arch string) (string, error) {
	mu.Lock()
	defer mu.Unlock()
	for _, tool := range []string{"apt-get", "dpkg"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", ErrNoApt
		}
	}
	unlock, err := lockCache()
	if err != nil {
		return "", err
	}
	defer unlock()
	var host aptConfig
	deb, err := download(ctx, host, name, arch)
	if err != nil && os.Geteuid() == 0 {
		// No package lists yet, or none for a foreign architecture just
		// added: refresh them once and try again.
		if uerr := host.update(ctx); uerr != nil {
			err = uerr
		} else {
			deb, err = download(ctx, host, name, arch)
		}
	}
	if err != nil {
		if arch != AMD64 && !foreignArch(arch) {
			err = fmt.Errorf("%w (dpkg does not know %s: dpkg --add-architecture %s && apt-get update, or scripts/deps.sh vm-%s)", err, arch, arch, arch)
		}
		return "", err
	}
	root := filepath.Join(CacheDir(), "packages", strings.TrimSuffix(filepath.Base(deb), ".deb"))
	if _, err := os.Stat(root); err == nil {
		return root, nil
	}
	if err := unpack(ctx, []string{deb}, root, nil); err != nil {
		return "", err
	}
	return root, nil
}

func findDeb(dir, pkg, arch string) (string, error) {
	m, _ := filepath.Glob(filepath.Join(dir, pkg+"_*_"+arch+".deb"))
	if len(m) == 0 {
		return "", fmt.Errorf("debkernel: no .deb for %s in %s", pkg, dir)
	}
	sort.Strings(m)
	return m[len(m)-1], nil
}

// lockCache takes an exclusive lock on the cache across processes (go test
// runs packages in parallel, each may fetch) and returns its release.
func lockCache() (func(), error) {
	if err := os.MkdirAll(CacheDir(), 0o755); err != nil {
		return nil, fmt.Errorf("debkernel: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(CacheDir(), ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("debkernel: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("debkernel: lock %s: %w", f.Name(), err)
	}
	return func() {
		unix.Flock(int(f.Fd()), unix.LOCK_UN)
		f.Close()
	}, nil
}

// ModulesDep returns the kernel's module dependencies from modules.dep,
// keyed by the module's path relative to ModulesDir, its values likewise.
// Debian's packages do not ship modules.dep (dpkg's postinst makes it), so
// the first call generates it with depmod into the cache.
func (k *Kernel) ModulesDep() (map[string][]string, error) {
	p := filepath.Join(k.ModulesDir(), "modules.dep")
	if _, err := os.Stat(p); err != nil {
		if err := k.depmod(); err != nil {
			return nil, err
		}
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("debkernel: %w", err)
	}
	defer f.Close()
	deps := map[string][]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		mod, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		deps[mod] = strings.Fields(rest)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("debkernel: %s: %w", p, err)
	}
	return deps, nil
}

func (k *Kernel) depmod() error {
	depmod, err := exec.LookPath("depmod")
	if err != nil {
		return fmt.Errorf("debkernel: no modules.dep for %s and no depmod to make one (install kmod)", k.Release)
	}
	unlock, err := lockCache()
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(k.ModulesDir(), "modules.dep")); err == nil {
		return nil
	}
	// depmod -b BASE reads BASE/lib/modules/<release>: for a merged /usr
	// (sid), BASE is the root's usr.
	base := filepath.Dir(filepath.Dir(filepath.Dir(k.ModulesDir())))
	args := []string{"-b", base, k.Release}
	if sm := k.SystemMap(); fileExists(sm) {
		args = append([]string{"-F", sm}, args...)
	}
	if out, err := exec.Command(depmod, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("debkernel: depmod for %s: %w\n%s", k.Release, err, out)
	}
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// cachedRelease matches the release folders of the bookworm series in
// the cache; ARCH stands for the architecture. A kernel unpacked with its
// metadata is known by that instead.
var cachedRelease = map[Series]string{
	Series510: `^5\.10\.0-(\d+)-ARCH$`,
	Series61:  `^6\.1\.0-(\d+)-ARCH$`,
	Series612: `^6\.12\.(\d+)\+deb12-(cloud-)?ARCH$`,
}

// cached returns the newest kernel of a series already unpacked in the
// cache, or nil.
func cached(s Series, arch string) *Kernel {
	var re *regexp.Regexp
	if pat, ok := cachedRelease[s]; ok {
		re = regexp.MustCompile(strings.Replace(pat, "ARCH", arch, 1))
	}
	ents, _ := os.ReadDir(filepath.Join(CacheDir(), "kernels"))
	var best *Kernel
	for _, e := range ents {
		root := filepath.Join(CacheDir(), "kernels", e.Name())
		k := &Kernel{Series: s, Arch: arch, Package: "linux-image-" + e.Name(), Release: e.Name(), Root: root}
		var m meta
		if b, err := os.ReadFile(filepath.Join(root, metaFile)); err == nil && json.Unmarshal(b, &m) == nil {
			if m.Series != s || m.Arch != arch {
				continue
			}
			k.Package, k.Version, k.Parts = m.Package, m.Version, m.Parts
		} else if re == nil || !re.MatchString(e.Name()) {
			continue
		}
		if !fileExists(k.Vmlinuz()) {
			continue
		}
		if k.Version == "" {
			k.loadMeta()
		}
		if best == nil || releaseLess(best.Release, k.Release) {
			best = k
		}
	}
	return best
}

// releaseLess orders kernel releases by their numbers (6.1.0-9 before
// 6.1.0-56, 6.12.40 before 6.12.117, 6.12 before 7.2).
func releaseLess(a, b string) bool {
	num := regexp.MustCompile(`\d+`)
	na, nb := num.FindAllString(a, -1), num.FindAllString(b, -1)
	for i := 0; i < len(na) && i < len(nb); i++ {
		x, _ := strconv.Atoi(na[i])
		y, _ := strconv.Atoi(nb[i])
		if x != y {
			return x < y
		}
	}
	if len(na) != len(nb) {
		return len(na) < len(nb)
	}
	return a < b
}

// Config returns the value of a build option from the package's build
// configuration (ConfigPath: "y", "m", a string without its quotes), or ""
// when it is not set.
func (k *Kernel) Config(option string) (string, error) {
	b, err := os.ReadFile(k.ConfigPath())
	if err != nil {
		return "", fmt.Errorf("debkernel: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, option+"="); ok {
			return strings.Trim(v, `"`), nil
		}
	}
	return "", nil
}
