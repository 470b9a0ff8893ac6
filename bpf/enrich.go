package bpf

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/kmod"
)

// maxModuleFile bounds what the enricher reads of a finit_module file: the
// largest Debian module is a few MiB.
const maxModuleFile = 64 << 20

// enricher turns kernel records into events: it decodes strings, inspects
// module images, checks the finit_module file and applies the allowlist.
type enricher struct {
	allowlist func() *allowlist.Allowlist
	// bootOffset turns CLOCK_BOOTTIME ns into Unix ns.
	bootOffset int64
	hostMntNS  uint32 // 0 when unknown
	selfMntNS  uint32
	// procRoot is procDir(), or a test's stand-in.
	procRoot string
	// fileCap bounds the finit_module file read for inspection.
	fileCap int64
	// images remembers recent images' digests and inspections.
	images *imageCache
}

func newEnricher(cfg Config) *enricher {
	e := &enricher{allowlist: cfg.Allowlist, procRoot: procDir(), fileCap: maxModuleFile}
	var boot unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &boot); err == nil {
		e.bootOffset = time.Now().UnixNano() - boot.Nano()
	}
	// The initial PID and user namespaces have fixed inode numbers
	// (event.InitPidNS, event.InitUserNS), right even where /proc/1 is a
	// container's init. The initial mount namespace has one since 6.18;
	// before, it is pid 1's when that can be read.
	e.hostMntNS = nsInode(filepath.Join(e.procRoot, "1/ns/mnt"))
	e.selfMntNS = nsInode("/proc/self/ns/mnt")
	if e.hostMntNS == 0 && e.selfMntNS == event.InitMntNS {
		e.hostMntNS = event.InitMntNS
	}
	return e
}

// hostNS says whether the caller of rec runs in the host's namespaces: the
// initial PID namespace and the initial user namespace (a user namespace
// the sensor could not read, 0, does not count against it). The mount
// namespace is its own answer, nil when the initial one is unknown: a
// private one is no container, for systemd gives one to udev
// (PrivateMounts=yes) and to every service with PrivateTmp= or
// ProtectSystem=, all in the host's PID namespace and cgroup tree.
func (n *enricher) hostNS(rec *sensorKgEvent) (host bool, hostMnt *bool) {
	host = rec.Pidns == event.InitPidNS && (rec.Userns == 0 || rec.Userns == event.InitUserNS)
	if n.hostMntNS != 0 {
		m := rec.Mntns == n.hostMntNS
		hostMnt = &m
	}
	return host, hostMnt
}

// procDir is the /proc that shows the callers: the sensor's pids are the
// kernel's global ones, which only a procfs of the initial PID namespace
// lists. That is /proc, unless this process runs in a PID namespace of its
// own (a container without hostPID, such as the falcosecurity/falco
// chart's Falco pods) and $HOST_ROOT/proc is a procfs: Falco's chart mounts
// the host's /proc there (/host/proc, HOST_ROOT=/host), as Falco's own
// driver expects. Opening a caller's descriptor or root through it takes
// CAP_SYS_PTRACE, as through /proc.
var procDir = sync.OnceValue(func() string {
	return chooseProcDir(os.Getenv("HOST_ROOT"), nsInode("/proc/self/ns/pid"), isProcfs)
})

// chooseProcDir is procDir's choice, for a process in the PID namespace
// selfPidNS (0 when unknown) with HOST_ROOT hostRoot.
func chooseProcDir(hostRoot string, selfPidNS uint32, isProc func(string) bool) string {
	if hostRoot == "" || selfPidNS == event.InitPidNS {
		return "/proc"
	}
	if p := filepath.Join(hostRoot, "proc"); isProc(p) {
		return p
	}
	return "/proc"
}

// isProcfs reports whether dir is the root of a procfs mount.
func isProcfs(dir string) bool {
	var fs unix.Statfs_t
	return unix.Statfs(dir, &fs) == nil && fs.Type == unix.PROC_SUPER_MAGIC
}

