//go:build linux

package lsm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/kmodguard/kmodguard/internal/kernbtf"
)

// hooks lists the guard's programs in attach order: the module hooks first,
// so that enforcement starts before anything else; the seal hooks after.
var hooks = []string{
	"kg_post_load_data",
	"kg_post_read_file",
	"kg_load_data",
	"kg_read_file",
	"kg_module_request",
	"kg_bpf",
	"kg_bpf_map",
	"kg_bpf_prog",
	"kg_inode_unlink",
	"kg_inode_rmdir",
	"kg_inode_rename",
	"kg_sb_umount",
	"kg_sb_mount",
	"kg_move_mount",
	"kg_sb_pivotroot",
}

// laterHooks are hooks added after guards were first pinned and sealed in
// the field: a guard sealed by an older build lacks them and cannot attach
// them until reboot, yet is adopted (Status.Missing names them). A sealed
// guard missing any other link is refused, as something took it away.
var laterHooks = map[string]bool{"kg_module_request": true}

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
		progs:    map[string]*ebpf.Program{},
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
		g.progs[name] = coll.Programs[name]
		delete(coll.Programs, name)
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
	if err := removePins(dir, append(guardPins(), pinReader, pinSerial)); err != nil {
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
		for _, name := range missing {
			if !laterHooks[name] {
				return nil, fmt.Errorf("guard in %s is sealed but links %v are missing", dir, missing)
			}
		}
		// Sealed by an older build, before these hooks existed: it
		// cannot take them now, and enforces what it has (status lists
		// the rest as missing).
		return g, nil
	}
	spec, err := loadSpec(Options{})
	if err != nil {
		return nil, err
	}
	// A guard pinned by an older build keeps its maps; the programs do
	// not depend on kg_protect's size, which has grown.
	spec.Maps["kg_protect"].MaxEntries = g.protect.MaxEntries()
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
