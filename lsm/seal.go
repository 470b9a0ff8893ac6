//go:build linux

package lsm

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// Seal protects the guard until reboot. It records, in the kg_protect map,
// everything an attacker with root could use to get around the guard, then
// sets kg_config.sealed: from then on the kernel refuses to detach, unpin,
// rename or rewrite any of it, to load a program that uses the guard's maps
// (the decision ring buffer included), to freeze the ring buffer, to
// unmount the mounts holding the pins (or a mount whose unmount propagates
// to them, see guard.bpf.c), to move them (move_mount(2) of one, any
// MS_MOVE or pivot_root(2) in the sealing and init mount namespaces) or
// mount over the path to the pins, to load or attach programs that could
// decide before the guard (fmod_ret, and LSM programs on overrideHooks),
// and kexec, the crash kernel's (kdump) included. Other mounts of
// the same file systems unmount as usual. The ring buffer still opens
// writable, for the daemon to consume it; a second consumer is detected by
// the reader (Reader.Missing). The policy in force is frozen; SetPolicy
// returns ErrSealed. A guard in audit mode is not sealed (ErrSealAudit).
//
// The guard's maps are frozen too (BPF_MAP_FREEZE): the kernel itself then
// refuses every write to them from user space, whatever descriptor it
// comes through. The guard's bpf hook refuses those writes as well, but it
// reads the descriptor before the syscall looks it up again, and a thread
// that swaps the descriptor in between gets past it.
//
// The steps are in sealSteps. The guard consults kg_protect only once the
// seal is set, so a step before that which fails leaves the guard unsealed,
// and Seal can be called again; once the maps are frozen, though, the
// policy in force stays until reboot whatever happens next.
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
	var c guardKgConfig
	if err := g.config.Lookup(uint32(0), &c); err != nil {
		return fmt.Errorf("seal: read config: %w", err)
	}
	if Mode(c.Mode) != ModeEnforce {
		return ErrSealAudit
	}
	s := &sealer{g: g}
	for _, step := range sealSteps {
		if err := step.run(s); err != nil {
			return fmt.Errorf("seal: %s: %w", step.name, err)
		}
	}
	return nil
}

// ErrSealAudit is returned by Seal for a guard in audit mode: sealed, its
// allowlist would stay until reboot while it refuses nothing.
var ErrSealAudit = errors.New("seal: the guard is in audit mode, which refuses nothing; a sealed guard keeps its allowlist until reboot: apply an allowlist in enforce mode, then seal")

// sealSteps are Seal's steps, in order. Each records one kind of object the
// guard must protect; the last sets the seal.
var sealSteps = []struct {
	name string
	run  func(*sealer) error
}{
	{"find the host's mount namespace", (*sealer).findHostNS},
	{"protect the guard's maps", (*sealer).protectMaps},
	{"protect the decision ring buffer", (*sealer).protectEvents},
	{"protect the links and their programs' maps", (*sealer).protectLinks},
	{"protect the hooks that could override the guard", (*sealer).protectHooks},
	{"protect the pins", (*sealer).protectPins},
	{"protect the mounts holding the pins", (*sealer).protectMounts},
	{"protect the mount namespaces", (*sealer).protectMountNamespaces},
	{"freeze the guard's maps", (*sealer).freezeMaps},
	{"set the seal", (*sealer).setSealed},
	{"freeze the config", (*sealer).freezeConfig},
}

// sealer carries what one Seal learns from step to step.
type sealer struct {
	g        *Guard
	hostNS   string       // init's mount namespace when not this process's (hostMountNS)
	eventsID ebpf.MapID   // the ring buffer: protEvents, not protMap
	fsDev    uint32       // the pins' file system (kernel dev_t)
	maps     []ebpf.MapID // protMap maps, to freeze
	configID ebpf.MapID   // kg_cfg, frozen last (freezeConfig)
}

// put records one protected object.
func (s *sealer) put(kind, dev uint32, id uint64) error {
	k := guardKgProtectKey{Kind: kind, Dev: dev, Id: id}
	return s.g.protect.Update(&k, uint8(1), ebpf.UpdateAny)
}

func (s *sealer) findHostNS() (err error) {
	s.hostNS, err = hostMountNS()
	return err
}