// nsInode is the inode number of a namespace file, 0 when unknown.
func nsInode(path string) uint32 {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0
	}
	return uint32(st.Ino)
}

// decode builds the event of one event record and, for init_module, the
// image put together from its chunks.
func (n *enricher) decode(rec *sensorKgEvent, data eventData, img []byte, imgGap bool) *event.Event {
	f := sensorKgFlag(rec.Flags)
	has := func(bits sensorKgFlag) bool { return f&bits != 0 }
	ev := &event.Event{
		TS:           uint64(int64(rec.Ts) + n.bootOffset),
		Syscall:      syscallOf(rec.Syscall),
		Pid:          rec.Pid,
		Tid:          rec.Tid,
		Ppid:         rec.Ppid,
		UID:          rec.Uid,
		GID:          rec.Gid,
		LoginUID:     rec.Loginuid,
		Comm:         cString(rec.Comm[:]),
		Cmdline:      cmdline(data.cmdline),
		CgroupID:     rec.CgroupId,
		Cgroup:       joinPath(data.cgroup, has(sensorKgFlagKG_F_CGROUP_TRUNCATED)),
		PidNS:        rec.Pidns,
		MntNS:        rec.Mntns,
		CapEffective: rec.CapEffective,
		Coalesced:    rec.Coalesced,
		Verdict:      event.VerdictNone,
	}
	if len(data.exe) > 0 {
		// No exe at all is a kernel thread.
		ev.Exe = joinPath(data.exe, has(sensorKgFlagKG_F_EXE_TRUNCATED))
		if has(sensorKgFlagKG_F_EXE_DELETED) {
			ev.Exe += " (deleted)" // as /proc/PID/exe says
		}
	}
	ev.ContainerID = ContainerID(ev.Cgroup)
	ev.UserNS = rec.Userns
	ev.HostNS, ev.HostMntNS = n.hostNS(rec)
	// A skipped image (caller without CAP_SYS_MODULE) counts as truncated.
	ev.Truncated = has(sensorKgFlagKG_F_IMAGE_TRUNCATED | sensorKgFlagKG_F_IMAGE_DROPPED | sensorKgFlagKG_F_IMAGE_SKIPPED |
		sensorKgFlagKG_F_NAME_TRUNCATED | sensorKgFlagKG_F_PATH_TRUNCATED)
	ev.ImageAtExit = has(sensorKgFlagKG_F_IMAGE_AT_EXIT)
	ev.ParentKthread = has(sensorKgFlagKG_F_PARENT_KTHREAD)
	setParams(ev, f, data.params)

	var mod *kmod.Module
	switch ev.Syscall {
	case event.InitModule:
		ev.Size = rec.Len
		complete := !imgGap && uint64(len(img)) == rec.Captured && rec.Captured == rec.Len
		if imgGap || uint64(len(img)) != rec.Captured {
			ev.Truncated = true
		}
		if complete && len(img) > 0 {
			// init_module takes a plain ELF image; anything else is only hashed.
			e := n.inspectImage(img, true)
			mod = e.mod
			ev.SHA256, ev.ELFSHA256 = e.sha256, e.elfSHA
		}
	case event.FinitModule:
		ev.FD = rec.Fd
		ev.RawFlags = rec.RawFlags
		ev.Flags = finitFlags(rec.RawFlags)
		ev.Inode = rec.Ino
		ev.Size = rec.Size
		ev.Dev = kernelDev(rec.Dev)
		ev.Mtime = rec.MtimeSec*1e9 + int64(rec.MtimeNsec)
		ev.Ctime = rec.CtimeSec*1e9 + int64(rec.CtimeNsec)
		if !has(sensorKgFlagKG_F_FILE_UNRESOLVED) {
			ev.Path = joinPath(data.path, has(sensorKgFlagKG_F_PATH_TRUNCATED))
			if !has(sensorKgFlagKG_F_PATH_TRUNCATED) {
				mod = n.inspectFile(ev)
			}
		}
	case event.DeleteModule:
		ev.RawFlags = rec.RawFlags
		ev.Flags = deleteFlags(rec.RawFlags)
		if !has(sensorKgFlagKG_F_NAME_UNREADABLE) {
			ev.Name = string(trimNUL(data.name))
		}
	case event.ModuleRequest:
		// RawFlags is request_module's wait: 1 when the caller waits for
		// modprobe to finish.
		ev.RawFlags = rec.RawFlags
		if !has(sensorKgFlagKG_F_NAME_UNREADABLE) {
			ev.Name = string(trimNUL(data.name))
		}
	case event.ModuleLoad, event.ModuleFree:
		// What the kernel's struct module says: the name it registered
		// under, its address, its taints and (module_load, with
		// CONFIG_MODULE_SIG) whether its signature was verified.
		if !has(sensorKgFlagKG_F_NAME_UNREADABLE) {
			ev.Name = string(trimNUL(data.name))
		}
		ev.ModuleAddr = rec.Module
		ev.Taint = event.TaintLetters(rec.Taints)
		if ev.Syscall == event.ModuleLoad && has(sensorKgFlagKG_F_SIG_KNOWN) {
			ok := has(sensorKgFlagKG_F_SIG_OK)
			ev.SigOK = &ok
		}
	}
	if mod != nil {
		ev.Name = mod.Name
		ev.ThisModuleName = mod.ThisModuleName
		ev.NameMismatch = mod.NameMismatch
		ev.Vermagic = mod.Vermagic
		ev.Srcversion = mod.Srcversion
		// The Module may be the image cache's: the event gets its own list.
		ev.Depends = slices.Clone(mod.Depends)
		ev.Signed = mod.Signature.Present
		ev.Signer = mod.Signature.Signer
	}
	if n.allowlist != nil {
		// A module the sensor could not read has no names: not allowed.
		n.allowlist().Judge(ev)
	}
	return ev
}

