// Package scan looks for hidden kernel modules: modules that the kernel's
// own structures show loaded and live but that /proc/modules does not
// list, as a rootkit that unlinks itself from the module list leaves them
// (kmodguard scan).
//
// It compares /proc/modules with two other views:
//
//   - /sys/module: each loadable module has a directory with an initstate
//     file (built-in modules have none). A module that only unlinks itself
//     from the list is still there; one that also deletes its kobject is
//     not.
//   - mod_tree, the kernel's tree of module memory, which it needs to
//     tell which module an address belongs to: a BPF program walks it once
//     (modtree.bpf.c), from its address in /proc/kallsyms. A module can
//     leave both lists and still be there. It needs root, BPF, bpf_loop
//     (5.17) and a kernel with CONFIG_MODULES_TREE_LOOKUP and
//     CONFIG_KALLSYMS_ALL, which Debian's have; without them the scan says
//     why and goes on with /sys/module.
//
// Modules being loaded or unloaded are in some views and not others for a
// moment (Tracee's hidden_kernel_module reported them): only modules in
// the LIVE state count, and a difference is reported only when a second
// look, Recheck later, finds it again at the same address.
package scan

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"

	"github.com/kmodguard/kmodguard/internal/procmodules"
)

// Options say where to look; the zero value looks at the running system.
type Options struct {
	// ProcRoot and SysRoot default to /proc and /sys.
	ProcRoot, SysRoot string
	// NoBPF leaves out the walk of mod_tree.
	NoBPF bool
	// Recheck is how long to wait before the second look; default 200ms.
	// Negative: no second look (tests of the comparison).
	Recheck time.Duration

	// between, for tests, runs during the pause before the second look.
	between func()
}

// Source is one view of the loaded modules.
type Source struct {
	Name string `json:"name"`
	// Modules is how many live modules it showed; -1 when unavailable.
	Modules int `json:"modules"`
	// Error says why the source was not available.
	Error string `json:"error,omitempty"`
}

// Hidden is a live module that one view shows and another leaves out.
type Hidden struct {
	Name string `json:"name"`
	// ModuleAddr is its struct module's address, when mod_tree showed it.
	ModuleAddr uint64 `json:"module_addr,omitempty"`
	// SeenIn and MissingFrom name the views.
	SeenIn      []string `json:"seen_in"`
	MissingFrom []string `json:"missing_from"`
}

// Describe says where the module was seen and where not, as kmod.hidden does.
func (h Hidden) Describe() string {
	return "in " + strings.Join(h.SeenIn, ", ") + "; not in " + strings.Join(h.MissingFrom, ", ")
}

// Report is the outcome of a scan.
type Report struct {
	Sources []Source `json:"sources"`
	Hidden  []Hidden `json:"hidden"`
}

// View names.
const (
	ViewProc    = "/proc/modules"
	ViewSysfs   = "/sys/module"
	ViewModTree = "mod_tree"
)

// view is one look at one source: the live modules, by name, with their
// struct module address where known, and every module it shows in any
// state (loading, unloading).
type view struct {
	live map[string]uint64
	all  map[string]bool
	err  error
}

// Scan compares the views, twice (see Options.Recheck).
func Scan(o Options) (*Report, error) {
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	if o.SysRoot == "" {
		o.SysRoot = "/sys"
	}
	if o.Recheck == 0 {
		o.Recheck = 200 * time.Millisecond
	}
	var w *walker
	var werr error
	if o.NoBPF {
		werr = errors.New("left out (--no-bpf)")
	} else {
		w, werr = newWalker(o.ProcRoot)
		if w != nil {
			defer w.close()
		}
	}
	first, err := look(o, w, werr)
	if err != nil {
		return nil, err
	}
	r := &Report{}
	for _, name := range []string{ViewProc, ViewSysfs, ViewModTree} {
		v := first[name]
		s := Source{Name: name, Modules: len(v.live)}
		if v.err != nil {
			s.Modules, s.Error = -1, v.err.Error()
		}
		r.Sources = append(r.Sources, s)
	}
	found := compare(first)
	if len(found) == 0 || o.Recheck < 0 {
		r.Hidden = found
		if r.Hidden == nil {
			r.Hidden = []Hidden{}
		}
		return r, nil
	}
	time.Sleep(o.Recheck)
	if o.between != nil {
		o.between()
	}
	second, err := look(o, w, werr)
	if err != nil {
		return nil, err
	}
	again := map[string]Hidden{}
	for _, h := range compare(second) {
		again[h.Name] = h
	}
	r.Hidden = []Hidden{}
	for _, h := range found {
		if h2, ok := again[h.Name]; ok && h2.ModuleAddr == h.ModuleAddr {
			r.Hidden = append(r.Hidden, h2)
		}
	}
	return r, nil
}

