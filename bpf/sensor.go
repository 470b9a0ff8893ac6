// Package bpf is kmodguard's sensor: an eBPF program on the sys_enter and
// sys_exit tracepoints that sees every init_module, finit_module and
// delete_module on the host, and the Go side that loads it, reads its ring
// buffer, puts init_module images back together and enriches each syscall
// into an [event.Event].
//
// A minimal user:
//
//	s, err := bpf.NewSensor(bpf.Config{})
//	if err != nil {
//		return err // says what is missing: privileges, BTF, ring buffer
//	}
//	defer s.Close()
//	if err := s.Start(ctx); err != nil {
//		return err
//	}
//	for ev := range s.Events() {
//		fmt.Println(ev.Syscall, ev.Name, ev.Res)
//	}
//
// Every other syscall on the system pays for a few compares of its number in
// each hook, and nothing with HookFentry where the kernel allows it. 32-bit
// callers (amd64 ia32 emulation, arm64 aarch32) are seen under their own
// numbers. The
// kernel side is sensor.bpf.c; its record types are mirrored into Go by
// bpf2go (sensor_*_bpfel.go). Records travel through one ring buffer: image
// chunks, then the event with only the bytes its strings use, then the
// result; the reader joins them by thread id. An init_module image that
// could not be read at sys_enter (pages not yet resident: a fresh mapping of
// the module file) is read again at sys_exit, after the kernel's own copy
// faulted it in; its chunks then come between the event and the result, and
// the event says ImageAtExit. Likewise init_module and finit_module params
// not resident at sys_enter are read at sys_exit, after the kernel copied
// them; the result record carries them, and the event says ParamsAtExit.
package bpf

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/sirupsen/logrus"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/internal/kernbtf"
	"github.com/kmodguard/kmodguard/internal/kfloor"
)

// Defaults of Config.
const (
	DefaultRingBufferSize = 32 << 20
	DefaultImageCap       = 16 << 20
	DefaultEventBuffer    = 256
	// DefaultUnprivilegedRate is Config.UnprivilegedRate's default.
	DefaultUnprivilegedRate = 1000
	// MaxImageCap bounds Config.ImageCap: user space holds up to this much
	// per thread that is loading a module.
	MaxImageCap = 256 << 20
)

// Hook selects the tracepoint flavour the sensor attaches with.
type Hook string

const (
	// HookAuto tries HookBTF, then HookRaw.
	HookAuto Hook = ""
	// HookBTF uses tp_btf programs: the tracepoint arguments and pt_regs are
	// read directly, without helper calls, so the filter is cheapest. Its
	// results come from fexit on the three syscall functions where the
	// kernel attaches it (ExitFexit: unrelated syscalls then pay sys_enter
	// alone), and from the sys_exit tracepoint elsewhere.
	HookBTF Hook = "tp_btf"
	// HookRaw uses plain raw_tracepoint programs, for kernels that refuse
	// tp_btf.
	HookRaw Hook = "raw_tracepoint"
	// HookFentry puts fentry/fexit programs on the three syscall functions
	// (__x64_sys_init_module, ...), so other syscalls pay nothing. Kernels
	// without BPF trampolines, that refuse tracing programs, or that load
	// them but cannot attach them (arm64 without ftrace direct calls, such
	// as Debian's 6.1) cannot; the sensor then falls back to HookBTF and
	// HookRaw, with a warning. Never chosen by HookAuto.
	HookFentry Hook = "fentry"
)

// attachment is one program of a hook and where it goes.
type attachment struct {
	prog string // program name in sensor.bpf.c
	tp   string // tracepoint, for HookRaw
	// optional programs may be missing from the object (other
	// architectures) or refused by the kernel (no IA32 emulation).
	optional bool
}