// setParams sets an event's params, and the capture flags that depend on
// them, from the record's flags f: at decode, and again when params
// unreadable at sys_enter were read at sys_exit. Truncated is only ever
// raised (other captures may have set it); Unreadable is all of f's.
func setParams(ev *event.Event, f sensorKgFlag, params []byte) {
	ev.Unreadable = f&(sensorKgFlagKG_F_IMAGE_UNREADABLE|sensorKgFlagKG_F_PARAMS_UNREADABLE|
		sensorKgFlagKG_F_NAME_UNREADABLE|sensorKgFlagKG_F_FILE_UNRESOLVED) != 0
	if f&sensorKgFlagKG_F_PARAMS_TRUNCATED != 0 {
		ev.Truncated = true
	}
	ev.ParamsAtExit = f&sensorKgFlagKG_F_PARAMS_AT_EXIT != 0
	ev.Params = ""
	if f&sensorKgFlagKG_F_PARAMS_UNREADABLE == 0 {
		ev.Params = string(trimNUL(params))
	}
}

// inspectFile reads the finit_module file and inspects it, preferring the
// caller's own descriptor (/proc/PID/fd/FD: the very inode the kernel read,
// even when unlinked or a memfd) over the path. It sets FileChanged when the
// path no longer names what the kernel read, and marks an unlinked file's
// path " (deleted)", as /proc does.
func (n *enricher) inspectFile(ev *event.Event) *kmod.Module {
	pidDir := filepath.Join(n.procRoot, strconv.FormatUint(uint64(ev.Pid), 10))
	path := ev.Path
	same := n.selfMntNS != 0 && ev.MntNS == n.selfMntNS
	if !same {
		// The path is in the caller's mount namespace.
		path = filepath.Join(pidDir, "root", ev.Path)
	}
	var st unix.Stat_t
	f := n.openDescriptor(pidDir, ev, &st)
	if f == nil {
		// Non-blocking and no symlinks: the caller controls what the path
		// names by now, and a FIFO must not stall the sensor.
		var err error
		f, err = os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_NOCTTY, 0)
		if err != nil {
			if (os.IsNotExist(err) || errors.Is(err, unix.ELOOP)) && same {
				ev.FileChanged = true // gone or replaced since the kernel read it
			}
			return nil
		}
		if err := unix.Fstat(int(f.Fd()), &st); err != nil {
			f.Close()
			return nil
		}
	}
	defer f.Close()
	if !n.sameFile(&st, ev) {
		ev.FileChanged = true
	}
	if same || n.procAlive(pidDir) {
		// Does the path still name it? Another file there means replaced;
		// nothing there is expected only when the file was unlinked.
		var pst unix.Stat_t
		err := unix.Lstat(path, &pst)
		if (err == nil && !n.sameFile(&pst, ev)) || (err != nil && st.Nlink != 0) {
			ev.FileChanged = true
		}
	}
	if st.Nlink == 0 {
		ev.Path += " (deleted)"
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	if st.Size > n.fileCap {
		ev.Truncated = true // too big to be a module worth reading
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(f, n.fileCap))
	if err != nil || len(b) == 0 {
		return nil
	}
	e := n.inspectImage(b, false)
	ev.SHA256, ev.ELFSHA256 = e.sha256, e.elfSHA
	return e.mod
}

