//go:build linux

// Package lsm loads, attaches, pins and seals kmodguard's BPF LSM guard
// (guard.bpf.c), the kernel half of the enforcer.
//
// The guard decides each module load on the kernel's own copy of the image:
// its SHA-256 and both of its names (.modinfo name= and struct module.name)
// are computed in BPF and looked up in a policy map. The policy is one hash
// map swapped whole into a one-slot ARRAY_OF_MAPS, so a load never sees a
// half-written allowlist.
//
// Everything is pinned under a bpffs directory ([DefaultPinDir]): the guard
// keeps enforcing when the process that loaded it exits, and [Open] adopts
// the pinned guard instead of attaching a second one. Once sealed ([Guard.Seal])
// the guard refuses, until reboot, every way root has to detach, unpin or
// rewrite it, and kexec.
//
// Package enforcer turns an allowlist into a [Policy] and runs the guard
// as a service; most callers want that package.
package lsm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/internal/kernbtf"
)

// DefaultPinDir is where the guard's maps and links are pinned.
const DefaultPinDir = "/sys/fs/bpf/kmodguard"

// ErrSealed is returned for changes refused because the guard is sealed.
var ErrSealed = errors.New("the guard is sealed until reboot")

// ErrNotLoaded is returned by OpenPinned when no guard is pinned.
var ErrNotLoaded = errors.New("no guard is pinned")

// Pin names of the maps under the pin directory.
const (
	pinPolicy   = "policy"
	pinConfig   = "config"
	pinProtect  = "protect"
	pinEvents   = "events"
	pinCounters = "counters"
	// pinReader is the decision reader's own state (reader.go), not the
	// guard's: the seal does not protect it.
	pinReader = "reader"
)

// hooks lists the guard's programs in attach order: the module hooks first,
// so that enforcement starts before anything else; the seal hooks after.
var hooks = []string{
	"kg_post_load_data",
	"kg_post_read_file",
	"kg_load_data",
	"kg_read_file",
	"kg_bpf",
	"kg_bpf_map",
	"kg_bpf_prog",
	"kg_inode_unlink",
	"kg_inode_rmdir",
	"kg_inode_rename",
	"kg_sb_umount",
	"kg_sb_mount",
	"kg_move_mount",
}

func linkPin(prog string) string { return "link_" + prog }

// guardPins names the guard's own pins in a pin directory: its links, then
// its maps (not the reader's state, pinReader).
func guardPins() []string {
	var names []string
	for _, h := range hooks {
		names = append(names, linkPin(h))
	}
	return append(names, pinPolicy, pinConfig, pinProtect, pinEvents, pinCounters)
}

// removePins removes the pins named in dir, those already gone aside.
func removePins(dir string, names []string) error {
	var errs []error
	for _, name := range names {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Options configures Open.
type Options struct {
	// PinDir is the bpffs directory for the pins; DefaultPinDir when empty.
	PinDir string
	// RingBufferSize is the size of the decision ring buffer in bytes, a
	// power of two multiple of the page size; 256 KiB when zero. It only
	// applies when a new guard is loaded.
	RingBufferSize int
}

// Guard is a loaded (or adopted) guard. Its methods are safe for concurrent
// use.
type Guard struct {
	pinDir  string
	adopted bool

	mu       sync.Mutex
	policy   *ebpf.Map // kg_policy, ARRAY_OF_MAPS
	config   *ebpf.Map // kg_cfg
	protect  *ebpf.Map // kg_protect
	events   *ebpf.Map // kg_events
	counters *ebpf.Map // kg_counters
	inner    *ebpf.Map // the policy in force, when this process installed it
	links    map[string]link.Link
	readOnly bool
	closed   bool
	unlock   func() // releases the pin directory lock Open took
}

// Open loads the guard with the initial policy, attaches it and pins it, or,
// when a guard is already pinned in opts.PinDir, adopts it: the pinned maps
// and links are reused, the initial policy is not applied (call SetPolicy),
// and only links that are missing are attached again (never when sealed).
// adopted reports which happened.
//
// The caller must have checked Supported. Verifier errors come whole.
func Open(opts Options, initial *Policy) (g *Guard, adopted bool, err error) {
	dir := opts.PinDir
	if dir == "" {
		dir = DefaultPinDir
	}
	if err := ensurePinDir(dir); err != nil {
		return nil, false, err
	}
	unlock, err := lockDir(dir)
	if err != nil {
		return nil, false, err
	}
	defer func() {
		if err != nil {
			unlock()
		}
	}()

	if _, serr := os.Stat(filepath.Join(dir, pinConfig)); serr == nil {
		adopted = true
		g, err = adopt(dir)
	} else if initial == nil {
		err = errors.New("open guard: an initial policy is required to load a new guard")
	} else {
		g, err = load(dir, opts, initial)
	}
	if err != nil {
		return nil, false, err
	}
	g.unlock = unlock
	return g, adopted, nil
}

// OpenPinned opens a pinned guard for reading (status, decisions) and, when
// not sealed, for writing. It returns ErrNotLoaded when nothing is pinned.
func OpenPinned(pinDir string) (*Guard, error) {
	if pinDir == "" {
		pinDir = DefaultPinDir
	}
	if _, err := os.Stat(filepath.Join(pinDir, pinConfig)); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", pinDir, ErrNotLoaded)
		}
		return nil, fmt.Errorf("open pinned guard: %w", err)
	}
	g, err := adoptMaps(pinDir)
	if err != nil {
		return nil, err
	}
	if _, err := g.loadLinks(); err != nil {
		g.closeFDs()
		return nil, err
	}
	return g, nil
}

