// Package inventory lists the kernel modules loaded before the sensor
// started, as events (event.Present) that the allowlist can judge: what
// /proc/modules says is loaded, tied to the module file it came from where
// that can be shown, and what the kernel knows of each (its taint letters).
//
// A loaded module is tied to a file of the running release (modules.dep)
// when both carry the same GNU build ID (the kernel shows the loaded
// module's in /sys/module/NAME/notes/.note.gnu.build-id: it changes with
// every build), or, where either has none, the same srcversion (a digest
// of the module's sources, /sys/module/NAME/srcversion): the file's
// digests then stand for the module and are judged. When neither is there
// the module is tied by name only, and says so; when they differ, or no
// file of that name exists, it is not tied, has no digest, and no
// allowlist admits it.
package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/procmodules"
	"github.com/kmodguard/kmodguard/kmod"
)

// How a loaded module was tied to its file (event.Event.Inventory).
const (
	TiedByBuildID    = "file:build-id"
	TiedBySrcversion = "file:srcversion"
	TiedByName       = "file:name"
	NotTied          = "no file"
)

// HostRoot is where the host's root file system is seen from this
// process: $HOST_ROOT when it holds a procfs at proc (Falco's convention
// in a container: the chart mounts the host's /proc at /host/proc), else
// "/".
func HostRoot() string {
	if r := os.Getenv("HOST_ROOT"); r != "" {
		var st unix.Statfs_t
		if unix.Statfs(filepath.Join(r, "proc"), &st) == nil && st.Type == unix.PROC_SUPER_MAGIC {
			return r
		}
	}
	return "/"
}

// Take lists the modules loaded on the host whose /proc, /sys and module
// tree are under root ("/" on the host; a container that mounts the host's
// root at /host passes "/host"). The events are sorted by name. An error
// means /proc/modules could not be read at all: a kernel without module
// support has none, and that is an error too (errors.Is fs.ErrNotExist).
func Take(root string) ([]event.Event, error) {
	mods, err := readProcModules(filepath.Join(root, "proc/modules"))
	if err != nil {
		return nil, err
	}
	release := strings.TrimSpace(readSmall(filepath.Join(root, "proc/sys/kernel/osrelease")))
	files, filesErr := moduleFiles(root, release)
	now := uint64(time.Now().UnixNano())
	// A container sees the host's modules in its own sysfs: use it when
	// root has none.
	sysRoot := filepath.Join(root, "sys")
	if _, err := os.Stat(filepath.Join(sysRoot, "module")); err != nil {
		sysRoot = "/sys"
	}
	out := make([]event.Event, 0, len(mods))
	for _, m := range mods {
		e := event.Event{TS: now, Syscall: event.Present, Name: m.Name, HostNS: true, Taint: m.Taint}
		sysDir := filepath.Join(sysRoot, "module", m.Name)
		if t := strings.TrimSpace(readSmall(filepath.Join(sysDir, "taint"))); t != "" {
			e.Taint = t
		}
		loaded := loadedIDs{srcversion: strings.TrimSpace(readSmall(filepath.Join(sysDir, "srcversion")))}
		loaded.buildID, _ = kmod.BuildIDNote([]byte(readSmall(filepath.Join(sysDir, "notes/.note.gnu.build-id"))))
		e.Srcversion = loaded.srcversion
		tie(&e, files, filesErr, release, loaded)
		out = append(out, e)
	}
	return out, nil
}

// tie fills in the file of e's module and its description, or says why
// there is none.
// loadedIDs is what the kernel shows of a loaded module's build.
type loadedIDs struct{ buildID, srcversion string }

func tie(e *event.Event, files map[string]string, filesErr error, release string, loaded loadedIDs) {
	if filesErr != nil {
		e.Inventory = fmt.Sprintf("%s: the module tree of %s: %v", NotTied, release, filesErr)
		return
	}
	path, ok := files[kmod.NormalizeName(e.Name)]
	if !ok {
		e.Inventory = fmt.Sprintf("%s: no %s.ko* in modules.dep of %s", NotTied, e.Name, release)
		return
	}
	m, err := kmod.Inspect(path)
	if err != nil {
		e.Inventory = fmt.Sprintf("%s: %s: %v", NotTied, path, err)
		return
	}
	switch {
	case loaded.buildID != "" && m.BuildID != "":
		if loaded.buildID != m.BuildID {
			e.Inventory = fmt.Sprintf("%s: %s has build ID %s, the loaded module %s", NotTied, path, m.BuildID, loaded.buildID)
			return
		}
		e.Inventory = TiedByBuildID
	case loaded.srcversion != "" && m.Srcversion == loaded.srcversion:
		e.Inventory = TiedBySrcversion
	case loaded.srcversion == "" && m.Srcversion == "":
		e.Inventory = TiedByName
	default:
		e.Inventory = fmt.Sprintf("%s: %s has srcversion %q, the loaded module %q", NotTied, path, m.Srcversion, loaded.srcversion)
		return
	}
	e.Path = path
	e.ThisModuleName, e.NameMismatch = m.ThisModuleName, m.NameMismatch
	e.SHA256, e.ELFSHA256 = m.FileSHA256, m.ELFSHA256
	e.Vermagic, e.Depends = m.Vermagic, m.Depends
	e.Signed, e.Signer = m.Signature.Present, m.Signature.Signer
	if m.Name != "" {
		e.Name = m.Name
	}
}

// readProcModules reads the list of loaded modules, sorted by name.
func readProcModules(path string) ([]procmodules.Module, error) {
	mods, err := procmodules.Read(path)
	if err != nil {
		return nil, fmt.Errorf("inventory: %w", err)
	}
	sort.Slice(mods, func(i, j int) bool { return mods[i].Name < mods[j].Name })
	return mods, nil
}

// moduleFiles maps each module name (folded) in the release's modules.dep
// to its file.
func moduleFiles(root, release string) (map[string]string, error) {
	if release == "" {
		return nil, errors.New("the running release is unknown (proc/sys/kernel/osrelease)")
	}
	var dir string
	var b []byte
	var err error
	for _, d := range []string{"lib/modules", "usr/lib/modules"} {
		dir = filepath.Join(root, d, release)
		if b, err = os.ReadFile(filepath.Join(dir, "modules.dep")); err == nil {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	files := map[string]string{}
	for _, line := range bytes.Split(b, []byte("\n")) {
		rel, _, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(rel) == 0 {
			continue
		}
		p := string(rel)
		name := filepath.Base(p)
		name = name[:strings.Index(name+".ko", ".ko")]
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		files[kmod.NormalizeName(name)] = p
	}
	return files, nil
}

// readSmall returns the first 4 KiB of a sysfs or procfs file, "" when it
// cannot be read.
func readSmall(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b := make([]byte, 4096)
	n, _ := f.Read(b)
	return string(b[:n])
}
