//go:build linux

package lsm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// The highest allowlist serial applied to the guard is kept beside its pins
// (pinSerial), so that it outlives the daemon as the guard does: a daemon
// restarted with an older signed allowlist on disk, or fed one through the
// companion socket, finds it there and refuses to roll back. No guard
// program reads it; it goes with the guard (Remove).

func serialSpec() *ebpf.MapSpec {
	return &ebpf.MapSpec{Name: "kg_serial", Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1}
}

// openSerial opens the serial pin, creating it when create is set and it
// is absent; m is nil when it is absent and create is not set. A pin of
// another shape under that name is an error, not a zero: the floor must
// not silently drop.
func (g *Guard) openSerial(create bool) (*ebpf.Map, error) {
	path := filepath.Join(g.pinDir, pinSerial)
	// Read-only unless writing: a status of a sealed guard opens nothing
	// for writing.
	m, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: !create})
	switch {
	case errors.Is(err, os.ErrNotExist) && !create:
		return nil, nil
	case errors.Is(err, os.ErrNotExist):
		if m, err = ebpf.NewMap(serialSpec()); err != nil {
			return nil, fmt.Errorf("create the serial record: %w", err)
		}
		if err := m.Pin(path); err != nil {
			m.Close()
			return nil, fmt.Errorf("pin the serial record: %w", err)
		}
		return m, nil
	case err != nil:
		return nil, fmt.Errorf("open the serial record: %w", err)
	}
	want := serialSpec()
	if m.Type() != want.Type || m.KeySize() != want.KeySize || m.ValueSize() != want.ValueSize || m.MaxEntries() != want.MaxEntries {
		m.Close()
		return nil, fmt.Errorf("the serial record %s is not one (a %s map)", path, m.Type())
	}
	return m, nil
}

// AppliedSerial returns the highest allowlist serial applied to this guard
// (metadata.serial), 0 when none was.
func (g *Guard) AppliedSerial() (uint64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m, err := g.openSerial(false)
	if m == nil || err != nil {
		return 0, err
	}
	defer m.Close()
	var v uint64
	if err := m.Lookup(uint32(0), &v); err != nil {
		return 0, fmt.Errorf("read the serial record: %w", err)
	}
	return v, nil
}

// RecordSerial raises the recorded serial to s; it never lowers it.
func (g *Guard) RecordSerial(s uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	m, err := g.openSerial(s != 0)
	if m == nil || err != nil {
		return err
	}
	defer m.Close()
	var v uint64
	if err := m.Lookup(uint32(0), &v); err != nil {
		return fmt.Errorf("read the serial record: %w", err)
	}
	if s <= v {
		return nil
	}
	if err := m.Update(uint32(0), s, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("record serial %d: %w", s, err)
	}
	return nil
}