func loadSpec(opts Options) (*ebpf.CollectionSpec, error) {
	spec, err := loadGuard()
	if err != nil {
		return nil, fmt.Errorf("read guard object: %w", err)
	}
	if opts.RingBufferSize > 0 {
		spec.Maps["kg_events"].MaxEntries = uint32(opts.RingBufferSize)
	}
	return spec, nil
}

func newCollection(spec *ebpf.CollectionSpec, replace map[string]*ebpf.Map) (*ebpf.Collection, error) {
	// Each hook is a bpf_lsm_ function in the kernel's BTF, which may list
	// a name twice; those with one prototype are told apart.
	cache, _, err := kernbtf.Cache(kernbtf.Targets(spec))
	if err != nil {
		return nil, fmt.Errorf("load guard: %w", err)
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: replace, Cache: cache})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load guard: verifier rejected it: %+v", ve)
		}
		return nil, fmt.Errorf("load guard: %w", err)
	}
	return coll, nil
}

func load(dir string, opts Options, initial *Policy) (_ *Guard, err error) {
	spec, err := loadSpec(opts)
	if err != nil {
		return nil, err
	}
	coll, err := newCollection(spec, nil)
	if err != nil {
		return nil, err
	}
	defer coll.Close()

	g := &Guard{
		pinDir:   dir,
		policy:   coll.Maps["kg_policy"],
		config:   coll.Maps["kg_cfg"],
		protect:  coll.Maps["kg_protect"],
		events:   coll.Maps["kg_events"],
		counters: coll.Maps["kg_counters"],
		links:    map[string]link.Link{},
	}
	// Take the maps out of the collection so that coll.Close leaves them.
	for _, name := range []string{"kg_policy", "kg_cfg", "kg_protect", "kg_events", "kg_counters"} {
		delete(coll.Maps, name)
	}
	var pinned []string
	defer func() {
		if err != nil {
			for _, p := range pinned {
				_ = os.Remove(p)
			}
			g.closeFDs()
		}
	}()

	if err := g.setPolicyLocked(initial); err != nil {
		return nil, err
	}
	// Whatever an earlier load left behind before it could finish (it
	// died between two pins) is not a guard: clear it so that the pins
	// below do not meet "file exists".
	if err := removeIncomplete(dir); err != nil {
		return nil, err
	}
	// Attach every hook before pinning the config map: the config pin is
	// what OpenPinned, and so `enforcer status`, takes for a guard in
	// force. Pinned first, it let status report a guard whose hooks were
	// still being attached (seen under QEMU, where attaching the
	// hooks takes seconds), and a load in that window went through.
	for _, name := range hooks {
		l, err := link.AttachLSM(link.LSMOptions{Program: coll.Programs[name]})
		if err != nil {
			return nil, attachErr("attach", name, err)
		}
		g.links[name] = l
		p := filepath.Join(dir, linkPin(name))
		if err := l.Pin(p); err != nil {
			return nil, fmt.Errorf("pin link %s: %w", p, err)
		}
		pinned = append(pinned, p)
	}
	for _, pin := range []struct {
		name string
		m    *ebpf.Map
	}{
		{pinPolicy, g.policy}, {pinProtect, g.protect}, {pinEvents, g.events},
		{pinCounters, g.counters}, {pinConfig, g.config}, // config last
	} {
		p := filepath.Join(dir, pin.name)
		if err := pin.m.Pin(p); err != nil {
			return nil, fmt.Errorf("pin map %s: %w", p, err)
		}
		pinned = append(pinned, p)
	}
	return g, nil
}