// hookPrograms lists each hook's programs. Exits come first, so that a
// result is never missing for an event seen: an exit with no event is only
// an orphan.
var hookPrograms = map[Hook][]attachment{
	HookBTF: {{prog: "kg_sys_exit"}, {prog: "kg_sys_enter"}},
	HookRaw: {{prog: "kg_raw_sys_exit", tp: "sys_exit"}, {prog: "kg_raw_sys_enter", tp: "sys_enter"}},
	HookFentry: {
		{prog: "kg_fexit_init_module"}, {prog: "kg_fexit_finit_module"}, {prog: "kg_fexit_delete_module"},
		{prog: "kg_fentry_init_module"}, {prog: "kg_fentry_finit_module"}, {prog: "kg_fentry_delete_module"},
		// amd64: 32-bit callers enter through the __ia32_sys_ wrappers.
		{prog: "kg_ia32_fexit_init_module", optional: true},
		{prog: "kg_ia32_fexit_finit_module", optional: true},
		{prog: "kg_ia32_fexit_delete_module", optional: true},
		{prog: "kg_ia32_fentry_init_module", optional: true},
		{prog: "kg_ia32_fentry_finit_module", optional: true},
		{prog: "kg_ia32_fentry_delete_module", optional: true},
	},
}

// ExitSide says which programs carry the results of the module syscalls.
type ExitSide string

const (
	// ExitSysExit is the sys_exit tracepoint: every syscall of the host
	// runs it, and it filters on the syscall number.
	ExitSysExit ExitSide = "sys_exit"
	// ExitFexit is fexit on the module syscall functions: with HookBTF,
	// unrelated syscalls then pay sys_enter alone.
	ExitFexit ExitSide = "fexit"
)

// fexitExits are the exit side that, with the sys_enter tracepoint, spares
// unrelated syscalls the sys_exit program. The 32-bit wrappers' programs
// exist on amd64 only; where they exist, the kernel must take them too, or
// 32-bit callers' results would be lost.
var fexitExits = []string{
	"kg_fexit_init_module", "kg_fexit_finit_module", "kg_fexit_delete_module",
	"kg_ia32_fexit_init_module", "kg_ia32_fexit_finit_module", "kg_ia32_fexit_delete_module",
}

// Config configures a Sensor. The zero value is ready to use.
type Config struct {
	// RingBufferSize is the ring buffer's size in bytes: a power of two and
	// a multiple of the page size. It should exceed ImageCap, so that a
	// whole image fits while user space catches up. Default 32 MiB.
	RingBufferSize int
	// ImageCap bounds the bytes of an init_module image sent to user space;
	// the rest is flagged truncated. Default 16 MiB.
	ImageCap uint64
	// Allowlist, when set, is called for every event, so that a reloaded
	// list takes effect at once. It may return nil (no policy).
	Allowlist func() *allowlist.Allowlist
	// EventBuffer is the capacity of the Events channel. Default 256.
	EventBuffer int
	// Hook picks the tracepoint flavour. Default HookAuto.
	Hook Hook
	// UnprivilegedRate bounds the events per second, per CPU, from callers
	// without CAP_SYS_MODULE in the initial user namespace (the kernel
	// refuses them at once): a flood of them then cannot crowd real loads
	// out of the ring buffer. What is cut is counted in Stats.Throttled.
	// Default DefaultUnprivilegedRate; negative for no limit.
	UnprivilegedRate int
	// Logger receives warnings; default the standard logrus logger.
	Logger logrus.FieldLogger
}

// Stats counts what the sensor saw. The kernel's counters are summed over
// CPUs; the others are user space's.
type Stats struct {
	// Events is the event records the kernel submitted.
	Events uint64 `json:"events"`
	// Drops is the event records the ring buffer refused: syscalls lost.
	Drops uint64 `json:"drops"`
	// ChunkDrops is the image chunks the ring buffer refused; their events
	// arrive flagged truncated.
	ChunkDrops uint64 `json:"chunk_drops"`
	// ExitDrops is the results the ring buffer refused; their events
	// arrive with Res set to ResUnknown.
	ExitDrops uint64 `json:"exit_drops"`
	// Truncations is the events with anything cut short.
	Truncations uint64 `json:"truncations"`
	// ReadFailures is the events with a user pointer that could not be read.
	ReadFailures uint64 `json:"read_failures"`
	// Throttled is the calls of unprivileged callers over
	// Config.UnprivilegedRate, not reported one by one.
	Throttled uint64 `json:"throttled"`
	// Coalesced is the init_module calls with images the kernel cannot
	// load (junk: they fail its ELF header checks) that were folded into a
	// later event of their thread (Event.Coalesced) instead of sent: at
	// most one such event a second per thread, none while the ring buffer
	// is over three quarters full, so that a flood of junk cannot crowd
	// out a load that can succeed.
	Coalesced uint64 `json:"coalesced"`

	// Delivered is the events sent on the Events channel.
	Delivered uint64 `json:"delivered"`
	// Orphans is the records user space could not join to an event.
	Orphans uint64 `json:"orphans"`
	// Malformed is the records too short for their kind.
	Malformed uint64 `json:"malformed"`
	// Discarded is the events left undelivered at Close because nobody
	// read Events.
	Discarded uint64 `json:"discarded"`

	// UnrelatedPrograms is not a counter: the sensor's programs that every
	// other syscall of the host runs. 0 with HookFentry, 1 with the
	// sys_enter tracepoint and fexit results, 2 with sys_enter and sys_exit.
	UnrelatedPrograms uint64 `json:"unrelated_programs"`
}

