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
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// DefaultPinDir is where the guard's maps and links are pinned.
const DefaultPinDir = "/sys/fs/bpf/kmodguard"

// ErrSealed is returned for changes refused because the guard is sealed.
var ErrSealed = errors.New("the guard is sealed until reboot")

// ErrNotLoaded is returned by OpenPinned when no guard is pinned.
var ErrNotLoaded = errors.New("no guard is pinned")

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
	// progs holds descriptors to the guard's programs, for their
	// recursion misses: taken at load, or opened while unsealed (the seal
	// refuses new ones).
	progs    map[string]*ebpf.Program
	readOnly bool
	closed   bool
	unlock   func() // releases the pin directory lock Open took
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
	errs := []error{removePins(g.pinDir, append(guardPins(), pinReader, pinSerial))}
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
	for _, p := range g.progs {
		p.Close()
	}
}