// removeIncomplete removes the guard's pins from a directory that has no
// config pin, that is, what a load that did not finish left there. The
// caller holds the directory lock, so no other load is under way.
func removeIncomplete(dir string) error {
	if err := removePins(dir, append(guardPins(), pinReader)); err != nil {
		return fmt.Errorf("clear an unfinished load from %s: %w", dir, err)
	}
	return nil
}

// adoptMaps opens the pinned maps, read-only where the seal forbids writes.
func adoptMaps(dir string) (_ *Guard, err error) {
	g := &Guard{pinDir: dir, adopted: true, links: map[string]link.Link{}}
	defer func() {
		if err != nil {
			g.closeFDs()
		}
	}()
	ro := &ebpf.LoadPinOptions{ReadOnly: true}
	cfg, err := ebpf.LoadPinnedMap(filepath.Join(dir, pinConfig), ro)
	if err != nil {
		return nil, fmt.Errorf("open pinned config: %w", err)
	}
	var c guardKgConfig
	err = cfg.Lookup(uint32(0), &c)
	cfg.Close()
	if err != nil {
		return nil, fmt.Errorf("read pinned config: %w", err)
	}
	g.readOnly = c.Sealed != 0
	opts := (*ebpf.LoadPinOptions)(nil)
	if g.readOnly {
		opts = ro
	}
	for _, m := range []struct {
		name string
		dst  **ebpf.Map
		opts *ebpf.LoadPinOptions
	}{
		{pinPolicy, &g.policy, opts},
		{pinConfig, &g.config, opts},
		{pinProtect, &g.protect, opts},
		{pinCounters, &g.counters, opts},
		// Consuming the ring buffer needs a writable fd: the seal keeps
		// programs from using it, not descriptors from opening it.
		{pinEvents, &g.events, nil},
	} {
		*m.dst, err = ebpf.LoadPinnedMap(filepath.Join(dir, m.name), m.opts)
		if err != nil {
			return nil, fmt.Errorf("open pinned map %s: %w", m.name, err)
		}
	}
	return g, nil
}

// attachErr explains a refused attach. A kernel that loads LSM programs
// but has no way into their BPF trampoline (arm64 without ftrace direct
// calls, such as Debian's 6.1) refuses every attach as not supported: that
// kernel cannot run the guard at all, which Supported cannot tell, as the
// programs load.
func attachErr(verb, name string, err error) error {
	if errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Errorf("%s %s: %w: the kernel loads LSM programs but cannot attach them (no BPF trampoline: CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS is unset, as on Debian's arm64 6.1); the guard needs a kernel that has it: %w",
			verb, name, ErrNoBPFLSM, err)
	}
	return fmt.Errorf("%s %s: %w", verb, name, err)
}

// adopt opens the pinned guard and re-attaches missing links.
func adopt(dir string) (_ *Guard, err error) {
	g, err := adoptMaps(dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			g.closeFDs()
		}
	}()
	missing, err := g.loadLinks()
	if err != nil {
		return nil, err
	}
	if len(missing) == 0 {
		return g, nil
	}
	if g.readOnly {
		return nil, fmt.Errorf("guard in %s is sealed but links %v are missing", dir, missing)
	}
	spec, err := loadSpec(Options{})
	if err != nil {
		return nil, err
	}
	coll, err := newCollection(spec, map[string]*ebpf.Map{
		"kg_policy": g.policy, "kg_cfg": g.config, "kg_protect": g.protect,
		"kg_events": g.events, "kg_counters": g.counters,
	})
	if err != nil {
		return nil, err
	}
	defer coll.Close()
	for _, name := range missing {
		l, err := link.AttachLSM(link.LSMOptions{Program: coll.Programs[name]})
		if err != nil {
			return nil, attachErr("re-attach", name, err)
		}
		g.links[name] = l
		if err := l.Pin(filepath.Join(dir, linkPin(name))); err != nil {
			return nil, fmt.Errorf("pin link %s: %w", name, err)
		}
	}
	return g, nil
}

