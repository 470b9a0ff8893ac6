//go:build linux

// Package enforcer is kmodguard's policy engine: it turns an allowlist into
// the kernel maps of the BPF LSM guard (package lsm), loads and pins the
// guard or adopts a pinned one, swaps policies atomically, seals, and
// serves the guard's decisions.
//
// [Daemon] is `kmodguard enforcer run`: reload on SIGHUP and on file
// changes, systemd notification, metrics, and decisions published to the
// Falco plugin. [Companion] serves the enforcer as a companion.Enforcer
// (go-plugin or a Unix socket, [ServeCompanion]).
//
// The guard outlives the enforcer: Close leaves it pinned and enforcing,
// and the next Load adopts it. Only Stop (or a reboot) removes it, and a
// sealed guard refuses even that.
//
// A typical daemon:
//
//	al, err := allowlist.Load("/etc/kmodguard/allowlist.yaml")
//	...
//	enf, err := enforcer.Load(enforcer.Config{Logger: log}, al)
//	...
//	defer enf.Close()
//	for m := range enf.Decisions() {
//		if d, ok := m.(enforcer.Decision); ok {
//			log.WithField("verdict", d.Verdict).Info(d.Reason)
//		}
//	}
package enforcer

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/kmodguard/kmodguard/allowlist"
	"github.com/kmodguard/kmodguard/event"
	"github.com/kmodguard/kmodguard/lsm"
)

// Decision is one decision of the guard.
type Decision = event.Decision

// Report is a report about the guard that is not one of its decisions:
// decisions found missing, or a program that overrides the guard.
type Report = event.Report

// Message is one item of the decision stream: a Decision or a Report.
type Message = event.GuardMessage

// Status is the state of the guard.
type Status = lsm.Status

// ErrSealed is returned by Apply and Stop once the guard is sealed.
var ErrSealed = lsm.ErrSealed

// Config configures Load.
type Config struct {
	// PinDir is the bpffs directory of the pins; lsm.DefaultPinDir when empty.
	PinDir string
	// Mode, when set, overrides the allowlist's spec.mode.
	Mode allowlist.Mode
	// Seal seals the guard after the first policy is in force.
	Seal bool
	// RingBufferSize is the decision ring buffer's size in bytes (0: 256 KiB).
	RingBufferSize int
	// Logger receives warnings (loaded modules not on the allowlist, a
	// sealed guard's frozen policy); logrus's standard logger when nil.
	Logger logrus.FieldLogger
	// Release is the running kernel's release, for messages; uname -r when
	// empty.
	Release string
}

