// Package debkernel fetches Debian kernel packages and unpacks them into a
// cache, without installing anything on the host. Tests use the result in two
// ways: the vmlinuz boots under QEMU (internal/vmtest), and the thousands of
// real .ko files under lib/modules are fixtures for module inspection.
//
// Versions are resolved at run time through apt-cache, because Debian moves
// them: "6.1" is whatever linux-image-amd64 depends on, and "6.12" is the
// newest linux-image-6.12.*+deb12-cloud-amd64 (or its non-cloud twin).
// Without a reachable mirror, the newest kernel of the series already in the
// cache is used.
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
)

// AllSeries lists the series the test matrix covers, oldest first.
var AllSeries = []Series{Series61, Series612}

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
	Release string // uname -r, e.g. 6.1.0-56-amd64
	Root    string // where the package was unpacked (dpkg -x)
}

// Vmlinuz is the bootable kernel image. Debian's arm64 packages ship it as
// a plain, uncompressed Image, which QEMU's -kernel boots as it is.
func (k *Kernel) Vmlinuz() string { return filepath.Join(k.Root, "boot", "vmlinuz-"+k.Release) }

// Deb returns the kernel's package file, as downloaded into the cache.
func (k *Kernel) Deb() (string, error) {
	return findDeb(filepath.Join(CacheDir(), "debs"), k.Package, k.Arch)
}

// ModulesDir is lib/modules/<release> inside the unpacked package.
func (k *Kernel) ModulesDir() string {
	return filepath.Join(k.Root, "lib", "modules", k.Release)
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
	pkg, err := resolve(ctx, s, arch)
	if err != nil && os.Geteuid() == 0 {
		// A fresh machine may have no package lists, or lists too old to name
		// the current kernels: refresh them once and try again.
		if out, uerr := exec.CommandContext(ctx, "apt-get", "update", "-qq").CombinedOutput(); uerr != nil {
			err = fmt.Errorf("debkernel: apt-get update: %w\n%s", uerr, out)
		} else {
			pkg, err = resolve(ctx, s, arch)
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
	if _, err := os.Stat(k.Vmlinuz()); err == nil {
		return k, nil
	}
	unlock, err := lockCache()
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Another process may have unpacked it while this one waited.
	if _, err := os.Stat(k.Vmlinuz()); err == nil {
		return k, nil
	}
	if err := fetch(ctx, pkg, arch, k.Root); err != nil {
		return nil, err
	}
	if _, err := os.Stat(k.Vmlinuz()); err != nil {
		return nil, fmt.Errorf("debkernel: %s unpacked but has no %s", pkg, k.Vmlinuz())
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

func resolve(ctx context.Context, s Series, arch string) (string, error) {
	if p, ok := resolved[arch+"/"+string(s)]; ok {
		return p, nil
	}
	reDep61 := regexp.MustCompile(`Depends: (linux-image-6\.1\.0-\d+-` + arch + `)\b`)
	// The trailing space leaves out the -16k and -rt flavours.
	re612 := regexp.MustCompile(`^linux-image-(6\.12\.(\d+)\+deb12-(cloud-)?` + arch + `)(-unsigned)? `)
	var pkg string
	switch s {
	case Series61:
		meta := qualified("linux-image-"+arch, arch)
		out, err := exec.CommandContext(ctx, "apt-cache", "depends", meta).Output()
		if err != nil {
			return "", fmt.Errorf("debkernel: apt-cache depends %s: %w (run apt-get update?)", meta, err)
		}
		m := reDep61.FindSubmatch(out)
		if m == nil {
			return "", fmt.Errorf("debkernel: %s does not depend on a 6.1 kernel here:\n%s", meta, out)
		}
		pkg = string(m[1])
	case Series612:
		out, err := exec.CommandContext(ctx, "apt-cache", "search", "--names-only", `^linux-image-6\.12\..*`+arch).Output()
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
func download(ctx context.Context, pkg, arch string) (string, error) {
	dl := filepath.Join(CacheDir(), "debs")
	if err := os.MkdirAll(dl, 0o755); err != nil {
		return "", fmt.Errorf("debkernel: %w", err)
	}
	deb, err := findDeb(dl, pkg, arch)
	if err != nil {
		cmd := exec.CommandContext(ctx, "apt-get", "download", "-q", qualified(pkg, arch))
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

func fetch(ctx context.Context, pkg, arch, root string) error {
	deb, err := download(ctx, pkg, arch)
	if err != nil {
		return err
	}
	return unpack(ctx, deb, root)
}

// unpack extracts deb into root through a temporary folder renamed into
// place.
func unpack(ctx context.Context, deb, root string) error {
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
	if out, err := exec.CommandContext(ctx, "dpkg", "-x", deb, tmp).CombinedOutput(); err != nil {
		return fmt.Errorf("debkernel: dpkg -x %s: %w\n%s", deb, err, out)
	}
	os.RemoveAll(root)
	if err := os.Rename(tmp, root); err != nil {
		return fmt.Errorf("debkernel: %w", err)
	}
	return nil
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
	deb, err := download(ctx, name, arch)
	if err != nil && os.Geteuid() == 0 {
		// No package lists yet, or none for a foreign architecture just
		// added: refresh them once and try again.
		if out, uerr := exec.CommandContext(ctx, "apt-get", "update", "-qq").CombinedOutput(); uerr != nil {
			err = fmt.Errorf("debkernel: apt-get update: %w\n%s", uerr, out)
		} else {
			deb, err = download(ctx, name, arch)
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
	if err := unpack(ctx, deb, root); err != nil {
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
	args := []string{"-b", k.Root, k.Release}
	if sm := filepath.Join(k.Root, "boot", "System.map-"+k.Release); fileExists(sm) {
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

// cachedRelease matches the release folders of each series in the cache;
// ARCH stands for the architecture.
var cachedRelease = map[Series]string{
	Series61:  `^6\.1\.0-(\d+)-ARCH$`,
	Series612: `^6\.12\.(\d+)\+deb12-(cloud-)?ARCH$`,
}

// cached returns the newest kernel of a series already unpacked in the
// cache, or nil.
func cached(s Series, arch string) *Kernel {
	pat, ok := cachedRelease[s]
	if !ok {
		return nil
	}
	re := regexp.MustCompile(strings.Replace(pat, "ARCH", arch, 1))
	ents, _ := os.ReadDir(filepath.Join(CacheDir(), "kernels"))
	var best *Kernel
	bestN := -1
	for _, e := range ents {
		m := re.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		k := &Kernel{Series: s, Arch: arch, Package: "linux-image-" + e.Name(), Release: e.Name(), Root: filepath.Join(CacheDir(), "kernels", e.Name())}
		if !fileExists(k.Vmlinuz()) {
			continue
		}
		n, _ := strconv.Atoi(m[1])
		if n > bestN {
			best, bestN = k, n
		}
	}
	return best
}

// Config returns the value of a build option from the package's
// /boot/config-<release> ("y", "m", a string without its quotes), or ""
// when it is not set.
func (k *Kernel) Config(option string) (string, error) {
	b, err := os.ReadFile(filepath.Join(k.Root, "boot", "config-"+k.Release))
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