// UnrelatedPrograms is the number of the sensor's programs that every
// syscall other than the three module syscalls runs (see Stats).
func (s *Sensor) UnrelatedPrograms() uint64 {
	switch {
	case s.hook == HookFentry:
		return 0
	case s.exit == ExitFexit:
		return 1
	}
	return 2
}

// ResUnknown is the Res of an event whose sys_exit record was lost (see
// Stats.ExitDrops) or that was still in the kernel when the sensor closed.
const ResUnknown int64 = -1 << 63

// Sensor is a loaded sensor. Create it with NewSensor, attach it with Start,
// read Events, and Close it.
type Sensor struct {
	cfg  Config
	log  logrus.FieldLogger
	hook Hook
	exit ExitSide

	coll     *ebpf.Collection
	attach   []attachment
	events   *ebpf.Map
	counters *ebpf.Map
	// autoload is the program on module:module_request, and modEvents
	// those on module:module_load and module:module_free, each in a
	// collection of its own that shares the sensor's maps; their coll is
	// nil when the kernel has no such tracepoints (no module support) or
	// refused them (err).
	autoload  sideProgs
	modEvents sideProgs

	links  []link.Link
	reader *ringbuf.Reader
	out    chan *event.Event
	enr    *enricher
	// idlePoll is the reader's longest sleep: the constant idlePoll, which
	// a test raises to show that records arrive without it.
	idlePoll time.Duration

	delivered, orphans, malformed, discarded atomic.Uint64

	startOnce sync.Once
	closeOnce sync.Once
	freeOnce  sync.Once
	final     atomic.Pointer[Stats]
	done      chan struct{}
	wg        sync.WaitGroup
}

// NewSensor checks that the kernel and the process have what the sensor
// needs, and loads its programs and maps. Nothing is attached until Start.
func NewSensor(cfg Config) (*Sensor, error) {
	if cfg.RingBufferSize == 0 {
		cfg.RingBufferSize = DefaultRingBufferSize
	}
	if cfg.ImageCap == 0 {
		cfg.ImageCap = DefaultImageCap
	}
	if cfg.EventBuffer <= 0 {
		cfg.EventBuffer = DefaultEventBuffer
	}
	if cfg.Logger == nil {
		cfg.Logger = logrus.StandardLogger()
	}
	switch {
	case cfg.UnprivilegedRate == 0:
		cfg.UnprivilegedRate = DefaultUnprivilegedRate
	case cfg.UnprivilegedRate < 0:
		cfg.UnprivilegedRate = 0 // no limit, in the kernel's terms
	case cfg.UnprivilegedRate > 1<<30:
		return nil, fmt.Errorf("unprivileged rate %d: must be at most %d", cfg.UnprivilegedRate, 1<<30)
	}
	ps := os.Getpagesize()
	if cfg.RingBufferSize < ps || cfg.RingBufferSize&(cfg.RingBufferSize-1) != 0 {
		return nil, fmt.Errorf("ring buffer size %d: must be a power of two of at least %d bytes", cfg.RingBufferSize, ps)
	}
	if cfg.ImageCap > MaxImageCap {
		return nil, fmt.Errorf("image cap %d: must be at most %d bytes", cfg.ImageCap, MaxImageCap)
	}
	switch cfg.Hook {
	case HookAuto, HookBTF, HookRaw, HookFentry:
	default:
		return nil, fmt.Errorf("hook %q: must be %q, %q or %q", cfg.Hook, HookBTF, HookRaw, HookFentry)
	}
	if err := CheckSystem(); err != nil {
		return nil, err
	}

	spec, err := loadSensor()
	if err != nil {
		return nil, fmt.Errorf("read the sensor's BPF object: %w", err)
	}
	if err := spec.Variables["kg_image_cap"].Set(cfg.ImageCap); err != nil {
		return nil, fmt.Errorf("set the image cap: %w", err)
	}
	if err := spec.Variables["kg_unprivileged_rate"].Set(uint32(cfg.UnprivilegedRate)); err != nil {
		return nil, fmt.Errorf("set the unprivileged rate: %w", err)
	}
	if err := spec.Variables["kg_wake_ns"].Set(uint64(wakeInterval)); err != nil {
		return nil, fmt.Errorf("set the wakeup interval: %w", err)
	}
	spec.Maps["kg_events"].MaxEntries = uint32(cfg.RingBufferSize)

	s := &Sensor{cfg: cfg, log: cfg.Logger, idlePoll: idlePoll, done: make(chan struct{})}
	hooks := []Hook{cfg.Hook}
	switch cfg.Hook {
	case HookAuto:
		hooks = []Hook{HookBTF, HookRaw}
	case HookFentry:
		hooks = []Hook{HookFentry, HookBTF, HookRaw}
	}
	for i, h := range hooks {
		err = s.load(spec, h)
		if err == nil {
			break
		}
		if i < len(hooks)-1 {
			lvl := logrus.DebugLevel
			if h == HookFentry {
				lvl = logrus.WarnLevel // asked for, so say why not
			}
			s.log.WithError(err).WithField("hook", h).Log(lvl, "sensor: hook refused, trying the next")
		}
	}
	if err != nil {
		return nil, err
	}
	s.loadAutoload(spec)
	s.enr = newEnricher(cfg)
	return s, nil
}