// inspectImage returns what an image gives (see imageCache.inspect).
func (n *enricher) inspectImage(img []byte, elfOnly bool) *imageEntry {
	if n.images == nil {
		n.images = newImageCache()
	}
	return n.images.inspect(img, elfOnly)
}

// openDescriptor opens the caller's descriptor ev.FD through /proc, if the
// caller still holds it and it is still the inode the kernel read.
func (n *enricher) openDescriptor(pidDir string, ev *event.Event, st *unix.Stat_t) *os.File {
	if ev.FD < 0 {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(pidDir, "fd", strconv.Itoa(int(ev.FD))), os.O_RDONLY|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return nil
	}
	if err := unix.Fstat(int(f.Fd()), st); err != nil || st.Ino != ev.Inode || uint64(st.Dev) != ev.Dev {
		f.Close() // closed, and the number reused
		return nil
	}
	return f
}

// sameFile reports whether st is the file the kernel saw, unchanged: same
// inode, device, size, mtime and ctime. The ctime is what catches a rewrite
// in place: the file's owner can write the same number of bytes and set
// the mtime back with utimensat, but every write (and utimensat itself)
// moves the ctime to the current time, which only root can turn back, by
// setting the clock. The guard's digest of the kernel's own copy is the
// answer that holds against root too.
//
// The ctime of a file with no link left is not compared: its unlink moved
// it, and loaders that delete a temporary file right after finit_module
// are common. A rewrite in place followed by an unlink goes unseen, as
// without the ctime.
func (n *enricher) sameFile(st *unix.Stat_t, ev *event.Event) bool {
	return st.Ino == ev.Inode && uint64(st.Dev) == ev.Dev && uint64(st.Size) == ev.Size &&
		st.Mtim.Nano() == ev.Mtime && (st.Nlink == 0 || st.Ctim.Nano() == ev.Ctime)
}

// procAlive reports whether the process directory still exists, so that
// its root still shows the caller's mount namespace.
func (n *enricher) procAlive(pidDir string) bool {
	_, err := os.Stat(filepath.Join(pidDir, "root"))
	return err == nil
}

// kernelDev turns a kernel dev_t (major << 20 | minor) into the encoding
// stat(2) reports.
func kernelDev(d uint32) uint64 {
	return unix.Mkdev(d>>20, d&(1<<20-1))
}

// finit_module flags (include/uapi/linux/module.h).
var finitFlagNames = []struct {
	bit  uint32
	name string
}{
	{1, "MODULE_INIT_IGNORE_MODVERSIONS"},
	{2, "MODULE_INIT_IGNORE_VERMAGIC"},
	{4, "MODULE_INIT_COMPRESSED_FILE"},
}