// look reads every view once. /proc/modules is read before and after the
// others, and a module in either read counts: one that finished loading
// during the look is not reported.
func look(o Options, w *walker, werr error) (map[string]view, error) {
	proc, err := readProc(filepath.Join(o.ProcRoot, "modules"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w (a kernel without module support: nothing to scan)", err)
	}
	if err != nil {
		return nil, err
	}
	views := map[string]view{ViewSysfs: readSysfs(filepath.Join(o.SysRoot, "module"))}
	if w != nil {
		views[ViewModTree] = w.walk()
	} else {
		views[ViewModTree] = view{err: werr}
	}
	after, err := readProc(filepath.Join(o.ProcRoot, "modules"))
	if err != nil {
		return nil, err
	}
	for name := range after.all {
		proc.all[name] = true
	}
	for name, addr := range after.live {
		proc.live[name] = addr
	}
	views[ViewProc] = proc
	return views, nil
}

// compare lists the modules that a view shows live and another available
// view does not show at all (in no state: a module loading or unloading
// is in some views and not others for a moment).
func compare(views map[string]view) []Hidden {
	names := map[string]uint64{}
	for _, v := range views {
		if v.err != nil {
			continue
		}
		for n, a := range v.live {
			if a != 0 || names[n] == 0 {
				names[n] = a
			}
		}
	}
	order := []string{ViewProc, ViewSysfs, ViewModTree}
	var out []Hidden
	for n, addr := range names {
		h := Hidden{Name: n, ModuleAddr: addr}
		for _, vn := range order {
			v := views[vn]
			if v.err != nil {
				continue
			}
			if v.all[n] {
				h.SeenIn = append(h.SeenIn, vn)
			} else {
				h.MissingFrom = append(h.MissingFrom, vn)
			}
		}
		if len(h.MissingFrom) > 0 {
			out = append(out, h)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// readProc reads /proc/modules: every module it lists, and the live ones
// (state Live, not Loading or Unloading).
func readProc(path string) (view, error) {
	mods, err := procmodules.Read(path)
	if err != nil {
		return view{}, fmt.Errorf("scan: %w", err)
	}
	v := view{live: map[string]uint64{}, all: map[string]bool{}}
	for _, m := range mods {
		v.all[m.Name] = true
		if m.Live() {
			v.live[m.Name] = 0
		}
	}
	return v, nil
}

// readSysfs lists the loadable modules of /sys/module whose initstate is
// live (built-in modules have no initstate).
func readSysfs(dir string) view {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return view{err: err}
	}
	v := view{live: map[string]uint64{}, all: map[string]bool{}}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "initstate"))
		if err != nil {
			continue
		}
		v.all[e.Name()] = true
		if strings.TrimSpace(string(b)) == "live" {
			v.live[e.Name()] = 0
		}
	}
	return v
}

// kallsym finds a symbol's address in a kallsyms file; 0 when absent or
// hidden (kptr_restrict shows zeros to callers without CAP_SYSLOG).
func kallsym(path, sym string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		// "ffffffff83a1b2c0 d mod_tree": a built-in symbol has no [module].
		fields := strings.Fields(line)
		if len(fields) != 3 || fields[2] != sym {
			continue
		}
		a, err := strconv.ParseUint(fields[0], 16, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %w", path, line, err)
		}
		return a, nil
	}
	return 0, sc.Err()
}

// walker walks mod_tree with the loaded BPF program.
type walker struct {
	objs modtreeObjects
}

// Module states (enum module_state).
const stateLive = 0

func newWalker(procRoot string) (*walker, error) {
	addr, err := kallsym(filepath.Join(procRoot, "kallsyms"), "mod_tree")
	if err != nil {
		return nil, fmt.Errorf("mod_tree's address: %w", err)
	}
	if addr == 0 {
		return nil, errors.New("mod_tree is not in /proc/kallsyms, or its address is hidden (a kernel without CONFIG_MODULES_TREE_LOOKUP or CONFIG_KALLSYMS_ALL, or a caller without CAP_SYSLOG)")
	}
	spec, err := loadModtree()
	if err != nil {
		return nil, err
	}
	if err := spec.Variables["kg_mod_tree"].Set(addr); err != nil {
		return nil, err
	}
	w := &walker{}
	if err := spec.LoadAndAssign(&w.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load the mod_tree walk: the verifier refused it:\n%+v", ve)
		}
		return nil, fmt.Errorf("load the mod_tree walk: %w", err)
	}
	return w, nil
}

func (w *walker) close() { w.objs.Close() }

// walk runs the program once and reads what it recorded.
func (w *walker) walk() view {
	if _, err := w.objs.KgWalkModTree.Run(&ebpf.RunOptions{Context: make([]byte, 8)}); err != nil {
		return view{err: fmt.Errorf("run the mod_tree walk: %w", err)}
	}
	var count, done, overflow, steps uint32
	for _, v := range []struct {
		v   *ebpf.Variable
		out *uint32
	}{{w.objs.KgCount, &count}, {w.objs.KgDone, &done}, {w.objs.KgOverflow, &overflow}, {w.objs.KgSteps, &steps}} {
		if err := v.v.Get(v.out); err != nil {
			return view{err: err}
		}
	}
	if done == 0 || overflow != 0 {
		return view{err: fmt.Errorf("the mod_tree walk did not finish (%d nodes in %d steps, overflow %v): the tree changed under it or is too large", count, int32(steps), overflow != 0)}
	}
	v := view{live: map[string]uint64{}, all: map[string]bool{}}
	var rec modtreeKgModSeen
	for i := uint32(0); i < count; i++ {
		if err := w.objs.KgSeen.Lookup(i, &rec); err != nil {
			return view{err: err}
		}
		if rec.Mod == 0 {
			continue
		}
		name := cstr(rec.Name[:])
		v.all[name] = true
		if rec.State == stateLive {
			v.live[name] = rec.Mod
		}
	}
	return v
}

func cstr(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}