// sideSet is one way to watch a group of the kernel's own tracepoints:
// its hook, and its programs by the tracepoint each attaches to.
type sideSet struct {
	hook  Hook
	progs map[string]string // program -> tracepoint
}

// sideProgs is a group of programs on the kernel's own tracepoints, loaded
// beside the syscall programs with the sensor's maps.
type sideProgs struct {
	what string // for logs: "autoload events (module:module_request)"
	coll *ebpf.Collection
	set  sideSet
	err  error
}

// autoloadPrograms are the programs on module:module_request, in the order
// they are tried.
var autoloadPrograms = []sideSet{
	{HookBTF, map[string]string{"kg_module_request": "module_request"}},
	{HookRaw, map[string]string{"kg_raw_module_request": "module_request"}},
}

// modEventPrograms are the programs on module:module_load and
// module:module_free, in the order they are tried.
var modEventPrograms = []sideSet{
	{HookBTF, map[string]string{"kg_module_load": "module_load", "kg_module_free": "module_free"}},
	{HookRaw, map[string]string{"kg_raw_module_load": "module_load", "kg_raw_module_free": "module_free"}},
}

// loadAutoload loads the autoload program, and the module event programs,
// with the sensor's maps. A kernel built without module support has no
// module tracepoints: the sensor then goes on without those events, and
// says why (Autoload, ModuleEvents).
func (s *Sensor) loadAutoload(spec *ebpf.CollectionSpec) {
	s.autoload = s.loadSide(spec, "autoload events (module:module_request)", autoloadPrograms)
	s.modEvents = s.loadSide(spec, "module_load and module_free events (module:module_load, module:module_free)", modEventPrograms)
}

// loadSide loads the first set of sets that the kernel takes.
func (s *Sensor) loadSide(spec *ebpf.CollectionSpec, what string, sets []sideSet) sideProgs {
	maps := map[string]*ebpf.Map{}
	for name, m := range s.coll.Maps {
		maps[name] = m
	}
	var errs []error
	for _, set := range sets {
		sp := spec.Copy()
		missing := false
		for prog := range set.progs {
			if _, ok := sp.Programs[prog]; !ok {
				errs = append(errs, fmt.Errorf("%s: not in the object", prog))
				missing = true
			}
		}
		if missing {
			continue
		}
		for name := range sp.Programs {
			if _, ok := set.progs[name]; !ok {
				delete(sp.Programs, name)
			}
		}
		for name := range sp.Maps {
			if maps[name] == nil {
				delete(sp.Maps, name)
			}
		}
		for name, v := range sp.Variables {
			if maps[v.SectionName] == nil {
				delete(sp.Variables, name)
			}
		}
		coll, err := ebpf.NewCollectionWithOptions(sp, ebpf.CollectionOptions{MapReplacements: maps})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", set.hook, err))
			continue
		}
		return sideProgs{what: what, coll: coll, set: set}
	}
	side := sideProgs{what: what, err: errors.Join(errs...)}
	s.log.WithError(side.err).Info("sensor: no " + what + ": the kernel has no such tracepoint (no module support) or refused the program")
	return side
}