// loadLinks opens the pinned links and returns the hooks that have none.
func (g *Guard) loadLinks() (missing []string, err error) {
	for _, name := range hooks {
		l, err := link.LoadPinnedLink(filepath.Join(g.pinDir, linkPin(name)), nil)
		switch {
		case err == nil:
			g.links[name] = l
		case errors.Is(err, os.ErrNotExist):
			missing = append(missing, name)
		default:
			return nil, fmt.Errorf("open pinned link %s: %w", name, err)
		}
	}
	return missing, nil
}

// Adopted reports whether Open found the guard already pinned.
func (g *Guard) Adopted() bool { return g.adopted }

// PinDir is the directory holding the guard's pins.
func (g *Guard) PinDir() string { return g.pinDir }

// SetPolicy replaces the policy in force, atomically: a complete new policy
// map is built and swapped into place with one map update. It returns
// ErrSealed once the guard is sealed.
func (g *Guard) SetPolicy(p *Policy) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return errors.New("set policy: guard is closed")
	}
	sealed, err := g.sealedLocked()
	if err != nil {
		return err
	}
	if sealed || g.readOnly {
		return fmt.Errorf("set policy: %w", ErrSealed)
	}
	return g.setPolicyLocked(p)
}

func (g *Guard) setPolicyLocked(p *Policy) error {
	inner, n, err := p.build()
	if err != nil {
		return fmt.Errorf("build policy map: %w", err)
	}
	if err := g.policy.Update(uint32(0), inner, ebpf.UpdateAny); err != nil {
		inner.Close()
		return fmt.Errorf("swap policy map: %w", err)
	}
	if g.inner != nil {
		g.inner.Close()
	}
	g.inner = inner
	var c guardKgConfig
	if err := g.config.Lookup(uint32(0), &c); err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	c.Mode = uint32(p.Mode)
	c.Generation = p.Generation
	c.Entries = uint64(n)
	if err := g.config.Update(uint32(0), &c, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// Sealed reports whether the guard is sealed.
func (g *Guard) Sealed() (bool, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sealedLocked()
}

func (g *Guard) sealedLocked() (bool, error) {
	var c guardKgConfig
	if err := g.config.Lookup(uint32(0), &c); err != nil {
		return false, fmt.Errorf("read config: %w", err)
	}
	return c.Sealed != 0, nil
}

// Seal protects the guard until reboot. It records the ids of the guard's
// maps and links, the inodes of its pins, and the mounts that hold them
// (the bpffs mount and each mount above it in this mount namespace, by
// mount id, and the inodes they sit on), then sets the seal: from then on
// the kernel refuses to detach, unpin, rename or rewrite any of them, to
// load a program that uses any of them (the decision ring buffer included),
// to freeze the ring buffer, to unmount the mounts holding the pins (or a
// mount whose unmount propagates to them, see guard.bpf.c), to move them
// (move_mount(2) of one, any MS_MOVE in the sealing and init mount
// namespaces) or mount over the path to the pins, to load
// or attach programs that could decide before the guard (fmod_ret, and LSM
// programs on overrideHooks), and kexec. Other mounts of the same file systems
// unmount as usual. The ring
// buffer still opens writable, for the daemon to consume it; a second
// consumer is detected by the reader (Reader.Missing).
// The policy in force is frozen; SetPolicy returns ErrSealed.
func (g *Guard) Seal() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if sealed, err := g.sealedLocked(); err != nil || sealed {
		return err
	}
	if g.readOnly {
		return ErrSealed
	}
	if len(g.links) != len(hooks) {
		return fmt.Errorf("seal: only %d of %d links are attached", len(g.links), len(hooks))
	}
	hostNS, err := hostMountNS()
	if err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	put := func(kind, dev uint32, id uint64) error {
		k := guardKgProtectKey{Kind: kind, Dev: dev, Id: id}
		return g.protect.Update(&k, uint8(1), ebpf.UpdateAny)
	}
	maps := []*ebpf.Map{g.policy, g.config, g.protect, g.counters}
	var innerID uint32
	if err := g.policy.Lookup(uint32(0), &innerID); err == nil && innerID != 0 {
		if err := put(protMap, 0, uint64(innerID)); err != nil {
			return fmt.Errorf("seal: protect policy map: %w", err)
		}
	}
	for _, m := range maps {
		info, err := m.Info()
		if err != nil {
			return fmt.Errorf("seal: map info: %w", err)
		}
		id, ok := info.ID()
		if !ok {
			return errors.New("seal: kernel does not report map ids")
		}
		if err := put(protMap, 0, uint64(id)); err != nil {
			return fmt.Errorf("seal: protect map %d: %w", id, err)
		}
	}
	evInfo, err := g.events.Info()
	if err != nil {
		return fmt.Errorf("seal: map info: %w", err)
	}
	eventsID, _ := evInfo.ID()
	for name, l := range g.links {
		info, err := l.Info()
		if err != nil {
			return fmt.Errorf("seal: link %s info: %w", name, err)
		}
		if err := put(protLink, 0, uint64(info.ID)); err != nil {
			return fmt.Errorf("seal: protect link %s: %w", name, err)
		}
		// Every map the program uses, the per-CPU scratch maps included:
		// a write to the digest or names mid-decision would forge it.
		ids, err := progMapIDs(info.Program)
		if err != nil {
			return fmt.Errorf("seal: maps of %s: %w", name, err)
		}
		for _, id := range ids {
			if id == eventsID {
				continue // protEvents below: consuming it needs a writable fd
			}
			if err := put(protMap, 0, uint64(id)); err != nil {
				return fmt.Errorf("seal: protect map %d of %s: %w", id, name, err)
			}
		}
	}
	if eventsID == 0 {
		return errors.New("seal: kernel does not report the ring buffer's id")
	}
	if err := put(protEvents, 0, uint64(eventsID)); err != nil {
		return fmt.Errorf("seal: protect the ring buffer: %w", err)
	}
	// Where the verifier keeps LSM programs to the hooks' return values
	// (6.12), another program on these hooks can only refuse more: they
	// stay open to other products.
	if !lsmReturnsChecked() {
		hookIDs, err := hookBTFIDs(overrideHooks)
		if err != nil {
			return fmt.Errorf("seal: %w", err)
		}
		for i, id := range hookIDs {
			if err := put(protHook, 0, uint64(id)); err != nil {
				return fmt.Errorf("seal: protect hook %s: %w", overrideHooks[i], err)
			}
		}
	}
	pins := []string{g.pinDir}
	for _, name := range guardPins() {
		pins = append(pins, filepath.Join(g.pinDir, name))
	}
	var fsDev uint32
	for _, p := range pins {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return fmt.Errorf("seal: stat %s: %w", p, err)
		}
		fsDev = kernelDev(st.Dev)
		if err := put(protInode, fsDev, st.Ino); err != nil {
			return fmt.Errorf("seal: protect %s: %w", p, err)
		}
	}
	if err := g.protectMounts(put, fsDev); err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	// A sandboxed service, or a container sharing the host's PID namespace,
	// has mounts of its own: copies whose ids protect nothing the host's
	// root cannot unmount in the host's namespace. Those are recorded too.
	if hostNS != "" {
		if err := inMountNS(hostNS, func() error { return g.protectMounts(put, fsDev) }); err != nil {
			return fmt.Errorf("seal: in the host's mount namespace (PID 1's): %w", err)
		}
	}
	// The mount namespaces those mounts are in, this process's and, when
	// it runs in a namespace of its own (a sandboxed service), init's,
	// which holds the originals: legacy MS_MOVE is refused in them.
	for i, p := range []string{"/proc/self/ns/mnt", "/proc/1/ns/mnt"} {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			if i > 0 {
				continue // init's may be hidden (hidepid); this process's is what holds the ids above
			}
			return fmt.Errorf("seal: mount namespace %s: %w", p, err)
		}
		if err := put(protMntNS, 0, st.Ino); err != nil {
			return fmt.Errorf("seal: protect mount namespace %s: %w", p, err)
		}
	}
	var c guardKgConfig
	if err := g.config.Lookup(uint32(0), &c); err != nil {
		return fmt.Errorf("seal: read config: %w", err)
	}
	c.Sealed = 1
	if err := g.config.Update(uint32(0), &c, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("seal: write config: %w", err)
	}
	return nil
}

