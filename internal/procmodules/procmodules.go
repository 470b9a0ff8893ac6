// Package procmodules reads /proc/modules, the kernel's list of the
// loadable modules it has linked: one line a module,
//
//	name size refcount deps state address [(taints)]
//
// for example "dummy 16384 0 - Live 0xffffffffc0a2b000 (OE)". The state is
// Live, Loading or Unloading; the taint letters are there only for a module
// that taints the kernel. The address reads as 0 to readers without
// CAP_SYSLOG (kptr_restrict). Both the inventory of the modules loaded
// before the sensor and the hidden-module scan read the list through it.
package procmodules

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Max bounds what a hostile or broken file can make a reader hold: the
// kernel has no such limit, but no host loads this many modules.
const Max = 1 << 14

// Module is one line of the list.
type Module struct {
	Name string
	// State is "Live", "Loading" or "Unloading"; "" when the line has no
	// such column.
	State string
	// Addr is the module's core address; 0 when hidden from this reader
	// or absent.
	Addr uint64
	// Taint holds the taint letters between the parentheses (such as
	// "OE"), or "".
	Taint string
}

// Live reports whether the module finished loading and is not unloading.
func (m Module) Live() bool { return m.State == "Live" }

// Read parses the list at path, in its order. Blank lines are skipped;
// a line longer than 64 KiB, or more than Max modules, is an error.
func Read(path string) ([]Module, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Module
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		if len(out) == Max {
			return nil, fmt.Errorf("%s: more than %d modules", path, Max)
		}
		m := Module{Name: fields[0]}
		if len(fields) > 4 {
			m.State = fields[4]
		}
		if len(fields) > 5 {
			m.Addr, _ = strconv.ParseUint(strings.TrimPrefix(fields[5], "0x"), 16, 64)
		}
		if last := fields[len(fields)-1]; len(fields) > 6 && strings.HasPrefix(last, "(") && strings.HasSuffix(last, ")") {
			m.Taint = strings.Trim(last, "()")
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}