// protectMaps records the guard's own maps and the policy in force.
func (s *sealer) protectMaps() error {
	g := s.g
	var innerID uint32
	if err := g.policy.Lookup(uint32(0), &innerID); err == nil && innerID != 0 {
		if err := s.put(protMap, 0, uint64(innerID)); err != nil {
			return fmt.Errorf("policy map: %w", err)
		}
		s.maps = append(s.maps, ebpf.MapID(innerID))
	}
	for _, m := range []*ebpf.Map{g.policy, g.config, g.protect, g.counters} {
		info, err := m.Info()
		if err != nil {
			return fmt.Errorf("map info: %w", err)
		}
		id, ok := info.ID()
		if !ok {
			return errors.New("kernel does not report map ids")
		}
		if err := s.put(protMap, 0, uint64(id)); err != nil {
			return fmt.Errorf("map %d: %w", id, err)
		}
		if m == g.config {
			s.configID = id
		} else {
			s.maps = append(s.maps, id)
		}
	}
	return nil
}

// protectEvents records the ring buffer: no program may use it once
// sealed, but the daemon still opens it writable to consume it.
func (s *sealer) protectEvents() error {
	info, err := s.g.events.Info()
	if err != nil {
		return fmt.Errorf("map info: %w", err)
	}
	id, ok := info.ID()
	if !ok || id == 0 {
		return errors.New("kernel does not report the ring buffer's id")
	}
	s.eventsID = id
	return s.put(protEvents, 0, uint64(id))
}

// protectLinks records the guard's links and every map their programs use,
// the per-CPU scratch maps included: a write to the digest or names
// mid-decision would forge it.
func (s *sealer) protectLinks() error {
	for name, l := range s.g.links {
		info, err := l.Info()
		if err != nil {
			return fmt.Errorf("link %s info: %w", name, err)
		}
		if err := s.put(protLink, 0, uint64(info.ID)); err != nil {
			return fmt.Errorf("link %s: %w", name, err)
		}
		ids, err := progMapIDs(info.Program)
		if err != nil {
			return fmt.Errorf("maps of %s: %w", name, err)
		}
		for _, id := range ids {
			if id == s.eventsID {
				continue // protectEvents: consuming it needs a writable fd
			}
			if err := s.put(protMap, 0, uint64(id)); err != nil {
				return fmt.Errorf("map %d of %s: %w", id, name, err)
			}
			s.maps = append(s.maps, id)
		}
	}
	return nil
}

// protectHooks records overrideHooks for BPF_LSM_CGROUP programs where
// the verifier does not check the value they give the hook with
// bpf_set_retval (protCgroupHook: 6.1 and 6.12; it checks their own
// return, 0 or 1, only), and for BPF LSM programs where it lets them
// return any value (protHook, before 6.12). Where it keeps them to the
// hooks' return values, another program there can only refuse more: the
// hooks stay open to other products.
func (s *sealer) protectHooks() error {
	ids, err := hookBTFIDs(overrideHooks)
	if err != nil {
		return err
	}
	var kinds []uint32
	if !cgroupRetvalChecked() {
		kinds = append(kinds, protCgroupHook)
	}
	if !lsmReturnsChecked() {
		kinds = append(kinds, protHook)
	}
	for _, kind := range kinds {
		for i, id := range ids {
			if err := s.put(kind, 0, uint64(id)); err != nil {
				return fmt.Errorf("hook %s: %w", overrideHooks[i], err)
			}
		}
	}
	return nil
}