// protectMounts records, in the calling thread's mount namespace, the
// mounts that hold the pins (fsDev is the pins' file system), the inodes
// they sit on and every directory from the pins up to /.
func (g *Guard) protectMounts(put func(kind, dev uint32, id uint64) error, fsDev uint32) error {
	// The mounts that hold the pins: the bpffs mount and every mount on
	// the path above it (sb_umount sees only the mount named: a lazy
	// umount of /sys or / would detach the bpffs below it unseen, and the
	// pins would go with the last reference). By mount id, so that other
	// mounts of the same file systems unmount as usual.
	mounts, err := pinMounts(g.pinDir)
	if err != nil {
		return err
	}
	if mounts[0].Dev != fsDev {
		return fmt.Errorf("the mount of %s in mountinfo (id %d, device %#x) is not the pins' file system (device %#x)",
			g.pinDir, mounts[0].ID, mounts[0].Dev, fsDev)
	}
	for i, m := range mounts {
		if err := put(protMount, 0, uint64(m.ID)); err != nil {
			return fmt.Errorf("protect mount %d (%s): %w", m.ID, m.Point, err)
		}
		if i+1 == len(mounts) {
			break // the root mount: its parent is outside the namespace
		}
		dev, ino, ok, err := mountpointInode(mounts[i+1].Point, m.Point)
		if err != nil {
			return fmt.Errorf("the inode under mount %d (%s): %w", m.ID, m.Point, err)
		}
		if !ok {
			continue // stacked on its parent's root, hidden: see Seal
		}
		if err := put(protMountpoint, dev, ino); err != nil {
			return fmt.Errorf("protect the inode under mount %d (%s): %w", m.ID, m.Point, err)
		}
	}
	// Every directory from the pins up to /, as a lookup of it ends (on
	// the top mount's root): a mount on any of them would hide the pins.
	for dir := g.pinDir; ; dir = filepath.Dir(dir) {
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			return fmt.Errorf("stat %s: %w", dir, err)
		}
		if err := put(protPath, kernelDev(st.Dev), st.Ino); err != nil {
			return fmt.Errorf("protect the path %s: %w", dir, err)
		}
		if dir == "/" || dir == "." {
			break
		}
	}
	return nil
}