// Enforcer runs the guard. Its methods are safe for concurrent use.
type Enforcer struct {
	cfg   Config
	log   logrus.FieldLogger
	guard *lsm.Guard
	rd    *lsm.Reader

	mu      sync.Mutex
	current *allowlist.Allowlist
	gen     uint64

	decisions chan Message
	done      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// Load checks that BPF LSM is active, loads the guard with the allowlist a
// (or adopts the pinned guard and applies a to it), optionally seals it, and
// starts serving decisions. It warns about each loaded module that a does
// not list.
//
// When the pinned guard is sealed, its policy is frozen: Load adopts it as
// it is, logs that a was not applied, and returns no error.
func Load(cfg Config, a *allowlist.Allowlist) (*Enforcer, error) {
	if a == nil {
		return nil, errors.New("load enforcer: no allowlist")
	}
	if cfg.Logger == nil {
		cfg.Logger = logrus.StandardLogger()
	}
	if cfg.Release == "" {
		cfg.Release = release()
	}
	if cfg.Mode != "" && cfg.Mode != allowlist.ModeEnforce && cfg.Mode != allowlist.ModeAudit {
		return nil, fmt.Errorf("load enforcer: mode %q is neither %q nor %q", cfg.Mode, allowlist.ModeEnforce, allowlist.ModeAudit)
	}
	if err := lsm.Supported(); err != nil {
		return nil, err
	}
	e := &Enforcer{cfg: cfg, log: cfg.Logger, decisions: make(chan Message, 256), done: make(chan struct{})}

	// An expired list is refused before anything loads; the serial is
	// checked against the guard's record once there is a guard to ask.
	if err := a.CheckFresh(0, time.Now()); err != nil {
		return nil, err
	}
	p, err := e.policy(a, 1)
	if err != nil {
		return nil, err
	}
	g, adopted, err := lsm.Open(lsm.Options{PinDir: cfg.PinDir, RingBufferSize: cfg.RingBufferSize}, p)
	if err != nil {
		return nil, err
	}
	e.guard = g
	if adopted {
		if err := e.adoptPolicy(a); err != nil {
			g.Close()
			return nil, err
		}
	} else {
		e.current, e.gen = a, 1
		if err := g.RecordSerial(a.Metadata.Serial); err != nil {
			g.Close()
			return nil, err
		}
	}
	e.warnPreemption(cfg.Seal)
	if cfg.Seal {
		// Hold the programs' descriptors before the seal refuses them:
		// their recursion misses are read through them.
		if _, err := g.RecursionMisses(); err != nil {
			e.log.WithError(err).Warn("cannot read the guard programs' recursion misses")
		}
		if err := g.Seal(); err != nil {
			g.Close()
			return nil, fmt.Errorf("seal guard: %w", err)
		}
	}
	e.rd, err = g.NewReader()
	if err != nil {
		g.Close()
		return nil, err
	}
	e.wg.Add(2)
	go e.serve()
	go e.watchOverrides()
	e.reconcile(a, adopted)
	return e, nil
}

// adoptPolicy applies a to an adopted guard, continuing its generations.
func (e *Enforcer) adoptPolicy(a *allowlist.Allowlist) error {
	st, err := e.guard.Status()
	if err != nil {
		return err
	}
	e.gen = st.Generation
	if st.Sealed {
		e.log.WithField("generation", st.Generation).
			Warn("the pinned guard is sealed: its policy is frozen until reboot, the allowlist given was not applied")
		return nil
	}
	return e.Apply(a)
}

// policy turns an allowlist into the guard's terms.
func (e *Enforcer) policy(a *allowlist.Allowlist, gen uint64) (*lsm.Policy, error) {
	mode := a.Spec.Mode
	if e.cfg.Mode != "" {
		mode = e.cfg.Mode
	}
	return PolicyFor(a, mode, gen)
}

// PolicyFor converts an allowlist into a guard policy in the given mode.
// Each digest admits its entry, and each entry without digests admits its
// name. A digest listed under two different names is an error: the guard
// could not say which name it binds.
func PolicyFor(a *allowlist.Allowlist, mode allowlist.Mode, gen uint64) (*lsm.Policy, error) {
	p := &lsm.Policy{
		Generation: gen,
		Require:    Requirements(a),
		Digests:    map[[32]byte]lsm.Entry{},
		// Validated by the allowlist (allowlist.MaxAutoloadPatterns,
		// MaxPatternLen); lsm checks again.
		AutoloadDeny: autoloadDeny(a),
		Names:        map[string]lsm.Entry{},
	}
	switch mode {
	case allowlist.ModeEnforce, "":
		p.Mode = lsm.ModeEnforce
	case allowlist.ModeAudit:
		p.Mode = lsm.ModeAudit
	default:
		return nil, fmt.Errorf("allowlist mode %q is neither %q nor %q", mode, allowlist.ModeEnforce, allowlist.ModeAudit)
	}
	index := func(ent *allowlist.Entry) uint32 {
		for i := range a.Spec.Modules {
			if &a.Spec.Modules[i] == ent {
				return uint32(i)
			}
		}
		return 0
	}
	for sum, ent := range a.Digests() {
		if err := allowlist.ValidateName(ent.Name); err != nil {
			return nil, err
		}
		if prev, ok := p.Digests[sum]; ok && lsm.Fold(prev.Name) != lsm.Fold(ent.Name) {
			return nil, fmt.Errorf("digest %x is listed under two module names, %q and %q", sum, prev.Name, ent.Name)
		}
		p.Digests[sum] = lsm.Entry{Name: ent.Name, Index: index(ent)}
	}
	for ent := range a.NameOnlyEntries() {
		if err := allowlist.ValidateName(ent.Name); err != nil {
			return nil, err
		}
		p.Names[lsm.Fold(ent.Name)] = lsm.Entry{Name: ent.Name, Index: index(ent)}
	}
	return p, nil
}

// Every name the allowlist accepts fits the guard's maps (with its NUL):
// this does not compile the day it would not.
var _ [lsm.NameLen - 1 - allowlist.MaxNameLen]struct{}

// Apply replaces the policy in force with the allowlist a, atomically: a
// load in flight sees the old allowlist or the new one, never a mix. An
// allowlist that does not convert leaves the old one in force. Apply returns
// ErrSealed when the guard is sealed.
func (e *Enforcer) Apply(a *allowlist.Allowlist) error {
	if a == nil {
		return errors.New("apply: no allowlist")
	}
	if err := a.Validate(); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := checkFresh(e.guard, a); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	p, err := e.policy(a, e.gen+1)
	if err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	if err := e.guard.SetPolicy(p); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	e.current, e.gen = a, p.Generation
	if err := e.guard.RecordSerial(a.Metadata.Serial); err != nil {
		return fmt.Errorf("apply: the allowlist is in force, but its serial was not recorded: %w", err)
	}
	return nil
}

// Allowlist returns the allowlist in force, as last applied by this
// enforcer (nil for a sealed guard adopted with its policy frozen).
func (e *Enforcer) Allowlist() *allowlist.Allowlist {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.current
}

// Status reads the guard's state, with the decisions this enforcer found
// missing (Status.MissingDecisions).
func (e *Enforcer) Status() (Status, error) {
	st, err := e.guard.Status()
	if err != nil {
		return st, err
	}
	// This process's own figure, not the pin another root process could
	// have rewritten.
	st.MissingDecisions = e.rd.Missing()
	st.ReaderPid = uint32(os.Getpid())
	return st, nil
}

// Seal seals the guard until reboot (see lsm.Guard.Seal).
func (e *Enforcer) Seal() error { return e.guard.Seal() }

// Decisions delivers the guard's decisions until Close. Drain it: when it
// is full, reading the ring buffer stalls and the kernel counts the
// decisions it cannot queue as lost (Status.LostEvents).
//
// It also delivers a Report (event.ReportMissing) each time the enforcer
// finds decisions that another process consumed from the guard's ring
// buffer (see lsm.Reader), and one (event.ReportOverride) for each program
// it finds that can decide before the guard (lsm.Override); the enforcer
// logs both at error level itself.
func (e *Enforcer) Decisions() <-chan Message { return e.decisions }

func (e *Enforcer) serve() {
	defer e.wg.Done()
	for {
		m, err := e.rd.Read()
		if errors.Is(err, lsm.ErrClosed) {
			return
		}
		if err != nil {
			e.log.WithError(err).Warn("reading a guard decision")
			continue
		}
		if r, ok := m.(Report); ok && r.Kind == event.ReportMissing {
			e.log.WithFields(logrus.Fields{"missing": r.Count, "missing_total": e.rd.Missing()}).
				Error("guard decisions are missing: another process is consuming the guard's ring buffer, " +
					"refusals and audit records may be hidden from this enforcer")
		}
		select {
		case e.decisions <- m:
		case <-e.done:
			return
		}
	}
}

// Close stops serving decisions and releases the enforcer's descriptors.
// The guard stays pinned and enforcing.
func (e *Enforcer) Close() error {
	var err error
	e.closeOnce.Do(func() {
		close(e.done)
		err = e.rd.Close()
		e.wg.Wait()
		// Closed here, once no goroutine sends on it any more.
		close(e.decisions)
		if cerr := e.guard.Close(); err == nil {
			err = cerr
		}
	})
	return err
}

// Stop removes the pinned guard in pinDir (lsm.DefaultPinDir when empty):
// it unpins its links and maps, which detaches it once no process holds
// them. It returns ErrSealed when the guard is sealed.
func Stop(pinDir string) error {
	g, err := lsm.OpenPinned(pinDir)
	if err != nil {
		return err
	}
	if err := g.Remove(); err != nil {
		g.Close()
		return err
	}
	return nil
}

// ReadStatus reads the state of the pinned guard in pinDir without loading
// anything. It works on a sealed guard.
func ReadStatus(pinDir string) (Status, error) {
	g, err := lsm.OpenPinned(pinDir)
	if err != nil {
		return Status{}, err
	}
	defer g.Close()
	return g.Status()
}

// ApplyPinned applies the allowlist a to the pinned guard in pinDir, for
// hosts that run the guard without the daemon. mode overrides spec.mode when
// set.
func ApplyPinned(pinDir string, a *allowlist.Allowlist, mode allowlist.Mode) (generation uint64, err error) {
	if err := a.Validate(); err != nil {
		return 0, err
	}
	g, err := lsm.OpenPinned(pinDir)
	if err != nil {
		return 0, err
	}
	defer g.Close()
	st, err := g.Status()
	if err != nil {
		return 0, err
	}
	if st.Sealed {
		return 0, ErrSealed
	}
	if mode == "" {
		mode = a.Spec.Mode
	}
	p, err := PolicyFor(a, mode, st.Generation+1)
	if err != nil {
		return 0, err
	}
	if err := checkFresh(g, a); err != nil {
		return 0, err
	}
	if err := g.SetPolicy(p); err != nil {
		return 0, err
	}
	if err := g.RecordSerial(a.Metadata.Serial); err != nil {
		return p.Generation, fmt.Errorf("the allowlist is in force, but its serial was not recorded: %w", err)
	}
	return p.Generation, nil
}

// checkFresh refuses a when its serial is below the highest the guard
// recorded, or when it has expired. The floor is the guard's, kept beside
// its pins: it holds across daemon restarts, and for whoever applies (a
// reload, the companion socket, kmodguard enforcer apply).
func checkFresh(g *lsm.Guard, a *allowlist.Allowlist) error {
	floor, err := g.AppliedSerial()
	if err != nil {
		return err
	}
	return a.CheckFresh(floor, time.Now())
}

func release() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return strings.TrimRight(string(u.Release[:]), "\x00")
}

// autoloadDeny is a's spec.autoload.deny as the guard takes it (allowlist.FoldPattern).
func autoloadDeny(a *allowlist.Allowlist) []string {
	var out []string
	for _, p := range a.Spec.Autoload.Deny {
		out = append(out, allowlist.FoldPattern(p))
	}
	return out
}

// The guard holds every deny list the allowlist accepts: this does not
// compile the day it would not.
var (
	_ [lsm.MaxAutoloadPatterns - allowlist.MaxAutoloadPatterns]struct{}
	_ [lsm.NameLen - 1 - allowlist.MaxPatternLen]struct{}
)

// Requirements are the guard's terms for a's spec.requireHostNamespaces
// and spec.requireModuleSignature.
func Requirements(a *allowlist.Allowlist) lsm.Require {
	var r lsm.Require
	if a.Spec.RequireHostNamespaces {
		r |= lsm.RequireHostNamespaces
	}
	if a.Spec.RequireModuleSignature {
		r |= lsm.RequireSignature
	}
	return r
}