// protectPins records the inodes of the pin directory and of each pin.
func (s *sealer) protectPins() error {
	pins := []string{s.g.pinDir}
	for _, name := range guardPins() {
		pins = append(pins, filepath.Join(s.g.pinDir, name))
	}
	for _, p := range pins {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return fmt.Errorf("stat %s: %w", p, err)
		}
		s.fsDev = kernelDev(st.Dev)
		if err := s.put(protInode, s.fsDev, st.Ino); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

// protectMounts records the mounts holding the pins in this process's
// mount namespace and, when it runs in one of its own, in the host's: a
// sandboxed service, or a container sharing the host's PID namespace, has
// copies whose ids protect nothing the host's root cannot unmount in the
// host's namespace.
func (s *sealer) protectMounts() error {
	if err := s.mountsHere(); err != nil {
		return err
	}
	if s.hostNS == "" {
		return nil
	}
	if err := inMountNS(s.hostNS, func() error { return s.mountsHere() }); err != nil {
		return fmt.Errorf("in the host's mount namespace (PID 1's): %w", err)
	}
	return nil
}

// protectMountNamespaces records the mount namespaces those mounts are
// in, this process's and init's (which holds the originals when this
// process runs in a namespace of its own): legacy MS_MOVE is refused in
// them.
func (s *sealer) protectMountNamespaces() error {
	for i, p := range []string{"/proc/self/ns/mnt", "/proc/1/ns/mnt"} {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			if i > 0 {
				continue // init's may be hidden (hidepid); this process's is what holds the ids above
			}
			return fmt.Errorf("%s: %w", p, err)
		}
		if err := s.put(protMntNS, 0, st.Ino); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	return nil
}

// freezeMaps freezes every map recorded above but the config (which the
// seal itself writes): the policy in force, the policy slot, kg_protect,
// the counters and the programs' scratch maps. User space never writes
// them once sealed; programs still do, a freeze being about the syscall
// side only. A map frozen already (the policy in force is frozen as it is
// built) is left as it is.
func (s *sealer) freezeMaps() error {
	if s.configID == 0 {
		return errors.New("the config map's id is not known")
	}
	frozen := map[ebpf.MapID]bool{s.configID: true}
	for _, id := range s.maps {
		if frozen[id] {
			continue
		}
		frozen[id] = true
		if err := freezeByID(id); err != nil {
			return err
		}
	}
	return nil
}

// freezeConfig freezes the config once the seal is set: kg_bpf lets a
// freeze of a guard map through, since it only takes writes away.
func (s *sealer) freezeConfig() error {
	if err := s.g.config.Freeze(); err != nil {
		return fmt.Errorf("the guard is sealed, but its config is not frozen (the bpf hook still refuses writes to it): %w", err)
	}
	return nil
}

// freezeByID freezes the map with the id, unless it is frozen already.
func freezeByID(id ebpf.MapID) error {
	m, err := ebpf.NewMapFromID(id)
	if err != nil {
		return fmt.Errorf("open map %d: %w", id, err)
	}
	defer m.Close()
	if info, err := m.Info(); err == nil && info.Frozen() {
		return nil
	}
	if err := m.Freeze(); err != nil {
		return fmt.Errorf("map %d: %w", id, err)
	}
	return nil
}

// setSealed sets kg_config.sealed: the guard consults what the steps
// before recorded from now on.
func (s *sealer) setSealed() error {
	var c guardKgConfig
	if err := s.g.config.Lookup(uint32(0), &c); err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	c.Sealed = 1
	if err := s.g.config.Update(uint32(0), &c, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// mountsHere records, in the calling thread's mount namespace, the mounts
// that hold the pins, the inodes they sit on and every directory from the
// pins up to /.
func (s *sealer) mountsHere() error {
	// The mounts that hold the pins: the bpffs mount and every mount on
	// the path above it (sb_umount sees only the mount named: a lazy
	// umount of /sys or / would detach the bpffs below it unseen, and the
	// pins would go with the last reference). By mount id, so that other
	// mounts of the same file systems unmount as usual.
	mounts, err := pinMounts(s.g.pinDir)
	if err != nil {
		return err
	}
	if mounts[0].Dev != s.fsDev {
		return fmt.Errorf("the mount of %s in mountinfo (id %d, device %#x) is not the pins' file system (device %#x)",
			s.g.pinDir, mounts[0].ID, mounts[0].Dev, s.fsDev)
	}
	for i, m := range mounts {
		if err := s.put(protMount, 0, uint64(m.ID)); err != nil {
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
			continue // stacked on its parent's root, no path reaches the inode under it (mountpointInode)
		}
		if err := s.put(protMountpoint, dev, ino); err != nil {
			return fmt.Errorf("protect the inode under mount %d (%s): %w", m.ID, m.Point, err)
		}
	}
	// Every directory from the pins up to /, as a lookup of it ends (on
	// the top mount's root): a mount on any of them would hide the pins.
	for dir := s.g.pinDir; ; dir = filepath.Dir(dir) {
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err != nil {
			return fmt.Errorf("stat %s: %w", dir, err)
		}
		if err := s.put(protPath, kernelDev(st.Dev), st.Ino); err != nil {
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
	// protCgroupHook is protHook for BPF_LSM_CGROUP programs, on kernels
	// where the value such a program sets with bpf_set_retval, the hook's
	// return, is not checked (cgroupRetvalChecked).
	protCgroupHook = 11
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