// Autoload says how the sensor sees autoload requests (module_request
// events): the hook, or "" and why not.
func (s *Sensor) Autoload() (Hook, error) { return s.autoload.hook(), s.autoload.err }

// ModuleEvents says how the sensor sees the kernel's module_load and
// module_free events: the hook, or "" and why not.
func (s *Sensor) ModuleEvents() (Hook, error) { return s.modEvents.hook(), s.modEvents.err }

func (p *sideProgs) hook() Hook {
	if p.coll == nil {
		return ""
	}
	return p.set.hook
}

// attach attaches the loaded programs; on failure, the side is off and
// says why.
func (p *sideProgs) attach(s *Sensor) {
	if p.coll == nil {
		return
	}
	for name, prog := range p.coll.Programs {
		var (
			l   link.Link
			err error
		)
		if p.set.hook == HookRaw {
			l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: p.set.progs[name], Program: prog})
		} else {
			l, err = link.AttachTracing(link.TracingOptions{Program: prog})
		}
		if err != nil {
			p.err = fmt.Errorf("attach %s: %w", name, err)
			p.coll.Close()
			p.coll = nil
			if errors.Is(err, os.ErrNotExist) {
				// A raw tracepoint program loads whatever its name; only
				// the attach finds that the kernel has no such tracepoint,
				// which is a kernel built without module support: no
				// module can load there, so nothing is missed.
				s.log.WithError(p.err).Info("sensor: no " + p.what + ": the kernel has no such tracepoint (built without module support)")
				return
			}
			s.log.WithError(p.err).Warn("sensor: no " + p.what + ": the kernel refused to attach the program")
			return
		}
		s.links = append(s.links, l)
	}
}

func (p *sideProgs) close() {
	if p.coll != nil {
		p.coll.Close()
		p.coll = nil
	}
}

// load loads the programs of hook h and the maps they use; the other
// hooks' programs stay out of the kernel. When the kernel refuses an
// optional program, load goes on without the optional ones, and says so.
// HookBTF takes its results from fexit where the kernel allows it, and
// from sys_exit elsewhere.
func (s *Sensor) load(spec *ebpf.CollectionSpec, h Hook) error {
	if h == HookBTF {
		err := s.loadFexitExits(spec)
		if err == nil {
			return nil
		}
		s.log.WithError(err).Debug("sensor: fexit refused for the results; sys_exit carries them")
	}
	var all, required []attachment
	for _, a := range hookPrograms[h] {
		if _, ok := spec.Programs[a.prog]; !ok {
			if a.optional {
				continue
			}
			return fmt.Errorf("load the sensor (%s): program %s missing from the object", h, a.prog)
		}
		all = append(all, a)
		if !a.optional {
			required = append(required, a)
		}
	}
	coll, err := s.loadPrograms(spec, all)
	if err != nil && len(required) < len(all) {
		var rerr error
		if coll, rerr = s.loadPrograms(spec, required); rerr == nil {
			s.log.WithError(err).WithField("hook", h).Warn("sensor: optional programs refused; 32-bit callers are not covered by this hook")
			all, err = required, nil
		}
	}
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("load the sensor (%s): the verifier refused it:\n%+v", h, ve)
		}
		return fmt.Errorf("load the sensor (%s): %w", h, err)
	}
	exit := ExitSysExit
	if h == HookFentry {
		if err := probeAttach(coll, all[0].prog); err != nil {
			coll.Close()
			return fmt.Errorf("load the sensor (%s): %w", h, err)
		}
		exit = ExitFexit
	}
	s.adopt(h, exit, all, coll)
	return nil
}