// Protection kinds, as in guard.bpf.c.
const (
	protMap   = 1
	protLink  = 2
	protInode = 3
	// protEvents is the ring buffer: no program may use it once sealed, but
	// it still opens writable (kg_bpf_map checks protMap only).
	protEvents = 5
	// protMount is a mount that holds the pins, by mount id.
	protMount = 6
	// protMountpoint is the inode such a mount sits on (dev, inode).
	protMountpoint = 7
	// protHook is the vmlinux BTF id of a bpf_lsm_ function (an LSM hook)
	// that no one else's program may attach to once sealed (overrideHooks).
	protHook = 8
	// protMntNS is a mount namespace holding the protected mounts, by
	// inode number: legacy MS_MOVE is refused there once sealed.
	protMntNS = 9
	// protPath is a directory on the path from / to the pins, as path
	// lookup ends on it (dev, inode): no mount goes on it once sealed.
	protPath = 10
)

// overrideHooks are the guard's hooks where someone else's BPF LSM program
// could skip the guard by returning a positive value, which the kernel
// takes for the length of the file read (kernel_post_read_file; on
// kernel_read_file it would make the kernel use a buffer it never read)
// or for "allowed" (bpf, bpf_map, bpf_prog: then the seal's own checks
// are skipped). Kernels before 6.12 let LSM programs return any value:
// there, once sealed, programs that attach to these get no descriptor and
// no link (lsmReturnsChecked tells the kernels apart).
var overrideHooks = []string{"kernel_read_file", "kernel_post_read_file", "bpf", "bpf_map", "bpf_prog"}

