package debkernel

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// Headers fetches the kernel's headers package (linux-headers-<release>)
// with the packages an out-of-tree module build needs from it: its
// -common part, the linux-kbuild tools, and unpacks them together (once)
// under CacheDir()/headers/<release>. It returns the folder to build
// against: make -C DIR M=$PWD modules. The packages' Makefile includes its
// -common part by an absolute /usr/src path; the unpacked copy points at
// its own. Building needs the compiler the kernel was built with (gcc-12
// for bookworm's 6.1 and 6.12).
func (k *Kernel) Headers(ctx context.Context) (string, error) {
	root := filepath.Join(CacheDir(), "headers", k.Release)
	dir := filepath.Join(root, "usr", "src", "linux-headers-"+k.Release)
	if fileExists(filepath.Join(dir, ".kmodguard-ready")) {
		return dir, nil
	}
	apt, err := aptFor(ctx, k.Series)
	if err != nil {
		return "", err
	}
	unlock, err := lockCache()
	if err != nil {
		return "", err
	}
	defer unlock()
	if fileExists(filepath.Join(dir, ".kmodguard-ready")) {
		return dir, nil
	}
	pkg := "linux-headers-" + k.Release
	out, err := apt.command(ctx, "apt-cache", "depends", qualified(pkg, k.Arch)).Output()
	if err != nil {
		return "", fmt.Errorf("debkernel: apt-cache depends %s: %w", pkg, err)
	}
	names := []string{pkg}
	re := regexp.MustCompile(`^\s*Depends: (linux-(headers|kbuild)-\S+?)(:\S+)?$`)
	for _, line := range strings.Split(string(out), "\n") {
		if m := re.FindStringSubmatch(line); m != nil {
			names = append(names, m[1])
		}
	}
	var debs []string
	for _, n := range names {
		arch := k.Arch
		if strings.HasSuffix(n, "-common") {
			arch = "all"
		}
		deb, err := download(ctx, apt, n, arch)
		if err != nil {
			return "", err
		}
		debs = append(debs, deb)
	}
	fix := func(tmp string) error {
		mk := filepath.Join(tmp, "usr", "src", "linux-headers-"+k.Release, "Makefile")
		b, err := os.ReadFile(mk)
		if err != nil {
			return fmt.Errorf("debkernel: %s has no Makefile: %w", pkg, err)
		}
		// The folder is renamed to root once filled: point at its final place.
		b = []byte(strings.ReplaceAll(string(b), "include /usr/src/", "include "+filepath.Join(root, "usr", "src")+"/"))
		if err := os.WriteFile(mk, b, 0o644); err != nil {
			return fmt.Errorf("debkernel: %w", err)
		}
		return os.WriteFile(filepath.Join(filepath.Dir(mk), ".kmodguard-ready"), []byte(strings.Join(names, "\n")+"\n"), 0o644)
	}
	if err := unpack(ctx, debs, root, fix); err != nil {
		return "", err
	}
	return dir, nil
}

// BuildModule builds the out-of-tree module whose Kbuild and sources are
// in src against the kernel's headers (Headers), in a copy of src under
// out, and returns the path of NAME.ko. Module BTF is left out (it needs
// pahole and the kernel's vmlinux).
func (k *Kernel) BuildModule(ctx context.Context, src, out, name string) (string, error) {
	hdr, err := k.Headers(ctx)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", fmt.Errorf("debkernel: %w", err)
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return "", fmt.Errorf("debkernel: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return "", fmt.Errorf("debkernel: %w", err)
		}
		if err := os.WriteFile(filepath.Join(out, e.Name()), b, 0o644); err != nil {
			return "", fmt.Errorf("debkernel: %w", err)
		}
	}
	cmd := exec.CommandContext(ctx, "make", "-C", hdr, "M="+out, "CONFIG_DEBUG_INFO_BTF_MODULES=", "modules")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("debkernel: building %s for %s: %w\n%s", name, k.Release, err, b)
	}
	ko := filepath.Join(out, name+".ko")
	if !fileExists(ko) {
		return "", fmt.Errorf("debkernel: building %s for %s made no %s", name, k.Release, ko)
	}
	return ko, nil
}