// loadFexitExits loads HookBTF with fexit on the module syscall functions
// in place of the sys_exit tracepoint.
func (s *Sensor) loadFexitExits(spec *ebpf.CollectionSpec) error {
	var all []attachment
	for _, name := range fexitExits {
		if _, ok := spec.Programs[name]; ok {
			all = append(all, attachment{prog: name})
		}
	}
	all = append(all, attachment{prog: "kg_sys_enter"})
	coll, err := s.loadPrograms(spec, all)
	if err != nil {
		return err
	}
	if err := probeAttach(coll, all[0].prog); err != nil {
		coll.Close()
		return err
	}
	s.adopt(HookBTF, ExitFexit, all, coll)
	return nil
}

// probeAttach attaches a loaded tracing program once and undoes it at once.
// A kernel may load tracing programs and refuse to attach them: arm64
// without ftrace direct calls has no way into a BPF trampoline, and says
// ENOTSUPP only at the attach. Found here, the sensor can still fall back.
func probeAttach(coll *ebpf.Collection, prog string) error {
	l, err := link.AttachTracing(link.TracingOptions{Program: coll.Programs[prog]})
	if err != nil {
		return fmt.Errorf("the kernel loads %s but refuses to attach it: %w", prog, err)
	}
	return l.Close()
}

// adopt makes a loaded collection the sensor's.
func (s *Sensor) adopt(h Hook, exit ExitSide, all []attachment, coll *ebpf.Collection) {
	s.hook, s.exit = h, exit
	s.attach = all
	s.coll = coll
	s.events, s.counters = coll.Maps["kg_events"], coll.Maps["kg_counters"]
}

// loadPrograms loads the given programs of spec, and the maps they use.
func (s *Sensor) loadPrograms(spec *ebpf.CollectionSpec, progs []attachment) (*ebpf.Collection, error) {
	spec = spec.Copy()
	want := map[string]bool{}
	for _, a := range progs {
		want[a.prog] = true
	}
	for name := range spec.Programs {
		if !want[name] {
			delete(spec.Programs, name)
		}
	}
	// The kg_unused_* variables only keep record types in BTF for bpf2go;
	// their .bss needs no map in the kernel.
	bss := false
	for name, v := range spec.Variables {
		switch {
		case strings.HasPrefix(name, "kg_unused_"):
			delete(spec.Variables, name)
		case v.SectionName == ".bss":
			bss = true
		}
	}
	if !bss {
		delete(spec.Maps, ".bss")
	}
	// fentry names kernel functions, and a kernel's BTF may list one of
	// them twice (Debian's 6.1.0-57 does, for all three syscalls).
	cache, dups, err := kernbtf.Cache(kernbtf.Targets(spec))
	if err != nil {
		return nil, err
	}
	if len(dups) > 0 {
		s.log.WithField("duplicates", kernbtf.Summary(dups)).Info("sensor: the kernel's BTF lists an attach target more than once")
	}
	return ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Cache: cache})
}

// CheckSystem reports, as one clear error, what this process or kernel lacks
// for the sensor: privileges, kernel BTF, or a kernel below kfloor.Min
// (the error then wraps kfloor.ErrTooOld and names what is missing).
func CheckSystem() error {
	if err := CheckPrivileges(); err != nil {
		return err
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return fmt.Errorf("the sensor needs kernel BTF (CONFIG_DEBUG_INFO_BTF=y): /sys/kernel/btf/vmlinux: %w", err)
	}
	return kfloor.Check("the sensor")
}

// Capability bits (include/uapi/linux/capability.h).
const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// ErrPrivileges is wrapped by the error of a process that may not load the
// sensor.
var ErrPrivileges = errors.New("the sensor needs root, or CAP_BPF and CAP_PERFMON")

// CheckPrivileges says whether this process may load the sensor: root, or
// CAP_BPF and CAP_PERFMON. Its error wraps ErrPrivileges.
func CheckPrivileges() error {
	eff, err := effectiveCaps()
	if err != nil {
		return fmt.Errorf("read this process's capabilities: %w", err)
	}
	has := func(c uint) bool { return eff&(1<<c) != 0 }
	if has(capSysAdmin) || (has(capBPF) && has(capPerfmon)) {
		return nil
	}
	return fmt.Errorf("%w (run as root, e.g. with sudo): effective capabilities are %#x", ErrPrivileges, eff)
}

// effectiveCaps reads CapEff from /proc/self/status.
func effectiveCaps() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return 0, errors.New("no CapEff line in /proc/self/status")
}

// Hook says which tracepoint flavour was loaded.
func (s *Sensor) Hook() Hook { return s.hook }