// hookBTFIDs returns the vmlinux BTF ids of bpf_lsm_<hook> for hooks.
func hookBTFIDs(hooks []string) ([]btf.TypeID, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("kernel BTF: %w", err)
	}
	var ids []btf.TypeID
	for _, h := range hooks {
		var fn *btf.Func
		if err := spec.TypeByName("bpf_lsm_"+h, &fn); err != nil {
			return nil, fmt.Errorf("LSM hook %s in kernel BTF: %w", h, err)
		}
		id, err := spec.TypeID(fn)
		if err != nil {
			return nil, fmt.Errorf("LSM hook %s in kernel BTF: %w", h, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// mountpointInode returns the device and inode of the directory that the
// mount at point sits on, in the mount at parentPoint below it: what
// struct mount's mnt_mountpoint is in the kernel. It looks through a
// detached clone of the parent mount alone (open_tree), where no mount
// hides the directory. ok is false for a mount on its parent's own root
// (stacked on the same path), whose directory no path reaches.
func mountpointInode(parentPoint, point string) (dev uint32, ino uint64, ok bool, err error) {
	if point == parentPoint {
		return 0, 0, false, nil
	}
	rel := strings.TrimPrefix(strings.TrimPrefix(point, parentPoint), "/")
	if rel == "" || !isUnder(parentPoint, point) {
		return 0, 0, false, fmt.Errorf("%s is not below %s", point, parentPoint)
	}
	fd, err := unix.OpenTree(unix.AT_FDCWD, parentPoint, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return 0, 0, false, fmt.Errorf("open_tree %s: %w", parentPoint, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstatat(fd, rel, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return 0, 0, false, fmt.Errorf("stat %s in a clone of %s: %w", rel, parentPoint, err)
	}
	return kernelDev(st.Dev), st.Ino, true, nil
}

// isUnder reports whether the absolute path p is below the directory a.
func isUnder(a, p string) bool {
	return a != p && (a == "/" || strings.HasPrefix(p, a+"/"))
}

// kernelDev turns a stat(2) st_dev into the kernel's internal dev_t
// (MAJOR << 20 | MINOR), the encoding of super_block.s_dev.
func kernelDev(dev uint64) uint32 {
	return unix.Major(dev)<<20 | unix.Minor(dev)
}

// Remove detaches the guard: it unpins every link and map and closes this
// process's descriptors, so that the kernel releases the programs. It
// returns ErrSealed when the guard is sealed.
func (g *Guard) Remove() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	sealed, err := g.sealedLocked()
	if err != nil {
		return err
	}
	if sealed || g.readOnly {
		return fmt.Errorf("remove guard: %w", ErrSealed)
	}
	errs := []error{removePins(g.pinDir, append(guardPins(), pinReader))}
	if err := os.Remove(g.pinDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	g.closeFDs()
	g.closed = true
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove guard: %w", err)
	}
	return nil
}

// Close releases this process's descriptors. The pinned guard stays in
// force.
func (g *Guard) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	g.closeFDs()
	return nil
}

func (g *Guard) closeFDs() {
	if g.unlock != nil {
		g.unlock()
		g.unlock = nil
	}
	for _, m := range []*ebpf.Map{g.policy, g.config, g.protect, g.events, g.counters, g.inner} {
		if m != nil {
			m.Close()
		}
	}
	for _, l := range g.links {
		l.Close()
	}
}

// ensurePinDir creates dir on a bpffs, mounting bpffs on its parent when the
// parent is an empty, unmounted /sys/fs/bpf.
func ensurePinDir(dir string) error {
	parent := filepath.Dir(dir)
	var fs unix.Statfs_t
	if err := unix.Statfs(parent, &fs); err != nil {
		return fmt.Errorf("pin directory %s: %w", parent, err)
	}
	if fs.Type != unix.BPF_FS_MAGIC {
		if parent != "/sys/fs/bpf" {
			return fmt.Errorf("pin directory %s is not on a bpffs", parent)
		}
		if err := unix.Mount("bpf", parent, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpffs on %s: %w", parent, err)
		}
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("create pin directory: %w", err)
	}
	return nil
}

// ErrBusy is returned by Open when another process holds the guard.
var ErrBusy = errors.New("another process holds the guard")

// lockDir takes an exclusive flock on dir, held until the Guard is closed,
// so that two daemons never load two guards into one pin directory, nor
// apply two allowlists and split one decision stream. The kernel drops the
// lock when the holder dies, kill -9 included.
func lockDir(dir string) (func(), error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open pin directory: %w", err)
	}
	if err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("open guard in %s: %w (is 'kmodguard enforcer run' already running?)", dir, ErrBusy)
		}
		return nil, fmt.Errorf("lock pin directory: %w", err)
	}
	return func() { unix.Close(fd) }, nil
}

// progMapIDs lists the maps a loaded program uses.
func progMapIDs(id ebpf.ProgramID) ([]ebpf.MapID, error) {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return nil, err
	}
	ids, ok := info.MapIDs()
	if !ok {
		return nil, errors.New("kernel does not report the program's maps")
	}
	return ids, nil
}