// delete_module flags.
var deleteFlagNames = []struct {
	bit  uint32
	name string
}{
	{unix.O_NONBLOCK, "O_NONBLOCK"},
	{unix.O_TRUNC, "O_TRUNC"},
}

func finitFlags(v uint32) []string  { return flagNames(v, finitFlagNames) }
func deleteFlags(v uint32) []string { return flagNames(v, deleteFlagNames) }

func flagNames(v uint32, names []struct {
	bit  uint32
	name string
}) []string {
	var out []string
	for _, f := range names {
		if v&f.bit != 0 {
			out = append(out, f.name)
			v &^= f.bit
		}
	}
	if v != 0 {
		out = append(out, fmt.Sprintf("%#x", v))
	}
	return out
}

// ContainerID returns the container id in a cgroup path, or "": a 64-hex
// id that ends a path component, alone or after '-' or ':', optionally
// followed by ".scope", as docker (docker-<id>.scope, /docker/<id>),
// containerd (cri-containerd-<id>.scope), CRI-O (crio-<id>.scope) and
// podman (libpod-<id>.scope) name them. The component nearest the leaf
// wins.
func ContainerID(cgroup string) string {
	rest := cgroup
	for {
		i := strings.LastIndexByte(rest, '/')
		if id := componentID(rest[i+1:]); id != "" {
			return id
		}
		if i < 0 {
			return ""
		}
		rest = rest[:i]
	}
}

// componentID is the container id that ends one cgroup path component.
func componentID(c string) string {
	c = strings.TrimSuffix(c, ".scope")
	if len(c) < 64 {
		return ""
	}
	id := c[len(c)-64:]
	for i := range len(id) {
		if ch := id[i]; (ch < '0' || ch > '9') && (ch < 'a' || ch > 'f') {
			return ""
		}
	}
	if len(c) > 64 {
		if sep := c[len(c)-65]; sep != '-' && sep != ':' {
			return ""
		}
	}
	return id
}

// bytesOf views a C char array as bytes.
func bytesOf(b []int8) []byte {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&b[0])), len(b))
}

// cString is the NUL-ended string at the start of b.
func cString(b []int8) string {
	s := bytesOf(b)
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	return string(s)
}

// trimNUL drops a string's terminating NUL and anything after it.
func trimNUL(b []byte) []byte {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		return b[:i]
	}
	return b
}

// joinPath turns the kernel's leaf-first, NUL-separated components into a
// path. A truncated walk lost its top components; the path then starts
// with "…/" rather than "/".
func joinPath(b []byte, truncated bool) string {
	// Bounds of the components, leaf first: on the stack for most paths.
	var stack [32][2]int
	comps := stack[:0]
	size := 0
	for off := 0; off < len(b); {
		end := len(b)
		if i := bytes.IndexByte(b[off:], 0); i >= 0 {
			end = off + i
		}
		comps = append(comps, [2]int{off, end})
		size += 1 + end - off
		off = min(end+1, len(b))
	}
	if len(comps) == 0 && !truncated {
		return "/"
	}
	var sb strings.Builder
	if truncated {
		sb.Grow(len("…") + size)
		sb.WriteString("…")
	} else {
		sb.Grow(size)
	}
	for i := len(comps) - 1; i >= 0; i-- {
		sb.WriteByte('/')
		sb.Write(b[comps[i][0]:comps[i][1]])
	}
	return sb.String()
}

// cmdline turns the NUL-separated argv into one line: trailing NULs
// dropped, the others turned into spaces.
func cmdline(b []byte) string {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return ""
	}
	line := bytes.Clone(b)
	for rest := line; ; {
		i := bytes.IndexByte(rest, 0)
		if i < 0 {
			break
		}
		rest[i] = ' '
		rest = rest[i+1:]
	}
	// line is this string's alone from here on.
	return unsafe.String(unsafe.SliceData(line), len(line))
}