// ExitSide says which programs carry the results: ExitFexit where unrelated
// syscalls pay the sys_enter program alone (or nothing, with HookFentry).
func (s *Sensor) ExitSide() ExitSide { return s.exit }

// Start attaches the programs and starts reading events. The sensor stops
// when ctx is done or Close is called; then Events is closed.
func (s *Sensor) Start(ctx context.Context) error {
	err := errors.New("sensor already started")
	s.startOnce.Do(func() { err = s.start(ctx) })
	return err
}

func (s *Sensor) start(ctx context.Context) error {
	select {
	case <-s.done:
		return errors.New("sensor is closed")
	default:
	}
	rd, err := ringbuf.NewReader(s.events)
	if err != nil {
		return fmt.Errorf("open the ring buffer: %w", err)
	}
	s.reader = rd
	for _, a := range s.attach {
		var l link.Link
		p := s.coll.Programs[a.prog]
		if s.hook == HookRaw {
			l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: a.tp, Program: p})
		} else {
			l, err = link.AttachTracing(link.TracingOptions{Program: p})
		}
		if err != nil {
			s.closeLinks()
			rd.Close()
			return fmt.Errorf("attach the sensor (%s program %s): %w", s.hook, a.prog, err)
		}
		s.links = append(s.links, l)
	}
	s.autoload.attach(s)
	s.modEvents.attach(s)
	s.out = make(chan *event.Event, s.cfg.EventBuffer)
	go func() {
		select {
		case <-ctx.Done():
			s.stop()
		case <-s.done:
		}
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.readLoop()
	}()
	return nil
}

// Events returns the channel of joined, enriched events. It is nil before
// Start and is closed when the sensor stops. The reader blocks on a full
// channel; the kernel then counts what the ring buffer cannot hold.
func (s *Sensor) Events() <-chan *event.Event { return s.out }

// Stats returns the counters so far.
func (s *Sensor) Stats() Stats {
	if f := s.final.Load(); f != nil {
		return *f
	}
	st := Stats{
		UnrelatedPrograms: s.UnrelatedPrograms(),
		Discarded:         s.discarded.Load(),
		Delivered:         s.delivered.Load(),
		Orphans:           s.orphans.Load(),
		Malformed:         s.malformed.Load(),
	}
	if s.counters == nil {
		return st
	}
	get := func(idx sensorKgCounter) uint64 {
		var per []uint64
		if err := s.counters.Lookup(uint32(idx), &per); err != nil {
			return 0
		}
		var sum uint64
		for _, v := range per {
			sum += v
		}
		return sum
	}
	st.Events = get(sensorKgCounterKG_CNT_EVENTS)
	st.Drops = get(sensorKgCounterKG_CNT_DROPS)
	st.ChunkDrops = get(sensorKgCounterKG_CNT_CHUNK_DROPS)
	st.ExitDrops = get(sensorKgCounterKG_CNT_EXIT_DROPS)
	st.Truncations = get(sensorKgCounterKG_CNT_TRUNCATIONS)
	st.ReadFailures = get(sensorKgCounterKG_CNT_READ_FAILURES)
	st.Throttled = get(sensorKgCounterKG_CNT_THROTTLED)
	st.Coalesced = get(sensorKgCounterKG_CNT_COALESCED)
	return st
}

// Close detaches the programs, delivers what is still pending (events still
// in the kernel get Res ResUnknown), closes Events and frees the maps.
// Stats stays valid after Close.
func (s *Sensor) Close() error {
	s.stop()
	s.wg.Wait()
	s.freeOnce.Do(func() {
		final := s.Stats()
		s.final.Store(&final)
		if s.reader != nil {
			s.reader.Close()
		}
		s.closeObjects()
	})
	return nil
}

// stop detaches the programs and tells the reader to drain and finish.
func (s *Sensor) stop() {
	s.closeOnce.Do(func() {
		s.closeLinks()
		close(s.done)
		if s.reader != nil {
			// Read returns what is left, then ErrFlushed.
			s.reader.Flush()
		}
	})
}

func (s *Sensor) closeLinks() {
	for _, l := range s.links {
		l.Close()
	}
	s.links = nil
}

func (s *Sensor) closeObjects() {
	s.autoload.close()
	s.modEvents.close()
	if s.coll != nil {
		s.coll.Close()
		s.coll = nil
		s.counters = nil
	}
}
